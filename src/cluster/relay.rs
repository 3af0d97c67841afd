//! Relaying publications between nodes through Redis. Out: each publication is wrapped once in
//! an envelope and appended to its destination's stream by one script call that also
//! PUBLISHes it (see `stream`), pipelined in order by one task; while Redis is away a bounded
//! buffer keeps the newest few seconds. In: one pub/sub connection SUBSCRIBEs only to the
//! channels of destinations that have local subscribers; every publication carries its offset,
//! and `order` delivers each destination in offset order, once each, reading gaps back from
//! the stream (`history`). After the pub/sub link is made again every destination served here
//! catches up.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::{Rc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use super::envelope::Envelope;
use super::order::{Arrival, Sequencer};
use super::shard::Shard;
use crate::broker::Publication;
use crate::config::StreamsConfig;
use crate::engine::{BrokerEventHandler, LocalBoxFuture};
use crate::observability::metrics::Counter;

/// Most publications sent in one pipeline.
const PIPELINE: usize = 256;
/// One publication waiting to be relayed.
pub struct Outgoing {
    channel: String,
    destination: Rc<str>,
    payload: Vec<u8>,
    queued: Instant,
    /// The publication itself when this node delivers it only once it has its offset.
    pending: Option<Publication>,
}

/// Counters of the relay, for `/metrics`.
#[derive(Default)]
pub struct RelayStats {
    pub published: Counter,
    pub publish_errors: Counter,
    pub dropped: Counter,
    pub received: Counter,
    pub echoes_ignored: Counter,
    pub duplicates_ignored: Counter,
    pub sequence_gaps: Counter,
    pub bad_envelopes: Counter,
    pub pubsub_reconnects: Counter,
}

/// Counters of the streams side, for `/metrics`.
#[derive(Default)]
pub struct StreamStats {
    pub delivered: Counter,
    pub repairs: Counter,
    pub catch_ups: Counter,
    pub recoveries: Counter,
    pub recoveries_incomplete: Counter,
    pub recoveries_failed: Counter,
    pub recovered_messages: Counter,
}

/// Publications out and in. Owns the outbox, the interest, the pub/sub state and the
/// sequence tracking; shares only the `Shard`.
pub struct Relay {
    pub(super) me: Weak<Relay>,
    pub(super) shard: Rc<Shard>,
    /// Who gets publications of other nodes (the node, registered at start).
    handler: RefCell<Option<Weak<dyn BrokerEventHandler>>>,
    /// Whether the pub/sub connection is subscribed and reading.
    pubsub_up: Cell<bool>,
    /// Channels this node wants, from the hub's interest (destination → its channels).
    wanted: RefCell<HashMap<String, Vec<String>>>,
    /// Wakes the pub/sub task when `wanted` changed.
    interest_changed: tokio::sync::Notify,
    /// Channels the pub/sub connection has confirmed subscriptions to.
    active: RefCell<HashSet<String>>,
    /// Wakes whoever waits for a channel to become active.
    active_changed: tokio::sync::Notify,
    /// Publications waiting for the publisher task, bounded by the relay buffer settings.
    outbox: RefCell<VecDeque<Outgoing>>,
    outbox_ready: tokio::sync::Notify,
    /// Offset order per destination with local interest (see `order`).
    pub(super) sequencer: RefCell<Sequencer>,
    /// Which destinations are streamed, and the bounds.
    pub(super) streams: StreamsConfig,
    /// The SHA1 of the append script, and the link generation it was last loaded on.
    script_sha: String,
    script_loaded: Cell<Option<u64>>,
    /// Message ids of this node's publications it delivered here without an offset because
    /// their append failed or timed out (bounded, oldest forgotten first). Redis may still
    /// have applied the append (a stalled Redis answers late): when the message comes back
    /// with its offset, on pub/sub or in a catch-up, this node must not deliver it again.
    fallback_delivered: RefCell<FallbackDelivered>,
    pub stats: RelayStats,
    pub(super) stream_stats: StreamStats,
}

impl Relay {
    pub fn new(shard: Rc<Shard>, streams: StreamsConfig) -> Rc<Relay> {
        Rc::new_cyclic(|me| Relay {
            me: me.clone(),
            sequencer: RefCell::new(Sequencer::new(shard.config.relay_buffer_messages.max(1000))),
            streams,
            script_sha: redis::Script::new(super::stream::APPEND_LUA).get_hash().to_string(),
            script_loaded: Cell::new(None),
            fallback_delivered: RefCell::new(FallbackDelivered::default()),
            stream_stats: StreamStats::default(),
            shard,
            handler: RefCell::new(None),
            pubsub_up: Cell::new(false),
            wanted: RefCell::new(HashMap::new()),
            interest_changed: tokio::sync::Notify::new(),
            active: RefCell::new(HashSet::new()),
            active_changed: tokio::sync::Notify::new(),
            outbox: RefCell::new(VecDeque::new()),
            outbox_ready: tokio::sync::Notify::new(),
            stats: RelayStats::default(),
        })
    }

    pub fn set_handler(&self, handler: Weak<dyn BrokerEventHandler>) {
        *self.handler.borrow_mut() = Some(handler);
    }

    /// Delivers a publication to this node's subscribers (through the node).
    pub(super) fn deliver(&self, publication: &Publication) {
        let handler = self.handler.borrow().as_ref().and_then(Weak::upgrade);
        if let Some(handler) = handler {
            handler.handle_publication(publication);
        }
    }

    /// Delivers here, without an offset, one of this node's publications whose append failed,
    /// and remembers it so that its late append (if Redis applied it after all) is not
    /// delivered here a second time.
    fn deliver_without_offset(&self, p: &Publication) {
        self.fallback_delivered.borrow_mut().insert(p.message_id.clone());
        self.deliver(p);
    }

    /// Whether `id` is one of this node's publications already delivered here without an
    /// offset (see `fallback_delivered`).
    pub(super) fn delivered_without_offset(&self, id: &str) -> bool {
        self.fallback_delivered.borrow().contains(id)
    }

    /// Whether the pub/sub connection is subscribed and reading.
    pub fn pubsub_up(&self) -> bool {
        self.pubsub_up.get()
    }

    /// Wakes the tasks after the command link came back.
    pub fn link_up(&self) {
        self.outbox_ready.notify_one();
        self.interest_changed.notify_one();
    }

    /// Redis channels this node listens on.
    pub fn channels_wanted(&self) -> usize {
        self.wanted.borrow().values().map(Vec::len).sum()
    }

    /// Publications waiting to be relayed.
    pub fn buffered(&self) -> usize {
        self.outbox.borrow().len()
    }

    /// Whether publications are still waiting to go out over a live link.
    pub fn busy(&self) -> bool {
        self.shard.link.is_up() && !self.outbox.borrow().is_empty()
    }

    /// Records local interest in `destination` (see `Broker::interest`).
    pub fn interest(&self, destination: &str, interested: bool) {
        let mut wanted = self.wanted.borrow_mut();
        if interested {
            let channels = self.shard.keys.channels(destination);
            if channels.is_empty() {
                return;
            }
            wanted.insert(destination.to_string(), channels);
            self.sequencer.borrow_mut().watch(destination);
        } else if wanted.remove(destination).is_none() {
            return;
        } else {
            self.sequencer.borrow_mut().forget(destination);
        }
        drop(wanted);
        self.interest_changed.notify_one();
    }

    /// Resolves once the channels of `destination` are subscribed (see `Broker::ready`).
    pub fn ready(self: &Rc<Self>, destination: &str) -> Option<LocalBoxFuture<'static, ()>> {
        let channels = self.shard.keys.channels(destination);
        let active = move |me: &Relay| {
            let active = me.active.borrow();
            channels.iter().all(|c| active.contains(c))
        };
        let up = |me: &Relay| me.shard.link.is_up() && me.pubsub_up.get();
        if !up(self) || active(self) {
            return None;
        }
        let me = self.clone();
        Some(Box::pin(async move {
            loop {
                let changed = me.active_changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if !up(&me) || active(&me) {
                    return;
                }
                changed.await;
            }
        }))
    }

    /// Queues a publication for the other nodes (never waits). The channel comes from the
    /// publication's room and kind, never from its body.
    /// `delivered_here`: this node's subscribers have it already; otherwise this node delivers
    /// it, in offset order, once the append script gave it its offset.
    pub fn enqueue(&self, p: &Publication, delivered_here: bool) {
        let Some(channel) = self.shard.keys.publish_channel(p) else {
            if !delivered_here {
                self.deliver(p);
            }
            return;
        };
        let pending = (!delivered_here).then(|| p.clone());
        let mut envelope = Envelope::wrap(&self.shard.server_id, self.shard.epoch, 0, p);
        envelope.delivered = delivered_here;
        let payload = envelope.encode();
        let mut outbox = self.outbox.borrow_mut();
        self.expire(&mut outbox);
        if outbox.len() >= self.shard.config.relay_buffer_messages.max(1) && !self.shard.link.is_up() {
            drop(outbox);
            self.not_relayed(Outgoing {
                channel,
                destination: p.destination.clone(),
                payload,
                queued: Instant::now(),
                pending,
            });
            return;
        }
        outbox.push_back(Outgoing {
            channel,
            destination: p.destination.clone(),
            payload,
            queued: Instant::now(),
            pending,
        });
        drop(outbox);
        self.outbox_ready.notify_one();
    }

    /// Drops buffered publications older than the relay buffer allows (only while down).
    fn expire(&self, outbox: &mut std::collections::VecDeque<Outgoing>) {
        if self.shard.link.is_up() {
            return;
        }
        let limit = Duration::from_millis(self.shard.config.relay_buffer_ms);
        while outbox.front().is_some_and(|o| o.queued.elapsed() > limit) {
            if let Some(o) = outbox.pop_front() {
                self.not_relayed(o);
            }
        }
    }

    /// A publication that will not reach Redis: counted, and delivered here if it was waiting
    /// for its offset (accepted is never silently lost on its own node).
    fn not_relayed(&self, o: Outgoing) {
        self.stats.dropped.inc();
        if let Some(p) = o.pending {
            self.deliver(&p);
        }
    }

    /// The publisher task: sends the outbox in order, a pipeline of PUBLISH at a time.
    pub(super) async fn run_publisher(self: Rc<Self>) {
        loop {
            let empty = self.outbox.borrow().is_empty();
            if empty || !self.shard.link.is_up() {
                self.outbox_ready.notified().await;
                continue;
            }
            let batch: Vec<Outgoing> = {
                let mut outbox = self.outbox.borrow_mut();
                let limit = Duration::from_millis(self.shard.config.relay_buffer_ms);
                // Publications that waited too long for Redis are no use any more.
                let mut late = Vec::new();
                while outbox.front().is_some_and(|o| o.queued.elapsed() > limit) {
                    late.extend(outbox.pop_front());
                }
                let n = outbox.len().min(PIPELINE);
                let batch = outbox.drain(..n).collect();
                drop(outbox);
                for o in late {
                    self.not_relayed(o);
                }
                batch
            };
            if batch.is_empty() {
                continue;
            }
            // One script call per publication; the script is (re)loaded in the same pipeline
            // after a reconnect (a restarted Redis has none).
            let generation = self.shard.link.stats.reconnects.get();
            let load = self.script_loaded.get() != Some(generation);
            let mut pipe = redis::pipe();
            if load {
                pipe.cmd("SCRIPT").arg("LOAD").arg(super::stream::APPEND_LUA);
            }
            for o in &batch {
                let bounds = self.stream_bounds(&o.destination);
                super::stream::add_append(
                    &mut pipe,
                    &self.script_sha,
                    &self.shard.keys,
                    &o.destination,
                    &o.channel,
                    &o.payload,
                    bounds,
                );
            }
            let reply = self
                .shard
                .link
                .call(|mut c| async move { pipe.query_async::<Vec<redis::Value>>(&mut c).await });
            match reply.await {
                Ok(replies) => {
                    self.script_loaded.set(Some(generation));
                    self.stats.published.add(batch.len() as u64);
                    let replies = replies.into_iter().skip(usize::from(load));
                    for (o, reply) in batch.into_iter().zip(replies) {
                        self.appended(o, &reply);
                    }
                }
                Err(e) => {
                    // At most once: a failed pipeline may have been partly applied, so it is
                    // not retried; other nodes repair what was applied from the stream, and
                    // this node delivers what waited for its offset without one.
                    log::warn!("relay of {} publications failed: {e}", batch.len());
                    self.script_loaded.set(None);
                    self.stats.publish_errors.add(batch.len() as u64);
                    for p in batch.into_iter().filter_map(|o| o.pending) {
                        self.deliver_without_offset(&p);
                    }
                }
            }
        }
    }

    /// The script's reply for one publication: its offset. A publication that waited for it is
    /// delivered here now, in offset order with the others.
    fn appended(&self, o: Outgoing, reply: &redis::Value) {
        let Some((offset, epoch)) = super::stream::parse_reply(reply) else {
            self.stats.publish_errors.inc();
            if let Some(p) = o.pending {
                self.deliver_without_offset(&p);
            }
            return;
        };
        let destination = o.destination;
        if self.sequencer.borrow().passed(&destination, offset, &epoch) {
            // Its echo came back on pub/sub first and was delivered from there.
            self.stats.echoes_ignored.inc();
            return;
        }
        let watched = self.sequencer.borrow().position(&destination).is_some();
        match o.pending {
            // Nobody here listens in order (no subscriber yet): deliver as is.
            Some(p) if !watched => self.deliver(&self.positioned(p, offset, &epoch)),
            pending => self.arrive(&destination, Arrival { offset, epoch, publication: pending }),
        }
    }

    /// The subscriber task: one pub/sub connection, re-made after any failure, subscribed to
    /// exactly the channels local interest asks for.
    pub(super) async fn run_subscriber(self: Rc<Self>) {
        let config = &self.shard.config;
        let min = Duration::from_millis(config.reconnect_min_ms);
        let max = Duration::from_millis(config.reconnect_max_ms);
        let ping_every = Duration::from_millis(config.heartbeat_ms);
        let timeout = self.shard.link.timeout();
        let mut attempt = 0u32;
        let mut seen = self.shard.link.events();
        loop {
            self.pubsub_up.set(false);
            if attempt > 0 {
                let pause = super::link::backoff(attempt - 1, min, max, super::link::jitter_seed());
                self.shard.link.pause(seen, pause).await;
            }
            attempt = attempt.saturating_add(1);
            // Always on the primary the command link uses; made again when that changes.
            seen = self.shard.link.events();
            let (pubsub, generation) = match self.shard.link.pubsub().await {
                Ok(p) => p,
                Err(_) => continue,
            };
            let (mut sink, mut stream) = pubsub.split();
            let mut subscribed: std::collections::HashSet<String> = std::collections::HashSet::new();
            let mut next_ping = Instant::now() + ping_every;
            'connected: loop {
                // Bring the subscriptions in line with the interest.
                let wanted: std::collections::HashSet<String> =
                    self.wanted.borrow().values().flatten().cloned().collect();
                let add: Vec<&String> = wanted.difference(&subscribed).collect();
                let remove: Vec<&String> = subscribed.difference(&wanted).collect();
                if !add.is_empty() {
                    match tokio::time::timeout(timeout, sink.subscribe(&add)).await {
                        Ok(Ok(())) => {}
                        _ => break 'connected,
                    }
                }
                if !remove.is_empty()
                    && !matches!(tokio::time::timeout(timeout, sink.unsubscribe(&remove)).await, Ok(Ok(())))
                {
                    break 'connected;
                }
                // Where the added destinations' streams stand (all of them on a new link:
                // what was missed while it was down is read back).
                let fresh = subscribed.is_empty();
                let added: Vec<Rc<str>> = {
                    let wanted_by = self.wanted.borrow();
                    wanted_by
                        .iter()
                        .filter(|(_, channels)| fresh || channels.iter().any(|c| add.contains(&c)))
                        .map(|(d, _)| Rc::from(d.as_str()))
                        .collect()
                };
                if !added.is_empty() {
                    let me = self.clone();
                    tokio::task::spawn_local(async move { me.catch_up(added).await });
                }
                subscribed = wanted;
                *self.active.borrow_mut() = subscribed.clone();
                self.active_changed.notify_waiters();
                if !self.pubsub_up.replace(true) {
                    log::info!("redis pub/sub up ({} channels)", subscribed.len());
                }
                attempt = 0;
                loop {
                    tokio::select! {
                        message = stream.next() => match message {
                            Some(m) => self.on_message(m.get_channel_name(), m.get_payload_bytes()),
                            None => break 'connected,
                        },
                        () = self.interest_changed.notified() => continue 'connected,
                        () = self.shard.link.moved_from(generation) => break 'connected,
                        () = tokio::time::sleep_until(next_ping) => {
                            // A silent partition never ends the stream: a ping notices it. (Any
                            // answer will do: once subscribed, Redis answers ["pong", ""].)
                            next_ping = Instant::now() + ping_every;
                            if !matches!(tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await, Ok(Ok(_))) {
                                break 'connected;
                            }
                        }
                    }
                }
            }
            self.active.borrow_mut().clear();
            self.active_changed.notify_waiters();
            self.stats.pubsub_reconnects.inc();
            log::warn!("redis pub/sub connection lost; reconnecting");
        }
    }

    /// Handles one message from Redis.
    fn on_message(&self, channel: &str, payload: &[u8]) {
        let envelope = match Envelope::decode(payload) {
            Ok(e) => e,
            Err(e) => {
                self.stats.bad_envelopes.inc();
                log::debug!("ignoring message on {channel}: {e}");
                return;
            }
        };
        if self.shard.claim.is_held() {
            return; // not in the cluster: another live node has this node's id
        }
        let position = envelope.offset.zip(envelope.sepoch.clone());
        let own = envelope.origin == self.shard.server_id;
        if let Some((offset, epoch)) = &position {
            let passed = self.sequencer.borrow().passed(&envelope.destination, *offset, epoch);
            let delivered =
                envelope.delivered || (own && self.fallback_delivered.borrow().contains(&envelope.id));
            if own && (delivered || passed) {
                // This node's own publication: delivered here already, or by the script's
                // reply; the sequencer only needs to move past it.
                self.stats.echoes_ignored.inc();
                if !passed {
                    let destination = envelope.destination.clone();
                    let epoch = Rc::from(epoch.as_str());
                    self.arrive(&destination, Arrival { offset: *offset, epoch, publication: None });
                }
                return;
            }
        } else if own {
            self.stats.echoes_ignored.inc();
            return;
        }
        let destination = envelope.destination.clone();
        let publication = match envelope.into_publication() {
            Ok(p) => p,
            Err(e) => {
                self.stats.bad_envelopes.inc();
                log::debug!("ignoring message on {channel}: {e}");
                return;
            }
        };
        self.stats.received.inc();
        match position {
            Some((offset, epoch)) => self.arrive(
                &destination,
                Arrival { offset, epoch: Rc::from(epoch), publication: Some(publication) },
            ),
            // From a node that does not number its publications: as it comes.
            None => self.deliver(&publication),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn relay() -> Rc<Relay> {
        let mut config = Config::embedded();
        config.server_id = "me".into();
        // Never connected in this test: the URL is only parsed.
        config.redis_url = Some("redis://127.0.0.1:1".into());
        Relay::new(Rc::new(Shard::new(&config).unwrap()), config.streams.clone())
    }

    fn envelope(origin: &str, offset: u64, epoch: &str) -> Vec<u8> {
        let p = Publication::message(
            Rc::from("/topic/x"),
            Rc::from(format!("{origin}-{offset}")),
            Vec::new(),
            bytes::Bytes::from_static(b"hi"),
        );
        let mut e = Envelope::wrap(origin, 1, 0, &p);
        e.offset = Some(offset);
        e.sepoch = Some(epoch.to_string());
        e.encode()
    }

    #[test]
    fn offsets_tell_duplicates_and_echoes_apart_whatever_the_origin_forgot() {
        let e = relay();
        let ch = "stomp:broadcast:topic:x";
        e.interest("/topic/x", true);
        e.sequencer.borrow_mut().start("/topic/x", Some(Rc::from("e")), 0);
        for offset in [1, 2, 3] {
            e.on_message(ch, &envelope("other", offset, "e"));
        }
        e.on_message(ch, &envelope("other", 3, "e"));
        assert_eq!(e.sequencer.borrow().counts.duplicates, 1);
        // Whatever a sender numbers or forgets, the receiver goes by the stream's offsets:
        // another sender's next message is no duplicate.
        e.on_message(ch, &envelope("third", 4, "e"));
        assert_eq!(e.stats.received.get(), 5);
        assert_eq!(e.sequencer.borrow().position("/topic/x"), Some((Some(Rc::from("e")), 5)));
        e.on_message(ch, &envelope("me", 5, "e"));
        assert_eq!(e.stats.echoes_ignored.get(), 1);
        assert_eq!(e.sequencer.borrow().position("/topic/x"), Some((Some(Rc::from("e")), 6)));
        e.on_message(ch, b"garbage");
        assert_eq!(e.stats.bad_envelopes.get(), 1);
    }
}

/// The most message ids `FallbackDelivered` remembers: a Redis stall long enough to time out
/// more appends than this is past the relay buffer's bounds anyway.
const FALLBACK_REMEMBERED: usize = 4096;

/// A bounded set of message ids, oldest forgotten first.
#[derive(Default)]
struct FallbackDelivered {
    ids: HashSet<Rc<str>>,
    order: VecDeque<Rc<str>>,
}

impl FallbackDelivered {
    fn insert(&mut self, id: Rc<str>) {
        if !self.ids.insert(id.clone()) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > FALLBACK_REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }
}

#[cfg(test)]
mod fallback_tests {
    use super::*;

    #[test]
    fn fallback_ids_are_bounded_and_forget_the_oldest() {
        let mut f = FallbackDelivered::default();
        for i in 0..FALLBACK_REMEMBERED + 10 {
            f.insert(Rc::from(format!("n-{i}")));
        }
        assert!(!f.contains("n-0") && !f.contains("n-9"));
        assert!(f.contains("n-10") && f.contains(&format!("n-{}", FALLBACK_REMEMBERED + 9)));
        assert_eq!(f.order.len(), FALLBACK_REMEMBERED);
    }
}
