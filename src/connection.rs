//! One WebSocket connection after the upgrade: the task that owns the socket. It reads bytes
//! into one buffer, de-frames WebSocket in place, parses STOMP frames straight from that buffer
//! and hands them to the `Session`; it writes everything queued on the `Outbound` in vectored,
//! coalesced writes, and keeps the heart-beat and connect timers. One task, one `select!`.

use std::io::{self, IoSlice};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant, Sleep};

use crate::liveness::Liveness;
use crate::metrics::{CloseReason, METRICS};
use crate::node::Node;
use crate::outbound::{FrameKind, OutFrame, Outbound};
use crate::protocol;
use crate::session::Session;
use crate::stomp_input;
use crate::ws::{self, Control, Decoder};

/// Frames per vectored write (two slices each: WebSocket header and payload).
const WRITE_BATCH: usize = 32;
/// Socket reads per wake-up before the task lets others run.
pub(crate) const READS_PER_WAKE: usize = 16;
/// Room made in the read buffer before a read.
const READ_CHUNK: usize = 4096;
/// A read buffer larger than this is given back as soon as it is empty again.
pub(crate) const KEEP_BUFFER: usize = 16 * 1024;
/// How long the closing handshake may take to flush before the socket is dropped.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

pub struct Connection {
    stream: TcpStream,
    node: Rc<Node>,
    session: Session,
    outbound: Rc<Outbound>,
    /// `[STOMP bytes already de-framed | raw WebSocket bytes]`. Unallocated while idle.
    buf: Vec<u8>,
    /// Length of the de-framed STOMP prefix of `buf`.
    data_len: usize,
    decoder: Decoder,
    limits: protocol::Limits,
    /// Bytes of the front queued frame already written (after a partial write).
    front_written: usize,
    /// The CONNECT deadline and heart-beats.
    liveness: Liveness,
    /// One timer for heart-beats and the CONNECT deadline, re-armed only when it fires.
    timer: std::pin::Pin<Box<Sleep>>,
}

/// What woke the task.
enum Event {
    Readable(io::Result<()>),
    Writable(io::Result<()>),
    Queued,
    Timer,
}

impl Connection {
    pub fn new(
        stream: TcpStream,
        node: Rc<Node>,
        connection: u64,
        session_id: Rc<str>,
        outbound: Rc<Outbound>,
        initial: Bytes,
    ) -> Connection {
        let config = node.config();
        let limits = protocol::Limits {
            max_frame_bytes: config.limits.max_frame_bytes,
            max_headers: config.limits.max_headers,
            max_header_line_bytes: config.limits.max_header_line_bytes,
        };
        let liveness = Liveness::new(config.stomp.connect_timeout());
        let mut session = Session::new(connection, session_id, outbound.clone());
        session.set_peer(stream.peer_addr().ok().map(|a| a.ip().to_canonical()));
        Connection {
            stream,
            session,
            outbound,
            buf: initial.to_vec(),
            data_len: 0,
            // A WebSocket message may carry one whole STOMP frame plus heart-beat EOLs.
            decoder: Decoder::new(config.limits.max_frame_bytes + 1024),
            limits,
            front_written: 0,
            timer: Box::pin(sleep_until(liveness.connect_deadline())),
            liveness,
            node,
        }
    }

    /// Serves the connection until it closes, then cleans up; returns why it closed.
    pub async fn run(mut self) -> CloseReason {
        let reason = self.serve().await;
        let reason = self.finish(reason).await;
        self.session.end(&self.node);
        self.node.unregister_connection(self.session.connection);
        METRICS.closes.inc(reason.as_str());
        log::debug!("session {} closed: {}", self.session.session_id, reason.as_str());
        reason
    }

    async fn serve(&mut self) -> CloseReason {
        if !self.buf.is_empty() {
            if let Err(reason) = self.process() {
                return reason;
            }
        }
        loop {
            if let Some(reason) = self.outbound.closing() {
                return reason;
            }
            if let Err(e) = self.flush() {
                return io_reason(&e);
            }
            let pending = !self.outbound.is_empty();
            let event = tokio::select! {
                r = self.stream.readable() => Event::Readable(r),
                r = self.stream.writable(), if pending => Event::Writable(r),
                () = self.outbound.notified() => Event::Queued,
                () = &mut self.timer => Event::Timer,
            };
            let result = match event {
                Event::Readable(Ok(())) => self.on_readable(),
                Event::Readable(Err(e)) | Event::Writable(Err(e)) => Err(io_reason(&e)),
                Event::Writable(Ok(())) | Event::Queued => Ok(()),
                Event::Timer => self.on_timer(),
            };
            if let Err(reason) = result {
                return reason;
            }
        }
    }

    /// Reads what the socket has, a bounded number of times, processing after each read.
    fn on_readable(&mut self) -> Result<(), CloseReason> {
        for _ in 0..READS_PER_WAKE {
            if read_once(&self.stream, &mut self.buf)?.is_none() {
                break;
            }
            self.liveness.last_read = Instant::now();
            self.process()?;
        }
        trim_buffer(&mut self.buf);
        Ok(())
    }

    /// De-frames WebSocket, then handles every complete STOMP frame in the buffer.
    fn process(&mut self) -> Result<(), CloseReason> {
        let outbound = &self.outbound;
        let mut peer_closed = false;
        let decoded = self.decoder.decode(&mut self.buf, &mut self.data_len, &mut |control| match control {
            Control::Ping(payload) => {
                outbound.push_unbounded(OutFrame { bytes: ws::pong_frame(&payload), kind: FrameKind::Raw })
            }
            Control::Pong => {}
            Control::Close { .. } => peer_closed = true,
        });
        if let Err(e) = decoded {
            METRICS.protocol_errors.inc("websocket");
            log::debug!("session {}: websocket error: {e}", self.session.session_id);
            // STOMP clients show ERROR frames, not close codes: say it in both.
            // The STOMP frame it interrupted may have asked for a receipt.
            let pending = self.buf.get(..self.data_len).unwrap_or_default();
            let receipt = protocol::pending_receipt(pending, self.session.version(), &self.limits);
            self.session.send_error(&format!("websocket: {e}"), receipt.as_deref());
            self.outbound.push_unbounded(OutFrame {
                bytes: ws::close_frame(e.close_code(), &e.to_string()),
                kind: FrameKind::Raw,
            });
            return Err(CloseReason::WebSocketProtocolError);
        }
        let fed = stomp_input::feed(&mut self.session, &self.node, &self.limits, &self.buf[..self.data_len]);
        let consumed = fed.consumed;
        if consumed > 0 {
            self.buf.copy_within(consumed.., 0);
            self.buf.truncate(self.buf.len() - consumed);
            self.data_len -= consumed;
        }
        fed.result?;
        if self.liveness.just_connected(&self.session) {
            // CONNECT agreed the heart-beats: let the timer compute its next deadline now.
            self.timer.as_mut().reset(Instant::now());
        }
        if peer_closed {
            return Err(CloseReason::WebSocketClose);
        }
        Ok(())
    }

    /// Sends a heart-beat when one is due, closes a silent client, re-arms the timer.
    fn on_timer(&mut self) -> Result<(), CloseReason> {
        let next = self.liveness.on_timer(&self.session, &self.outbound)?;
        self.timer.as_mut().reset(next);
        Ok(())
    }

    /// Writes as much of the queue as the socket takes now, in vectored batches.
    fn flush(&mut self) -> io::Result<()> {
        loop {
            let stream = &self.stream;
            let front_written = self.front_written;
            let batch = self.outbound.with_queue(|queue| write_batch(stream, queue, front_written));
            let (written, frames_done, new_front) = match batch {
                Ok(Some(w)) => w,
                Ok(None) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            };
            METRICS.socket_writes.inc();
            METRICS.bytes_sent.add(written as u64);
            METRICS.frames_sent.add(frames_done as u64);
            self.liveness.last_write = Instant::now();
            self.outbound.pop_written(frames_done);
            self.front_written = new_front;
        }
    }

    /// Says goodbye as the reason calls for (ERROR frame, WebSocket close), flushes with a
    /// deadline and shuts the socket.
    async fn finish(&mut self, reason: CloseReason) -> CloseReason {
        let keep_front = self.front_written > 0;
        self.session.send_goodbye(reason, self.liveness.connect_timeout(), keep_front);
        let code = match reason {
            CloseReason::SocketClosed | CloseReason::IoError => None,
            CloseReason::ClientDisconnect | CloseReason::WebSocketClose => Some(1000),
            CloseReason::ServerShutdown | CloseReason::HeartbeatTimeout | CloseReason::ConnectTimeout => {
                Some(1001)
            }
            CloseReason::WebSocketProtocolError => None, // its close frame is already queued
            CloseReason::ProtocolError | CloseReason::AuthFailed | CloseReason::SlowConsumer => Some(1008),
        };
        if matches!(reason, CloseReason::SocketClosed | CloseReason::IoError) {
            return reason;
        }
        if let Some(code) = code {
            self.outbound.push_unbounded(OutFrame {
                bytes: ws::close_frame(code, reason.as_str()),
                kind: FrameKind::Raw,
            });
        }
        // A slow consumer is not reading: give its goodbye only a moment.
        let flush_for = if reason == CloseReason::SlowConsumer { CLOSE_FLUSH / 8 } else { CLOSE_FLUSH };
        let deadline = Instant::now() + flush_for;
        while !self.outbound.is_empty() {
            if self.flush().is_err() {
                break;
            }
            if self.outbound.is_empty() {
                break;
            }
            tokio::select! {
                r = self.stream.writable() => if r.is_err() { break },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        // Half-close so the client sees the end after the close frame.
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.stream).await;
        reason
    }
}

/// Writes up to `WRITE_BATCH` queued frames in one vectored write. Returns the bytes written,
/// the frames completed and how much of the next frame was written, or None if nothing queued.
fn write_batch(
    stream: &TcpStream,
    queue: &std::collections::VecDeque<OutFrame>,
    front_written: usize,
) -> io::Result<Option<(usize, usize, usize)>> {
    if queue.is_empty() {
        return Ok(None);
    }
    let mut headers = [[0u8; 10]; WRITE_BATCH];
    let mut header_lens = [0usize; WRITE_BATCH];
    let count = queue.len().min(WRITE_BATCH);
    for (i, frame) in queue.iter().take(count).enumerate() {
        header_lens[i] = match frame.kind {
            FrameKind::Raw => 0,
            FrameKind::Text => ws::encode_header(ws::OP_TEXT, frame.bytes.len(), &mut headers[i]),
            FrameKind::Binary => ws::encode_header(ws::OP_BINARY, frame.bytes.len(), &mut headers[i]),
        };
    }
    let mut slices: heapless::Vec<IoSlice<'_>, { 2 * WRITE_BATCH }> = heapless::Vec::new();
    let mut skip = front_written;
    for (i, frame) in queue.iter().take(count).enumerate() {
        let header = &headers[i][..header_lens[i]];
        let h_skip = skip.min(header.len());
        let p_skip = skip - h_skip;
        skip = 0;
        if h_skip < header.len() {
            let _ = slices.push(IoSlice::new(&header[h_skip..]));
        }
        if p_skip < frame.bytes.len() {
            let _ = slices.push(IoSlice::new(&frame.bytes[p_skip..]));
        }
    }
    let written = stream.try_write_vectored(&slices)?;
    // Walk the frames to see how far the write got.
    let mut left = written + front_written;
    let mut done = 0;
    for (i, frame) in queue.iter().take(count).enumerate() {
        let total = header_lens[i] + frame.bytes.len();
        if left >= total {
            left -= total;
            done += 1;
        } else {
            return Ok(Some((written, done, left)));
        }
    }
    Ok(Some((written, done, 0)))
}

/// One non-blocking read into `buf`, making room first: Some(bytes read), or None when the
/// socket has nothing now. End of stream and errors come back as the close reason.
pub(crate) fn read_once(stream: &TcpStream, buf: &mut Vec<u8>) -> Result<Option<usize>, CloseReason> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    match stream.try_read_buf(buf) {
        Ok(0) => Err(CloseReason::SocketClosed),
        Ok(n) => {
            METRICS.bytes_received.add(n as u64);
            Ok(Some(n))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(io_reason(&e)),
    }
}

/// Gives back a read buffer once it is empty (idle connections hold none at all), and shrinks
/// one that grew for a large frame.
pub(crate) fn trim_buffer(buf: &mut Vec<u8>) {
    if buf.is_empty() {
        *buf = Vec::new();
    } else if buf.capacity() > KEEP_BUFFER && buf.len() < KEEP_BUFFER / 2 {
        buf.shrink_to(KEEP_BUFFER / 2);
    }
}

pub(crate) fn io_reason(e: &io::Error) -> CloseReason {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof => {
            CloseReason::SocketClosed
        }
        _ => CloseReason::IoError,
    }
}
