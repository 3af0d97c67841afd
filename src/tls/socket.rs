//! The TLS [`Socket`]: [`TlsSocket`], a TCP stream with the rustls connection its handshake
//! made, which an upgraded WebSocket's driver (`crate::transport::driver`) reads and writes
//! like a plain one (the interface is `crate::transport::socket`).
//!
//! A TLS write encrypts the whole vectored batch the framing hands it into as few records as
//! it fits (up to 16 KiB of frames per record), then pushes the records to the kernel; records
//! the kernel does not take yet stay in rustls (at most one batch, since nothing more is
//! encrypted until they are out) and [`Socket::holds_output`] tells the driver to wait for
//! writability.

use std::future::Future;
use std::io::{self, IoSlice, Read, Write};
use std::task::{Context, Poll};

use rustls::ServerConnection;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::board::memory::Charge;
use crate::transport::socket::Socket;

/// What a TLS connection holds beyond a plain one while idle (rustls's state, keys and empty
/// buffers; measured in docs/TLS.md), charged on the memory budget while it lives.
pub const TLS_CONNECTION_BYTES: usize = 8 * 1024;

/// A TCP stream carrying TLS, after the handshake: boxed, so a connection's task is no larger
/// than a plain one's.
pub struct TlsSocket(Box<Inner>);

struct Inner {
    tcp: TcpStream,
    tls: std::cell::RefCell<ServerConnection>,
    /// [`TLS_CONNECTION_BYTES`] on the memory budget.
    _charge: Charge,
}

impl TlsSocket {
    /// Takes over the stream and the rustls connection of a finished handshake (as
    /// `tokio_rustls::server::TlsStream::into_inner` gives them back).
    pub fn new(tcp: TcpStream, tls: ServerConnection) -> TlsSocket {
        TlsSocket(Box::new(Inner {
            tcp,
            tls: std::cell::RefCell::new(tls),
            _charge: Charge::of(TLS_CONNECTION_BYTES),
        }))
    }

    /// Whether decrypted bytes wait in rustls (left from an earlier read that did not take
    /// them all): then a read makes progress without the socket being readable.
    fn has_plaintext(&self) -> bool {
        let mut tls = self.0.tls.borrow_mut();
        // An error is reported by the read too.
        tls.process_new_packets().map_or(true, |s| s.plaintext_bytes_to_read() > 0 || s.peer_has_closed())
    }
}

/// `io::Read`/`io::Write` over the non-blocking TCP stream, for rustls's `read_tls`/`write_tls`.
struct Raw<'a>(&'a TcpStream);

impl Read for Raw<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.try_read(buf)?;
        crate::observability::metrics::METRICS.bytes_received.add(n as u64);
        Ok(n)
    }
}

impl Write for Raw<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes rustls's records to the kernel until none are left (Ok) or it takes no more
/// (`WouldBlock`, which also clears the socket's write readiness).
fn push(tcp: &TcpStream, tls: &mut ServerConnection) -> io::Result<()> {
    while tls.wants_write() {
        if tls.write_tls(&mut Raw(tcp))? == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
    }
    Ok(())
}

impl Socket for TlsSocket {
    async fn readable(&self) -> io::Result<()> {
        if self.has_plaintext() {
            return Ok(());
        }
        self.0.tcp.readable().await
    }

    fn writable(&self) -> impl Future<Output = io::Result<()>> {
        self.0.tcp.writable()
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.has_plaintext() {
            return Poll::Ready(Ok(()));
        }
        self.0.tcp.poll_read_ready(cx)
    }

    fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let mut tls = self.0.tls.borrow_mut();
        loop {
            let state = match tls.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // The alert rustls queued tells the client why, if the socket takes it.
                    let _ = push(&self.0.tcp, &mut tls);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            // Answers to the client's own messages (a key update) go out as they come.
            if tls.wants_write() {
                match push(&self.0.tcp, &mut tls) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            if state.plaintext_bytes_to_read() > 0 {
                if buf.capacity() == buf.len() {
                    buf.reserve(4096);
                }
                let start = buf.len();
                buf.resize(buf.capacity(), 0);
                let read = tls.reader().read(&mut buf[start..]);
                buf.truncate(start + *read.as_ref().unwrap_or(&0));
                return read;
            }
            if state.peer_has_closed() {
                return Ok(0);
            }
            match tls.read_tls(&mut Raw(&self.0.tcp)) {
                Ok(0) => return Ok(0),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut tls = self.0.tls.borrow_mut();
        // Earlier records first; nothing more is encrypted while the kernel is full.
        push(&self.0.tcp, &mut tls)?;
        let accepted = tls.writer().write_vectored(bufs)?;
        if accepted == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match push(&self.0.tcp, &mut tls) {
            Ok(()) => Ok(accepted),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(accepted),
            Err(e) => Err(e),
        }
    }

    fn holds_output(&self) -> bool {
        self.0.tls.borrow().wants_write()
    }

    fn send_held(&self) -> io::Result<()> {
        match push(&self.0.tcp, &mut self.0.tls.borrow_mut()) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        {
            let mut tls = self.0.tls.borrow_mut();
            tls.send_close_notify();
            // Best effort: the goodbye was flushed before; a full socket loses only the alert.
            let _ = push(&self.0.tcp, &mut tls);
        }
        AsyncWriteExt::shutdown(&mut self.0.tcp).await
    }

    fn tcp(&self) -> &TcpStream {
        &self.0.tcp
    }
}
