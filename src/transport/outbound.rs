//! The bounded queue of frames waiting to be written to one client, shared (`Rc`) between the
//! hub, which pushes broadcast frames into it, and the connection task, which drains it in
//! coalesced writes. Single-threaded: `Cell`/`RefCell` and a `Signal`, no locks.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::board::memory::{self, Charge, Pressure};
use crate::observability::metrics::{CloseReason, METRICS};
pub use crate::transport::signal::Notified;
use crate::transport::signal::Signal;

/// How the connection frames the bytes when it writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A STOMP frame that is valid UTF-8: sent as a WebSocket text message.
    Text,
    /// A STOMP frame with a binary body: sent as a WebSocket binary message.
    Binary,
    /// Bytes that already carry their transport framing (WebSocket close or pong frames).
    Raw,
}

/// One queued frame. `bytes` is shared by every recipient of a broadcast.
#[derive(Clone, Debug)]
pub struct OutFrame {
    pub bytes: Bytes,
    pub kind: FrameKind,
}

impl OutFrame {
    /// A STOMP frame, sent as text when it is valid UTF-8 and as binary otherwise.
    pub fn stomp(bytes: Bytes) -> OutFrame {
        let kind = if std::str::from_utf8(&bytes).is_ok() { FrameKind::Text } else { FrameKind::Binary };
        OutFrame { bytes, kind }
    }
}

/// What one queued frame costs beyond its bytes: its slot in the queue (an `OutFrame` is 40
/// bytes) and the allocation header of frame bytes of its own. Counted against the limit and
/// the memory budget, so a flood of tiny frames (pongs) is bounded by what it really costs.
pub const ENTRY_OVERHEAD: usize = 64;

/// How long a queue may stay backed up (over half its limit, until it drains to a quarter)
/// and still hold back the publishers that fill it. A subscriber that cannot drain half its
/// queue in this time is far slower than the rest of its audience: publishers stop waiting
/// for it, its queue overflows and it alone is closed as a slow consumer.
pub const SLOW_CONSUMER_GRACE: Duration = Duration::from_secs(3);

fn cost(frame: &OutFrame) -> usize {
    frame.bytes.len() + ENTRY_OVERHEAD
}

/// The queue and its wake-up flag.
pub struct Outbound {
    queue: RefCell<VecDeque<OutFrame>>,
    /// What `queue` costs (bytes plus [`ENTRY_OVERHEAD`] per frame) on the board's memory
    /// budget: the charge is the count (one field less in every client's queue).
    charge: RefCell<Charge>,
    /// Since when the queue has been over half its limit (cleared once under a quarter):
    /// publishers to this client are not read meanwhile (flow control).
    backed_up_since: Cell<Option<Instant>>,
    /// The last frame queued is a pong no write has started on: the next pong replaces it
    /// (RFC 6455 5.5.3 lets a server answer only the latest ping).
    pong_at_back: Cell<bool>,
    /// The most bytes a client may have waiting; over it the client is a slow consumer.
    limit: Cell<usize>,
    /// Set once the connection must close; the connection task reads it after each wake-up.
    closing: Cell<Option<CloseReason>>,
    /// Wakes the connection task when there is something to write or a close to do.
    signal: Signal,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("queued_bytes", &self.queued_bytes())
            .field("closing", &self.closing.get())
            .finish()
    }
}

impl Outbound {
    pub fn new(limit: usize) -> Outbound {
        Outbound {
            queue: RefCell::new(VecDeque::new()),
            charge: RefCell::new(Charge::new()),
            backed_up_since: Cell::new(None),
            pong_at_back: Cell::new(false),
            limit: Cell::new(limit),
            closing: Cell::new(None),
            signal: Signal::default(),
        }
    }

    /// Queues a frame for the client. Over the byte limit the frame is dropped (and counted),
    /// the client is marked a slow consumer and its connection closes; returns false then.
    /// With the memory budget exhausted the frame is dropped and counted, the client stays.
    pub fn push(&self, frame: OutFrame) -> bool {
        if self.closing.get().is_some() {
            METRICS.messages_dropped.inc("other");
            return false;
        }
        let queued = self.queued_bytes();
        if queued + cost(&frame) > self.limit.get() {
            METRICS.messages_dropped.inc("slow_consumer");
            log::info!(
                "slow consumer: {queued} bytes queued (limit {}), backed up for {} ms; closing it",
                self.limit.get(),
                self.backed_up_for().map_or(0, |d| d.as_millis())
            );
            self.close(CloseReason::SlowConsumer);
            return false;
        }
        if memory::pressure() == Pressure::Full {
            METRICS.messages_dropped.inc("memory_budget");
            METRICS.memory_refused.inc("delivery");
            return false;
        }
        self.push_unbounded(frame);
        true
    }

    /// Queues a pong, replacing an owed pong no write has started on, so a ping flood costs
    /// one queued frame, not one per ping.
    pub fn push_pong(&self, frame: OutFrame) {
        if self.pong_at_back.get() {
            let mut queue = self.queue.borrow_mut();
            // The front frame may be partly written: only a pong behind it is replaced.
            if queue.len() >= 2 {
                if let Some(back) = queue.back_mut() {
                    let old = cost(back);
                    *back = frame;
                    let new = cost(back);
                    drop(queue);
                    self.account(self.queued_bytes() - old + new);
                    return;
                }
            }
        }
        self.push_unbounded(frame);
        self.pong_at_back.set(true);
    }

    /// Queues a frame the server itself must send (replies, ERROR, close). Replies get twice
    /// the limit, so a client that asks for receipts and never reads them is still bounded;
    /// once the connection is closing, its last frames (ERROR, close) always go in.
    pub fn push_unbounded(&self, frame: OutFrame) {
        let queued = self.queued_bytes();
        if self.closing.get().is_none() && queued + cost(&frame) > 2 * self.limit.get() {
            METRICS.messages_dropped.inc("slow_consumer");
            log::info!(
                "slow consumer: {queued} bytes of replies queued (limit {}); closing it",
                self.limit.get()
            );
            self.close(CloseReason::SlowConsumer);
            return;
        }
        self.account(queued + cost(&frame));
        let mut queue = self.queue.borrow_mut();
        if queue.capacity() == 0 {
            // An idle client's queue held a frame or two once (CONNECTED, a RECEIPT) and keeps
            // its capacity: one slot, not the four a push makes. A burst grows it as usual.
            queue.reserve_exact(1);
        }
        queue.push_back(frame);
        drop(queue);
        self.pong_at_back.set(false);
        self.wake();
    }

    /// Sets what the queue costs: the budget's charge and the backed-up clock follow.
    fn account(&self, queued: usize) {
        self.charge.borrow_mut().set(queued);
        let limit = self.limit.get();
        match self.backed_up_since.get() {
            None if queued > limit / 2 => self.backed_up_since.set(Some(Instant::now())),
            Some(_) if queued <= limit / 4 => self.backed_up_since.set(None),
            _ => {}
        }
    }

    /// How long the queue has been backed up (over half its limit, not yet under a quarter).
    pub fn backed_up_for(&self) -> Option<Duration> {
        self.backed_up_since.get().map(|since| since.elapsed())
    }

    /// Whether publishers to this client should wait for it: backed up, but not for longer
    /// than [`SLOW_CONSUMER_GRACE`] (then it is far slower than the rest and is left to
    /// overflow), and not closing.
    pub fn holds_back_publishers(&self) -> bool {
        self.closing.get().is_none() && self.backed_up_for().is_some_and(|d| d < SLOW_CONSUMER_GRACE)
    }

    /// Asks the connection to close for `reason` (the first reason wins).
    pub fn close(&self, reason: CloseReason) {
        if self.closing.get().is_none() {
            self.closing.set(Some(reason));
        }
        self.wake();
    }

    pub fn closing(&self) -> Option<CloseReason> {
        self.closing.get()
    }

    pub fn set_limit(&self, limit: usize) {
        self.limit.set(limit);
    }

    /// The most bytes the client may have waiting (`limits.max_outbound_bytes`).
    pub fn limit(&self) -> usize {
        self.limit.get()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.borrow().is_empty()
    }

    /// What the queue costs now, in bytes (checked against the limit on every push).
    pub fn queued_bytes(&self) -> usize {
        self.charge.borrow().bytes()
    }

    /// Runs `f` over the queue; the connection uses it to build one vectored write.
    pub fn with_queue<R>(&self, f: impl FnOnce(&VecDeque<OutFrame>) -> R) -> R {
        f(&self.queue.borrow())
    }

    /// Removes `count` written frames from the front.
    pub fn pop_written(&self, count: usize) {
        let mut queue = self.queue.borrow_mut();
        let mut queued = self.queued_bytes();
        for _ in 0..count {
            if let Some(frame) = queue.pop_front() {
                queued = queued.saturating_sub(cost(&frame));
            }
        }
        if queue.is_empty() {
            self.pong_at_back.set(false);
            if queue.capacity() > 64 {
                // Give back a queue that grew under a burst.
                *queue = VecDeque::new();
            }
        }
        drop(queue);
        self.account(queued);
    }

    /// Drops what is queued (a closing slow consumer), except the front frame when it is
    /// partly written and must be finished; returns how many frames were dropped.
    pub fn clear_after_front(&self, keep_front: bool) -> usize {
        let mut queue = self.queue.borrow_mut();
        let keep = usize::from(keep_front).min(queue.len());
        let dropped = queue.len() - keep;
        queue.truncate(keep);
        queue.shrink_to_fit();
        let queued = queue.iter().map(cost).sum();
        drop(queue);
        self.pong_at_back.set(false);
        self.account(queued);
        dropped
    }

    fn wake(&self) {
        self.signal.notify();
    }

    /// Wakes the connection's task without queueing anything: something it waits for outside
    /// the queue is ready (a CONNECT's passcode check, `crate::auth::login_check`).
    pub fn wake_owner(&self) {
        self.wake();
    }

    /// Resolves once something was pushed or a close was asked for since the last call.
    pub fn notified(&self) -> Notified<'_> {
        self.signal.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_marks_a_slow_consumer_and_drops() {
        // Room for two 5-byte frames at their real cost, not for a 5 and a 6.
        let out = Outbound::new(2 * ENTRY_OVERHEAD + 10);
        assert!(out.push(OutFrame::stomp(Bytes::from_static(b"12345"))));
        assert!(!out.push(OutFrame::stomp(Bytes::from_static(b"123456"))));
        assert_eq!(out.closing(), Some(CloseReason::SlowConsumer));
        assert_eq!(out.queued_bytes(), 5 + ENTRY_OVERHEAD);
        // Once closing, nothing more is queued.
        assert!(!out.push(OutFrame::stomp(Bytes::from_static(b"1"))));
        out.pop_written(1);
        assert!(out.is_empty());
        assert_eq!(out.queued_bytes(), 0);
    }

    #[test]
    fn replies_are_bounded_too_but_last_words_always_go_in() {
        let out = Outbound::new(ENTRY_OVERHEAD + 10);
        out.push_unbounded(OutFrame::stomp(Bytes::from_static(b"RECEIPT 1234")));
        out.push_unbounded(OutFrame::stomp(Bytes::from_static(b"R 12")));
        assert_eq!(out.closing(), None);
        out.push_unbounded(OutFrame::stomp(Bytes::from_static(b"xxxxx")));
        assert_eq!(out.closing(), Some(CloseReason::SlowConsumer));
        out.push_unbounded(OutFrame::stomp(Bytes::from_static(b"ERROR slow consumer")));
        assert_eq!(out.with_queue(|q| q.len()), 3);
    }

    #[test]
    fn owed_pongs_collapse_to_the_latest() {
        let out = Outbound::new(1 << 20);
        let pong = |n: u8| OutFrame { bytes: Bytes::from(vec![0x8a, 1, n]), kind: FrameKind::Raw };
        for n in 0..100 {
            out.push_pong(pong(n));
        }
        // The front one may be partly written already; behind it only the latest is kept.
        assert_eq!(out.with_queue(|q| q.iter().map(|f| f.bytes[2]).collect::<Vec<_>>()), vec![0, 99]);
        assert_eq!(out.queued_bytes(), 2 * (3 + ENTRY_OVERHEAD));
        out.push(OutFrame::stomp(Bytes::from_static(b"MESSAGE")));
        out.push_pong(pong(100));
        assert_eq!(out.with_queue(|q| q.len()), 4);
        out.pop_written(4);
        assert_eq!(out.queued_bytes(), 0);
    }

    #[test]
    fn a_backed_up_queue_holds_back_publishers_until_it_drains() {
        let out = Outbound::new(4 * (ENTRY_OVERHEAD + 100));
        let frame = || OutFrame::stomp(Bytes::from(vec![b'x'; 100]));
        out.push(frame());
        out.push(frame());
        assert!(!out.holds_back_publishers());
        out.push(frame());
        assert!(out.holds_back_publishers());
        out.pop_written(1);
        assert!(out.holds_back_publishers(), "hysteresis: still over a quarter");
        out.pop_written(1);
        assert!(!out.holds_back_publishers());
    }

    #[test]
    fn binary_bodies_are_sent_as_binary() {
        assert_eq!(OutFrame::stomp(Bytes::from_static(b"MESSAGE\n\nhi\0")).kind, FrameKind::Text);
        assert_eq!(OutFrame::stomp(Bytes::from_static(b"MESSAGE\n\n\xff\0")).kind, FrameKind::Binary);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn notified_resolves_after_push() {
        let out = std::rc::Rc::new(Outbound::new(100));
        out.push(OutFrame::stomp(Bytes::from_static(b"x")));
        out.notified().await; // flag already set
        let o2 = out.clone();
        let waiter = async move { o2.notified().await };
        let pusher = async {
            tokio::task::yield_now().await;
            out.push(OutFrame::stomp(Bytes::from_static(b"y")));
        };
        tokio::join!(waiter, pusher);
    }
}
