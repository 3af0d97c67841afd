//! A SockJS session over the HTTP transports (xhr-polling, xhr-streaming, eventsource): one
//! STOMP connection that its client reaches through a series of requests. A task per session
//! owns the clock and moves queued STOMP frames, as `a[...]` frames, into whichever receiving
//! request is open; `xhr_send` requests hand the client's messages to the session directly.
//! A session with no receiving request for `disconnect_delay_ms` is reaped: its STOMP session
//! ends (leaving its chat room) like a closed socket's would.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{sleep_until, Instant};

use crate::node::{Node, Place, Refusal, Registration};
use crate::observability::metrics::{CloseReason, METRICS};
use crate::transport::outbound::{FrameKind, Outbound};

use super::frame::{self, Broken};
use super::stomp::{Core, Received};
use super::Settings;
use crate::transport::signal::Signal;

/// Most bytes of STOMP frames put into one `a[...]` batch (one frame at least).
pub const BATCH_BYTES: usize = 64 * 1024;

/// How a receiving request carries frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverKind {
    /// `xhr`: one frame per response.
    Polling,
    /// `xhr_streaming`: frames, one a line, until `streaming_bytes`.
    Streaming,
    /// `eventsource`: frames as `data:` events, until `streaming_bytes`.
    EventSource,
}

impl ReceiverKind {
    /// What a response starts with: xhr-streaming's 2 KiB of `h` makes browsers start handing
    /// the body to the page; an event stream starts with an empty line.
    pub fn prelude(self) -> &'static [u8] {
        const STREAMING: [u8; 2049] = {
            let mut p = [b'h'; 2049];
            p[2048] = b'\n';
            p
        };
        match self {
            ReceiverKind::Polling => b"",
            ReceiverKind::Streaming => &STREAMING,
            ReceiverKind::EventSource => b"\r\n",
        }
    }

    /// Appends one SockJS frame in this transport's framing.
    pub fn wrap(self, sockjs_frame: &[u8], out: &mut Vec<u8>) {
        match self {
            ReceiverKind::Polling | ReceiverKind::Streaming => {
                out.extend_from_slice(sockjs_frame);
                out.push(b'\n');
            }
            ReceiverKind::EventSource => {
                // sockjs-client runs decodeURI over each event: `%` (and the bytes that would
                // end an event) go percent-encoded, as sockjs-node sends them.
                out.extend_from_slice(b"data: ");
                let mut start = 0;
                for (i, b) in sockjs_frame.iter().enumerate() {
                    let escape: &[u8] = match b {
                        b'%' => b"%25",
                        b'\r' => b"%0D",
                        b'\n' => b"%0A",
                        0 => b"%00",
                        _ => continue,
                    };
                    out.extend_from_slice(&sockjs_frame[start..i]);
                    out.extend_from_slice(escape);
                    start = i + 1;
                }
                out.extend_from_slice(&sockjs_frame[start..]);
                out.extend_from_slice(b"\r\n\r\n");
            }
        }
    }

    /// The `sockjs_sessions_total` label of a session this kind of request opened.
    pub fn label(self) -> &'static str {
        match self {
            ReceiverKind::Polling => "xhr",
            ReceiverKind::Streaming => "xhr_streaming",
            ReceiverKind::EventSource => "eventsource",
        }
    }
}

/// The receiving request currently open on a session.
struct Receiver {
    id: u64,
    kind: ReceiverKind,
    /// The body's next chunk, empty when none. The task adds a batch only once the body took
    /// the last one, so an open request holds at most one batch (plus the goodbye).
    chunk: Vec<u8>,
    /// Bytes handed to this response; a streaming response ends after `streaming_bytes`.
    sent: usize,
    /// The response ends once `chunk` is taken.
    done: bool,
    /// When the response was last given a frame: the SockJS heart-beat is due after `heartbeat`.
    last_sent: Instant,
    /// The body's waker, stored while it waits for a chunk.
    waker: Option<Waker>,
}

impl Receiver {
    fn push(&mut self, sockjs_frame: &[u8], streaming_bytes: usize) {
        let before = self.chunk.len();
        self.kind.wrap(sockjs_frame, &mut self.chunk);
        self.sent += self.chunk.len() - before;
        self.last_sent = Instant::now();
        if self.kind == ReceiverKind::Polling || self.sent >= streaming_bytes {
            self.done = true;
        }
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// Why an `xhr_send` was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The session has ended; the request gets 404 like an unknown session.
    Closed,
    /// Not a SockJS message.
    Broken,
}

impl From<Broken> for SendError {
    fn from(_: Broken) -> SendError {
        SendError::Broken
    }
}

pub struct HttpSession {
    key: Key,
    settings: Settings,
    /// The connection's place in the node, given up when the STOMP connection ends (the
    /// session lingers a little longer for the client's last request).
    place: RefCell<Option<Place>>,
    pub outbound: Rc<Outbound>,
    /// Borrowed by the task and by `xhr_send`, never across an `.await`.
    core: RefCell<Core>,
    receiver: RefCell<Option<Receiver>>,
    next_receiver: Cell<u64>,
    /// When the last receiving request ended: the session is reaped `disconnect_delay` later.
    detached_at: Cell<Instant>,
    /// Set once the session has ended: the close frame later receiving requests get.
    closed: Cell<Option<(u16, &'static str)>>,
    /// Wakes the task when a receiver comes, goes or takes its chunk.
    signal: Signal,
    /// An `xhr_send` body is being received: one at a time per session, so one client holds
    /// at most one body in memory.
    sending: Cell<bool>,
}

/// The one `xhr_send` a session is receiving; the session takes the next once this is dropped.
pub struct Sending<'a>(&'a HttpSession);

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.0.sending.set(false);
    }
}

/// A session's key in the table: (the node's address, the client's session id).
type Key = (usize, Box<str>);

thread_local! {
    /// Live and lingering sessions. The server runs one node on one thread; the node's address
    /// in the key keeps two nodes in one process apart (tests).
    static SESSIONS: RefCell<HashMap<Key, Rc<HttpSession>>> = RefCell::new(HashMap::new());
}

fn key(node: &Rc<Node>, id: &str) -> Key {
    (Rc::as_ptr(node) as usize, Box::from(id))
}

/// The session `id` of this node, if it is live or lingering after its end.
pub fn find(node: &Rc<Node>, id: &str) -> Option<Rc<HttpSession>> {
    SESSIONS.with(|s| s.borrow().get(&key(node, id)).cloned())
}

impl HttpSession {
    /// Opens a session: a STOMP connection registered like any other (same limit and metrics),
    /// and its task.
    pub fn open(
        node: &Rc<Node>,
        id: &str,
        kind: ReceiverKind,
        settings: Settings,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Rc<HttpSession>, Refusal> {
        let Registration { place, session_id, outbound } = node.register_connection()?;
        let mut core = Core::new(node, place.id, session_id, outbound.clone());
        core.stomp.session.set_peer(peer);
        node.mark_sockjs(place.id);
        let session = Rc::new(HttpSession {
            key: key(node, id),
            settings,
            place: RefCell::new(Some(place)),
            core: RefCell::new(core),
            outbound,
            receiver: RefCell::new(None),
            next_receiver: Cell::new(0),
            detached_at: Cell::new(Instant::now()),
            closed: Cell::new(None),
            signal: Signal::default(),
            sending: Cell::new(false),
        });
        SESSIONS.with(|s| s.borrow_mut().insert(session.key.clone(), session.clone()));
        METRICS.sockjs_sessions.inc(kind.label());
        tokio::task::spawn_local(session.clone().run(node.clone()));
        Ok(session)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get().is_some()
    }

    /// Opens a receiving request whose response starts with the transport's prelude and
    /// `first` (the open frame of a new session): its id, for the response body that polls it
    /// (`body::StreamBody::attach`). `None` while another one is open.
    pub(super) fn attach(&self, kind: ReceiverKind, first: Option<&[u8]>) -> Option<u64> {
        let mut slot = self.receiver.borrow_mut();
        if slot.is_some() {
            return None;
        }
        let id = self.next_receiver.get() + 1;
        self.next_receiver.set(id);
        let mut receiver = Receiver {
            id,
            kind,
            chunk: kind.prelude().to_vec(),
            sent: 0,
            done: false,
            last_sent: Instant::now(),
            waker: None,
        };
        if let Some(first) = first {
            receiver.push(first, self.settings.streaming_bytes);
        }
        *slot = Some(receiver);
        self.signal.notify();
        Some(id)
    }

    /// Starts receiving an `xhr_send` body; `None` while another one is being received.
    pub fn begin_send(&self) -> Option<Sending<'_>> {
        if self.sending.replace(true) {
            return None;
        }
        Some(Sending(self))
    }

    /// Hands the body of an `xhr_send` (one SockJS message) to the STOMP session.
    pub fn receive(&self, node: &Node, json: &[u8]) -> Result<(), SendError> {
        if self.is_closed() || self.outbound.closing().is_some() {
            return Err(SendError::Closed);
        }
        let received = match self.core.try_borrow_mut() {
            Ok(mut core) => core.receive_message(node, json)?,
            Err(_) => return Err(SendError::Closed),
        };
        if let Received::Close(reason) = received {
            self.outbound.close(reason);
        }
        Ok(())
    }

    /// The body's side: the next chunk, the end of the response, or `Pending`.
    pub(super) fn poll_chunk(&self, id: u64, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut slot = self.receiver.borrow_mut();
        let Some(receiver) = slot.as_mut().filter(|r| r.id == id) else { return Poll::Ready(None) };
        if receiver.chunk.is_empty() && !receiver.done {
            receiver.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let chunk = std::mem::take(&mut receiver.chunk);
        if receiver.done {
            *slot = None;
            self.detached_at.set(Instant::now());
        }
        drop(slot);
        self.signal.notify();
        if chunk.is_empty() {
            Poll::Ready(None)
        } else {
            METRICS.socket_writes.inc();
            METRICS.bytes_sent.add(chunk.len() as u64);
            Poll::Ready(Some(Bytes::from(chunk)))
        }
    }

    /// The body is gone (response finished, or the client went away).
    pub(super) fn detach(&self, id: u64) {
        let mut slot = self.receiver.borrow_mut();
        if slot.as_ref().is_some_and(|r| r.id == id) {
            *slot = None;
            self.detached_at.set(Instant::now());
            drop(slot);
            self.signal.notify();
        }
    }

    /// Moves queued STOMP frames into the open receiver's empty chunk, as one `a[...]` frame.
    fn fill(&self, receiver: &mut Receiver) -> bool {
        let mut batch = Vec::new();
        loop {
            let taken = self.outbound.with_queue(|q| frame::write_messages(q, BATCH_BYTES, &mut batch));
            if taken > 0 {
                self.outbound.pop_written(taken);
                if batch.is_empty() {
                    continue; // only frames a SockJS client cannot take (counted as dropped)
                }
                METRICS.frames_sent.add(taken as u64);
                receiver.push(&batch, self.settings.streaming_bytes);
                return true;
            }
            // Transport-framed bytes are never queued for a SockJS session; drop any.
            match self.outbound.with_queue(|q| q.front().map(|f| f.kind)) {
                Some(FrameKind::Raw) => self.outbound.pop_written(1),
                _ => return false,
            }
        }
    }

    /// Does what is due: the STOMP clock, frames to the receiver, the SockJS heart-beat, the
    /// reaping of a session nobody polls. Returns the next deadline, or why to close.
    fn tick(&self) -> Result<Instant, CloseReason> {
        let now = Instant::now();
        let mut next = {
            let mut core = self.core.borrow_mut();
            let core = &mut *core;
            core.stomp.liveness.on_timer(&core.stomp.session, &self.outbound)?
        };
        let mut slot = self.receiver.borrow_mut();
        match slot.as_mut() {
            Some(receiver) if receiver.done || !receiver.chunk.is_empty() => {} // the body's turn
            Some(receiver) => {
                if self.fill(receiver) {
                    self.core.borrow_mut().stomp.liveness.written_at(now);
                } else if now >= receiver.last_sent + self.settings.heartbeat {
                    receiver.push(frame::HEARTBEAT, self.settings.streaming_bytes);
                } else {
                    next = next.min(receiver.last_sent + self.settings.heartbeat);
                }
            }
            None => {
                let due = self.detached_at.get() + self.settings.disconnect_delay;
                if now >= due {
                    METRICS.sockjs_reaped.inc();
                    return Err(CloseReason::SocketClosed);
                }
                next = next.min(due);
            }
        }
        Ok(next)
    }

    async fn run(self: Rc<Self>, node: Rc<Node>) {
        let mut timer = Box::pin(sleep_until(Instant::now()));
        let reason = loop {
            // A CONNECT whose passcode check ended (its end wakes us through the queue).
            let resumed = self.core.borrow_mut().resume_connect(&node);
            if let Some(Received::Close(reason)) = resumed {
                self.outbound.close(reason);
            }
            if let Some(reason) = self.outbound.closing() {
                break reason;
            }
            match self.tick() {
                Ok(next) => timer.as_mut().reset(next),
                Err(reason) => break reason,
            }
            tokio::select! {
                () = self.outbound.notified() => {}
                () = self.signal.notified() => {}
                () = &mut timer => {}
            }
        };
        self.end(&node, reason).await;
    }

    /// Ends the STOMP connection, then lingers `disconnect_delay` so the client's next request
    /// still gets what was queued and the close frame, and forgets the session.
    async fn end(&self, node: &Node, reason: CloseReason) {
        let close = {
            let mut core = self.core.borrow_mut();
            let close = core.goodbye(reason, false);
            core.stomp.session.end(node);
            close
        };
        drop(self.place.borrow_mut().take());
        METRICS.closes.inc(reason.as_str());
        log::debug!("sockjs session {} closed: {}", self.key.1, reason.as_str());
        self.closed.set(Some(close));
        let close_frame = frame::close_frame(close.0, close.1);
        let deadline = Instant::now() + self.settings.disconnect_delay.max(Duration::from_millis(100));
        loop {
            if let Some(receiver) = self.receiver.borrow_mut().as_mut() {
                if !receiver.done && receiver.chunk.is_empty() && !self.fill(receiver) {
                    receiver.push(&close_frame, 0);
                }
            }
            tokio::select! {
                () = self.signal.notified() => {}
                () = sleep_until(deadline) => break,
            }
        }
        SESSIONS.with(|s| s.borrow_mut().remove(&self.key));
        if let Some(mut receiver) = self.receiver.borrow_mut().take() {
            if let Some(waker) = receiver.waker.take() {
                waker.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framings() {
        let mut out = Vec::new();
        ReceiverKind::Streaming.wrap(b"o", &mut out);
        ReceiverKind::EventSource.wrap(b"a[\"x\"]", &mut out);
        assert_eq!(out, b"o\ndata: a[\"x\"]\r\n\r\n");
        out.clear();
        ReceiverKind::EventSource.wrap(b"a[\"100%\r\n\0\"]", &mut out);
        assert_eq!(out, b"data: a[\"100%25%0D%0A%00\"]\r\n\r\n");
        let prelude = ReceiverKind::Streaming.prelude();
        assert_eq!(prelude.len(), 2049);
        assert!(prelude[..2048].iter().all(|b| *b == b'h') && prelude[2048] == b'\n');
        assert_eq!(ReceiverKind::Polling.prelude(), b"");
    }
}
