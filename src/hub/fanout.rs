//! The hub: this node's subscriptions by destination, and the fan-out that delivers a
//! publication to them. A MESSAGE frame is encoded once per distinct (subscription id,
//! STOMP version, ack mode) and the same bytes are queued for every subscriber sharing it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use bytes::Bytes;

use super::{Publication, StreamPosition};
use crate::board::memory::{self, Charge};
use crate::observability::metrics::METRICS;
use crate::protocol::{Command, FrameWriter, Version};
use crate::transport::outbound::{OutFrame, Outbound};

/// The acknowledgement mode a SUBSCRIBE asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckMode {
    Auto,
    Client,
    ClientIndividual,
}

impl AckMode {
    pub fn parse(text: Option<&str>) -> Option<AckMode> {
        match text {
            None | Some("auto") => Some(AckMode::Auto),
            Some("client") => Some(AckMode::Client),
            Some("client-individual") => Some(AckMode::ClientIndividual),
            Some(_) => None,
        }
    }
}

/// One subscription of one connection.
#[derive(Clone)]
pub struct Subscriber {
    pub connection: u64,
    pub subscription_id: Rc<str>,
    pub version: Version,
    pub ack: AckMode,
    pub outbound: Rc<Outbound>,
    /// For a streamed subscription whose recovery reads asynchronously (cluster mode): holds
    /// live publications until the kept ones are sent, then drops any already sent.
    pub cursor: Option<Rc<Cursor>>,
}

/// Most live publications one recovering subscription holds; past it, or when they would not
/// fit under the memory budget's high-water mark, the subscriber is closed as a slow consumer
/// (it could not have taken them either).
const MAX_WAITING: usize = 4096;

/// Where a streamed subscription stands at the seam between kept and live messages.
#[derive(Default)]
pub struct Cursor {
    /// Live publications that arrived while the recovery read the stream; None once live.
    waiting: RefCell<Option<Vec<Publication>>>,
    /// `waiting` on the memory budget (each at its kept cost: its body may be shared, but
    /// the waiting copy keeps it alive).
    waiting_charge: RefCell<Charge>,
    /// The next offset this subscription wants, once live (earlier ones were sent).
    next: Cell<u64>,
    epoch: RefCell<Option<Rc<str>>>,
}

impl Cursor {
    /// A cursor for a subscription whose recovery is still reading.
    pub fn recovering() -> Rc<Cursor> {
        Rc::new(Cursor { waiting: RefCell::new(Some(Vec::new())), ..Cursor::default() })
    }

    /// Whether `p` is new to this subscription (and moves the cursor past it).
    fn admit(&self, p: &Publication) -> bool {
        let Some(position) = &p.stream else { return true };
        let mut epoch = self.epoch.borrow_mut();
        if epoch.as_deref() == Some(&*position.epoch) && position.offset < self.next.get() {
            return false;
        }
        *epoch = Some(position.epoch.clone());
        self.next.set(position.offset + 1);
        true
    }
}

/// Ends a recovery: sends the kept publications, then the live ones that arrived meanwhile
/// and were not among them, and lets the subscription go live. Returns how many were sent.
///
/// Paced by the reader: a frame is queued only while the subscriber's queue is under half its
/// limit (`limits.max_outbound_bytes`), so a subscriber that reads promptly gets a history of
/// any size without being cut as a slow consumer. One that stops reading for
/// `SLOW_CONSUMER_GRACE` is then judged by the usual rule (its queue overflows and it is cut).
pub async fn finish_recovery(s: &Subscriber, kept: &[Publication], next: &StreamPosition) -> usize {
    let Some(cursor) = &s.cursor else { return 0 };
    let mut sent = 0;
    for p in kept {
        if cursor.admit(p) {
            let frame = OutFrame::stomp(encode_message(p, &s.subscription_id, s.version, s.ack));
            pace(&s.outbound, frame.bytes.len()).await;
            if s.outbound.push(frame) {
                sent += 1;
            }
        }
    }
    if cursor.epoch.borrow().is_none() || kept.is_empty() {
        *cursor.epoch.borrow_mut() = Some(next.epoch.clone());
        cursor.next.set(cursor.next.get().max(next.offset));
    }
    // Live publications that arrive while the held ones are paced out join them at the end.
    loop {
        let waiting = std::mem::take(cursor.waiting.borrow_mut().get_or_insert_with(Vec::new));
        if waiting.is_empty() {
            break;
        }
        for p in &waiting {
            if cursor.admit(p) {
                let frame = OutFrame::stomp(encode_message(p, &s.subscription_id, s.version, s.ack));
                pace(&s.outbound, frame.bytes.len()).await;
                if s.outbound.push(frame) {
                    sent += 1;
                }
            }
        }
    }
    *cursor.waiting.borrow_mut() = None;
    let _given_back = std::mem::take(&mut *cursor.waiting_charge.borrow_mut());
    METRICS.messages_delivered.add(sent as u64);
    sent
}

/// Waits until `bytes` more fit under half of `out`'s limit (the reader drained its queue),
/// for `SLOW_CONSUMER_GRACE` at most; at once when the connection is closing.
async fn pace(out: &Outbound, bytes: usize) {
    let limit = out.limit() / 2;
    if out.queued_bytes() + bytes <= limit || out.closing().is_some() {
        return;
    }
    let deadline = tokio::time::Instant::now() + crate::transport::outbound::SLOW_CONSUMER_GRACE;
    while out.queued_bytes() > 0
        && out.queued_bytes() + bytes > limit
        && out.closing().is_none()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubError {
    TooManyDestinations { limit: usize },
}

impl std::fmt::Display for HubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HubError::TooManyDestinations { limit } => {
                write!(f, "the server has subscribers on its maximum of {limit} destinations")
            }
        }
    }
}

/// Subscriptions by destination.
pub struct Hub {
    /// Destination → its local subscribers. Keys are shared with the sessions' own tables.
    topics: RefCell<HashMap<Rc<str>, Topic>>,
    /// The most destinations that may have subscribers at once (bounds the map); a reload
    /// may change it (`set_max_destinations`).
    max_destinations: Cell<usize>,
    /// Recipients found backed up by the deliveries since the last [`Hub::take_backed_up`]
    /// (at most [`MAX_BACKED_UP`]): the publishing connection waits for them (flow control).
    backed_up: RefCell<Vec<Weak<Outbound>>>,
}

/// The most backed-up recipients one publisher waits for at a time.
pub const MAX_BACKED_UP: usize = 16;

/// The local subscribers of one destination, with the destination's shared name.
struct Topic {
    key: Rc<str>,
    subs: Vec<Subscriber>,
}

/// MESSAGE bytes already encoded for one publication, keyed by what changes the frame.
struct EncodeCache {
    entries: Vec<(Rc<str>, Version, AckMode, OutFrame)>,
}

impl EncodeCache {
    fn get_or_encode(&mut self, p: &Publication, s: &Subscriber) -> OutFrame {
        for (id, version, ack, frame) in &self.entries {
            // Pointer equality first: subscribers usually share the Rc of a common id.
            if (Rc::ptr_eq(id, &s.subscription_id) || **id == *s.subscription_id)
                && *version == s.version
                && *ack == s.ack
            {
                return frame.clone();
            }
        }
        let frame = OutFrame::stomp(encode_message(p, &s.subscription_id, s.version, s.ack));
        METRICS.message_encodings.inc();
        // A bounded cache: past 32 distinct keys (unusual) later ones are encoded each time.
        if self.entries.len() < 32 {
            self.entries.push((s.subscription_id.clone(), s.version, s.ack, frame.clone()));
        }
        frame
    }
}

/// Encodes one MESSAGE frame for a subscription.
pub fn encode_message(p: &Publication, subscription: &str, version: Version, ack: AckMode) -> Bytes {
    let mut out = Vec::with_capacity(128 + p.body.len() + p.destination.len());
    let mut w = FrameWriter::new(&mut out, Command::Message, version);
    w.header("destination", &p.destination);
    w.header("message-id", &p.message_id);
    w.header("subscription", subscription);
    if ack != AckMode::Auto && version == Version::V1_2 {
        w.header("ack", &p.message_id);
    }
    if let Some(position) = &p.stream {
        w.header(super::OFFSET_HEADER, &position.offset.to_string());
        w.header(super::EPOCH_HEADER, &position.epoch);
    }
    for (name, value) in &p.headers {
        w.header(name, value);
    }
    w.body(&p.body);
    Bytes::from(out)
}

impl Hub {
    pub fn new(max_destinations: usize) -> Hub {
        Hub {
            topics: RefCell::new(HashMap::new()),
            max_destinations: Cell::new(max_destinations),
            backed_up: RefCell::new(Vec::new()),
        }
    }

    /// A reload changed `limits.max_destinations`: new destinations are refused while the
    /// hub holds that many or more; the ones it holds keep their subscribers.
    pub fn set_max_destinations(&self, limit: usize) {
        self.max_destinations.set(limit);
    }

    /// Adds a subscriber. Returns the shared destination key and whether it is the first
    /// local subscriber of that destination (the engine then registers interest).
    pub fn subscribe(&self, destination: &str, subscriber: Subscriber) -> Result<(Rc<str>, bool), HubError> {
        let mut topics = self.topics.borrow_mut();
        if let Some(topic) = topics.get_mut(destination) {
            // Re-use a subscription id Rc already in the list so the encode cache hits by pointer.
            let mut subscriber = subscriber;
            if let Some(same) = topic.subs.iter().find(|s| *s.subscription_id == *subscriber.subscription_id)
            {
                subscriber.subscription_id = same.subscription_id.clone();
            }
            topic.subs.push(subscriber);
            return Ok((topic.key.clone(), false));
        }
        let limit = self.max_destinations.get();
        if topics.len() >= limit {
            return Err(HubError::TooManyDestinations { limit });
        }
        let key: Rc<str> = Rc::from(destination);
        topics.insert(key.clone(), Topic { key: key.clone(), subs: vec![subscriber] });
        Ok((key, true))
    }

    /// Removes one subscription; returns true when it was the destination's last one.
    pub fn unsubscribe(&self, destination: &str, connection: u64, subscription_id: &str) -> bool {
        let mut topics = self.topics.borrow_mut();
        let Some(Topic { subs, .. }) = topics.get_mut(destination) else { return false };
        if let Some(i) =
            subs.iter().position(|s| s.connection == connection && *s.subscription_id == *subscription_id)
        {
            subs.swap_remove(i);
            // After a crowd leaves a room others stay in, give the list's memory back.
            if let Some(keep) = crate::board::reclaim::shrunk_capacity(subs.len(), subs.capacity()) {
                subs.shrink_to(keep);
            }
        }
        if subs.is_empty() {
            topics.remove(destination);
            return true;
        }
        false
    }

    /// Queues the publication for every local subscriber of its destination; returns how many.
    pub fn deliver(&self, p: &Publication) -> usize {
        let topics = self.topics.borrow();
        let Some(Topic { subs, .. }) = topics.get(&*p.destination) else {
            METRICS.messages_unrouted.inc();
            return 0;
        };
        let mut cache = EncodeCache { entries: Vec::new() };
        let mut delivered = 0;
        for s in subs {
            if s.outbound.closing().is_some() {
                continue;
            }
            if let Some(cursor) = &s.cursor {
                if let Some(waiting) = cursor.waiting.borrow_mut().as_mut() {
                    let cost = p.kept_cost();
                    if waiting.len() >= MAX_WAITING {
                        s.outbound.close(crate::observability::metrics::CloseReason::SlowConsumer);
                    } else if !memory::admit(cost) {
                        crate::observability::metrics::METRICS.memory_refused.inc("recovery");
                        s.outbound.close(crate::observability::metrics::CloseReason::SlowConsumer);
                    } else {
                        waiting.push(p.clone());
                        let mut charge = cursor.waiting_charge.borrow_mut();
                        let bytes = charge.bytes() + cost;
                        charge.set(bytes);
                    }
                    continue;
                }
                if !cursor.admit(p) {
                    continue;
                }
            }
            if s.outbound.push(cache.get_or_encode(p, s)) {
                delivered += 1;
            }
            if s.outbound.holds_back_publishers() {
                let mut backed_up = self.backed_up.borrow_mut();
                if backed_up.len() < MAX_BACKED_UP
                    && !backed_up.iter().any(|w| std::ptr::eq(w.as_ptr(), Rc::as_ptr(&s.outbound)))
                {
                    backed_up.push(Rc::downgrade(&s.outbound));
                }
            }
        }
        METRICS.messages_delivered.add(delivered as u64);
        delivered
    }

    /// Whether a delivery since the last [`Hub::take_backed_up`] found a recipient backed up.
    pub fn has_backed_up(&self) -> bool {
        !self.backed_up.borrow().is_empty()
    }

    /// The recipients found backed up since the last call: the caller (the connection whose
    /// input was just handled) stops reading until they drain.
    pub fn take_backed_up(&self) -> Vec<Weak<Outbound>> {
        std::mem::take(&mut *self.backed_up.borrow_mut())
    }

    /// Whether a destination without subscribers could gain one (the destination bound).
    pub fn has_room(&self) -> bool {
        self.topics.borrow().len() < self.max_destinations.get()
    }

    /// The error a SUBSCRIBE gets when `has_room` is false.
    pub fn full_error(&self) -> HubError {
        HubError::TooManyDestinations { limit: self.max_destinations.get() }
    }

    pub fn destination_count(&self) -> usize {
        self.topics.borrow().len()
    }

    pub fn subscriber_count(&self, destination: &str) -> usize {
        self.topics.borrow().get(destination).map_or(0, |t| t.subs.len())
    }

    /// Every destination with local subscribers (the cluster engine re-subscribes these).
    pub fn destinations(&self) -> Vec<Rc<str>> {
        self.topics.borrow().keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(conn: u64, id: &str, out: &Rc<Outbound>) -> Subscriber {
        Subscriber {
            connection: conn,
            subscription_id: Rc::from(id),
            version: Version::V1_2,
            ack: AckMode::Auto,
            outbound: out.clone(),
            cursor: None,
        }
    }

    fn publication(dest: &str, body: &'static [u8]) -> Publication {
        Publication::message(
            Rc::from(dest),
            Rc::from("n1-1"),
            vec![("content-type".into(), "text/plain".into())],
            Bytes::from_static(body),
        )
    }

    #[test]
    fn one_encoding_per_distinct_subscription_id_shared_by_all() {
        let hub = Hub::new(10);
        let outs: Vec<Rc<Outbound>> = (0..4).map(|_| Rc::new(Outbound::new(1 << 20))).collect();
        for (i, out) in outs.iter().enumerate() {
            let id = if i < 3 { "sub-0" } else { "other" };
            hub.subscribe("/topic/a", sub(i as u64, id, out)).unwrap();
        }
        assert_eq!(hub.deliver(&publication("/topic/a", b"hi")), 4);
        let ptr = |o: &Rc<Outbound>| o.with_queue(|q| q[0].bytes.as_ptr());
        // The three sub-0 subscribers hold the very same bytes.
        assert_eq!(ptr(&outs[0]), ptr(&outs[1]));
        assert_eq!(ptr(&outs[1]), ptr(&outs[2]));
        assert_ne!(ptr(&outs[0]), ptr(&outs[3]));
        let text = outs[3].with_queue(|q| String::from_utf8(q[0].bytes.to_vec()).unwrap());
        assert!(text.starts_with("MESSAGE\n"), "{text}");
        assert!(text.contains("subscription:other\n") && text.contains("destination:/topic/a\n"));
        assert!(text.contains("content-type:text/plain\n") && text.ends_with("\n\nhi\0"), "{text}");
    }

    #[test]
    fn first_and_last_subscriber_are_reported() {
        let hub = Hub::new(1);
        let out = Rc::new(Outbound::new(1024));
        assert!(hub.subscribe("/topic/a", sub(1, "s", &out)).unwrap().1);
        assert!(!hub.subscribe("/topic/a", sub(2, "s", &out)).unwrap().1);
        assert_eq!(
            hub.subscribe("/topic/b", sub(1, "s", &out)).unwrap_err(),
            HubError::TooManyDestinations { limit: 1 }
        );
        assert!(!hub.unsubscribe("/topic/a", 1, "s"));
        assert!(hub.unsubscribe("/topic/a", 2, "s"));
        assert_eq!(hub.destination_count(), 0);
        assert_eq!(hub.deliver(&publication("/topic/a", b"x")), 0);
    }

    #[test]
    fn a_recovering_subscription_gets_kept_then_live_without_gap_or_duplicate() {
        let hub = Hub::new(10);
        let out = Rc::new(Outbound::new(1 << 20));
        let mut s = sub(1, "s", &out);
        s.cursor = Some(Cursor::recovering());
        hub.subscribe("/topic/a", s.clone()).unwrap();
        let at = |offset: u64| {
            let mut p = publication("/topic/a", b"x");
            p.message_id = Rc::from(format!("m{offset}"));
            p.stream = Some(StreamPosition { offset, epoch: Rc::from("e") });
            p
        };
        // Live 4 and 5 arrive while the stream read (kept 2..=4) is in flight: held, and
        // charged to the memory budget until the recovery ends.
        hub.deliver(&at(4));
        hub.deliver(&at(5));
        assert_eq!(out.with_queue(|q| q.len()), 0);
        let cursor = s.cursor.clone().unwrap();
        assert_eq!(cursor.waiting_charge.borrow().bytes(), at(4).kept_cost() + at(5).kept_cost());
        let (kept, next) = ([at(2), at(3), at(4)], StreamPosition { offset: 5, epoch: Rc::from("e") });
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let sent = runtime.block_on(finish_recovery(&s, &kept, &next));
        assert_eq!(sent, 4, "2, 3, 4 kept, then 5 live; the live 4 was a duplicate");
        assert_eq!(cursor.waiting_charge.borrow().bytes(), 0);
        hub.deliver(&at(5));
        hub.deliver(&at(6));
        let ids: Vec<String> = out.with_queue(|q| {
            q.iter()
                .map(|f| {
                    let text = String::from_utf8_lossy(&f.bytes).to_string();
                    text.lines().find_map(|l| l.strip_prefix("message-id:")).unwrap_or("").to_string()
                })
                .collect()
        });
        assert_eq!(ids, ["m2", "m3", "m4", "m5", "m6"]);
    }

    #[test]
    fn slow_consumer_does_not_stop_the_others() {
        let hub = Hub::new(10);
        let slow = Rc::new(Outbound::new(4096));
        let fast = Rc::new(Outbound::new(1 << 20));
        hub.subscribe("/topic/a", sub(1, "s", &slow)).unwrap();
        hub.subscribe("/topic/a", sub(2, "s", &fast)).unwrap();
        for _ in 0..100 {
            hub.deliver(&publication("/topic/a", &[b'x'; 100]));
        }
        assert_eq!(slow.closing(), Some(crate::observability::metrics::CloseReason::SlowConsumer));
        assert_eq!(fast.with_queue(|q| q.len()), 100);
    }
}
