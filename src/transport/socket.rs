//! The socket an upgraded WebSocket's driver (`crate::transport::driver`) reads and writes:
//! readiness waits and non-blocking reads and writes, as `tokio::net::TcpStream` offers them.
//! [`Socket`] is that interface; the plain TCP stream is one, and `crate::tls::socket::TlsSocket`
//! (a TCP stream with the rustls connection its handshake made) is the other. The driver is
//! generic over it, so the plain path compiles to what it was.

use std::future::Future;
use std::io::{self, IoSlice};
use std::task::{Context, Poll};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A connected stream socket with readiness waits and non-blocking I/O.
pub trait Socket {
    /// Waits until a read may make progress.
    fn readable(&self) -> impl Future<Output = io::Result<()>>;
    /// Waits until a write may make progress.
    fn writable(&self) -> impl Future<Output = io::Result<()>>;
    /// Reads what is there into the spare capacity of `buf` (made if there is none); `Ok(0)`
    /// is the end of the stream, `WouldBlock` nothing yet.
    fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize>;
    /// Writes as much of `buf` as goes now; `WouldBlock` when nothing does.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.try_write_vectored(&[IoSlice::new(buf)])
    }
    /// Writes as much of `bufs`, in order, as goes now, in one go.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Whether bytes already accepted by a write still wait for the kernel (TLS records).
    fn holds_output(&self) -> bool {
        false
    }
    /// Pushes what [`Socket::holds_output`] holds to the kernel, as far as it takes it.
    fn send_held(&self) -> io::Result<()> {
        Ok(())
    }
    /// Polls for what [`Socket::readable`] waits for, for a task that keeps no future of its
    /// own while it waits (the driver's `poll_wake`).
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp().poll_read_ready(cx)
    }
    /// Polls for what [`Socket::writable`] waits for.
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp().poll_write_ready(cx)
    }
    /// Ends the sending side (a TLS `close_notify`, then a TCP FIN).
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>>;
    /// The TCP stream underneath (the lingering close reads and drops from it).
    fn tcp(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> {
        TcpStream::readable(self)
    }

    fn writable(&self) -> impl Future<Output = io::Result<()>> {
        TcpStream::writable(self)
    }

    fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        TcpStream::try_read_buf(self, buf)
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, buf)
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        TcpStream::try_write_vectored(self, bufs)
    }

    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> {
        AsyncWriteExt::shutdown(self)
    }

    fn tcp(&self) -> &TcpStream {
        self
    }
}
