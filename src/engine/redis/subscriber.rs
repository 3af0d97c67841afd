//! The pub/sub side of the relay: one connection, re-made after any failure, SUBSCRIBEd to
//! exactly the channels of the destinations this node has local subscribers for; each message
//! in goes to the sequencer (`order`), which delivers each destination in offset order. A ping
//! every heartbeat notices a silent partition; a re-made connection catches every destination
//! up from the streams (`history`).

use std::rc::Rc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use super::envelope::Envelope;
use super::order::Arrival;
use super::relay::Relay;

impl Relay {
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
            if attempt > 0 {
                let pause = super::connect::backoff(attempt - 1, min, max, super::connect::jitter_seed());
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
                    log::debug!("redis pub/sub up ({} channels)", subscribed.len());
                }
                attempt = 0;
                loop {
                    tokio::select! {
                        message = stream.next() => match message {
                            Some(m) => {
                                // Messages flowing prove the connection alive: no ping needed
                                // (on a slow link a PONG would wait behind them and time out).
                                next_ping = Instant::now() + ping_every;
                                self.on_message(m.get_channel_name(), m.get_payload_bytes());
                            }
                            None => break 'connected,
                        },
                        () = self.interest_changed.notified() => continue 'connected,
                        () = self.shard.link.moved_from(generation) => break 'connected,
                        () = tokio::time::sleep_until(next_ping) => {
                            // Quiet for a heartbeat. A silent partition never ends the stream: a
                            // ping notices it. (Any answer will do: once subscribed, Redis
                            // answers ["pong", ""].)
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
            if self.pubsub_up.replace(false) {
                self.pubsub_down_since.set(Some(Instant::now()));
            }
            log::debug!("redis pub/sub connection lost; making a new one");
        }
    }

    /// Handles one message from Redis.
    pub(super) fn on_message(&self, channel: &str, payload: &[u8]) {
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
        if self.appended_here(&envelope) {
            // This process's own publication: the outbox delivers it here, so its echo only
            // moves the offset on, and hands over what is still owed (with the offset it has).
            self.stats.echoes_ignored.inc();
            let Some((offset, epoch)) = position else { return };
            if self.sequencer.borrow().passed(&envelope.destination, offset, &epoch) {
                return;
            }
            let owed = self.outbox.borrow_mut().get_mut(envelope.seq).and_then(|o| {
                let by = o.deliver_by;
                o.pending.take().map(|p| (p, by))
            });
            let (publication, deliver_by) = owed.map_or((None, None), |(p, by)| (Some(p), Some(by)));
            let destination = envelope.destination.clone();
            let epoch = Rc::from(epoch.as_str());
            self.arrive(&destination, Arrival { offset, epoch, publication, deliver_by, dropped_before: 0 });
            return;
        }
        let destination = envelope.destination.clone();
        let dropped_before = envelope.dropped;
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
                Arrival {
                    offset,
                    epoch: Rc::from(epoch),
                    publication: Some(publication),
                    deliver_by: None,
                    dropped_before,
                },
            ),
            // From a node that does not number its publications: as it comes.
            None => self.deliver(&publication),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Publication;

    fn relay() -> Rc<Relay> {
        Relay::unconnected(|_| {})
    }

    fn envelope(origin: &str, offset: u64, epoch: &str) -> Vec<u8> {
        envelope_of(origin, 1, offset, epoch)
    }

    fn envelope_of(origin: &str, instance: u64, offset: u64, epoch: &str) -> Vec<u8> {
        let p = Publication::message(
            Rc::from("/topic/x"),
            Rc::from(format!("{origin}-{offset}")),
            Vec::new(),
            bytes::Bytes::from_static(b"hi"),
        );
        let mut e = Envelope::wrap(origin, instance, 0, &p);
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
        // This process's own echo only moves the offset on (the outbox delivers it here) ...
        e.on_message(ch, &envelope_of("me", e.shard.epoch, 5, "e"));
        assert_eq!(e.stats.echoes_ignored.get(), 1);
        assert_eq!(e.sequencer.borrow().position("/topic/x"), Some((Some(Rc::from("e")), 6)));
        // ... while what an earlier process of the same board appended is delivered like any.
        e.on_message(ch, &envelope_of("me", e.shard.epoch - 1, 6, "e"));
        assert_eq!(e.stats.received.get(), 6);
        assert_eq!(e.sequencer.borrow().position("/topic/x"), Some((Some(Rc::from("e")), 7)));
        e.on_message(ch, b"garbage");
        assert_eq!(e.stats.bad_envelopes.get(), 1);
    }
}
