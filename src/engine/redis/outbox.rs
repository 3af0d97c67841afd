//! The outbox: store-and-forward of this node's publications to Redis. Every publication a
//! node accepts for the other nodes waits here, in order, until Redis has appended it (the
//! append script answered); only then is it removed. A call that fails or times out leaves it
//! in place, and the publisher sends it again on the next connection: the append script
//! recognises it by this process's sequence number (`seq`), so a call applied late (a stalled
//! Redis, a TCP retransmission on an abandoned connection) or twice appends once.
//!
//! Bounds: `cluster.relay_buffer_messages` entries while Redis is away (while it is up the
//! outbox drains as fast as Redis appends), `cluster.relay_buffer_ms` of age, and the memory
//! budget (each entry's bytes are charged to it; under its high-water mark the
//! oldest waiting entry gives way). What gives way is counted
//! (`stomp_edge_cluster_relay_dropped_total`) and, if this node had not delivered it to its own
//! subscribers yet, delivered here at once: accepted is never silently lost on its own node.
//!
//! The outbox also owes this node's own subscribers their copies of its streamed publications
//! (`pending`): they get them with their offset when Redis answers within
//! `cluster.offset_wait_ms` (`deliver_by`), otherwise at that deadline without one
//! (`relay::Relay::release_overdue`), so local delivery never waits on Redis for long.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use tokio::time::Instant;

use crate::board::memory::{self, Charge, Pressure};
use crate::hub::Publication;

/// Bytes an entry costs besides its payload (fields, the queue slot, the channel name).
const ENTRY_OVERHEAD: usize = 160;

/// One publication waiting for Redis.
pub struct Outgoing {
    /// This process's number for it (1, 2, 3, … in acceptance order): what the append script
    /// recognises a retry by.
    pub seq: u64,
    pub channel: String,
    pub destination: Rc<str>,
    /// The envelope JSON (`envelope::Envelope`).
    pub payload: Vec<u8>,
    pub queued: Instant,
    /// This node's own subscribers have not had it yet: delivered with its offset once Redis
    /// gives one, or without one at `deliver_by`.
    pub pending: Option<Publication>,
    pub deliver_by: Instant,
    /// Calls that failed with an answer from Redis (not a lost link): a publication Redis keeps
    /// refusing is given up after `MAX_REFUSALS`.
    pub refusals: u32,
    /// Publications of the same destination accepted before this one and given up: sent in
    /// its envelope (`Envelope::dropped`), so the other nodes count the loss and tell their
    /// subscribers.
    pub dropped_before: u64,
}

impl Outgoing {
    fn cost(&self) -> usize {
        self.payload.len() + self.channel.len() + ENTRY_OVERHEAD
    }
}

/// Times Redis may answer an append with an error before that one publication is given up.
pub const MAX_REFUSALS: u32 = 5;

/// The entries in acceptance order; the first `in_flight` of them are in a call now, and the
/// first `sent` were in a call that got no answer: Redis may have applied them (a stalled
/// Redis runs a call it read once it wakes), so they never give way; what is given up must be
/// known never to reach Redis. Calls take entries from the front, so those are at most one
/// pipeline (`relay::PIPELINE`) beyond the count bound.
#[derive(Default)]
pub struct Outbox {
    entries: VecDeque<Outgoing>,
    in_flight: usize,
    sent: usize,
    last_seq: u64,
    /// The last sequence number Redis acknowledged (appended, or had applied before); 0 when
    /// Redis may not know it (none yet, or it forgot: see `APPEND_LUA`'s `prev`).
    acked_seq: u64,
    charge: Charge,
}

impl Outbox {
    /// The next sequence number (the caller builds the entry with it, then `push`es it).
    pub fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    /// Appends an entry, making room first: entries past `max_len` (None: no count bound, as
    /// while Redis is up and only slower than the publishers for a moment) or older than
    /// `max_age`, and under memory pressure the oldest waiting one, give way. Returns those
    /// that gave way (the caller counts them and delivers what they still owe here).
    pub fn push(&mut self, entry: Outgoing, max_len: Option<usize>, max_age: Duration) -> Vec<Outgoing> {
        let max_len = max_len.unwrap_or(usize::MAX);
        let mut dropped = self.expire(max_age);
        let keep = self.kept_front();
        while self.entries.len() > keep
            && (self.entries.len() >= max_len.max(1) || memory::pressure() >= Pressure::High)
        {
            match self.entries.remove(keep) {
                Some(old) => dropped.push(old),
                None => break,
            }
        }
        self.entries.push_back(entry);
        self.recharge();
        dropped
    }

    /// Removes waiting entries older than `max_age` (0: no age bound); in-flight ones stay.
    pub fn expire(&mut self, max_age: Duration) -> Vec<Outgoing> {
        let mut dropped = Vec::new();
        if max_age.is_zero() {
            return dropped;
        }
        let keep = self.kept_front();
        while self.entries.get(keep).is_some_and(|o| o.queued.elapsed() > max_age) {
            dropped.extend(self.entries.remove(keep));
        }
        if !dropped.is_empty() {
            self.recharge();
        }
        dropped
    }

    /// Entries at the front that never give way: in a call now, or sent in one unanswered.
    fn kept_front(&self) -> usize {
        self.in_flight.max(self.sent)
    }

    /// Marks the first `n` entries (at most) as sent in one call; returns how many.
    pub fn begin_call(&mut self, n: usize) -> usize {
        self.in_flight = n.min(self.entries.len());
        self.sent = self.sent.max(self.in_flight);
        self.in_flight
    }

    /// The entries of the call in progress.
    pub fn in_flight(&self) -> impl Iterator<Item = &Outgoing> {
        self.entries.iter().take(self.in_flight)
    }

    /// The call answered for its first `done` entries: they leave the outbox, in order; the
    /// rest of the call stays, to be sent again.
    pub fn finish_call(&mut self, done: usize) -> Vec<Outgoing> {
        let done: Vec<Outgoing> = self.entries.drain(..done.min(self.in_flight)).collect();
        self.in_flight = 0;
        self.sent = self.sent.saturating_sub(done.len());
        if let Some(last) = done.last() {
            self.acked_seq = last.seq;
        }
        self.recharge();
        done
    }

    /// The sequence number Redis must have applied before the first entry of the next call
    /// (0: none it can be sure of).
    pub fn acked_seq(&self) -> u64 {
        self.acked_seq
    }

    /// Redis no longer knows what it acknowledged (a failover to a replica that lacked it):
    /// the next call does not ask for it.
    pub fn forget_acked(&mut self) {
        self.acked_seq = 0;
    }

    /// The call failed: its entries stay, to be sent again.
    pub fn abandon_call(&mut self) {
        self.in_flight = 0;
    }

    /// Gives up the first entry (Redis keeps refusing it).
    pub fn pop_front(&mut self) -> Option<Outgoing> {
        self.in_flight = 0;
        let first = self.entries.pop_front();
        self.sent = self.sent.saturating_sub(usize::from(first.is_some()));
        self.recharge();
        first
    }

    pub fn front_mut(&mut self) -> Option<&mut Outgoing> {
        self.entries.front_mut()
    }

    /// The entry with sequence number `seq`, if it is still here.
    pub fn get_mut(&mut self, seq: u64) -> Option<&mut Outgoing> {
        let i = self.entries.binary_search_by_key(&seq, |o| o.seq).ok()?;
        self.entries.get_mut(i)
    }

    /// Carries `n` given-up publications of `destination` (the last with sequence number
    /// `after`) to the next entry of that destination waiting here. False when none waits (the
    /// caller keeps the count for the next one accepted).
    pub fn carry_dropped(&mut self, destination: &str, after: u64, n: u64) -> bool {
        // Entries in a call now are older than any given up (calls take the front).
        let next = self
            .entries
            .iter_mut()
            .skip(self.in_flight)
            .find(|o| o.seq > after && *o.destination == *destination);
        match next {
            Some(o) => {
                o.dropped_before += n;
                true
            }
            None => false,
        }
    }

    /// Entries whose own-subscriber copy is due (`deliver_by` passed), oldest first: their
    /// publications, taken.
    pub fn take_overdue(&mut self, now: Instant) -> Vec<Publication> {
        let mut due = Vec::new();
        for o in &mut self.entries {
            if o.deliver_by > now {
                break;
            }
            due.extend(o.pending.take());
        }
        due
    }

    /// Whether some entry still owes its own-subscriber copy.
    pub fn owes_local(&self) -> bool {
        self.entries.iter().any(|o| o.pending.is_some())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether entries wait that are not in a call yet.
    pub fn has_waiting(&self) -> bool {
        self.entries.len() > self.in_flight
    }

    fn recharge(&mut self) {
        let bytes = self.entries.iter().map(Outgoing::cost).sum();
        self.charge.set(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(outbox: &mut Outbox) -> Outgoing {
        let seq = outbox.next_seq();
        Outgoing {
            seq,
            channel: "c".into(),
            destination: Rc::from("/topic/x"),
            payload: vec![b'x'; 10],
            queued: Instant::now(),
            pending: None,
            deliver_by: Instant::now(),
            refusals: 0,
            dropped_before: 0,
        }
    }

    #[test]
    fn a_failed_call_keeps_its_entries_in_order_and_full_outboxes_drop_the_oldest_waiting() {
        let mut o = Outbox::default();
        for _ in 0..3 {
            let e = entry(&mut o);
            assert!(o.push(e, Some(10), Duration::ZERO).is_empty());
        }
        assert_eq!(o.begin_call(2), 2);
        o.abandon_call();
        assert_eq!(o.begin_call(8), 3);
        assert_eq!(o.in_flight().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(o.finish_call(1).iter().map(|e| e.seq).collect::<Vec<_>>(), [1]);
        assert_eq!(o.acked_seq(), 1);
        // Full: the oldest entry never sent gives way; 2 and 3 were sent (no answer for them).
        for _ in 0..2 {
            let e = entry(&mut o);
            o.push(e, Some(10), Duration::ZERO);
        }
        o.begin_call(1);
        let e = entry(&mut o);
        let dropped = o.push(e, Some(3), Duration::ZERO);
        assert_eq!(dropped.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(o.get_mut(6).map(|e| e.seq), Some(6));
        assert!(o.get_mut(4).is_none());
        assert_eq!(o.len(), 3);
    }

    #[test]
    fn entries_a_call_sent_without_an_answer_never_give_way() {
        // Found by a break pass: a call abandoned in a Redis stall was run by Redis when it
        // woke, after the outbox had given its entries up and told the other boards of a loss.
        let mut o = Outbox::default();
        for _ in 0..3 {
            let e = entry(&mut o);
            o.push(e, Some(10), Duration::ZERO);
        }
        assert_eq!(o.begin_call(2), 2);
        o.abandon_call(); // no answer: 1 and 2 may be applied
        let e = entry(&mut o);
        let dropped = o.push(e, Some(2), Duration::ZERO);
        assert_eq!(dropped.iter().map(|e| e.seq).collect::<Vec<_>>(), [3], "only what was never sent");
        std::thread::sleep(Duration::from_millis(5));
        let expired = o.expire(Duration::from_millis(1));
        assert_eq!(expired.iter().map(|e| e.seq).collect::<Vec<_>>(), [4]);
        assert_eq!(o.len(), 2);
        // Once Redis answered for them, they leave and the bound applies again.
        o.begin_call(2);
        assert_eq!(o.finish_call(2).len(), 2);
        for _ in 0..3 {
            let e = entry(&mut o);
            o.push(e, Some(2), Duration::ZERO);
        }
        assert_eq!(o.len(), 2);
    }
}
