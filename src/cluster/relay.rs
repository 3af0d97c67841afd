//! Relaying publications between nodes through Redis Pub/Sub. Out: each publication is
//! wrapped once in an envelope and PUBLISHed once on its channel, pipelined in order by one
//! task; while Redis is away a bounded buffer keeps the newest few seconds. In: one pub/sub
//! connection SUBSCRIBEs only to the channels of destinations that have local subscribers,
//! drops this node's own echoes and duplicates, counts sequence gaps, and delivers to the hub.

use std::rc::Rc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use super::envelope::Envelope;
use super::RedisEngine;
use crate::broker::Publication;
use crate::chat::room::RoomEvent;

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
        let seq = {
            let mut sequences = self.sequences.borrow_mut();
            if sequences.len() >= SEQUENCE_ENTRIES && !sequences.contains_key(&channel) {
                sequences.clear();
            }
            let n = sequences.entry(channel.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let payload = Envelope::wrap(&self.server_id, self.epoch, seq, p).encode();
        let mut outbox = self.outbox.borrow_mut();
        self.expire(&mut outbox);
        if outbox.len() >= self.config.relay_buffer_messages.max(1) && !self.link.is_up() {
            self.stats.relay_dropped.inc();
            return;
        }
        outbox.push_back(Outgoing { channel, payload, queued: Instant::now() });
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
            outbox.pop_front();
            self.stats.relay_dropped.inc();
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
                while outbox.front().is_some_and(|o| o.queued.elapsed() > limit) {
                    outbox.pop_front();
                    self.stats.relay_dropped.inc();
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
            match self.link.call(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await {
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
        let min = Duration::from_millis(self.config.reconnect_min_ms);
        let max = Duration::from_millis(self.config.reconnect_max_ms);
        let ping_every = Duration::from_millis(self.config.heartbeat_ms);
        let timeout = self.link.timeout();
        let mut attempt = 0u32;
        loop {
            self.pubsub_up.set(false);
            if attempt > 0 {
                self.link
                    .pause(super::link::backoff(attempt - 1, min, max, super::link::jitter_seed()))
                    .await;
            }
            attempt = attempt.saturating_add(1);
            // Always on the primary the command link uses; made again when that changes.
            let (pubsub, generation) = match self.link.pubsub().await {
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
                        () = self.link.moved_from(generation) => break 'connected,
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
        if envelope.origin == self.server_id {
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
        if channel.contains(":event:") {
            // Joins and leaves of other nodes carry the room's new count.
            if let Ok(event) = serde_json::from_slice::<RoomEvent>(&publication.body) {
                if let Ok(room) = crate::chat::room::RoomId::try_from(event.room_id.as_str()) {
                    self.counts.borrow_mut().insert(room, event.participant_count);
                }
            }
        }
        self.stats.received.inc();
        if let Some(node) = self.node() {
            node.deliver_remote(&publication);
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

    fn envelope(origin: &str, seq: u64) -> Vec<u8> {
        envelope_of(origin, 1, seq)
    }

    fn envelope_of(origin: &str, epoch: u64, seq: u64) -> Vec<u8> {
        let p = Publication {
            destination: StdRc::from("/topic/x"),
            message_id: StdRc::from(format!("{origin}-{seq}")),
            headers: Vec::new(),
            body: bytes::Bytes::from_static(b"hi"),
        };
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
