//! The hub: this node's subscriptions by destination, and the fan-out that delivers a
//! publication to them. A MESSAGE frame is encoded once per distinct (subscription id,
//! STOMP version, ack mode) and the same bytes are queued for every subscriber sharing it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use bytes::Bytes;

use super::Publication;
use crate::metrics::METRICS;
use crate::outbound::{OutFrame, Outbound};
use crate::protocol::{Command, FrameWriter, Version};

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
    /// The most destinations that may have subscribers at once (bounds the map).
    max_destinations: usize,
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
    for (name, value) in &p.headers {
        w.header(name, value);
    }
    w.body(&p.body);
    Bytes::from(out)
}

impl Hub {
    pub fn new(max_destinations: usize) -> Hub {
        Hub { topics: RefCell::new(HashMap::new()), max_destinations, backed_up: RefCell::new(Vec::new()) }
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
        if topics.len() >= self.max_destinations {
            return Err(HubError::TooManyDestinations { limit: self.max_destinations });
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
        }
    }

    fn publication(dest: &str, body: &'static [u8]) -> Publication {
        Publication {
            destination: Rc::from(dest),
            message_id: Rc::from("n1-1"),
            headers: vec![("content-type".into(), "text/plain".into())],
            body: Bytes::from_static(body),
        }
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
    fn slow_consumer_does_not_stop_the_others() {
        let hub = Hub::new(10);
        let slow = Rc::new(Outbound::new(4096));
        let fast = Rc::new(Outbound::new(1 << 20));
        hub.subscribe("/topic/a", sub(1, "s", &slow)).unwrap();
        hub.subscribe("/topic/a", sub(2, "s", &fast)).unwrap();
        for _ in 0..100 {
            hub.deliver(&publication("/topic/a", &[b'x'; 100]));
        }
        assert_eq!(slow.closing(), Some(crate::metrics::CloseReason::SlowConsumer));
        assert_eq!(fast.with_queue(|q| q.len()), 100);
    }
}
