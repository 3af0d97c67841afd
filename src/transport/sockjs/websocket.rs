//! The SockJS `websocket` transport (`/ws/{server}/{session}/websocket`): the shared socket
//! [`Driver`](crate::transport::driver::Driver) with a framing in which every WebSocket message
//! carries SockJS frames. Incoming messages' JSON is decoded into the STOMP stream; queued STOMP
//! frames go out batched into one `a[...]` text message per write, one batch in memory at a time;
//! an `h` goes out when nothing else did for the heart-beat interval.

use std::io;

use tokio::time::Instant;

use crate::node::Node;
use crate::observability::metrics::{CloseReason, METRICS};
use crate::session::input;
use crate::transport::driver::{trim_buffer, Driver, Framing, Stomp, KEEP_BUFFER};
use crate::transport::outbound::{FrameKind, OutFrame, Outbound};
use crate::transport::socket::Socket;
use crate::transport::upgrade::{Serve, Upgraded};
use crate::transport::ws;

use super::frame;
use super::session::BATCH_BYTES;
use super::stomp::close_code;
use super::Settings;

/// SockJS's `websocket` transport's [`Serve`], for `upgrade`.
#[derive(Debug, Clone, Copy)]
pub struct SockJsWs;

impl Serve for SockJsWs {
    fn serve<S: Socket + 'static>(self, up: Upgraded<S>) -> impl std::future::Future<Output = ()> + 'static {
        run(up)
    }
}

/// Serves an upgraded SockJS WebSocket until it closes. Not an `async fn`, for the reason
/// given at [`crate::transport::connection::run`].
pub fn run<S: Socket>(up: Upgraded<S>) -> impl std::future::Future<Output = ()> {
    let settings = Settings::from_config(&up.node.config());
    METRICS.sockjs_sessions.inc("websocket");
    up.node.mark_sockjs(up.registration.place.id);
    let mut framing = SockJsFraming {
        input: Vec::new(),
        write: Vec::new(),
        written: 0,
        last_sent: Instant::now(),
        settings,
        broken: false,
    };
    framing.push_text(frame::OPEN);
    let max_message = settings.max_message_bytes;
    Driver::new(up.stream, up.node, up.registration, up.read_buf, max_message, framing)
        .with_client(up.client)
        .run()
}

/// SockJS frames in WebSocket text messages.
struct SockJsFraming {
    /// STOMP bytes decoded from SockJS messages and not yet a whole frame; `protocol::parse`
    /// bounds it by `limits.max_frame_bytes`.
    input: Vec<u8>,
    /// Encoded WebSocket frames being written; refilled only once written out, so it holds one
    /// batch at most.
    write: Vec<u8>,
    written: usize,
    /// When the last SockJS frame went out: an `h` is due `heartbeat` later.
    last_sent: Instant,
    settings: Settings,
    /// The client sent something that is not SockJS JSON.
    broken: bool,
}

impl SockJsFraming {
    /// Appends one SockJS frame as a WebSocket text message.
    fn push_text(&mut self, payload: &[u8]) {
        push_text_message(payload, &mut self.write);
        self.last_sent = Instant::now();
    }

    /// Once the last batch is written out, encodes the next: queued STOMP frames as one
    /// `a[...]` message, or a transport frame (pong, close) as it is.
    fn fill(&mut self, outbound: &Outbound) {
        if self.written < self.write.len() {
            return;
        }
        self.write.clear();
        self.written = 0;
        let mut batch = Vec::new();
        let mut taken = 0;
        while batch.is_empty() {
            // Frames a SockJS client cannot take are taken off without a batch (and counted).
            taken = outbound.with_queue(|q| frame::write_messages(q, BATCH_BYTES, &mut batch));
            if taken == 0 {
                break;
            }
            outbound.pop_written(taken);
        }
        if !batch.is_empty() {
            METRICS.frames_sent.add(taken as u64);
            self.push_text(&batch);
        } else if let Some(raw) =
            outbound.with_queue(|q| q.front().filter(|f| f.kind == FrameKind::Raw).map(|f| f.bytes.clone()))
        {
            outbound.pop_written(1);
            self.write.extend_from_slice(&raw);
        }
        if self.write.capacity() > KEEP_BUFFER && self.write.is_empty() {
            self.write = Vec::new();
        }
    }
}

impl Framing for SockJsFraming {
    fn receive(&mut self, stomp: &mut Stomp, node: &Node, data: &[u8]) -> (usize, Result<(), CloseReason>) {
        let consumed = match frame::decode_stream(data, &mut self.input, self.settings.max_message_bytes) {
            Ok(consumed) => consumed,
            Err(_) => {
                METRICS.sockjs_rejected.inc("broken_json");
                self.broken = true;
                return (0, Err(CloseReason::ProtocolError));
            }
        };
        let limits = stomp.limits();
        let result = input::feed_buffer(&mut stomp.session, node, &limits, &mut self.input, true);
        trim_buffer(&mut self.input);
        (consumed, result)
    }

    fn pending(&self, outbound: &Outbound) -> bool {
        self.written < self.write.len() || !outbound.is_empty()
    }

    fn flush<S: Socket>(&mut self, stream: &S, outbound: &Outbound) -> io::Result<usize> {
        let mut total = 0;
        self.fill(outbound);
        while self.written < self.write.len() {
            match stream.try_write(&self.write[self.written..]) {
                Ok(n) => {
                    METRICS.socket_writes.inc();
                    METRICS.bytes_sent.add(n as u64);
                    self.written += n;
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                Err(e) => return Err(e),
            }
            self.fill(outbound);
        }
        Ok(total)
    }

    /// The SockJS heart-beat: an `h` when nothing went out for the interval.
    fn on_timer(&mut self, outbound: &Outbound, now: Instant) -> Option<Instant> {
        let due = self.last_sent + self.settings.heartbeat;
        if now < due {
            return Some(due);
        }
        // Anything already on its way does as the heart-beat.
        if self.written >= self.write.len() && outbound.is_empty() {
            self.push_text(frame::HEARTBEAT);
        }
        Some(now + self.settings.heartbeat)
    }

    /// The ERROR when the reason calls for one, then the SockJS close frame and the WebSocket
    /// close.
    fn goodbye(&mut self, stomp: &mut Stomp, reason: CloseReason, outbound: &Outbound) {
        let (code, text) = if self.broken {
            (1007, "Broken JSON encoding.")
        } else {
            stomp.session.send_goodbye(reason, stomp.liveness.connect_timeout(), false);
            close_code(reason)
        };
        if reason == CloseReason::WebSocketProtocolError {
            return; // its close frame is already queued
        }
        let ws_code = if code == frame::GO_AWAY.0 { 1000 } else { code };
        let mut close = Vec::new();
        push_text_message(&frame::close_frame(code, text), &mut close);
        outbound.push_unbounded(OutFrame { bytes: close.into(), kind: FrameKind::Raw });
        outbound.push_unbounded(OutFrame { bytes: ws::close_frame(ws_code, text), kind: FrameKind::Raw });
    }

    fn held_bytes(&self) -> usize {
        self.input.capacity() + self.write.capacity()
    }

    fn name(&self) -> &'static str {
        "sockjs websocket"
    }

    fn pending_stomp<'a>(&'a self, _data: &'a [u8]) -> &'a [u8] {
        &self.input
    }
}

/// Appends `payload` as one unmasked WebSocket text message.
fn push_text_message(payload: &[u8], out: &mut Vec<u8>) {
    let mut header = [0u8; 10];
    let n = ws::encode_header(ws::OP_TEXT, payload.len(), &mut header);
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(payload);
}
