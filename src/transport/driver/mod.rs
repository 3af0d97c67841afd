//! The STOMP-over-socket driver: the one task that owns an upgraded WebSocket, whatever the
//! STOMP bytes are wrapped in (plain WebSocket messages on `/ws`, SockJS JSON messages on
//! `/ws/{server}/{session}/websocket`). It reads into one buffer, de-frames WebSocket in place,
//! answers control frames, hands the application bytes to its [`Framing`], writes what the
//! `Outbound` holds through the framing, keeps the STOMP clock, and ends with a goodbye flushed
//! for a bounded time. One task, one `select!`; the framing is the only part that differs.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant, Sleep};

use crate::board::memory::{self, Charge, Pressure};
use crate::node::{Node, Place, Registration};
use crate::observability::metrics::{CloseReason, METRICS};
use crate::session::Outcome;
use crate::transport::outbound::{FrameKind, OutFrame, Outbound};
use crate::transport::socket::Socket;
use crate::transport::ws::{self, Control, Decoder};

mod framing;
mod io_steps;

pub use framing::{Framing, Stomp, BEFORE_CONNECT_BYTES};
use io_steps::read_once;
pub(crate) use io_steps::{io_reason, linger, trim_buffer, KEEP_BUFFER};

/// Socket reads per wake-up before the task lets others run.
const READS_PER_WAKE: usize = 16;
/// How long the goodbye may take to flush before the socket is dropped.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);
/// How long, after the goodbye is out and the socket half-closed, what the client still sends
/// is read and dropped (nginx's lingering close): closing a socket with unread input makes the
/// kernel send a reset, which discards the goodbye before the client reads it.
const LINGER: Duration = Duration::from_secs(2);
/// How often a socket that is not being read (flow control, memory) checks whether it may be.
const RECHECK: Duration = Duration::from_millis(10);
/// Why a socket is not being read (`flow_control_pauses_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pause {
    /// The CONNECT's hashed passcode is being checked (`crate::auth::login_check`).
    LoginCheck,
    /// The memory budget is near its limit.
    Memory,
    /// Subscribers this client published to are backed up (flow control).
    BackedUp,
}

impl Pause {
    fn label(self) -> &'static str {
        match self {
            Pause::LoginCheck => "login_check",
            Pause::Memory => "memory",
            Pause::BackedUp => "backed_up",
        }
    }
}
/// Under memory pressure, how long a connection may hold an unfinished frame without finishing
/// one before it is closed: its bytes are charged and only finishing (or closing) frees them,
/// so sockets holding half frames must not keep the whole board paused.
const STALLED_INPUT_MS: u64 = 2_000;

/// An upgraded socket carrying one STOMP connection.
pub struct Driver<F: Framing, S: Socket = TcpStream> {
    stream: S,
    node: Rc<Node>,
    stomp: Stomp,
    /// The connection's place in the node (freed when the driver is dropped). Its outbound
    /// queue is the session's ([`Session::outbound`](crate::session::Session::outbound)).
    place: Place,
    /// `[application bytes already de-framed | raw WebSocket bytes]`. Unallocated while idle.
    buf: Vec<u8>,
    /// Length of the de-framed prefix of `buf`.
    data_len: usize,
    decoder: Decoder,
    /// One timer for heart-beats, the CONNECT deadline and the framing's clock, re-armed only
    /// when it fires.
    timer: Pin<Box<Sleep>>,
    /// The [`RECHECK`] timer of a socket that is not being read or is under memory pressure;
    /// allocated only while it is.
    recheck: Option<Pin<Box<Sleep>>>,
    framing: F,
    /// The read buffer and the framing's buffers on the memory budget.
    charge: Charge,
    /// Subscribers' queues that this client's last publications found backed up: the socket
    /// is not read until they drain (flow control), or until they overstay their grace.
    /// Boxed, and only while there are some: most clients never publish to a backed-up queue.
    // The extra allocation is the point: 8 bytes in every idle connection's task, not 24.
    #[allow(clippy::box_collection)]
    blocked_on: Option<Box<Vec<Weak<Outbound>>>>,
    /// Why the socket is not being read now, if it is not.
    paused: Option<Pause>,
    /// Input was left unhandled when flow control paused the client.
    unfed: bool,
    /// The last read step stopped at its cap with input left on the socket.
    busy: bool,
    /// When the client last finished a frame or had no unfinished input (see [`STALLED_INPUT_MS`]).
    /// In milliseconds after the connection opened (`Liveness::since_opened`).
    last_progress_ms: u64,
    /// The memory budget was under pressure at the last [`Driver::may_read`]: it is asked
    /// again every [`RECHECK`] even while the socket may be read (a half frame's sender may
    /// send nothing more, and must still meet [`STALLED_INPUT_MS`]).
    pressed: bool,
}

impl<F: Framing, S: Socket> Driver<F, S> {
    /// `initial` holds bytes the client sent after its upgrade request; `max_message_bytes`
    /// bounds one WebSocket message.
    pub fn new(
        stream: S,
        node: Rc<Node>,
        registration: Registration,
        initial: Bytes,
        max_message_bytes: usize,
        framing: F,
    ) -> Driver<F, S> {
        let Registration { place, session_id, outbound } = registration;
        let mut stomp = Stomp::new(&node, place.id, session_id, outbound);
        stomp.session.set_peer(stream.tcp().peer_addr().ok().map(|a| a.ip().to_canonical()));
        Driver {
            stomp,
            stream,
            node,
            place,
            buf: initial.to_vec(),
            data_len: 0,
            decoder: Decoder::new(max_message_bytes),
            // Fires at once: the first `on_timer` computes the schedule.
            timer: Box::pin(sleep_until(Instant::now())),
            recheck: None,
            framing,
            charge: Charge::new(),
            blocked_on: None,
            paused: None,
            unfed: false,
            busy: false,
            last_progress_ms: 0,
            pressed: false,
        }
    }

    /// Tells the session its client's real address (`crate::transport::forwarded`: behind a trusted
    /// proxy, not the socket's peer); None keeps the peer's.
    pub fn with_client(mut self, client: Option<std::net::IpAddr>) -> Self {
        if client.is_some() {
            self.stomp.session.set_peer(client);
        }
        self
    }

    /// Serves the connection until it closes, then cleans up.
    ///
    /// The task is as large as the largest state of this future, and it lives as long as the
    /// connection: what only the end needs (the goodbye's flush, the lingering close, their
    /// timers) is in a box allocated when the connection ends, so an idle socket does not carry
    /// it.
    /// Not an `async fn`: one keeps its argument twice (as given and as moved into its body).
    pub fn run(self) -> impl Future<Output = ()> {
        let mut driver = self;
        async move {
            let reason = driver.serve().await;
            Box::pin(driver.end(reason)).await;
        }
    }

    /// Says goodbye, flushes it, counts and logs the close and lingers.
    async fn end(mut self, reason: CloseReason) {
        let reason = self.finish(reason).await;
        self.stomp.session.end(&self.node);
        METRICS.closes.inc(reason.as_str());
        log::debug!(
            "{} session {} closed: {}",
            self.framing.name(),
            self.stomp.session.session_id,
            reason.as_str()
        );
        if !matches!(reason, CloseReason::SocketClosed | CloseReason::IoError) {
            // The connection is over for everyone else (counted, room left, and its place
            // freed now); the socket lingers only to let the goodbye arrive.
            // The buffers go back now too (they are on the memory budget), not after the linger.
            let Driver { stream, place, buf, framing, charge, .. } = self;
            drop((place, buf, framing, charge));
            linger(stream.tcp(), Instant::now() + LINGER).await;
        }
    }

    async fn serve(&mut self) -> CloseReason {
        if !self.buf.is_empty() {
            if let Err(reason) = self.process() {
                return reason;
            }
        }
        loop {
            if let Some(reason) = self.stomp.session.outbound().closing() {
                return reason;
            }
            if let Err(reason) = self.resume_connect() {
                return reason;
            }
            if let Err(e) = self.flush() {
                return io_reason(&e);
            }
            let pending = self.framing.pending(self.stomp.session.outbound()) || self.stream.holds_output();
            let reading = match self.may_read() {
                Ok(reading) => reading,
                Err(reason) => return reason,
            };
            if reading && self.unfed {
                // Frames read before a flow-control pause are handled before reading more.
                self.unfed = false;
                if let Err(reason) = self.process() {
                    return reason;
                }
                continue;
            }
            // A login check's end wakes the task through the queue: no polling for it.
            if (!reading && self.paused != Some(Pause::LoginCheck)) || self.pressed {
                let at = Instant::now() + RECHECK;
                match &mut self.recheck {
                    Some(recheck) => recheck.as_mut().reset(at),
                    None => self.recheck = Some(Box::pin(sleep_until(at))),
                }
            } else {
                self.recheck = None;
            }
            let woke = match std::future::poll_fn(|cx| self.poll_wake(cx, reading, pending)).await {
                Ok(woke) => woke,
                Err(e) => return io_reason(&e),
            };
            if woke.timer {
                if let Err(reason) = self.on_timer() {
                    return reason;
                }
            }
            if woke.readable {
                if let Err(reason) = self.on_readable() {
                    return reason;
                }
            }
            if std::mem::take(&mut self.busy) {
                // The socket still has input (a flood): let the other connections run first.
                tokio::task::yield_now().await;
            }
        }
    }

    /// Waits, without a future of its own (the socket's and the timers' wakers are kept where
    /// they are), for any of: the socket readable (if `reading`) or writable (if `pending`),
    /// something queued, the timer, the recheck. Every source is polled each time, so none
    /// starves another (a flooding socket cannot keep the timer from firing).
    fn poll_wake(&mut self, cx: &mut Context<'_>, reading: bool, pending: bool) -> Poll<io::Result<Woke>> {
        let mut woke = Woke::default();
        let mut any = false;
        if self.timer.as_mut().poll(cx).is_ready() {
            woke.timer = true;
            any = true;
        }
        if self.recheck.as_mut().is_some_and(|recheck| recheck.as_mut().poll(cx).is_ready()) {
            any = true;
        }
        if Pin::new(&mut self.stomp.session.outbound().notified()).poll(cx).is_ready() {
            any = true;
        }
        if pending {
            if let Poll::Ready(ready) = self.stream.poll_write_ready(cx) {
                ready?;
                any = true;
            }
        }
        if reading {
            if let Poll::Ready(ready) = self.stream.poll_read_ready(cx) {
                ready?;
                woke.readable = true;
                any = true;
            }
        }
        if any {
            Poll::Ready(Ok(woke))
        } else {
            Poll::Pending
        }
    }

    /// Answers the CONNECT once its passcode check is over (`crate::auth::login_check`); the frames
    /// that came after it are handled next.
    fn resume_connect(&mut self) -> Result<(), CloseReason> {
        match self.stomp.session.resume_connect(&self.node) {
            None => Ok(()),
            Some(Outcome::Close(reason)) => Err(reason),
            Some(Outcome::Continue) => {
                self.unfed = true;
                // The wait for the check is not the client being slow to finish a frame.
                self.last_progress_ms = self.stomp.liveness.since_opened(Instant::now());
                if self.stomp.liveness.just_connected(&self.stomp.session) {
                    self.timer.as_mut().reset(Instant::now());
                }
                Ok(())
            }
        }
    }

    /// Whether the socket may be read now. Not while the memory budget is near its limit (the
    /// queues must drain first), nor while subscribers this client published to are backed up
    /// (flow control: a publisher goes at the pace of its audience), nor while the CONNECT
    /// waits for its passcode check. A pause starts counted.
    ///
    /// Under memory pressure a connection that holds budget bytes only reading can free keeps
    /// being read below the budget itself: an unfinished frame (finishing it frees the buffer)
    /// or open transactions (COMMIT, ABORT or a refused SEND free them). Otherwise sockets
    /// holding half frames could keep every socket paused for good. One that has not finished a
    /// frame for [`STALLED_INPUT_MS`] is closed with an ERROR instead (`memory_refused_total
    /// {what="unfinished_frame"}`).
    fn may_read(&mut self) -> Result<bool, CloseReason> {
        let pressure = memory::pressure();
        let awaiting_login = self.stomp.session.awaiting_login();
        let holds_input = self.holds_input();
        // A CONNECT waiting for its passcode check is not read whatever the pressure (it holds
        // at most a CONNECT's worth), and the check's end wakes the task. From 3/4 of the
        // budget, where held memory (transactions, history) is refused, an unfinished frame is
        // on the stall clock too: half frames must not keep that room for good either.
        self.pressed = !awaiting_login
            && (pressure >= Pressure::High || (holds_input && memory::used() >= memory::held_mark()));
        if self.pressed
            && holds_input
            && self.stomp.liveness.since_opened(Instant::now()).saturating_sub(self.last_progress_ms)
                >= STALLED_INPUT_MS
        {
            METRICS.memory_refused.inc("unfinished_frame");
            log::info!(
                "memory budget short: closing session {}, its unfinished frame stalled",
                self.stomp.session.session_id
            );
            self.stomp.session.send_error(
                "server memory is short and this frame did not finish in time: it was dropped",
                None,
            );
            return Err(CloseReason::ProtocolError);
        }
        let why = if awaiting_login {
            Some(Pause::LoginCheck)
        } else if pressure >= Pressure::High {
            self.node.shed_stalled_consumers();
            let frees_by_reading = holds_input || self.stomp.session.holds_transactions();
            (pressure == Pressure::Full || !frees_by_reading).then_some(Pause::Memory)
        } else {
            if let Some(blocked_on) = &mut self.blocked_on {
                blocked_on.retain(|w| w.upgrade().is_some_and(|o| o.holds_back_publishers()));
                if blocked_on.is_empty() {
                    self.blocked_on = None;
                }
            }
            self.blocked_on.is_some().then_some(Pause::BackedUp)
        };
        if let Some(why) = why {
            if self.paused.is_none() {
                METRICS.flow_paused.inc(why.label());
                if why == Pause::Memory {
                    METRICS.memory_refused.inc("read");
                }
            }
            // Silence while the server does not read is not the client's fault.
            self.stomp.liveness.read_at(Instant::now());
        }
        self.paused = why;
        Ok(why.is_none())
    }

    /// Whether the client's input holds an unfinished frame (in the read buffer or the
    /// framing's own).
    fn holds_input(&self) -> bool {
        !self.buf.is_empty() || self.framing.held_bytes() > 0
    }

    /// Reads what the socket has, a bounded number of times, processing after each read; stops
    /// early once the client must wait (flow control).
    fn on_readable(&mut self) -> Result<(), CloseReason> {
        self.busy = true;
        for _ in 0..READS_PER_WAKE {
            if self.pressed && memory::pressure() == Pressure::Full {
                // A half frame's sender is read under pressure, but not past the budget.
                break;
            }
            if read_once(&self.stream, &mut self.buf)?.is_none() {
                self.busy = false;
                break;
            }
            self.stomp.liveness.read_at(Instant::now());
            self.charge.set(self.buf.capacity() + self.framing.held_bytes());
            self.process()?;
            if self.blocked_on.is_some() || self.stomp.session.awaiting_login() {
                break;
            }
        }
        trim_buffer(&mut self.buf);
        self.charge.set(self.buf.capacity() + self.framing.held_bytes());
        Ok(())
    }

    /// De-frames WebSocket, answers control frames, then hands the application bytes to the
    /// framing and drops what it consumed.
    fn process(&mut self) -> Result<(), CloseReason> {
        let outbound = self.stomp.session.outbound();
        let mut peer_closed = false;
        let decoded = self.decoder.decode(&mut self.buf, &mut self.data_len, &mut |control| match control {
            Control::Ping(payload) => {
                outbound.push_pong(OutFrame { bytes: ws::pong_frame(&payload), kind: FrameKind::Raw })
            }
            Control::Pong => {}
            Control::Close { .. } => peer_closed = true,
        });
        if let Err(e) = decoded {
            METRICS.protocol_errors.inc("websocket");
            log::debug!("session {}: websocket error: {e}", self.stomp.session.session_id);
            // STOMP clients show ERROR frames, not close codes: say it in both. The STOMP frame
            // it interrupted may have asked for a receipt (plain framing: the bytes are STOMP).
            let pending = self.framing.pending_stomp(self.buf.get(..self.data_len).unwrap_or_default());
            let receipt =
                crate::protocol::pending_receipt(pending, self.stomp.session.version(), &self.stomp.limits());
            self.stomp.session.send_error(&format!("websocket: {e}"), receipt.as_deref());
            self.stomp.session.outbound().push_unbounded(OutFrame {
                bytes: ws::close_frame(e.close_code(), &e.to_string()),
                kind: FrameKind::Raw,
            });
            return Err(CloseReason::WebSocketProtocolError);
        }
        // Backed-up queues found by other tasks' deliveries are not this client's doing.
        drop(self.node.hub.take_backed_up());
        let (consumed, result) =
            self.framing.receive(&mut self.stomp, &self.node, &self.buf[..self.data_len]);
        if consumed > 0 {
            self.buf.copy_within(consumed.., 0);
            self.buf.truncate(self.buf.len() - consumed);
            self.data_len -= consumed;
        }
        if consumed > 0 || !self.holds_input() {
            self.last_progress_ms = self.stomp.liveness.since_opened(Instant::now());
        }
        for queue in self.node.hub.take_backed_up() {
            let blocked_on = self.blocked_on.get_or_insert_with(Box::default);
            if !blocked_on.iter().any(|w| w.ptr_eq(&queue)) {
                blocked_on.push(queue);
            }
        }
        // Paced input stops at a backed-up delivery and may leave whole frames behind.
        self.unfed = self.blocked_on.is_some();
        result?;
        if !self.stomp.session.is_connected() && self.buf.len() > BEFORE_CONNECT_BYTES {
            // Only a CONNECT-sized message may be buffered before CONNECT.
            METRICS.protocol_errors.inc("frame_too_large");
            self.stomp
                .session
                .send_error(&format!("more than {BEFORE_CONNECT_BYTES} bytes sent before CONNECT"), None);
            return Err(CloseReason::ProtocolError);
        }
        if self.stomp.liveness.just_connected(&self.stomp.session) {
            // CONNECT agreed the heart-beats: let the timer compute its next deadline now.
            self.timer.as_mut().reset(Instant::now());
        }
        if peer_closed {
            return Err(CloseReason::WebSocketClose);
        }
        Ok(())
    }

    /// The STOMP clock and the framing's: sends what is due, closes a silent client, re-arms.
    fn on_timer(&mut self) -> Result<(), CloseReason> {
        let stomp = &mut self.stomp;
        let mut next = stomp.liveness.on_timer(&stomp.session, stomp.session.outbound())?;
        if let Some(due) = self.framing.on_timer(stomp.session.outbound(), Instant::now()) {
            next = next.min(due);
        }
        self.timer.as_mut().reset(next);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.send_held()?;
        let written = self.framing.flush(&self.stream, self.stomp.session.outbound())?;
        if written > 0 {
            self.stomp.liveness.written_at(Instant::now());
        }
        Ok(())
    }

    /// Says goodbye as the reason calls for, flushes it with a deadline and shuts the socket.
    async fn finish(&mut self, reason: CloseReason) -> CloseReason {
        if matches!(reason, CloseReason::SocketClosed | CloseReason::IoError) {
            return reason;
        }
        let outbound = self.stomp.session.outbound().clone();
        self.framing.goodbye(&mut self.stomp, reason, &outbound);
        // A slow consumer is not reading: give its goodbye only a moment.
        let flush_for = if reason == CloseReason::SlowConsumer { CLOSE_FLUSH / 8 } else { CLOSE_FLUSH };
        self.flush_until(Instant::now() + flush_for).await;
        // Half-close so the client sees the end after the close frame.
        let _ = self.stream.shutdown().await;
        reason
    }

    /// Writes what is queued until it is all out, the socket fails or `deadline` passes.
    async fn flush_until(&mut self, deadline: Instant) {
        loop {
            if self.flush().is_err()
                || !(self.framing.pending(self.stomp.session.outbound()) || self.stream.holds_output())
            {
                return;
            }
            tokio::select! {
                r = self.stream.writable() => if r.is_err() { return },
                () = sleep_until(deadline) => return,
            }
        }
    }
}

/// What woke the task and needs handling beyond the loop's own steps (flush, the read check):
/// something queued, the socket writable or the recheck need nothing more.
#[derive(Default)]
struct Woke {
    /// The socket may have input.
    readable: bool,
    /// The timer fired.
    timer: bool,
}
