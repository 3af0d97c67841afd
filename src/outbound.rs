//! The bounded queue of frames waiting to be written to one client, shared (`Rc`) between the
//! hub, which pushes broadcast frames into it, and the connection task, which drains it in
//! coalesced writes. Single-threaded: `Cell`/`RefCell` and a `Signal`, no locks.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use bytes::Bytes;

use crate::metrics::{CloseReason, METRICS};
pub use crate::signal::Notified;
use crate::signal::Signal;

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

/// The queue and its wake-up flag.
pub struct Outbound {
    queue: RefCell<VecDeque<OutFrame>>,
    /// Bytes in `queue`, checked against `limit` on every push.
    queued_bytes: Cell<usize>,
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
            .field("queued_bytes", &self.queued_bytes.get())
            .field("closing", &self.closing.get())
            .finish()
    }
}

impl Outbound {
    pub fn new(limit: usize) -> Outbound {
        Outbound {
            queue: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            limit: Cell::new(limit),
            closing: Cell::new(None),
            signal: Signal::default(),
        }
    }

    /// Queues a frame for the client. Over the byte limit the frame is dropped (and counted),
    /// the client is marked a slow consumer and its connection closes; returns false then.
    pub fn push(&self, frame: OutFrame) -> bool {
        if self.closing.get().is_some() {
            METRICS.messages_dropped.inc("other");
            return false;
        }
        let len = frame.bytes.len();
        if self.queued_bytes.get() + len > self.limit.get() {
            METRICS.messages_dropped.inc("slow_consumer");
            self.close(CloseReason::SlowConsumer);
            return false;
        }
        self.push_unbounded(frame);
        true
    }

    /// Queues a frame the server itself must send (replies, ERROR, close). Replies get twice
    /// the limit, so a client that asks for receipts and never reads them is still bounded;
    /// once the connection is closing, its last frames (ERROR, close) always go in.
    pub fn push_unbounded(&self, frame: OutFrame) {
        if self.closing.get().is_none() && self.queued_bytes.get() + frame.bytes.len() > 2 * self.limit.get()
        {
            METRICS.messages_dropped.inc("slow_consumer");
            self.close(CloseReason::SlowConsumer);
            return;
        }
        self.queued_bytes.set(self.queued_bytes.get() + frame.bytes.len());
        self.queue.borrow_mut().push_back(frame);
        self.wake();
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

    pub fn is_empty(&self) -> bool {
        self.queue.borrow().is_empty()
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.get()
    }

    /// Runs `f` over the queue; the connection uses it to build one vectored write.
    pub fn with_queue<R>(&self, f: impl FnOnce(&VecDeque<OutFrame>) -> R) -> R {
        f(&self.queue.borrow())
    }

    /// Removes `count` written frames from the front.
    pub fn pop_written(&self, count: usize) {
        let mut queue = self.queue.borrow_mut();
        for _ in 0..count {
            if let Some(frame) = queue.pop_front() {
                self.queued_bytes.set(self.queued_bytes.get().saturating_sub(frame.bytes.len()));
            }
        }
        if queue.is_empty() && queue.capacity() > 64 {
            // Give back a queue that grew under a burst.
            *queue = VecDeque::new();
        }
    }

    /// Drops what is queued (a closing slow consumer), except the front frame when it is
    /// partly written and must be finished; returns how many frames were dropped.
    pub fn clear_after_front(&self, keep_front: bool) -> usize {
        let mut queue = self.queue.borrow_mut();
        let keep = usize::from(keep_front).min(queue.len());
        let dropped = queue.len() - keep;
        queue.truncate(keep);
        self.queued_bytes.set(queue.iter().map(|f| f.bytes.len()).sum());
        dropped
    }

    fn wake(&self) {
        self.signal.notify();
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
        let out = Outbound::new(10);
        assert!(out.push(OutFrame::stomp(Bytes::from_static(b"12345"))));
        assert!(!out.push(OutFrame::stomp(Bytes::from_static(b"123456"))));
        assert_eq!(out.closing(), Some(CloseReason::SlowConsumer));
        assert_eq!(out.queued_bytes(), 5);
        // Once closing, nothing more is queued.
        assert!(!out.push(OutFrame::stomp(Bytes::from_static(b"1"))));
        out.pop_written(1);
        assert!(out.is_empty());
        assert_eq!(out.queued_bytes(), 0);
    }

    #[test]
    fn replies_are_bounded_too_but_last_words_always_go_in() {
        let out = Outbound::new(10);
        out.push_unbounded(OutFrame::stomp(Bytes::from_static(b"RECEIPT 1234")));
        out.push_unbounded(OutFrame::stomp(Bytes::from_static(b"R 12")));
        assert_eq!(out.closing(), None);
        out.push_unbounded(OutFrame::stomp(Bytes::from_static(b"xxxxx")));
        assert_eq!(out.closing(), Some(CloseReason::SlowConsumer));
        out.push_unbounded(OutFrame::stomp(Bytes::from_static(b"ERROR slow consumer")));
        assert_eq!(out.with_queue(|q| q.len()), 3);
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
