//! The driver's socket steps that need none of its state: one non-blocking read, the
//! lingering close, giving back an idle buffer, and an I/O error's close reason.

use std::io;

use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};

use crate::observability::metrics::{CloseReason, METRICS};
use crate::transport::socket::Socket;

/// Room made in the read buffer before a read.
const READ_CHUNK: usize = 4096;
/// A buffer larger than this is given back as soon as it is empty again.
pub(crate) const KEEP_BUFFER: usize = 16 * 1024;

/// Reads and drops what the client still sends until it closes its side, the socket fails
/// or `deadline` passes, so the close is a FIN after the goodbye, not a reset before it.
pub(crate) async fn linger(stream: &TcpStream, deadline: Instant) {
    // On the heap, not in the future: an array here would be part of every connection's task
    // for its whole life (the task is as large as its largest state), 4 KiB per idle socket.
    let mut sink = vec![0u8; 4096];
    loop {
        match stream.try_read(&mut sink) {
            Ok(0) => return,
            Ok(n) => METRICS.bytes_received.add(n as u64),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::select! {
                    r = stream.readable() => if r.is_err() { return },
                    () = sleep_until(deadline) => return,
                }
            }
            Err(_) => return,
        }
    }
}

/// One non-blocking read into `buf`, making room first: Some(bytes read), or None when the
/// socket has nothing now. End of stream and errors come back as the close reason.
pub(super) fn read_once<S: Socket>(stream: &S, buf: &mut Vec<u8>) -> Result<Option<usize>, CloseReason> {
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

/// Gives back a buffer once it is empty (idle connections hold none at all), and shrinks one
/// that grew for a large frame.
pub(crate) fn trim_buffer(buf: &mut Vec<u8>) {
    if buf.is_empty() {
        *buf = Vec::new();
    } else if buf.capacity() > KEEP_BUFFER && buf.len() < KEEP_BUFFER / 2 {
        buf.shrink_to(KEEP_BUFFER / 2);
    }
}

/// How a socket error is counted: a reset, broken pipe or early end is the client going away
/// (`SocketClosed`), anything else an `IoError`.
pub(crate) fn io_reason(e: &io::Error) -> CloseReason {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof => {
            CloseReason::SocketClosed
        }
        _ => CloseReason::IoError,
    }
}
