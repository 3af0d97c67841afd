//! The socket an upgraded WebSocket's [`Driver`](crate::driver::Driver) reads and writes:
//! readiness waits and non-blocking reads and writes, as `tokio::net::TcpStream` offers them.
//! [`Socket`] is that interface; the plain TCP stream is one, and [`TlsSocket`] (a TCP stream
//! with the rustls connection its handshake made) is the other. The driver is generic over it,
//! so the plain path compiles to what it was.
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

use crate::memory::Charge;

/// What a TLS connection holds beyond a plain one while idle (rustls's state, keys and empty
/// buffers; measured in docs/TLS.md), charged on the memory budget while it lives.
pub const TLS_CONNECTION_BYTES: usize = 8 * 1024;

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
        crate::metrics::METRICS.bytes_received.add(n as u64);
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

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use bytes::Bytes;
    use tokio::net::{TcpListener, TcpStream};

    use super::TlsSocket;
    use crate::config::Config;
    use crate::engine::memory::MemoryBroker;
    use crate::node::Node;
    use crate::upgrade::Upgraded;

    fn up<S>(node: &Rc<Node>, stream: S) -> Upgraded<S> {
        let registration = node.register_connection().expect("a free place");
        Upgraded { stream, node: node.clone(), registration, read_buf: Bytes::new(), client: None }
    }

    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let client = TcpStream::connect(listener.local_addr().expect("address")).await.expect("connect");
        (listener.accept().await.expect("accept").0, client)
    }

    /// The TLS state is boxed: a TLS connection's task is no larger than a plain one's (whose
    /// bound `driver::tests::a_connection_task_stays_small` keeps).
    #[tokio::test]
    async fn a_tls_connection_task_is_no_larger_than_a_plain_one() {
        let dir = std::env::temp_dir().join(format!("stomp-edge-tls-task-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (cert, key, _) =
            super::super::generate::write_pair(&dir, &["localhost".into()], &[]).expect("pair");
        let certificate = super::super::load(&cert.to_string_lossy(), &key.to_string_lossy()).expect("load");
        let _ = std::fs::remove_dir_all(&dir);
        let node = Rc::new(Node::new(Config::embedded(), Rc::new(MemoryBroker)));
        let (plain_stream, _c1) = socket_pair().await;
        let (tls_stream, _c2) = socket_pair().await;
        let tls = rustls::ServerConnection::new(certificate.config).expect("server connection");
        let plain = std::mem::size_of_val(&crate::connection::run(up(&node, plain_stream)));
        let tls = std::mem::size_of_val(&crate::connection::run(up(&node, TlsSocket::new(tls_stream, tls))));
        println!("connection task: /ws {plain} B plain, {tls} B over TLS");
        assert!(tls <= plain, "/ws task over TLS is {tls} B, plain {plain} B");
    }
}
