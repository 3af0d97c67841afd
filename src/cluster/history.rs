//! The cluster's side of streams: delivering relayed publications in offset order (through the
//! `Sequencer`), reading the stream back to repair a gap or to catch up after the pub/sub link
//! was lost, the head read when interest begins, and `History` for SUBSCRIBE recoveries.
//! The Redis commands themselves are in `stream`.

use std::rc::Rc;
use std::time::Duration;

use redis::Value;

use super::order::{Arrival, Outcome};
use super::relay::Relay;
use super::stream::{self, parse_head, parse_range, Head};
use super::RedisEngine;
use crate::broker::{Publication, StreamPosition};
use crate::engine::stream::{plan, Append, History, Recovering, Recovery, Since};
use crate::engine::MetricLines;

/// How long a gap waits for the missing publications (still in flight on pub/sub, or a
/// script reply of this node) before they are read back from the stream.
const GAP_WAIT: Duration = Duration::from_millis(100);
/// Destinations read in one pipeline by a catch-up.
const CATCH_UP_BATCH: usize = 64;
/// A catch-up's reads are tried this many times, this far apart (about 10 s in all).
const CATCH_UP_TRIES: u32 = 40;
const CATCH_UP_RETRY: Duration = Duration::from_millis(250);

impl Relay {
    /// The stream bounds of a destination: (MAXLEN, key expiry in ms).
    pub(super) fn stream_bounds(&self, destination: &str) -> (usize, u64) {
        if self.streams.is_streamed(destination) {
            (self.streams.max_messages, self.streams.max_age_ms)
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

    /// After the gap wait, reads the missing offsets back; what is still missing is lost.
    fn schedule_repair(&self, destination: &str) {
        let Some(me) = self.me.upgrade() else { return };
        let destination: Rc<str> = Rc::from(destination);
        tokio::task::spawn_local(async move {
            tokio::time::sleep(GAP_WAIT).await;
            let Some((from, to)) = me.sequencer.borrow().gap(&destination) else { return };
            me.sequencer.borrow_mut().counts.gapped += to - from + 1;
            me.stream_stats.repairs.inc();
            let count = usize::try_from(to.saturating_sub(from) + 1).unwrap_or(usize::MAX).min(10_000);
            if let Some((head, entries)) = me.read(&destination, from, count).await {
                me.feed(&destination, &head, entries);
            }
            let mut outcome = Outcome::default();
            let lost_before = me.sequencer.borrow().counts.lost;
            me.sequencer.borrow_mut().give_up(&destination, &mut outcome);
            let lost = me.sequencer.borrow().counts.lost - lost_before;
            if lost > 0 {
                log::warn!("{lost} publications of {destination} could not be read back from the stream");
            }
            me.deliver_outcome(&destination, outcome);
        });
    }

    /// Reads a destination's head and its entries from `from` (at most `count`).
    async fn read(&self, destination: &str, from: u64, count: usize) -> Option<(Head, Vec<(u64, Vec<u8>)>)> {
        let mut pipe = redis::pipe();
        stream::add_read(&mut pipe, &self.shard.keys, destination, from, count);
        let values: Vec<Value> =
            self.shard.link.call(|mut c| async move { pipe.query_async(&mut c).await }).await.ok()?;
        let head = parse_head(values.first()?);
        Some((head, parse_range(values.get(1)?)))
    }

    /// Feeds entries read from the stream to the sequencer, in order.
    fn feed(&self, destination: &str, head: &Head, entries: Vec<(u64, Vec<u8>)>) {
        let Some(epoch) = head.epoch.clone() else { return };
        let arrivals: Vec<Arrival> = entries
            .iter()
            .filter_map(|(offset, payload)| stream::arrival(*offset, &epoch, payload, &self.shard.server_id))
            .map(|mut a| {
                // Delivered here already, without an offset, when its append timed out.
                if a.publication.as_ref().is_some_and(|p| self.delivered_without_offset(&p.message_id)) {
                    a.publication = None;
                }
                a.publication = a.publication.map(|p| self.positioned(p, a.offset, &epoch));
                a
            })
            .collect();
        let outcome = self.sequencer.borrow_mut().repaired(destination, arrivals);
        self.deliver_outcome(destination, outcome);
    }

    /// Interest began on `destinations` (their channels are subscribed), or the pub/sub link
    /// was made again: learn where each stream stands and deliver what this node missed.
    pub(super) async fn catch_up(&self, destinations: Vec<Rc<str>>) {
        for chunk in destinations.chunks(CATCH_UP_BATCH) {
            let mut pipe = redis::pipe();
            for d in chunk {
                pipe.cmd("HMGET").arg(stream::meta_key(&self.shard.keys, d)).arg("epoch").arg("offset");
            }
            // The pub/sub link may be back before the command link: wait for it (bounded), or
            // what was appended meanwhile would never be read back.
            let mut heads = None;
            for _ in 0..CATCH_UP_TRIES {
                let pipe = pipe.clone();
                match self
                    .shard
                    .link
                    .call(|mut c| async move { pipe.query_async::<Vec<Value>>(&mut c).await })
                    .await
                {
                    Ok(h) => {
                        heads = Some(h);
                        break;
                    }
                    Err(_) => tokio::time::sleep(CATCH_UP_RETRY).await,
                }
            }
            let Some(heads) = heads else {
                log::warn!("catch-up of {} destinations gave up: Redis did not answer", chunk.len());
                return;
            };
            for (d, head) in chunk.iter().zip(heads.iter().map(parse_head)) {
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
                        let (max, _) = self.stream_bounds(d);
                        for _ in 0..CATCH_UP_TRIES {
                            if let Some((head, entries)) = self.read(d, from, max).await {
                                self.feed(d, &head, entries);
                                break;
                            }
                            tokio::time::sleep(CATCH_UP_RETRY).await;
                        }
                    }
                }
            }
        }
    }

    /// Reads a recovery: kept entries from where `since` asks, with the RECEIPT's answer.
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
        let from = match since {
            Since::Next => u64::MAX,
            _ => 1,
        };
        let read = if from == u64::MAX {
            let mut pipe = redis::pipe();
            pipe.cmd("HMGET")
                .arg(stream::meta_key(&self.shard.keys, &destination))
                .arg("epoch")
                .arg("offset");
            self.shard
                .link
                .call(|mut c| async move { pipe.query_async::<Vec<Value>>(&mut c).await })
                .await
                .ok()
                .and_then(|v| v.first().map(parse_head))
                .map(|head| (head, Vec::new()))
        } else {
            self.read(&destination, from, count).await
        };
        let Some((head, entries)) = read else {
            self.stream_stats.recoveries_failed.inc();
            return fallback();
        };
        let Some(epoch) = head.epoch.clone() else {
            // No stream yet: an empty one; its first message will be offset 1.
            let (_, recovered) = plan(&since, 1, 1, "");
            return Recovery {
                publications: Vec::new(),
                recovered,
                next: StreamPosition { offset: 1, epoch: Rc::from("") },
            };
        };
        let oldest = crate::board::clock::now_ms().saturating_sub(self.streams.max_age_ms);
        let mut kept: Vec<Publication> = Vec::with_capacity(entries.len());
        for (offset, payload) in &entries {
            let Ok(envelope) = super::envelope::Envelope::decode(payload) else { continue };
            if envelope.at != 0 && envelope.at < oldest {
                continue;
            }
            if let Ok(p) = envelope.into_publication() {
                kept.push(self.positioned(p, *offset, &epoch));
            }
        }
        let next = head.last + 1;
        let first = kept.first().and_then(|p| p.stream.as_ref()).map_or(next, |p| p.offset);
        let (from, recovered) = plan(&since, first, next, &epoch);
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
        // With Redis up the offset comes from the append script and the relay delivers it
        // here in offset order; without it, at once and without a position (see `stream`).
        if self.shard.link.is_up() {
            Append::DeliveredByEngine
        } else {
            Append::DeliverNow
        }
    }

    fn recover(&self, destination: &str, since: &Since) -> Recovering {
        let relay = self.relay.clone();
        Recovering::Later(Box::pin(relay.recover_from_redis(Rc::from(destination), since.clone())))
    }

    fn metrics(&self) -> (MetricLines, MetricLines) {
        let s = &self.relay.stream_stats;
        let o = self.relay.sequencer.borrow().counts;
        let counters = vec![
            (
                "stream_delivered_total",
                "Relayed publications delivered here in offset order.",
                s.delivered.get(),
            ),
            (
                "stream_duplicates_ignored_total",
                "Publications seen twice (same offset) and delivered once.",
                o.duplicates,
            ),
            ("stream_gap_repairs_total", "Offset gaps read back from the Redis stream.", s.repairs.get()),
            (
                "stream_lost_total",
                "Publications missing from an offset gap that the stream no longer had (trimmed or expired).",
                o.lost,
            ),
            (
                "stream_epoch_changes_total",
                "Times a destination's history was lost (new epoch).",
                o.epoch_changes,
            ),
            (
                "stream_catch_ups_total",
                "Destinations read back after the pub/sub link was made again.",
                s.catch_ups.get(),
            ),
            (
                "stream_recoveries_total",
                "SUBSCRIBEs that read a history (x-stream-offset).",
                s.recoveries.get(),
            ),
            (
                "stream_recoveries_incomplete_total",
                "Recoveries answered x-stream-recovered:false (messages gone or epoch changed).",
                s.recoveries_incomplete.get(),
            ),
            (
                "stream_recoveries_failed_total",
                "Recoveries that could not read Redis.",
                s.recoveries_failed.get(),
            ),
            (
                "stream_recovered_messages_total",
                "Kept messages sent by recoveries.",
                s.recovered_messages.get(),
            ),
        ];
        (Vec::new(), counters)
    }
}
