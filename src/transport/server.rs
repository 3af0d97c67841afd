//! The listener: binds the one port, accepts TCP connections (with back-off when the process
//! is out of file descriptors), serves each with hyper, and runs the signals: SIGTERM/SIGINT
//! drain and stop, SIGHUP reloads the reloadable settings (and the TLS certificate files).
//! With `[tls]` on, each socket's TLS handshake comes first, on the request head's clock.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::node::Node;
use crate::transport::signal::Signal;

/// How long a client may take to send its request head, from the moment the socket is accepted
/// (or the last response ended): a socket that sends nothing holds a slot no longer than this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP connections still in their request phase, beyond the WebSocket limit.
const HTTP_HEADROOM: usize = 256;
/// What one HTTP connection may make hyper hold (its read buffer is capped at 16 KiB), charged
/// on the memory budget while it lives.
const HTTP_CONNECTION_BYTES: usize = 16 * 1024;
/// Refused connections being answered at once (each holds its socket and 2 KiB for at most
/// [`REFUSAL_TIME`]); past this many a refused connection is closed without an answer.
const MAX_REFUSING: usize = 64;
/// How long a refused connection may take to send its request head, get its 503 and close.
const REFUSAL_TIME: Duration = Duration::from_secs(1);

/// Things the embedding program is told about (systemd notification, tests).
pub trait Hooks {
    /// The listener is bound and accepting.
    fn ready(&self, _addr: SocketAddr) {}
    /// A SIGHUP reload is starting.
    fn reloading(&self) {}
    /// The SIGHUP reload is over (applied or refused).
    fn reloaded(&self) {}
    /// The drain has begun.
    fn stopping(&self) {}
    /// Called about once a second from the event loop (the systemd watchdog).
    fn tick(&self) {}
}

/// No hooks.
pub struct NoHooks;
impl Hooks for NoHooks {}

/// Binds the listener. Separate from `serve` so a failure to bind is reported before start.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until SIGTERM/SIGINT, then drains. Must run inside a `LocalSet`.
/// `reload` re-reads the configuration for SIGHUP.
pub async fn serve(
    listener: TcpListener,
    node: Rc<Node>,
    hooks: Rc<dyn Hooks>,
    reload: Box<dyn Fn() -> Result<Config, String>>,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let mode =
        if node.config().redis_url.is_some() { "cluster mode, Redis link starting" } else { "local mode" };
    log::info!(
        "listening on {addr} (server id {}, {mode}, advertised as {})",
        node.server_id(),
        node.advertise_url()
    );
    hooks.ready(addr);
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let open_http = Rc::new(std::cell::Cell::new(0usize));
    let idle = Rc::new(IdleSockets::default());
    let refusing = Rc::new(std::cell::Cell::new(0usize));
    let mut reclaim = crate::board::reclaim::Reclaim::new();
    // Set on SIGTERM/SIGINT: until then, serve; after, drain while still answering HTTP
    // (`/healthz` says 503, upgrades are refused) so load balancers and monitors can see it.
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    loop {
        let draining = drain_deadline.is_some();
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let limit = node.config().limits.max_connections + HTTP_HEADROOM;
                    let slots_full = open_http.get() >= limit;
                    let memory_short = !slots_full && !crate::board::memory::admit(HTTP_CONNECTION_BYTES);
                    if memory_short {
                        crate::observability::metrics::METRICS.memory_refused.inc("http");
                    }
                    // The oldest socket that has not sent a request yet gives way, so sockets
                    // that send nothing cannot lock out /healthz and real clients.
                    if (slots_full || memory_short) && !idle.evict_oldest() {
                        let reason = if memory_short { "memory" } else { "limit" };
                        crate::observability::metrics::METRICS.connections_rejected.inc(reason);
                        // A plain 503 means nothing to a TLS client: it is just closed.
                        if node.tls.current().is_none() {
                            refuse(stream, memory_short, &refusing);
                        }
                        continue;
                    }
                    spawn_http(stream, peer, node.clone(), open_http.clone(), idle.clone());
                    reclaim.opened(open_http.get() + node.connection_count());
                }
                Err(e) => {
                    // Usually EMFILE: wait for connections to close instead of spinning.
                    log::warn!("accept failed: {e}; pausing accepts for 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = sigterm.recv(), if !draining => drain_deadline = Some(start_drain(&node, &*hooks)),
            _ = sigint.recv(), if !draining => drain_deadline = Some(start_drain(&node, &*hooks)),
            _ = sighup.recv() => {
                hooks.reloading();
                match reload() {
                    Ok(config) => {
                        node.reload(config);
                        log::info!("configuration reloaded");
                    }
                    Err(e) => log::error!("reload failed, keeping the running configuration: {e}"),
                }
                // The certificate files are read again even when the configuration is not.
                let tls = node.config().tls.clone();
                match node.tls.reload(&tls.cert_file, &tls.key_file) {
                    Ok(Some(fingerprint)) => log::info!("TLS certificate reloaded (SHA-256 {fingerprint})"),
                    Ok(None) => {}
                    Err(e) => log::error!("TLS reload failed, keeping the running certificate: {e}"),
                }
                hooks.reloaded();
            }
            _ = tick.tick() => {
                hooks.tick();
                let bytes = (crate::board::memory::take_peak(), crate::board::memory::used());
                if reclaim.tick(open_http.get() + node.connection_count(), bytes.0, bytes.1) {
                    tokio::task::spawn_local(crate::board::reclaim::round());
                }
            }
            () = tokio::time::sleep(Duration::from_millis(20)), if draining => {
                let done = node.connection_count() == 0 && !node.app().is_some_and(|app| app.busy());
                if done || drain_deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    break;
                }
            }
        }
    }
    drop(listener);
    // The sessions' last room leaves are out: flush the relay and leave the cluster.
    let _ = tokio::time::timeout(Duration::from_secs(3), node.broker.shutdown()).await;
    log::info!("stopped ({} connections left)", node.connection_count());
    Ok(())
}

/// Begins the graceful shutdown; returns its deadline.
fn start_drain(node: &Node, hooks: &dyn Hooks) -> tokio::time::Instant {
    hooks.stopping();
    let timeout = Duration::from_millis(node.config().shutdown_timeout_ms);
    log::info!(
        "shutting down: draining {} connections (at most {} ms)",
        node.connection_count(),
        timeout.as_millis()
    );
    node.drain();
    tokio::time::Instant::now() + timeout
}

/// HTTP sockets accepted that have not sent a request yet, oldest first, each with the signal
/// that closes it.
#[derive(Default)]
struct IdleSockets {
    next: std::cell::Cell<u64>,
    sockets: std::cell::RefCell<std::collections::BTreeMap<u64, Rc<Signal>>>,
}

impl IdleSockets {
    fn add(&self) -> (u64, Rc<Signal>) {
        let id = self.next.get() + 1;
        self.next.set(id);
        let signal = Rc::new(Signal::default());
        self.sockets.borrow_mut().insert(id, signal.clone());
        (id, signal)
    }

    fn remove(&self, id: u64) {
        self.sockets.borrow_mut().remove(&id);
    }

    /// Closes the oldest idle socket; false if there is none.
    fn evict_oldest(&self) -> bool {
        let Some((_, signal)) = self.sockets.borrow_mut().pop_first() else { return false };
        signal.notify();
        crate::observability::metrics::METRICS.http_idle_evicted.inc();
        true
    }
}

/// Answers a connection the server cannot take now with `503 Service Unavailable` and closes
/// it: reads its request head (2 KiB at most, dropped), writes a fixed answer, half-closes and
/// lingers, all within [`REFUSAL_TIME`], so the client reads why instead of a reset. At most
/// [`MAX_REFUSING`] at a time; past that the socket is closed at once.
fn refuse(stream: TcpStream, memory: bool, refusing: &Rc<std::cell::Cell<usize>>) {
    if refusing.get() >= MAX_REFUSING {
        return;
    }
    refusing.set(refusing.get() + 1);
    let refusing = refusing.clone();
    tokio::task::spawn_local(async move {
        let deadline = tokio::time::Instant::now() + REFUSAL_TIME;
        let text =
            if memory { "Server memory budget reached.\n" } else { "Server connection limit reached.\n" };
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\nRetry-After: 1\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{text}",
            text.len()
        );
        let mut head = Vec::with_capacity(2048);
        let read_head = async {
            while head.len() < 2048 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                if stream.readable().await.is_err() {
                    return;
                }
                match stream.try_read_buf(&mut head) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout_at(deadline, read_head).await;
        drop(head);
        let mut stream = stream;
        let write = tokio::io::AsyncWriteExt::write_all(&mut stream, answer.as_bytes());
        if tokio::time::timeout_at(deadline, write).await.is_ok() {
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
            crate::transport::driver::linger(&stream, deadline).await;
        }
        refusing.set(refusing.get() - 1);
    });
}

fn spawn_http(
    stream: TcpStream,
    peer: SocketAddr,
    node: Rc<Node>,
    open_http: Rc<std::cell::Cell<usize>>,
    idle: Rc<IdleSockets>,
) {
    let _ = stream.set_nodelay(true);
    open_http.set(open_http.get() + 1);
    let local = stream.local_addr().unwrap_or(peer);
    let from = crate::auth::access::Peer { remote: peer, local };
    let tls = node.tls.current().map(|c| tokio_rustls::TlsAcceptor::from(c.config.clone()));
    let tls_bytes = if tls.is_some() { crate::tls::socket::TLS_CONNECTION_BYTES } else { 0 };
    let charge = crate::board::memory::Charge::of(HTTP_CONNECTION_BYTES + tls_bytes);
    let (id, evicted) = idle.add();
    tokio::task::spawn_local(async move {
        let idle_in_service = idle.clone();
        let service = service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            // A request came: this socket is no longer idle, nobody may evict it.
            idle_in_service.remove(id);
            request.extensions_mut().insert(from);
            crate::transport::http::handle(node.clone(), request)
        });
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_buf_size(16 * 1024);
        let connection = async {
            match tls {
                None => http.serve_connection(TokioIo::new(stream), service).with_upgrades().await,
                Some(acceptor) => {
                    // The handshake is on the request head's clock (and evictable while idle).
                    let Some(stream) = handshake(acceptor, stream, peer).await else { return Ok(()) };
                    http.serve_connection(TokioIo::new(stream), service).with_upgrades().await
                }
            }
        };
        tokio::select! {
            result = connection => if let Err(e) = result {
                log::debug!("http connection from {peer}: {e}");
            },
            () = evicted.notified() => log::debug!("http connection from {peer}: closed idle to make room"),
        }
        idle.remove(id);
        drop(charge);
        open_http.set(open_http.get().saturating_sub(1));
    });
}

/// What a plain-HTTP request to the TLS port is answered (as nginx does): the port speaks HTTPS.
const PLAIN_ON_TLS: &str = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
    Content-Length: 57\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n\
    This port speaks HTTPS only: open it with https:// here.\n";

/// The TLS handshake of an accepted socket, within [`HEADER_READ_TIMEOUT`]; None (counted in
/// `tls_handshakes_total`) when it fails. A client whose first byte is not a TLS handshake
/// record (a browser sent to `http://`) gets a plain 400 saying to use `https://`.
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let deadline = tokio::time::Instant::now() + HEADER_READ_TIMEOUT;
    let mut first = [0u8; 1];
    // 22: a TLS handshake record (RFC 8446, section 5.1).
    if let Ok(Ok(1)) = tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        if first[0] != 22 {
            crate::observability::metrics::METRICS.tls_handshakes.inc("plain_http");
            log::debug!("plain HTTP from {peer} on the TLS port: answered 400");
            let mut stream = stream;
            let write = tokio::io::AsyncWriteExt::write_all(&mut stream, PLAIN_ON_TLS.as_bytes());
            if tokio::time::timeout_at(deadline, write).await.is_ok() {
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
                crate::transport::driver::linger(&stream, tokio::time::Instant::now() + REFUSAL_TIME).await;
            }
            return None;
        }
    }
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            crate::observability::metrics::METRICS.tls_handshakes.inc("ok");
            Some(stream)
        }
        Ok(Err(e)) => {
            crate::observability::metrics::METRICS.tls_handshakes.inc("failed");
            log::debug!("tls handshake from {peer} failed: {e}");
            None
        }
        Err(_) => {
            crate::observability::metrics::METRICS.tls_handshakes.inc("timeout");
            log::debug!("tls handshake from {peer} timed out");
            None
        }
    }
}
