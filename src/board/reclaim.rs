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
//! build machine, in chunks between which the event loop runs: [`round`]), for [`ROUNDS`]
//! seconds after it sees memory freed in bulk:
//!
//! - the open sockets (HTTP connections not yet upgraded, and STOMP connections over WebSocket
//!   or SockJS) fell by [`CONNECTIONS_GONE`] (64) or a quarter of their peak since the last
//!   reclaim, whichever is more; or
//! - 64 sockets were closed since the last reclaim, however short-lived, and that was at least
//!   [`CHURN_TICKS`] (30 s) ago; or
//! - the memory budget's account (`board::memory`) fell by [`BYTES_GONE`] (256 KiB) from its
//!   peak.
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

/// Blocks allocated and freed between two yields to the event loop.
pub const CHUNK: u32 = 1_000;

/// Ticks (seconds) a reclaim lasts once started: the pages freed by the first rounds are purged
/// one purge delay (1 s) later, by a later round's housekeeping.
pub const ROUNDS: u8 = 5;

/// Least fall in open sockets that starts a reclaim (the other bound is a quarter of the
/// peak): 64 idle connections are about 110 KiB, and a reclaim costs 5 rounds.
pub const CONNECTIONS_GONE: usize = 64;

/// Least ticks (seconds) between two reclaims started by sockets that came and went with no
/// fall in the sockets open (clients reconnecting, SockJS polls without keep-alive): at most
/// 5 rounds every 30 s, whatever the churn.
pub const CHURN_TICKS: u32 = 30;

/// Least fall of the memory budget's account, in bytes, that starts a reclaim.
pub const BYTES_GONE: usize = 256 << 10;

/// Size of each block of a burst, in bytes: above mimalloc's fast-path sizes (1 KiB on 64-bit
/// targets, 512 B on 32-bit ones), so every allocation is a slow-path call, and small enough to
/// come from a page the allocator already has.
const BURST_BLOCK: usize = 4096;

/// The capacity a table of `len` entries out of `capacity` should shrink to after a removal, if
/// it should: under an eighth full and past 64 slots, to twice its entries. One rule for the
/// node's connection table and the hub's subscriber lists, so a crowd's tables go back with it
/// (shrinking at an eighth and to a quarter keeps a removal amortized O(1)).
pub fn shrunk_capacity(len: usize, capacity: usize) -> Option<usize> {
    (capacity > 64 && len < capacity / 8).then_some(len * 2)
}

/// The tick's reclaim state: the marks since the last reclaim started and the rounds left.
#[derive(Debug)]
pub struct Reclaim {
    /// Most sockets open at once since the last reclaim started.
    peak_connections: usize,
    /// Sockets open when the last reclaim started, and accepted since: with the sockets open
    /// now they give the sockets closed since, however short-lived.
    open_at_mark: usize,
    accepted: usize,
    /// Highest budget account since the last reclaim started, in bytes.
    peak_bytes: usize,
    /// Ticks since the last reclaim started (saturating).
    since_last: u32,
    rounds_left: u8,
}

impl Default for Reclaim {
    fn default() -> Reclaim {
        Reclaim {
            peak_connections: 0,
            open_at_mark: 0,
            accepted: 0,
            peak_bytes: 0,
            since_last: u32::MAX,
            rounds_left: 0,
        }
    }
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
        self.accepted = self.accepted.saturating_add(1);
    }

    /// Called once a second with the open sockets (HTTP connections and STOMP connections),
    /// and the budget's account in bytes: its peak since the last tick
    /// (`board::memory::take_peak`) and now (`board::memory::used`). Returns whether this tick
    /// should run a [`round`] now.
    pub fn tick(&mut self, connections: usize, peak_bytes: usize, bytes: usize) -> bool {
        self.peak_connections = self.peak_connections.max(connections);
        self.peak_bytes = self.peak_bytes.max(peak_bytes).max(bytes);
        self.since_last = self.since_last.saturating_add(1);
        let fell = self.peak_connections - connections;
        let closed = (self.open_at_mark + self.accepted).saturating_sub(connections);
        let bytes_gone = self.peak_bytes - bytes;
        let crowd_left = fell >= CONNECTIONS_GONE.max(self.peak_connections / 4);
        let churned = closed >= CONNECTIONS_GONE && self.since_last >= CHURN_TICKS;
        if crowd_left || churned || bytes_gone >= BYTES_GONE {
            log::debug!(
                "memory: reclaiming for {ROUNDS} s ({closed} sockets closed, {fell} fewer open, \
                 {bytes_gone} budget bytes freed)"
            );
            self.rounds_left = ROUNDS;
            self.peak_connections = connections;
            self.open_at_mark = connections;
            self.accepted = 0;
            self.peak_bytes = bytes;
            self.since_last = 0;
        }
        if self.rounds_left == 0 {
            return false;
        }
        self.rounds_left -= 1;
        true
    }
}

/// One reclaiming round: [`BURST`] blocks allocated and freed, in chunks of [`CHUNK`] with the
/// event loop given back between them, so no socket waits for more than a chunk (about 50 µs
/// on the x86_64 build machine; a board's core is slower in proportion, as is everything else
/// it does, so a reclaim costs 0.1-0.16 % of one core anywhere while it runs). Spawned by the
/// server when [`Reclaim::tick`] says so.
pub async fn round() {
    let started = std::time::Instant::now();
    for _ in 0..BURST / CHUNK {
        for _ in 0..CHUNK {
            drop(std::hint::black_box(Vec::<u8>::with_capacity(BURST_BLOCK)));
        }
        tokio::task::yield_now().await;
    }
    log::debug!("memory: reclaim round took {} µs", started.elapsed().as_micros());
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
        assert_eq!(bursts(&mut r, 10_000, 200 * 1024, 3), 0);
        assert_eq!(bursts(&mut r, 10_000, 0, 3), 0, "under 256 KiB freed");
        // 50 sockets gone from a peak of 100: half, but under 64.
        let mut r = Reclaim::new();
        (0..100).for_each(|n| r.opened(n + 1));
        assert_eq!(bursts(&mut r, 50, 0, 3), 0);
    }

    #[test]
    fn a_crowd_leaving_starts_one_reclaim_of_its_rounds() {
        let mut r = Reclaim::new();
        bursts(&mut r, 10_000, 0, 1);
        assert_eq!(bursts(&mut r, 0, 0, 20), ROUNDS as usize);
        // Leaving over several ticks: one reclaim per quarter of the peak gone.
        let mut r = Reclaim::new();
        bursts(&mut r, 1_000, 0, 1);
        assert_eq!(bursts(&mut r, 800, 0, 20), 0, "a fifth gone is under a quarter");
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
    fn sockets_that_came_and_went_one_at_a_time_start_a_reclaim_at_most_every_30_s() {
        // 200 sockets, each refused and closed before the next came: never more than one open.
        let mut r = Reclaim::new();
        (0..200).for_each(|_| r.opened(1));
        assert_eq!(bursts(&mut r, 0, 0, 20), ROUNDS as usize);
        // Clients reconnecting all the time: one reclaim per 30 s, not one per 64 closes.
        let mut started = 0;
        for _ in 0..90 {
            (0..100).for_each(|_| r.opened(1));
            started += usize::from(r.tick(0, 0, 0) && r.rounds_left == ROUNDS - 1);
        }
        assert_eq!(started, 3);
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
