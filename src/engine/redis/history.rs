//! The cluster's side of streams: delivering relayed publications in offset order (through the
//! `Sequencer`), reading the stream back to repair a gap or to catch up after the pub/sub link
//! was lost, the head read when interest begins, and `History` for SUBSCRIBE recoveries.
//! The Redis commands themselves are in `stream`.

use std::rc::Rc;
use std::time::Duration;

use redis::Value;

use super::order::{Arrival, Outcome};
use super::relay::{Relay, PAGE};
use super::stream::{self, parse_head, parse_range, Head};
use super::RedisEngine;
use crate::engine::stream::{plan, Append, History, Recovering, Recovery, Since};
use crate::engine::MetricLines;
use crate::hub::{Publication, StreamPosition};

/// How long a gap waits for the missing publications (still in flight on pub/sub, or a
/// script reply of this node) before they are read back from the stream.
const GAP_WAIT: Duration = Duration::from_millis(100);
/// Destinations read in one pipeline by a catch-up.
const CATCH_UP_BATCH: usize = 64;
/// Fewest entries a stream read asks for after reads that timed out (`relay::PAGE` the most).
const MIN_PAGE: usize = 10;
/// A read that failed is tried again this long after (or at once when the link comes back).
const READ_RETRY: Duration = Duration::from_millis(250);

impl Relay {
    /// The stream bounds of a destination: (MAXLEN, key expiry in ms).
    pub(super) fn stream_bounds(&self, destination: &str) -> (usize, u64) {
        if self.streams.is_streamed(destination) {
            // At least the relay's own count, so a board cut off for a while reads back what
            // it missed (clients recover the last `max_messages` only).
            (self.streams.max_messages.max(self.shard.config.relay_buffer_messages), self.streams.max_age_ms)
        } else {
            (self.shard.config.relay_buffer_messages.max(1), self.streams.repair_window_ms)
        }
    }

    /// A publication as delivered here: its position when its destination is streamed.
    pub(super) fn positioned(&self, mut p: Publication, offset: u64, epoch: &Rc<str>) -> Publication {
        p.stream =
            self.streams.is_streamed(&p.destination).then(|| StreamPosition { offset, epoch: epoch.clone() });
        p
    }

    /// Feeds one positioned arrival to the sequencer and delivers what is due.
    pub(super) fn arrive(&self, destination: &str, mut a: Arrival) {
        a.publication = a.publication.map(|p| self.positioned(p, a.offset, &a.epoch));
        let outcome = self.sequencer.borrow_mut().arrive(destination, a);
        self.deliver_outcome(destination, outcome);
    }

    fn deliver_outcome(&self, destination: &str, outcome: Outcome) {
        for p in &outcome.deliver {
            self.deliver(p);
        }
        self.stream_stats.delivered.add(outcome.deliver.len() as u64);
        if outcome.repair.is_some() {
            self.schedule_repair(destination);
        }
    }

    /// After the gap wait, reads the missing offsets back, page by page, trying again while
    /// Redis does not answer; what the stream no longer has is lost (counted once).
    fn schedule_repair(&self, destination: &str) {
        let Some(me) = self.me.upgrade() else { return };
        let destination: Rc<str> = Rc::from(destination);
        if !self.reading.borrow_mut().insert(destination.clone()) {
            return; // a read of this destination is running; it sees this gap too
        }
        tokio::task::spawn_local(async move {
            tokio::time::sleep(GAP_WAIT).await;
            me.read_gaps(&destination).await;
            me.reading.borrow_mut().remove(&destination);
        });
    }

    /// Reads `destination`'s gaps back until there are none (or interest ended).
    async fn read_gaps(&self, destination: &Rc<str>) {
        let mut counted = None;
        loop {
            let Some((from, to)) = self.sequencer.borrow().gap(destination) else { return };
            if counted != Some(from) {
                counted = Some(from);
                self.stream_stats.repairs.inc();
            }
            let count = usize::try_from(to - from + 1).unwrap_or(PAGE).min(self.page.get());
            let Some((head, entries)) = self.read(destination, from, count).await else {
                self.wait_to_read_again().await;
                continue;
            };
            let first = entries.first().map(|(offset, _)| *offset);
            self.feed(destination, &head, entries);
            let same_epoch =
                self.sequencer.borrow().position(destination).is_some_and(|(e, _)| e == head.epoch);
            let gone = match first {
                // The stream starts past the gap (trimmed or expired), or holds nothing.
                Some(first) => first > from,
                None => true,
            };
            if gone && same_epoch && self.sequencer.borrow().gap(destination) == Some((from, to)) {
                let mut outcome = Outcome::default();
                let lost_before = self.sequencer.borrow().counts.lost;
                self.sequencer.borrow_mut().give_up(destination, &mut outcome);
                let lost = self.sequencer.borrow().counts.lost - lost_before;
                if lost > 0 {
                    log::warn!("{lost} publications of {destination} are no longer in the stream");
                }
                self.deliver_outcome(destination, outcome);
            }
        }
    }

    /// Waits before a read is tried again: `READ_RETRY`, or until the link changes.
    async fn wait_to_read_again(&self) {
        let seen = self.shard.link.events();
        self.shard.link.pause(seen, READ_RETRY).await;
    }

    /// Reads a destination's head and its entries from `from` (at most `count`). A read that
    /// times out shrinks the next pages; an answered one grows them back.
    async fn read(&self, destination: &str, from: u64, count: usize) -> Option<(Head, Vec<(u64, Vec<u8>)>)> {
        let mut pipe = redis::pipe();
        stream::add_read(&mut pipe, &self.shard.keys, destination, from, count);
        let values: Vec<Value> =
            match self.shard.link.call(|mut c| async move { pipe.query_async(&mut c).await }).await {
                Ok(values) => {
                    self.page.set((self.page.get() * 2).min(PAGE));
                    values
                }
                Err(e) => {
                    if e == super::link::LinkError::Timeout {
                        self.page.set((count / 4).max(MIN_PAGE));
                    }
                    return None;
                }
            };
        let head = parse_head(values.first()?);
        Some((head, parse_range(values.get(1)?)))
    }

    /// Feeds entries read from the stream to the sequencer, in order.
    fn feed(&self, destination: &str, head: &Head, entries: Vec<(u64, Vec<u8>)>) {
        let Some(epoch) = head.epoch.clone() else { return };
        let (me, instance) = (&self.shard.server_id, self.shard.epoch);
        let arrivals: Vec<Arrival> = entries
            .iter()
            .filter_map(|(offset, payload)| stream::arrival(*offset, &epoch, payload, me, instance))
            .map(|mut a| {
                a.publication = a.publication.map(|p| self.positioned(p, a.offset, &epoch));
                a
            })
            .collect();
        let outcome = self.sequencer.borrow_mut().repaired(destination, arrivals);
        self.deliver_outcome(destination, outcome);
    }

    /// Reads the heads of `destinations` (through `HEAD_LUA`, which replaces an epoch that
    /// lost offsets this node saw), trying again until Redis answers or interest ended.
    async fn heads(&self, destinations: &[Rc<str>]) -> Option<Vec<Head>> {
        loop {
            let mut pipe = redis::pipe();
            for d in destinations {
                let (epoch, next) = self.sequencer.borrow().position(d).unwrap_or((None, 1));
                let (_, ttl) = self.stream_bounds(d);
                pipe.cmd("EVAL")
                    .arg(stream::HEAD_LUA)
                    .arg(2)
                    .arg(stream::data_key(&self.shard.keys, d))
                    .arg(stream::meta_key(&self.shard.keys, d))
                    .arg(ttl)
                    .arg(epoch.as_deref().unwrap_or(""))
                    .arg(next.saturating_sub(1));
            }
            let reply =
                self.shard.link.call(|mut c| async move { pipe.query_async::<Vec<Value>>(&mut c).await });
            if let Ok(values) = reply.await {
                return Some(
                    values
                        .iter()
                        .map(|v| stream::parse_head_script(v).unwrap_or(Head { epoch: None, last: 0 }))
                        .collect(),
                );
            }
            if !destinations.iter().any(|d| self.sequencer.borrow().position(d).is_some() || self.wants(d)) {
                return None;
            }
            self.wait_to_read_again().await;
        }
    }

    /// Interest began on `destinations` (their channels are subscribed), or the pub/sub link
    /// was made again: learn where each stream stands and deliver what this node missed,
    /// page by page, trying again while Redis does not answer.
    pub(super) async fn catch_up(&self, destinations: Vec<Rc<str>>) {
        for chunk in destinations.chunks(CATCH_UP_BATCH) {
            let Some(heads) = self.heads(chunk).await else { continue };
            for (d, head) in chunk.iter().zip(heads) {
                let position = self.sequencer.borrow().position(d);
                match position {
                    None => {
                        // Interest just began: live from here on.
                        let outcome = self.sequencer.borrow_mut().start(d, head.epoch.clone(), head.last);
                        self.deliver_outcome(d, outcome);
                    }
                    Some((epoch, next)) => {
                        let same = epoch.is_some() && epoch == head.epoch;
                        let from = if same { next } else { 1 };
                        if head.epoch.is_none() || head.last < from {
                            continue;
                        }
                        self.stream_stats.catch_ups.inc();
                        self.read_up_to(d, from, head.last).await;
                    }
                }
            }
        }
    }

    /// Reads `destination` from `from` to `last` into the sequencer, page by page.
    async fn read_up_to(&self, destination: &Rc<str>, mut from: u64, last: u64) {
        while from <= last {
            if self.sequencer.borrow().position(destination).is_none() {
                return; // interest ended
            }
            let Some((head, entries)) = self.read(destination, from, self.page.get()).await else {
                self.wait_to_read_again().await;
                continue;
            };
            let Some(&(end, _)) = entries.last() else {
                // Nothing kept from there on (trimmed, or a new epoch): the gap logic counts it.
                self.feed(destination, &head, entries);
                return;
            };
            self.feed(destination, &head, entries);
            from = end + 1;
        }
    }

    /// Reads a recovery: the last `max_messages` kept entries from where `since` asks, with
    /// the RECEIPT's answer. The head comes from `HEAD_LUA`, so the RECEIPT always carries a
    /// real epoch (a stream nobody wrote to yet gets one now).
    async fn recover_from_redis(self: Rc<Self>, destination: Rc<str>, since: Since) -> Recovery {
        if let Some(ready) = self.ready(&destination) {
            ready.await;
        }
        let known = self.sequencer.borrow().position(&destination);
        let fallback = || {
            let (epoch, next) = known.clone().unwrap_or((None, 0));
            Recovery::unavailable(epoch.unwrap_or_else(|| Rc::from("")), next)
        };
        let count = self.streams.max_messages;
        let (epoch_seen, next_seen) = known.clone().unwrap_or((None, 1));
        let (_, ttl) = self.stream_bounds(&destination);
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(stream::HEAD_LUA)
            .arg(2)
            .arg(stream::data_key(&self.shard.keys, &destination))
            .arg(stream::meta_key(&self.shard.keys, &destination))
            .arg(ttl)
            .arg(epoch_seen.as_deref().unwrap_or(""))
            .arg(next_seen.saturating_sub(1));
        if since != Since::Next {
            // The newest `count` entries (clients recover at most `max_messages`), newest first.
            pipe.cmd("XREVRANGE")
                .arg(stream::data_key(&self.shard.keys, &destination))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(count.max(1));
        }
        let read = self
            .shard
            .link
            .call(|mut c| async move { pipe.query_async::<Vec<Value>>(&mut c).await })
            .await
            .ok()
            .and_then(|v| {
                let head = stream::parse_head_script(v.first()?)?;
                let mut entries = v.get(1).map(parse_range).unwrap_or_default();
                entries.reverse();
                Some((head, entries))
            });
        let Some((head, entries)) = read else {
            self.stream_stats.recoveries_failed.inc();
            return fallback();
        };
        let Some(epoch) = head.epoch.clone() else { return fallback() };
        let oldest = crate::board::clock::now_ms().saturating_sub(self.streams.max_age_ms);
        let mut kept: Vec<Publication> = Vec::with_capacity(entries.len());
        // The last entry whose origin gave up publications just before it (`Envelope::dropped`).
        let mut last_dropped: Option<u64> = None;
        for (offset, payload) in &entries {
            let Ok(envelope) = super::envelope::Envelope::decode(payload) else { continue };
            if envelope.at != 0 && envelope.at < oldest {
                continue;
            }
            if envelope.dropped > 0 {
                last_dropped = Some(*offset);
            }
            if let Ok(p) = envelope.into_publication() {
                kept.push(self.positioned(p, *offset, &epoch));
            }
        }
        let next = head.last + 1;
        let first = kept.first().and_then(|p| p.stream.as_ref()).map_or(next, |p| p.offset);
        let (from, recovered) = plan(&since, first, next, &epoch);
        // Publications given up by their origin within what is recovered never reached the
        // stream: the recovery cannot be complete.
        let recovered = recovered && last_dropped.is_none_or(|offset| offset < from);
        kept.retain(|p| p.stream.as_ref().is_some_and(|s| s.offset >= from));
        if since != Since::Next {
            self.stream_stats.recoveries.inc();
            if !recovered {
                self.stream_stats.recoveries_incomplete.inc();
            }
            self.stream_stats.recovered_messages.add(kept.len() as u64);
        }
        Recovery { publications: kept, recovered, next: StreamPosition { offset: next, epoch } }
    }
}

impl History for RedisEngine {
    fn is_streamed(&self, destination: &str) -> bool {
        self.relay.streams.is_streamed(destination)
    }

    fn append(&self, _publication: &mut Publication) -> Append {
        // The offset comes from the append script; the relay's outbox delivers it here, with
        // its offset when Redis answers in time, else without one (`Relay::enqueue`).
        Append::DeliveredByEngine
    }

    fn recover(&self, destination: &str, since: &Since) -> Recovering {
        let relay = self.relay.clone();
        Recovering::Later(Box::pin(relay.recover_from_redis(Rc::from(destination), since.clone())))
    }

    fn metrics(&self) -> (MetricLines, MetricLines) {
        let s = &self.relay.stream_stats;
        let o = self.relay.sequencer.borrow().counts;
        let counters = vec![
            ("stream_delivered_total", s.delivered.get()),
            ("stream_duplicates_ignored_total", o.duplicates),
            ("stream_gap_repairs_total", s.repairs.get()),
            ("stream_lost_total", o.lost),
            ("stream_epoch_changes_total", o.epoch_changes),
            ("stream_catch_ups_total", s.catch_ups.get()),
            ("stream_recoveries_total", s.recoveries.get()),
            ("stream_recoveries_incomplete_total", s.recoveries_incomplete.get()),
            ("stream_recoveries_failed_total", s.recoveries_failed.get()),
            ("stream_recovered_messages_total", s.recovered_messages.get()),
        ];
        (Vec::new(), counters)
    }
}
