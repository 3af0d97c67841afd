//! The board's memory budget (`limits.memory_budget_bytes`): one process-wide account charged
//! with every buffer a client can make the server hold (socket read buffers and unfinished
//! frames, outbound queues at their real cost, SockJS bodies and batches, history rings). Near
//! the budget new work is refused (HTTP 503, sockets not read until queues drain) and counted,
//! so whatever clients do the process stays under the unit's `MemoryMax`.
//!
//! Holders keep a [`Charge`], which gives its bytes back when dropped or resized: releases by
//! drop, never by hand. The account is atomics (the server runs one thread; tests run several).

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::metrics::METRICS;

/// The default budget: well inside the shipped unit's `MemoryMax=128M`, leaving room for the
/// code, the runtime and allocator slack.
pub const DEFAULT_BUDGET: usize = 64 << 20;

static USED: AtomicUsize = AtomicUsize::new(0);
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

pub fn limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Bytes charged now.
pub fn used() -> usize {
    USED.load(Ordering::Relaxed)
}

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

/// Whether `bytes` more fit under the high-water mark; counts a refusal under `what` if not.
pub fn admit(bytes: usize, what: &str) -> bool {
    let limit = limit();
    if used().saturating_add(bytes) < limit - limit / 8 {
        return true;
    }
    METRICS.memory_refused.inc(what);
    false
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
            USED.fetch_add(bytes - self.bytes, Ordering::Relaxed);
        } else if bytes < self.bytes {
            USED.fetch_sub(self.bytes - bytes, Ordering::Relaxed);
        }
        self.bytes = bytes;
    }

    #[cfg(test)]
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
