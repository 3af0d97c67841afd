//! The SockJS `websocket` transport (`/ws/{server}/{session}/websocket`): one task owns the
//! socket, like `connection.rs`, but every WebSocket message carries SockJS frames. Incoming
//! messages are de-framed in place and their JSON decoded straight into the STOMP stream;
//! queued STOMP frames go out batched into one `a[...]` text message per write, one batch in
//! memory at a time.

use std::io;
use std::rc::Rc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant, Sleep};

use crate::connection::{io_reason, read_once, trim_buffer, KEEP_BUFFER, READS_PER_WAKE};
use crate::http::Upgraded;
use crate::metrics::{CloseReason, METRICS};
use crate::node::Node;
use crate::outbound::{FrameKind, OutFrame, Outbound};
use crate::ws::{self, Control, Decoder};

use super::frame;
use super::session::BATCH_BYTES;
use super::stomp::{Core, Received};
use super::Settings;

/// How long the goodbye may take to flush before the socket is dropped.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

struct WebSocketSession {
    stream: TcpStream,
    node: Rc<Node>,
    core: Core,
    outbound: Rc<Outbound>,
    connection: u64,
    /// `[SockJS JSON already de-framed | raw WebSocket bytes]`, as in `connection.rs`.
    buf: Vec<u8>,
    data_len: usize,
    decoder: Decoder,
    /// Encoded WebSocket frames being written; refilled only once written out, so it holds one
    /// batch at most.
    write: Vec<u8>,
    written: usize,
    /// When the last SockJS frame went out: an `h` is due `heartbeat` later.
    last_sent: Instant,
    settings: Settings,
    /// The client sent something that is not SockJS JSON.
    broken: bool,
    timer: std::pin::Pin<Box<Sleep>>,
}

enum Event {
    Readable(io::Result<()>),
    Writable(io::Result<()>),
    Queued,
    Timer,
}

/// Serves an upgraded SockJS WebSocket until it closes.
pub async fn run(up: Upgraded) {
    let settings = Settings::from_config(&up.node.config());
    METRICS.sockjs_sessions.inc("websocket");
    up.node.mark_sockjs(up.connection);
    let mut s = WebSocketSession {
        core: Core::new(&up.node, up.connection, up.session_id, up.outbound.clone()),
        stream: up.stream,
        node: up.node,
        outbound: up.outbound,
        connection: up.connection,
        buf: up.read_buf.to_vec(),
        data_len: 0,
        decoder: Decoder::new(settings.max_message_bytes),
        write: Vec::new(),
        written: 0,
        last_sent: Instant::now(),
        settings,
        broken: false,
        timer: Box::pin(sleep_until(Instant::now())),
    };
    s.push_text(frame::OPEN);
    let reason = s.serve().await;
    let reason = s.finish(reason).await;
    s.core.session.end(&s.node);
    s.node.unregister_connection(s.connection);
    METRICS.closes.inc(reason.as_str());
    log::debug!("sockjs websocket session {} closed: {}", s.core.session.session_id, reason.as_str());
}

impl WebSocketSession {
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
            self.fill();
            if let Err(e) = self.flush() {
                return io_reason(&e);
            }
            let pending = self.written < self.write.len();
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

    fn on_readable(&mut self) -> Result<(), CloseReason> {
        for _ in 0..READS_PER_WAKE {
            if read_once(&self.stream, &mut self.buf)?.is_none() {
                break;
            }
            self.process()?;
        }
        trim_buffer(&mut self.buf);
        Ok(())
    }

    /// De-frames WebSocket, then hands every whole SockJS message to the STOMP session.
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
            self.outbound.push_unbounded(OutFrame {
                bytes: ws::close_frame(e.close_code(), &e.to_string()),
                kind: FrameKind::Raw,
            });
            return Err(CloseReason::WebSocketProtocolError);
        }
        let max_pending = self.settings.max_message_bytes;
        let received = self.core.receive_stream(&self.node, &self.buf[..self.data_len], max_pending);
        let (consumed, received) = match received {
            Ok(r) => r,
            Err(_) => {
                METRICS.sockjs_rejected.inc("broken_json");
                self.broken = true;
                return Err(CloseReason::ProtocolError);
            }
        };
        if consumed > 0 {
            self.buf.copy_within(consumed.., 0);
            self.buf.truncate(self.buf.len() - consumed);
            self.data_len -= consumed;
        }
        if let Received::Close(reason) = received {
            return Err(reason);
        }
        if self.core.liveness.just_connected(&self.core.session) {
            self.timer.as_mut().reset(Instant::now());
        }
        if peer_closed {
            return Err(CloseReason::WebSocketClose);
        }
        Ok(())
    }

    /// The STOMP clock and the SockJS heart-beat.
    fn on_timer(&mut self) -> Result<(), CloseReason> {
        let core = &mut self.core;
        let next = core.liveness.on_timer(&core.session, &self.outbound)?;
        let now = Instant::now();
        let mut due = self.last_sent + self.settings.heartbeat;
        if now >= due {
            // Anything already on its way does as the heart-beat.
            if self.written >= self.write.len() && self.outbound.is_empty() {
                self.push_text(frame::HEARTBEAT);
            }
            due = now + self.settings.heartbeat;
        }
        self.timer.as_mut().reset(next.min(due));
        Ok(())
    }

    /// Appends one SockJS frame as a WebSocket text message.
    fn push_text(&mut self, payload: &[u8]) {
        push_text_message(payload, &mut self.write);
        self.last_sent = Instant::now();
    }

    /// Once the last batch is written out, encodes the next: queued STOMP frames as one
    /// `a[...]` message, or a transport frame (pong, close) as it is.
    fn fill(&mut self) {
        if self.written < self.write.len() {
            return;
        }
        self.write.clear();
        self.written = 0;
        let mut batch = Vec::new();
        let taken = self.outbound.with_queue(|q| frame::write_messages(q, BATCH_BYTES, &mut batch));
        if taken > 0 {
            self.outbound.pop_written(taken);
            METRICS.frames_sent.add(taken as u64);
            self.push_text(&batch);
            self.core.liveness.last_write = Instant::now();
        } else if let Some(raw) = self
            .outbound
            .with_queue(|q| q.front().filter(|f| f.kind == FrameKind::Raw).map(|f| f.bytes.clone()))
        {
            self.outbound.pop_written(1);
            self.write.extend_from_slice(&raw);
        }
        if self.write.capacity() > KEEP_BUFFER && self.write.is_empty() {
            self.write = Vec::new();
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.written < self.write.len() {
            match self.stream.try_write(&self.write[self.written..]) {
                Ok(n) => {
                    METRICS.socket_writes.inc();
                    METRICS.bytes_sent.add(n as u64);
                    self.written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
            if self.written == self.write.len() {
                self.fill();
            }
        }
        Ok(())
    }

    /// Queues the goodbye (ERROR when the reason calls for it, what is left, the SockJS close
    /// frame, the WebSocket close), flushes it with a deadline and shuts the socket.
    async fn finish(&mut self, reason: CloseReason) -> CloseReason {
        if matches!(reason, CloseReason::SocketClosed | CloseReason::IoError) {
            return reason;
        }
        let (code, text) =
            if self.broken { (1007, "Broken JSON encoding.") } else { self.core.goodbye(reason, false) };
        let ws_code = if code == frame::GO_AWAY.0 { 1000 } else { code };
        if reason != CloseReason::WebSocketProtocolError {
            let mut close = Vec::new();
            push_text_message(&frame::close_frame(code, text), &mut close);
            self.outbound.push_unbounded(OutFrame { bytes: close.into(), kind: FrameKind::Raw });
            self.outbound
                .push_unbounded(OutFrame { bytes: ws::close_frame(ws_code, text), kind: FrameKind::Raw });
        }
        let deadline =
            Instant::now() + if reason == CloseReason::SlowConsumer { CLOSE_FLUSH / 8 } else { CLOSE_FLUSH };
        loop {
            self.fill();
            if self.flush().is_err() || (self.written >= self.write.len() && self.outbound.is_empty()) {
                break;
            }
            tokio::select! {
                r = self.stream.writable() => if r.is_err() { break },
                () = sleep_until(deadline) => break,
            }
        }
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.stream).await;
        reason
    }
}

/// Appends `payload` as one unmasked WebSocket text message.
fn push_text_message(payload: &[u8], out: &mut Vec<u8>) {
    let mut header = [0u8; 10];
    let n = ws::encode_header(ws::OP_TEXT, payload.len(), &mut header);
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(payload);
}
