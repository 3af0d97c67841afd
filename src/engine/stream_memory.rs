//! The memory streams: each streamed destination's history as a ring on this node, for a node
//! alone (local mode). Bounded three ways: `max_messages` per destination, `max_age_ms`, and
//! `max_memory_bytes` for the whole node (past it the node's oldest kept message goes first),
//! plus `max_streams` destinations. Guarantee: what this process kept; a restart loses it, so
//! the epoch is the process's start time (and a forgotten stream that comes back gets a new
//! one), and a client that recovers across a restart is told so.
//!
//! The kept bytes are charged to the memory budget (`crate::board::memory`, one charge for the
//! store). History gives way to live traffic: while the account is over its held mark (3/4 of
//! the budget) the node's oldest kept messages are dropped, on every append and sweep and when
//! the node is short of memory, and a transaction's SEND may `reclaim` them. A publication is
//! never refused for its history: it is delivered live whatever is kept.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::rc::Rc;

use super::stream::{plan, Append, History, Recovering, Recovery, Since};
use super::MetricLines;
use crate::board::memory::{self, Charge};
use crate::config::StreamsConfig;
use crate::hub::{Publication, StreamPosition};
use crate::observability::metrics::Counter;

pub struct MemoryStreams {
    config: StreamsConfig,
    streams: RefCell<HashMap<Rc<str>, Ring>>,
    /// Each non-empty ring's oldest entry as (appended at, in ms; destination): the node's
    /// oldest kept message is the first, found without a scan of the streams however many
    /// are evicted at once.
    fronts: RefCell<BTreeSet<(u64, Rc<str>)>>,
    /// Bytes of every kept message of this node (bounded by `max_memory_bytes`).
    bytes: Cell<usize>,
    /// `bytes` on the memory budget.
    charge: RefCell<Charge>,
    /// This process's start (ms, base 36): part of every epoch, so a restart changes them all.
    boot: String,
    /// Streams forgotten so far: part of the epoch, so a re-created stream gets a new one.
    generation: Cell<u64>,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    appended: Counter,
    trimmed: Counter,
    evicted_memory: Counter,
    forgotten: Counter,
    recoveries: Counter,
    recoveries_incomplete: Counter,
    recovered_messages: Counter,
}

/// One destination's history.
struct Ring {
    epoch: Rc<str>,
    /// The offset the next message gets.
    next: u64,
    entries: VecDeque<Entry>,
    /// When the last message was appended (ms): the stream written to longest ago is
    /// forgotten first when `max_streams` is reached.
    last_append_ms: u64,
}

struct Entry {
    at_ms: u64,
    bytes: usize,
    publication: Publication,
}

impl Ring {
    /// The first kept offset (== `next` when nothing is kept).
    fn first(&self) -> u64 {
        self.entries.front().and_then(|e| e.publication.stream.as_ref()).map_or(self.next, |p| p.offset)
    }
}

impl MemoryStreams {
    pub fn new(config: StreamsConfig) -> MemoryStreams {
        MemoryStreams::with_clock_start(config, crate::board::clock::now_ms())
    }

    fn with_clock_start(config: StreamsConfig, start_ms: u64) -> MemoryStreams {
        MemoryStreams {
            config,
            streams: RefCell::new(HashMap::new()),
            fronts: RefCell::new(BTreeSet::new()),
            bytes: Cell::new(0),
            charge: RefCell::new(Charge::new()),
            boot: base36(start_ms),
            generation: Cell::new(0),
            stats: Stats::default(),
        }
    }

    /// Drops the front of `ring` while it is over the count or too old.
    fn trim(&self, key: &Rc<str>, ring: &mut Ring, now_ms: u64) {
        let oldest = now_ms.saturating_sub(self.config.max_age_ms);
        while ring.entries.len() > self.config.max_messages
            || ring.entries.front().is_some_and(|e| e.at_ms < oldest)
        {
            if self.pop_front(key, ring).is_some() {
                self.stats.trimmed.inc();
            }
        }
    }

    /// Appends an entry to `key`'s ring, keeping the bytes and the fronts index.
    fn push_back(&self, key: &Rc<str>, ring: &mut Ring, entry: Entry) {
        if ring.entries.is_empty() {
            self.fronts.borrow_mut().insert((entry.at_ms, key.clone()));
        }
        self.set_bytes(self.bytes.get() + entry.bytes);
        ring.entries.push_back(entry);
    }

    /// Drops the oldest entry of `key`'s ring, keeping the bytes and the fronts index.
    fn pop_front(&self, key: &Rc<str>, ring: &mut Ring) -> Option<Entry> {
        let e = ring.entries.pop_front()?;
        let mut fronts = self.fronts.borrow_mut();
        fronts.remove(&(e.at_ms, key.clone()));
        if let Some(next) = ring.entries.front() {
            fronts.insert((next.at_ms, key.clone()));
        }
        self.set_bytes(self.bytes.get().saturating_sub(e.bytes));
        Some(e)
    }

    /// The kept bytes are `bytes` now: the gauge and the budget's charge move together.
    fn set_bytes(&self, bytes: usize) {
        self.bytes.set(bytes);
        self.charge.borrow_mut().set(bytes);
    }

    /// Frees memory past `max_memory_bytes`, and while the memory budget is over its held
    /// mark: the oldest kept message of the node goes first.
    fn evict_for_memory(&self, streams: &mut HashMap<Rc<str>, Ring>) {
        while self.bytes.get() > self.config.max_memory_bytes
            || (self.bytes.get() > 0 && memory::used() >= memory::held_mark())
        {
            if self.evict_oldest(streams).is_none() {
                return;
            }
        }
    }

    /// Drops the node's oldest kept message (counted); returns its bytes, None when nothing
    /// is kept.
    fn evict_oldest(&self, streams: &mut HashMap<Rc<str>, Ring>) -> Option<usize> {
        loop {
            let (at, key) = self.fronts.borrow().first().cloned()?;
            let Some(ring) = streams.get_mut(&key) else {
                // Not expected (every change of a front goes through the index): drop it.
                self.fronts.borrow_mut().remove(&(at, key));
                continue;
            };
            let e = self.pop_front(&key, ring)?;
            self.stats.evicted_memory.inc();
            return Some(e.bytes);
        }
    }

    /// Makes room for one more stream: forgets the one written to longest ago.
    fn forget_one(&self, streams: &mut HashMap<Rc<str>, Ring>) {
        let Some(key) = streams.iter().min_by_key(|(_, r)| r.last_append_ms).map(|(k, _)| k.clone()) else {
            return;
        };
        if let Some(ring) = streams.remove(&key) {
            if let Some(front) = ring.entries.front() {
                self.fronts.borrow_mut().remove(&(front.at_ms, key.clone()));
            }
            let freed: usize = ring.entries.iter().map(|e| e.bytes).sum();
            self.set_bytes(self.bytes.get().saturating_sub(freed));
            self.stats.forgotten.inc();
            self.generation.set(self.generation.get() + 1);
        }
    }

    /// The epoch a stream created now gets: the process start, and how many streams were
    /// forgotten before (a forgotten stream that comes back numbers from 1 on a new epoch).
    fn epoch(&self) -> Rc<str> {
        Rc::from(format!("{}-{}", self.boot, base36(self.generation.get())))
    }

    fn append_at(&self, publication: &mut Publication, now_ms: u64) {
        let mut streams = self.streams.borrow_mut();
        if !streams.contains_key(&*publication.destination) && streams.len() >= self.config.max_streams {
            self.forget_one(&mut streams);
        }
        let key = publication.destination.clone();
        let ring = match streams.get_mut(&key) {
            Some(ring) => ring,
            None => {
                let ring = Ring { epoch: self.epoch(), next: 1, entries: VecDeque::new(), last_append_ms: 0 };
                streams.entry(key.clone()).or_insert(ring)
            }
        };
        publication.stream = Some(StreamPosition { offset: ring.next, epoch: ring.epoch.clone() });
        ring.next += 1;
        ring.last_append_ms = now_ms;
        let bytes = publication.kept_cost();
        self.push_back(&key, ring, Entry { at_ms: now_ms, bytes, publication: publication.clone() });
        self.trim(&key, ring, now_ms);
        self.evict_for_memory(&mut streams);
        self.stats.appended.inc();
    }

    fn recover_at(&self, destination: &str, since: &Since, now_ms: u64) -> Recovery {
        let mut streams = self.streams.borrow_mut();
        let Some(ring) = streams.get_mut(destination) else {
            drop(streams);
            return self.recover_fresh(since);
        };
        self.trim(&Rc::from(destination), ring, now_ms);
        let (from, recovered) = plan(since, ring.first(), ring.next, &ring.epoch);
        let publications: Vec<Publication> = ring
            .entries
            .iter()
            .filter(|e| e.publication.stream.as_ref().is_some_and(|p| p.offset >= from))
            .map(|e| e.publication.clone())
            .collect();
        let next = StreamPosition { offset: ring.next, epoch: ring.epoch.clone() };
        self.count_recovery(since, recovered, publications.len());
        Recovery { publications, recovered, next }
    }

    /// A recovery on a destination with no history here: an empty stream. Nothing is stored,
    /// so subscribing cannot push real histories out; the epoch is the one its first message
    /// will get (unless a stream is forgotten meanwhile, and then the client is told).
    fn recover_fresh(&self, since: &Since) -> Recovery {
        let epoch = self.epoch();
        let (_, recovered) = plan(since, 1, 1, &epoch);
        self.count_recovery(since, recovered, 0);
        Recovery { publications: Vec::new(), recovered, next: StreamPosition { offset: 1, epoch } }
    }

    fn count_recovery(&self, since: &Since, recovered: bool, messages: usize) {
        if *since == Since::Next {
            return;
        }
        self.stats.recoveries.inc();
        if !recovered {
            self.stats.recoveries_incomplete.inc();
        }
        self.stats.recovered_messages.add(messages as u64);
    }

    fn sweep_at(&self, now_ms: u64) {
        let mut streams = self.streams.borrow_mut();
        for (key, ring) in streams.iter_mut() {
            self.trim(key, ring, now_ms);
        }
        self.evict_for_memory(&mut streams);
    }

    fn message_count(&self) -> usize {
        self.streams.borrow().values().map(|r| r.entries.len()).sum()
    }
}

impl History for MemoryStreams {
    fn is_streamed(&self, destination: &str) -> bool {
        self.config.is_streamed(destination)
    }

    fn append(&self, publication: &mut Publication) -> Append {
        self.append_at(publication, crate::board::clock::now_ms());
        Append::DeliverNow
    }

    fn recover(&self, destination: &str, since: &Since) -> Recovering {
        Recovering::Now(self.recover_at(destination, since, crate::board::clock::now_ms()))
    }

    fn sweep(&self) {
        self.sweep_at(crate::board::clock::now_ms());
    }

    fn reclaim(&self, bytes: usize) -> usize {
        let mut streams = self.streams.borrow_mut();
        let mut freed = 0;
        while freed < bytes {
            match self.evict_oldest(&mut streams) {
                Some(b) => freed += b,
                None => break,
            }
        }
        freed
    }

    fn metrics(&self) -> (MetricLines, MetricLines) {
        stream_metrics(
            self.streams.borrow().len() as u64,
            self.message_count() as u64,
            self.bytes.get() as u64,
            &self.stats,
        )
    }
}

fn stream_metrics(streams: u64, messages: u64, bytes: u64, s: &Stats) -> (MetricLines, MetricLines) {
    let gauges = vec![
        ("streams_current", streams),
        ("stream_messages_current", messages),
        ("stream_bytes_current", bytes),
    ];
    let counters = vec![
        ("stream_appended_total", s.appended.get()),
        ("stream_trimmed_total", s.trimmed.get()),
        ("stream_evicted_memory_total", s.evicted_memory.get()),
        ("streams_forgotten_total", s.forgotten.get()),
        ("stream_recoveries_total", s.recoveries.get()),
        ("stream_recoveries_incomplete_total", s.recoveries_incomplete.get()),
        ("stream_recovered_messages_total", s.recovered_messages.get()),
    ];
    (gauges, counters)
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn config(
        max_messages: usize,
        max_age_ms: u64,
        max_memory_bytes: usize,
        max_streams: usize,
    ) -> StreamsConfig {
        StreamsConfig {
            prefixes: vec!["/topic/room/".into()],
            max_messages,
            max_age_ms,
            max_memory_bytes,
            max_streams,
            repair_window_ms: 60_000,
        }
    }

    fn publication(dest: &str, body: &str) -> Publication {
        Publication {
            destination: Rc::from(dest),
            message_id: Rc::from(format!("m-{body}")),
            headers: Vec::new(),
            body: Bytes::from(body.to_string()),
            stream: None,
            kind: crate::hub::Kind::Message,
            room: None,
        }
    }

    fn append(s: &MemoryStreams, dest: &str, body: &str, at: u64) -> StreamPosition {
        let mut p = publication(dest, body);
        s.append_at(&mut p, at);
        p.stream.unwrap()
    }

    /// The fronts index says exactly where each non-empty ring's oldest entry is.
    fn assert_fronts(s: &MemoryStreams) {
        let expected: BTreeSet<(u64, Rc<str>)> = s
            .streams
            .borrow()
            .iter()
            .filter_map(|(k, r)| r.entries.front().map(|e| (e.at_ms, k.clone())))
            .collect();
        assert_eq!(*s.fronts.borrow(), expected);
        assert_eq!(s.charge.borrow().bytes(), s.bytes.get());
    }

    fn offsets(r: &Recovery) -> Vec<u64> {
        r.publications.iter().map(|p| p.stream.as_ref().unwrap().offset).collect()
    }

    #[test]
    fn offsets_count_up_per_destination_and_recover_by_position() {
        let s = MemoryStreams::with_clock_start(config(100, 60_000, 1 << 20, 10), 1000);
        assert!(s.is_streamed("/topic/room/a") && !s.is_streamed("/topic/other"));
        let a1 = append(&s, "/topic/room/a", "1", 10);
        let b1 = append(&s, "/topic/room/b", "1", 10);
        let a2 = append(&s, "/topic/room/a", "2", 11);
        assert_eq!((a1.offset, a2.offset, b1.offset), (1, 2, 1));
        assert_eq!(a1.epoch, a2.epoch);
        assert_eq!(a1.epoch, b1.epoch, "one epoch per process while nothing is forgotten");
        let first = s.recover_at("/topic/room/a", &Since::First, 12);
        assert_eq!((offsets(&first), first.recovered, first.next.offset), (vec![1, 2], true, 3));
        let last = s.recover_at("/topic/room/a", &Since::Last, 12);
        assert_eq!(offsets(&last), vec![2]);
        let at = Since::Offset { offset: 2, epoch: Some(a1.epoch.to_string()) };
        assert_eq!(offsets(&s.recover_at("/topic/room/a", &at, 12)), vec![2]);
        let next = s.recover_at("/topic/room/a", &Since::Next, 12);
        assert!(next.publications.is_empty() && next.recovered);
        // Another epoch (say, from before a restart): everything kept, and not recovered.
        let old = Since::Offset { offset: 2, epoch: Some("before".into()) };
        let r = s.recover_at("/topic/room/a", &old, 12);
        assert_eq!((offsets(&r), r.recovered), (vec![1, 2], false));
        // A fresh destination has an empty stream whose epoch the first message keeps.
        let fresh = s.recover_at("/topic/room/c", &Since::First, 12);
        assert_eq!((fresh.next.offset, fresh.recovered), (1, true));
        assert_eq!(append(&s, "/topic/room/c", "1", 13).epoch, fresh.next.epoch);
    }

    #[test]
    fn retention_by_count_age_memory_and_streams() {
        let s = MemoryStreams::with_clock_start(config(3, 1000, 1 << 20, 2), 1);
        for i in 1..=5 {
            append(&s, "/topic/room/a", &i.to_string(), 100);
        }
        let r = s.recover_at("/topic/room/a", &Since::Offset { offset: 1, epoch: None }, 100);
        assert_eq!((offsets(&r), r.recovered), (vec![3, 4, 5], false), "the count bound trims");
        // Two seconds later all of them are past max_age_ms.
        let r = s.recover_at("/topic/room/a", &Since::First, 2100);
        assert_eq!((offsets(&r), r.next.offset), (vec![], 6));
        assert_eq!(append(&s, "/topic/room/a", "6", 2100).offset, 6, "offsets go on after trimming");
        // A third stream forgets the one written to longest ago; it comes back on a new epoch.
        let b = append(&s, "/topic/room/b", "1", 2200);
        append(&s, "/topic/room/c", "1", 2300);
        assert_eq!(s.stats.forgotten.get(), 1);
        let b_again = append(&s, "/topic/room/b", "2", 2400);
        assert_eq!(b_again.offset, 2, "b was kept, a was forgotten");
        assert_eq!(b.epoch, b_again.epoch);
        let a_again = append(&s, "/topic/room/a", "7", 2500);
        assert_eq!(a_again.offset, 1);
        assert_ne!(a_again.epoch, b.epoch, "offsets began again: a new epoch");
        // The memory bound drops the oldest messages of the node.
        let s = MemoryStreams::with_clock_start(config(100, 60_000, 4096, 10), 1);
        let body = "x".repeat(1000);
        for i in 0..10 {
            append(&s, if i % 2 == 0 { "/topic/room/a" } else { "/topic/room/b" }, &body, 10 + i);
        }
        assert!(s.bytes.get() <= 4096, "{}", s.bytes.get());
        assert!(s.stats.evicted_memory.get() >= 6);
        let a = s.recover_at("/topic/room/a", &Since::First, 30);
        let b = s.recover_at("/topic/room/b", &Since::First, 30);
        assert_eq!(offsets(&a).len() + offsets(&b).len(), s.message_count());
        assert_eq!(*offsets(&b).last().unwrap(), 5, "the newest message stays");
        assert_fronts(&s);
    }

    #[test]
    fn kept_bytes_are_charged_and_reclaim_drops_the_oldest_first() {
        let s = MemoryStreams::with_clock_start(config(3, 1000, 1 << 20, 2), 1);
        let charged = |s: &MemoryStreams| s.charge.borrow().bytes();
        let body = "x".repeat(1000);
        for i in 0..4 {
            append(&s, "/topic/room/a", &body, 10 + i);
        }
        append(&s, "/topic/room/b", &body, 20);
        assert_eq!(charged(&s), s.bytes.get(), "count trims give back their charge");
        assert_eq!(s.message_count(), 4);
        // Reclaiming a little drops one message: the node's oldest (a's offset 2).
        let one = s.bytes.get() / 4;
        assert_eq!(s.reclaim(1), one);
        assert_eq!(offsets(&s.recover_at("/topic/room/a", &Since::First, 21)), vec![3, 4]);
        assert_eq!(charged(&s), s.bytes.get());
        // A third stream forgets a whole one; its bytes go back too.
        append(&s, "/topic/room/c", &body, 30);
        assert_eq!(charged(&s), s.bytes.get());
        // Reclaiming more than is kept frees what there is.
        assert_fronts(&s);
        let kept = s.message_count() * one;
        assert_eq!(s.reclaim(usize::MAX), kept);
        assert_eq!((s.bytes.get(), charged(&s), s.message_count()), (0, 0, 0));
        assert_fronts(&s);
        // Many streams evicted at once: the oldest first across them, by the index.
        let s = MemoryStreams::with_clock_start(config(1000, 60_000, 1 << 30, 10_000), 1);
        for i in 0..20_000u64 {
            append(&s, &format!("/topic/room/{}", i % 5000), "x", 100 + i);
        }
        s.sweep_at(10_000);
        assert_fronts(&s);
        let before = s.stats.evicted_memory.get();
        s.reclaim(s.bytes.get() / 2);
        assert_eq!(s.stats.evicted_memory.get() - before, 10_000);
        let r = s.recover_at("/topic/room/0", &Since::First, 30_000);
        assert_eq!(offsets(&r), vec![3, 4], "the older half went, in every stream");
        assert_fronts(&s);
    }
}
