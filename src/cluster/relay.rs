//! Relaying publications between nodes through Redis. Out: each publication is wrapped once in
//! an envelope and appended to its destination's stream by one script call that also
//! PUBLISHes it (see `stream`), pipelined in order by one task; while Redis is away a bounded
//! buffer keeps the newest few seconds. In: one pub/sub connection SUBSCRIBEs only to the
//! channels of destinations that have local subscribers; every publication carries its offset,
//! and `order` delivers each destination in offset order, once each, reading gaps back from
//! the stream. After the pub/sub link is made again every destination served here catches up.

use std::rc::Rc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use super::envelope::Envelope;
use super::order::Arrival;
use super::RedisEngine;
use crate::broker::Publication;
use crate::chat::room::RoomEvent;

/// Most publications sent in one pipeline.
const PIPELINE: usize = 256;
/// One publication waiting to be relayed.
pub struct Outgoing {
    channel: String,
    destination: std::rc::Rc<str>,
    payload: Vec<u8>,
    queued: Instant,
    /// The publication itself when this node delivers it only once it has its offset.
    pending: Option<Publication>,
}

/// The room event type of a `/topic/room/**` publication, read from its JSON body.
fn event_type(p: &Publication) -> Option<&'static str> {
    if !p.destination.starts_with("/topic/room/") {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(rename = "type", borrow)]
        kind: &'a str,
    }
    match serde_json::from_slice::<Kind>(&p.body).ok()?.kind {
        "JOIN" => Some("JOIN"),
        "LEAVE" => Some("LEAVE"),
        "CHAT" => Some("CHAT"),
        _ => None,
    }
}

impl RedisEngine {
    /// Queues a publication for the other nodes (never waits).
    pub(super) fn enqueue(&self, p: &Publication) {
        let event = event_type(p);
        let Some(channel) = self.keys.publish_channel(&p.destination, event) else { return };
        if !self.link.is_up() && matches!(event, Some("JOIN" | "LEAVE")) {
            // Membership changes made while Redis is away reach the others through the
            // resync, as the net change; relaying them too would announce them twice.
            self.stats.relay_deferred.inc();
            return;
        }
        // Same test as `History::append` in the same step: with Redis up a streamed
        // publication is delivered here once it has its offset; otherwise it was delivered.
        let pending = (self.streams.is_streamed(&p.destination) && self.link.is_up()).then(|| p.clone());
        let mut envelope = Envelope::wrap(&self.server_id, self.epoch, 0, p);
        envelope.delivered = pending.is_none();
        let payload = envelope.encode();
        let mut outbox = self.outbox.borrow_mut();
        self.expire(&mut outbox);
        if outbox.len() >= self.config.relay_buffer_messages.max(1) && !self.link.is_up() {
            self.stats.relay_dropped.inc();
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
        if self.link.is_up() {
            return;
        }
        let limit = Duration::from_millis(self.config.relay_buffer_ms);
        while outbox.front().is_some_and(|o| o.queued.elapsed() > limit) {
            if let Some(o) = outbox.pop_front() {
                self.not_relayed(o);
            }
        }
    }

    /// A publication that will not reach Redis: counted, and delivered here if it was waiting
    /// for its offset (accepted is never silently lost on its own node).
    fn not_relayed(&self, o: Outgoing) {
        self.stats.relay_dropped.inc();
        if let (Some(p), Some(node)) = (o.pending, self.node()) {
            node.deliver_remote(&p);
        }
    }

    /// The publisher task: sends the outbox in order, a pipeline of PUBLISH at a time.
    pub(super) async fn run_publisher(self: Rc<Self>) {
        loop {
            let empty = self.outbox.borrow().is_empty();
            if empty || !self.link.is_up() {
                self.outbox_ready.notified().await;
                continue;
            }
            let batch: Vec<Outgoing> = {
                let mut outbox = self.outbox.borrow_mut();
                let limit = Duration::from_millis(self.config.relay_buffer_ms);
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
            let generation = self.link.stats.reconnects.get();
            let load = self.script_loaded.get() != Some(generation);
            let mut pipe = redis::pipe();
            if load {
                pipe.cmd("SCRIPT").arg("LOAD").arg(super::stream::APPEND_LUA);
            }
            for o in &batch {
                let (max_len, ttl_ms) = self.stream_bounds(&o.destination);
                super::stream::add_append(
                    &mut pipe,
                    &self.script_sha,
                    &self.keys,
                    &o.destination,
                    &o.channel,
                    &o.payload,
                    (max_len, ttl_ms),
                );
            }
            match self
                .link
                .call(|mut c| async move { pipe.query_async::<Vec<redis::Value>>(&mut c).await })
                .await
            {
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
                    if let Some(node) = self.node() {
                        for p in batch.into_iter().filter_map(|o| o.pending) {
                            node.deliver_remote(&p);
                        }
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
            if let (Some(p), Some(node)) = (o.pending, self.node()) {
                node.deliver_remote(&p);
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
            Some(p) if !watched => {
                // Nobody here listens in order (no subscriber): deliver as is.
                if let Some(node) = self.node() {
                    node.deliver_remote(&p);
                }
            }
            pending => self.arrive(&destination, Arrival { offset, epoch, publication: pending }),
        }
    }

    /// The subscriber task: one pub/sub connection, re-made after any failure, subscribed to
    /// exactly the channels local interest asks for.
    pub(super) async fn run_subscriber(self: Rc<Self>) {
        let min = Duration::from_millis(self.config.reconnect_min_ms);
        let max = Duration::from_millis(self.config.reconnect_max_ms);
        let ping_every = Duration::from_millis(self.config.heartbeat_ms);
        let timeout = self.link.timeout();
        let mut attempt = 0u32;
        loop {
            self.pubsub_up.set(false);
            if attempt > 0 {
                tokio::time::sleep(super::link::backoff(attempt - 1, min, max, super::link::jitter_seed()))
                    .await;
            }
            attempt = attempt.saturating_add(1);
            let pubsub = match tokio::time::timeout(timeout, self.link.client().get_async_pubsub()).await {
                Ok(Ok(p)) => p,
                _ => continue,
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
                let added: Vec<std::rc::Rc<str>> = {
                    let wanted_by = self.wanted.borrow();
                    wanted_by
                        .iter()
                        .filter(|(_, channels)| fresh || channels.iter().any(|c| add.contains(&c)))
                        .map(|(d, _)| std::rc::Rc::from(d.as_str()))
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
        let position = envelope.offset.zip(envelope.sepoch.clone());
        let own = envelope.origin == self.server_id;
        if let Some((offset, epoch)) = &position {
            if own
                && (envelope.delivered
                    || self.sequencer.borrow().passed(&envelope.destination, *offset, epoch))
            {
                // This node's own publication: delivered here already, or by the script's
                // reply; the sequencer only needs to move past it.
                self.stats.echoes_ignored.inc();
                if !self.sequencer.borrow().passed(&envelope.destination, *offset, epoch) {
                    let destination = envelope.destination.clone();
                    self.arrive(
                        &destination,
                        Arrival {
                            offset: *offset,
                            epoch: std::rc::Rc::from(epoch.as_str()),
                            publication: None,
                        },
                    );
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
        if channel.contains(":event:") {
            // Joins and leaves of other nodes carry the room's new count.
            if let Ok(event) = serde_json::from_slice::<RoomEvent>(&publication.body) {
                if let Ok(room) = crate::chat::room::RoomId::try_from(event.room_id.as_str()) {
                    self.counts.borrow_mut().insert(room, event.participant_count);
                }
            }
        }
        self.stats.received.inc();
        match position {
            Some((offset, epoch)) => self.arrive(
                &destination,
                Arrival { offset, epoch: std::rc::Rc::from(epoch), publication: Some(publication) },
            ),
            // From a node that does not number its publications: as it comes.
            None => {
                if let Some(node) = self.node() {
                    node.deliver_remote(&publication);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::rc::Rc as StdRc;

    fn engine() -> StdRc<RedisEngine> {
        let mut config = Config::embedded();
        config.server_id = "me".into();
        // Never connected in this test: the URL is only parsed.
        config.redis_url = Some("redis://127.0.0.1:1".into());
        RedisEngine::new(&config).unwrap()
    }

    fn envelope(origin: &str, offset: u64, epoch: &str) -> Vec<u8> {
        let p = Publication {
            destination: StdRc::from("/topic/x"),
            message_id: StdRc::from(format!("{origin}-{offset}")),
            headers: Vec::new(),
            body: bytes::Bytes::from_static(b"hi"),
            stream: None,
        };
        let mut e = Envelope::wrap(origin, 1, 0, &p);
        e.offset = Some(offset);
        e.sepoch = Some(epoch.to_string());
        e.encode()
    }

    #[test]
    fn offsets_tell_duplicates_and_echoes_apart_whatever_the_origin_forgot() {
        let e = engine();
        let ch = "stomp:broadcast:topic:x";
        crate::engine::Broker::interest(&*e, "/topic/x", true);
        e.sequencer.borrow_mut().start("/topic/x", Some(StdRc::from("e")), 0);
        for offset in [1, 2, 3] {
            e.on_message(ch, &envelope("other", offset, "e"));
        }
        e.on_message(ch, &envelope("other", 3, "e"));
        assert_eq!(e.sequencer.borrow().counts.duplicates, 1);
        // Whatever a sender numbers or forgets, the receiver goes by the stream's offsets:
        // another sender's next message is no duplicate.
        e.on_message(ch, &envelope("third", 4, "e"));
        assert_eq!(e.stats.received.get(), 5);
        assert_eq!(e.sequencer.borrow().position("/topic/x"), Some((Some(StdRc::from("e")), 5)));
        e.on_message(ch, &envelope("me", 5, "e"));
        assert_eq!(e.stats.echoes_ignored.get(), 1);
        assert_eq!(e.sequencer.borrow().position("/topic/x"), Some((Some(StdRc::from("e")), 6)));
        e.on_message(ch, b"garbage");
        assert_eq!(e.stats.bad_envelopes.get(), 1);
    }
}
