//! The plain WebSocket framing of `/ws`: each STOMP frame is one WebSocket message. Input is
//! parsed straight from the driver's read buffer (no copy); queued frames go out in vectored,
//! coalesced writes that share each broadcast's bytes with every other recipient. The socket
//! task itself is the shared [`Driver`](crate::transport::driver::Driver).

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use crate::node::Node;
use crate::observability::metrics::{CloseReason, METRICS};
use crate::session::input;
use crate::transport::driver::{Driver, Framing, Stomp};
use crate::transport::outbound::{FrameKind, OutFrame, Outbound};
use crate::transport::socket::Socket;
use crate::transport::upgrade::{Serve, Upgraded};
use crate::transport::ws;

/// Frames per vectored write (two slices each: WebSocket header and payload).
const WRITE_BATCH: usize = 32;

/// The `/ws` framing's [`Serve`], for `upgrade`.
#[derive(Debug, Clone, Copy)]
pub struct Ws;

impl Serve for Ws {
    fn serve<S: Socket + 'static>(self, up: Upgraded<S>) -> impl std::future::Future<Output = ()> + 'static {
        run(up)
    }
}

/// Serves an upgraded `/ws` socket until it closes. Not an `async fn`: one would keep `up` in
/// the task beside the driver made of it, for the connection's whole life.
pub fn run<S: Socket>(up: Upgraded<S>) -> impl std::future::Future<Output = ()> {
    // A WebSocket message may carry one whole STOMP frame plus heart-beat EOLs.
    let max_message = up.node.config().limits.max_frame_bytes + 1024;
    Driver::new(up.stream, up.node, up.registration, up.read_buf, max_message, PlainFraming::default())
        .with_client(up.client)
        .run()
}

/// STOMP frames as WebSocket text (or binary) messages.
#[derive(Debug, Default)]
pub struct PlainFraming {
    /// Bytes of the front queued frame already written (after a partial write). A `u32`, which
    /// packs beside the driver's flags (8 bytes of every connection's task): a STOMP frame is
    /// far below 4 GiB (`limits.max_frame_bytes` caps it at 64 MiB).
    front_written: u32,
}

impl Framing for PlainFraming {
    fn receive(&mut self, stomp: &mut Stomp, node: &Node, data: &[u8]) -> (usize, Result<(), CloseReason>) {
        let limits = stomp.limits();
        let fed = input::feed(&mut stomp.session, node, &limits, data, true);
        (fed.consumed, fed.result)
    }

    fn pending(&self, outbound: &Outbound) -> bool {
        !outbound.is_empty()
    }

    /// Writes the queue in vectored batches until it is empty or the socket is full.
    fn flush<S: Socket>(&mut self, stream: &S, outbound: &Outbound) -> io::Result<usize> {
        let mut total = 0;
        loop {
            let front_written = self.front_written as usize;
            let batch = outbound.with_queue(|queue| write_batch(stream, queue, front_written));
            let (written, frames_done, new_front) = match batch {
                Ok(Some(w)) => w,
                Ok(None) => return Ok(total),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                Err(e) => return Err(e),
            };
            METRICS.socket_writes.inc();
            METRICS.bytes_sent.add(written as u64);
            METRICS.frames_sent.add(frames_done as u64);
            total += written;
            outbound.pop_written(frames_done);
            self.front_written = u32::try_from(new_front).unwrap_or(u32::MAX);
        }
    }

    fn partly_written(&self) -> bool {
        self.front_written > 0
    }

    fn goodbye(&mut self, stomp: &mut Stomp, reason: CloseReason, outbound: &Outbound) {
        stomp.session.send_goodbye(reason, stomp.liveness.connect_timeout(), self.partly_written());
        let code = match reason {
            CloseReason::SocketClosed | CloseReason::IoError => None,
            CloseReason::ClientDisconnect | CloseReason::WebSocketClose => Some(1000),
            CloseReason::ServerShutdown | CloseReason::HeartbeatTimeout | CloseReason::ConnectTimeout => {
                Some(1001)
            }
            CloseReason::WebSocketProtocolError => None, // its close frame is already queued
            CloseReason::ProtocolError | CloseReason::AuthFailed | CloseReason::SlowConsumer => Some(1008),
        };
        if let Some(code) = code {
            outbound.push_unbounded(OutFrame {
                bytes: ws::close_frame(code, reason.as_str()),
                kind: FrameKind::Raw,
            });
        }
    }

    fn name(&self) -> &'static str {
        "websocket"
    }
}

/// Writes up to `WRITE_BATCH` queued frames in one vectored write. Returns the bytes written,
/// the frames completed and how much of the next frame was written, or None if nothing queued.
fn write_batch<S: Socket>(
    stream: &S,
    queue: &VecDeque<OutFrame>,
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
