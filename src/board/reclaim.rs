//! Giving freed memory back to the board (issue 23): what the server's one-second tick asks of
//! the allocator so that after a crowd leaves or a hostile burst ends the resident set is back
//! near its idle size within seconds, with no cost while nothing was freed.
//!
//! The binary's allocator is mimalloc (`main.rs`, docs/MEMORY.md). It returns memory to the
//! kernel (`MADV_DONTNEED`) in two steps, both only from inside its own calls:
//!
//! 1. a page (64 KiB, 512 KiB for medium sizes) whose blocks are all free goes back to its
//!    arena, except the last page of each size class, which is *retired* and kept until 16
//!    rounds of its housekeeping have passed; housekeeping runs once every 1,000 calls that miss
//!    its per-thread fast path, and a full collection of the thread's pages once every 10,000;
//! 2. an arena range free for its purge delay (1 s) is purged on a later arena call.
//!
//! A busy server makes those calls all the time. A server a crowd has just left makes almost
//! none, and would keep the crowd's last pages (1.9-2.5 MiB after 10,000 clients) until the
//! next crowd. The only safe way to ask for housekeeping from Rust (no `unsafe`, so no
//! `mi_collect`) is to make such calls: [`Reclaim::tick`] allocates and frees 4 KiB blocks,
//! above the fast path's sizes, 20,000 of them per second ([`BURST`]; 0.9-1.6 ms on the x86_64
//! build machine), for [`ROUNDS`] seconds after it sees memory freed in bulk:
//!
//! - the open sockets (HTTP connections not yet upgraded, and STOMP connections over WebSocket
//!   or SockJS) fell by [`CONNECTIONS_GONE`] or a quarter of their peak since the last reclaim,
//!   whichever is more; or
//! - the memory budget's account (`board::memory`) fell by [`BYTES_GONE`] from its peak.
//!
//! Nothing else is asked of the allocator, and nothing at all while no reclaim runs. The
//! server once allocated and freed a 1 MiB block every second to let due purges run; in about
//! one run in three that block was placed on a range waiting for its purge, which cancelled
//! it, and its own purge came due just as the next tick took the range again: 1 MiB stayed
//! resident for good. The rounds' own housekeeping runs the purges instead. Under another
//! allocator (the library's tests run on glibc's) all of this is harmless `malloc` and `free`.

/// Blocks allocated and freed per reclaiming tick: two full collections of mimalloc's pages
/// (one per 10,000 slow-path calls) whatever the count stood at, and 20 housekeeping rounds,
/// more than the 16 a retired page waits for.
pub const BURST: u32 = 20_000;

/// Ticks (seconds) a reclaim lasts once started: the pages freed by the first rounds are purged
/// one purge delay (1 s) later, by a later round's housekeeping.
pub const ROUNDS: u8 = 5;

/// Least fall in open sockets that starts a reclaim (the other bound is a quarter of
/// the peak). At about 1.7 KiB each, 256 connections are 0.4 MiB.
pub const CONNECTIONS_GONE: usize = 256;

/// Least fall of the memory budget's account, in bytes, that starts a reclaim.
pub const BYTES_GONE: usize = 1 << 20;

/// Size of each block of a burst, in bytes: above mimalloc's fast-path sizes (1 KiB on 64-bit
/// targets, 512 B on 32-bit ones), so every allocation is a slow-path call, and small enough to
/// come from a page the allocator already has.
const BURST_BLOCK: usize = 4096;

/// The tick's reclaim state: the peaks since the last reclaim and the rounds left.
#[derive(Debug, Default)]
pub struct Reclaim {
    peak_connections: usize,
    peak_bytes: usize,
    rounds_left: u8,
}

impl Reclaim {
    /// A reclaim that has seen nothing yet.
    pub fn new() -> Reclaim {
        Reclaim::default()
    }

    /// Called as a socket is accepted, with the sockets now open: a crowd that comes and goes
    /// between two ticks is seen.
    pub fn opened(&mut self, connections: usize) {
        self.peak_connections = self.peak_connections.max(connections);
    }

    /// Called once a second with the open sockets (HTTP connections and STOMP connections),
    /// and the budget's account in bytes: its peak since the last tick
    /// (`board::memory::take_peak`) and now (`board::memory::used`). Returns whether this tick
    /// ran a burst.
    pub fn tick(&mut self, connections: usize, peak_bytes: usize, bytes: usize) -> bool {
        self.peak_connections = self.peak_connections.max(connections);
        self.peak_bytes = self.peak_bytes.max(peak_bytes).max(bytes);
        let connections_gone = self.peak_connections - connections;
        let bytes_gone = self.peak_bytes - bytes;
        if connections_gone >= CONNECTIONS_GONE.max(self.peak_connections / 4) || bytes_gone >= BYTES_GONE {
            log::debug!(
                "memory: reclaiming for {ROUNDS} s ({connections_gone} sockets closed, {bytes_gone} budget bytes freed)"
            );
            self.rounds_left = ROUNDS;
            self.peak_connections = connections;
            self.peak_bytes = bytes;
        }
        if self.rounds_left == 0 {
            return false;
        }
        self.rounds_left -= 1;
        let started = std::time::Instant::now();
        for _ in 0..BURST {
            drop(std::hint::black_box(Vec::<u8>::with_capacity(BURST_BLOCK)));
        }
        log::debug!("memory: reclaim round took {} µs", started.elapsed().as_micros());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bursts(r: &mut Reclaim, connections: usize, bytes: usize, ticks: usize) -> usize {
        (0..ticks).filter(|_| r.tick(connections, bytes, bytes)).count()
    }

    #[test]
    fn nothing_freed_costs_nothing() {
        let mut r = Reclaim::new();
        assert_eq!(bursts(&mut r, 0, 0, 10), 0);
        // A crowd arriving, and small comings and goings, start no reclaim.
        assert_eq!(bursts(&mut r, 10_000, 0, 3), 0);
        assert_eq!(bursts(&mut r, 9_900, 0, 3), 0);
        assert_eq!(bursts(&mut r, 10_000, 900 * 1024, 3), 0);
        assert_eq!(bursts(&mut r, 10_000, 0, 3), 0, "under 1 MiB freed");
    }

    #[test]
    fn a_crowd_leaving_starts_one_reclaim_of_its_rounds() {
        let mut r = Reclaim::new();
        bursts(&mut r, 10_000, 0, 1);
        assert_eq!(bursts(&mut r, 0, 0, 20), ROUNDS as usize);
        // Leaving over several ticks: one reclaim per quarter of the peak gone.
        let mut r = Reclaim::new();
        bursts(&mut r, 1_000, 0, 1);
        assert_eq!(bursts(&mut r, 800, 0, 20), 0, "a fifth gone is under a quarter and 256");
        assert_eq!(bursts(&mut r, 700, 0, 20), ROUNDS as usize);
    }

    #[test]
    fn a_burst_of_held_bytes_freed_starts_a_reclaim() {
        let mut r = Reclaim::new();
        bursts(&mut r, 10, 40 << 20, 1);
        assert_eq!(bursts(&mut r, 10, 39 << 20, 20), ROUNDS as usize);
        assert_eq!(bursts(&mut r, 10, (39 << 20) - 1000, 20), 0);
    }

    #[test]
    fn what_came_and_went_between_two_ticks_is_seen() {
        let mut r = Reclaim::new();
        assert!(r.tick(0, 10 << 20, 0), "10 MiB held and freed within a second");
        let mut r = Reclaim::new();
        r.opened(1_000);
        assert!(r.tick(0, 0, 0), "1,000 sockets opened and closed within a second");
    }
}
