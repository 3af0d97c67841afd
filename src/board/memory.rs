//! The board's memory budget (`limits.memory_budget_bytes`): one process-wide account charged
//! with every buffer a client can make the server hold, so whatever clients do the process
//! stays under the unit's `MemoryMax`. Charged, each by its holder:
//!
//! - a WebSocket's read buffer and unfinished frames, and a SockJS WebSocket's de-framing
//!   buffer (`transport::driver`), and owed pongs (collapsed to one, in the outbound queue);
//! - every outbound queue at its real cost, entry overhead included (`outbound`): MESSAGEs,
//!   RECEIPTs, ERRORs, pongs, SockJS frames waiting for a poll;
//! - each open HTTP connection (a flat 16 KiB, `server`) and each `xhr_send` body as it is
//!   received (`sockjs::xhr`);
//! - the SENDs held in open STOMP transactions: body, destination, headers and per-entry
//!   overhead (`session`);
//! - the history rings of a node alone (`engine::stream_memory`, one charge for the store);
//! - in cluster mode, the arrivals held while an offset gap is repaired (`engine::redis::order`,
//!   one charge per destination), and the live publications a streamed SUBSCRIBE holds while
//!   its recovery reads Redis (`hub::fanout`, one charge per subscription).
//!
//! Two marks. Under the high-water mark (7/8 of the budget) buffers that drain by themselves
//! are admitted ([`admit`]); over it ([`Pressure::High`]) no socket is read, new connections
//! and request bodies get 503, and consumers backed up past their grace are closed; at the
//! budget ([`Pressure::Full`]) broadcast frames for queues that would grow are dropped. Held
//! memory, which does not drain by itself (transactions, history), stays under the held mark
//! (3/4, [`held_mark`]): a transaction's SEND that would pass it is refused with ERROR and
//! close ([`admit_held`]) after history gave way, and history drops its oldest messages while
//! the account is over it; a live publication is never refused for its history. Held gap
//! arrivals and recovering subscriptions drain by themselves: over the high-water mark a gap
//! is given up instead of held, and a recovering subscriber is closed as a slow consumer.
//! Each refusal is counted in `memory_refused_total{what}`.
//!
//! Not charged: per-connection fixed state (a connection is admitted only with 32 KiB free
//! under the high-water mark), the hub's tables (bounded by their own limits), and replies
//! from Redis being read (a recovery's or a repair's, bounded by the stream's `MAXLEN`).
//!
//! Holders keep a [`Charge`], which gives its bytes back when dropped or resized: releases by
//! drop, never by hand. The account is atomics (the server runs one thread; tests run several).

use std::sync::atomic::{AtomicUsize, Ordering};

/// The default budget: well inside the shipped unit's `MemoryMax=128M`, leaving room for the
/// code, the runtime and allocator slack.
pub const DEFAULT_BUDGET: usize = 64 << 20;

static USED: AtomicUsize = AtomicUsize::new(0);
/// The highest [`USED`] since the last [`take_peak`].
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_BUDGET);

/// How close the account is to its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pressure {
    /// Under 7/8 of the budget: everything goes.
    Normal,
    /// Over 7/8: sockets are not read and new connections and request bodies are refused, so
    /// queues can only drain; frames already accepted still go out.
    High,
    /// At the budget: broadcast frames for queues that would grow are dropped (counted).
    Full,
}

/// Sets the budget (at start and on reload); 0 (a configuration built by hand) means the
/// default.
pub fn set_limit(bytes: usize) {
    LIMIT.store(if bytes == 0 { DEFAULT_BUDGET } else { bytes }, Ordering::Relaxed);
}

/// The budget, in bytes.
pub fn limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Bytes charged now.
pub fn used() -> usize {
    USED.load(Ordering::Relaxed)
}

/// The most bytes charged at any moment since the last call (or the start), and starts the
/// next such span at what is charged now. Read by the tick's reclaim (`board::reclaim`), so a
/// burst held for less than a second is still seen.
pub fn take_peak() -> usize {
    PEAK.swap(used(), Ordering::Relaxed).max(used())
}

/// Where the account stands against the budget now.
pub fn pressure() -> Pressure {
    let (used, limit) = (used(), limit());
    if used >= limit {
        Pressure::Full
    } else if used >= limit - limit / 8 {
        Pressure::High
    } else {
        Pressure::Normal
    }
}

/// Whether `bytes` more fit under the high-water mark (7/8 of the budget, where
/// [`Pressure::High`] begins). For buffers that drain by themselves (read buffers, queues,
/// request bodies). A refusal is the caller's to count (`memory_refused_total{what}`).
#[must_use]
pub fn admit(bytes: usize) -> bool {
    let limit = limit();
    used().saturating_add(bytes) < limit - limit / 8
}

/// The mark held memory stays under, in bytes: 3/4 of the budget. Held memory (open
/// transactions, history rings) does not drain by itself; kept under this mark, it can never
/// bring [`Pressure::High`] alone, which stops every socket being read, including the ones
/// whose COMMIT, ABORT or DISCONNECT would free it. The 1/8 between this mark and the
/// high-water mark is left to buffers that drain.
pub fn held_mark() -> usize {
    let limit = limit();
    limit - limit / 4
}

/// Bytes the account is over [`held_mark`] by with `bytes` more charged (0: they fit). What a
/// history must give back before `bytes` of held memory can be admitted.
pub fn held_shortfall(bytes: usize) -> usize {
    (used().saturating_add(bytes) + 1).saturating_sub(held_mark())
}

/// Whether `bytes` more of held memory fit under [`held_mark`]. A refusal is the caller's to
/// count.
#[must_use]
pub fn admit_held(bytes: usize) -> bool {
    held_shortfall(bytes) == 0
}

/// Bytes held on the account; given back when dropped.
#[derive(Debug, Default)]
pub struct Charge {
    bytes: usize,
}

impl Charge {
    /// An empty charge.
    pub const fn new() -> Charge {
        Charge { bytes: 0 }
    }

    /// A charge of `bytes`, taken whatever the pressure (the caller checked with [`admit`], or
    /// the bytes are already allocated and must be accounted for).
    pub fn of(bytes: usize) -> Charge {
        let mut c = Charge::new();
        c.set(bytes);
        c
    }

    /// Makes the charge `bytes` (more or less than before).
    pub fn set(&mut self, bytes: usize) {
        if bytes > self.bytes {
            let grown = bytes - self.bytes;
            let now = USED.fetch_add(grown, Ordering::Relaxed) + grown;
            // A load, not a read-modify-write, on the data path (every queued MESSAGE is
            // charged): a mark lost to a race between threads only delays a reclaim.
            if now > PEAK.load(Ordering::Relaxed) {
                PEAK.store(now, Ordering::Relaxed);
            }
        } else if bytes < self.bytes {
            USED.fetch_sub(self.bytes - bytes, Ordering::Relaxed);
        }
        self.bytes = bytes;
    }

    /// The bytes this charge holds on the account.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_resize_and_a_zero_limit_means_the_default() {
        let mut a = Charge::of(1000);
        a.set(10);
        a.set(500);
        assert_eq!(a.bytes(), 500);
        a.set(0);
        assert_eq!(a.bytes(), 0);
        set_limit(0);
        assert_eq!(limit(), DEFAULT_BUDGET);
    }
}
