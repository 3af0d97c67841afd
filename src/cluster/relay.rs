//! Relaying publications between nodes through Redis Pub/Sub. Out: each publication is
//! wrapped once in an envelope and PUBLISHed once on its channel, pipelined in order by one
//! task; while Redis is away a bounded buffer keeps the newest few seconds. In: one pub/sub
//! connection SUBSCRIBEs only to the channels of destinations that have local subscribers,
//! drops this node's own echoes and duplicates, counts sequence gaps, and delivers to the hub.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::{Rc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use super::envelope::Envelope;
use super::shard::Shard;
use crate::broker::Publication;
use crate::engine::{BrokerEventHandler, LocalBoxFuture};
use crate::metrics::Counter;

/// Most publications sent in one pipeline.
const PIPELINE: usize = 256;
/// Bound on the sequence-tracking maps; past it they start afresh (no false gaps: a reset
/// just forgets the last numbers).
const SEQUENCE_ENTRIES: usize = 4096;

/// One publication waiting to be relayed.
pub struct Outgoing {
    channel: String,
    payload: Vec<u8>,
    queued: Instant,
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

/// Publications out and in. Owns the outbox, the interest, the pub/sub state and the
/// sequence tracking; shares only the `Shard`.
pub struct Relay {
    shard: Rc<Shard>,
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
    /// Next sequence number per channel this node publishes on (bounded; reset when full).
    sequences: RefCell<HashMap<String, u64>>,
    /// Last (epoch, sequence) seen per (origin, channel) (bounded; reset when full).
    seen: RefCell<HashMap<(String, String), (u64, u64)>>,
    pub stats: RelayStats,
}

impl Relay {
    pub fn new(shard: Rc<Shard>) -> Relay {
        Relay {
            shard,
            handler: RefCell::new(None),
            pubsub_up: Cell::new(false),
            wanted: RefCell::new(HashMap::new()),
            interest_changed: tokio::sync::Notify::new(),
            active: RefCell::new(HashSet::new()),
            active_changed: tokio::sync::Notify::new(),
            outbox: RefCell::new(VecDeque::new()),
            outbox_ready: tokio::sync::Notify::new(),
            sequences: RefCell::new(HashMap::new()),
            seen: RefCell::new(HashMap::new()),
            stats: RelayStats::default(),
        }
    }

    pub fn set_handler(&self, handler: Weak<dyn BrokerEventHandler>) {
        *self.handler.borrow_mut() = Some(handler);
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
        } else if wanted.remove(destination).is_none() {
            return;
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
    pub fn enqueue(&self, p: &Publication) {
        let Some(channel) = self.shard.keys.publish_channel(p) else { return };
        let seq = {
            let mut sequences = self.sequences.borrow_mut();
            if sequences.len() >= SEQUENCE_ENTRIES && !sequences.contains_key(&channel) {
                sequences.clear();
            }
            let n = sequences.entry(channel.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let payload = Envelope::wrap(&self.shard.server_id, self.shard.epoch, seq, p).encode();
        let mut outbox = self.outbox.borrow_mut();
        self.expire(&mut outbox);
        if outbox.len() >= self.shard.config.relay_buffer_messages.max(1) && !self.shard.link.is_up() {
            self.stats.dropped.inc();
            return;
        }
        outbox.push_back(Outgoing { channel, payload, queued: Instant::now() });
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
            outbox.pop_front();
            self.stats.dropped.inc();
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
                while outbox.front().is_some_and(|o| o.queued.elapsed() > limit) {
                    outbox.pop_front();
                    self.stats.dropped.inc();
                }
                let n = outbox.len().min(PIPELINE);
                outbox.drain(..n).collect()
            };
            if batch.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for o in &batch {
                pipe.publish(&o.channel, &o.payload).ignore();
            }
            match self.shard.link.call(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await {
                Ok(()) => self.stats.published.add(batch.len() as u64),
                Err(e) => {
                    // At most once: a failed pipeline may have been partly applied, so it is
                    // not retried; the receivers see the loss as a sequence gap.
                    log::warn!("relay of {} publications failed: {e}", batch.len());
                    self.stats.publish_errors.add(batch.len() as u64);
                }
            }
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
                // Interest ended: that history is done. (A re-made link keeps it, so what was
                // missed while it was down shows as a gap.)
                self.forget_sequences(&remove);
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

    /// Channels no longer listened to: their sequence history is dropped.
    fn forget_sequences(&self, channels: &[&String]) {
        self.seen.borrow_mut().retain(|(_, channel), _| !channels.contains(&channel));
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
        if envelope.origin == self.shard.server_id {
            // Already delivered here before it was published.
            self.stats.echoes_ignored.inc();
            return;
        }
        {
            let mut seen = self.seen.borrow_mut();
            if seen.len() >= SEQUENCE_ENTRIES {
                seen.clear();
            }
            let key = (envelope.origin.clone(), channel.to_string());
            match seen.get(&key).copied() {
                // Another epoch: the origin restarted and numbers afresh.
                Some((epoch, _)) if epoch != envelope.epoch => {}
                Some((_, last)) if envelope.seq <= last => {
                    self.stats.duplicates_ignored.inc();
                    return;
                }
                Some((_, last)) if envelope.seq > last + 1 => {
                    self.stats.sequence_gaps.add(envelope.seq - last - 1)
                }
                _ => {}
            }
            seen.insert(key, (envelope.epoch, envelope.seq));
        }
        let publication = match envelope.into_publication() {
            Ok(p) => p,
            Err(e) => {
                self.stats.bad_envelopes.inc();
                log::debug!("ignoring message on {channel}: {e}");
                return;
            }
        };
        self.stats.received.inc();
        let handler = self.handler.borrow().as_ref().and_then(Weak::upgrade);
        if let Some(handler) = handler {
            handler.handle_publication(&publication);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::rc::Rc as StdRc;

    fn engine() -> Relay {
        let mut config = Config::embedded();
        config.server_id = "me".into();
        // Never connected in this test: the URL is only parsed.
        config.redis_url = Some("redis://127.0.0.1:1".into());
        Relay::new(Rc::new(Shard::new(&config).unwrap()))
    }

    fn envelope(origin: &str, seq: u64) -> Vec<u8> {
        envelope_of(origin, 1, seq)
    }

    fn envelope_of(origin: &str, epoch: u64, seq: u64) -> Vec<u8> {
        let p = Publication::message(
            StdRc::from("/topic/x"),
            StdRc::from(format!("{origin}-{seq}")),
            Vec::new(),
            bytes::Bytes::from_static(b"hi"),
        );
        Envelope::wrap(origin, epoch, seq, &p).encode()
    }

    #[test]
    fn gaps_duplicates_echoes_and_restarts_are_told_apart() {
        let e = engine();
        let ch = "stomp:broadcast:topic:x";
        for seq in [1, 2, 5] {
            e.on_message(ch, &envelope("other", seq));
        }
        assert_eq!(e.stats.sequence_gaps.get(), 2, "3 and 4 were lost");
        e.on_message(ch, &envelope("other", 5));
        e.on_message(ch, &envelope("other", 4));
        assert_eq!(e.stats.duplicates_ignored.get(), 2);
        e.on_message(ch, &envelope("me", 9));
        assert_eq!(e.stats.echoes_ignored.get(), 1);
        // The origin restarted (a new epoch): its numbers begin again, and even if its first
        // message was missed the next ones are no duplicates.
        e.on_message(ch, &envelope_of("other", 2, 2));
        e.on_message(ch, &envelope_of("other", 2, 3));
        assert_eq!(e.stats.received.get(), 5);
        assert_eq!(e.stats.duplicates_ignored.get(), 2);
        e.on_message(ch, b"garbage");
        assert_eq!(e.stats.bad_envelopes.get(), 1);
        // History survives a re-made link and is dropped only when interest ends.
        e.forget_sequences(&[&ch.to_string()]);
        e.on_message(ch, &envelope("other", 7));
        assert_eq!(e.stats.sequence_gaps.get(), 2);
    }
}
