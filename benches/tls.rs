//! What TLS on the board's port costs, printed beside plain (figures, not asserts): the server's
//! CPU per full handshake (in-process rustls with the server's own settings, and the real
//! binary's process CPU per handshake from a client), the RSS of an idle subscribed connection
//! over `wss://` against `ws://`, and fan-out deliveries per server-CPU-second over both.
//!
//! `cargo bench --bench tls` runs `target/release/stomp-edge` (build it first: `cargo build
//! --release`). Against the board binary under emulation:
//! `cargo bench --bench tls -- --bin target/aarch64-unknown-linux-gnu/release/stomp-edge
//! --wrapper qemu-aarch64 --skip-fanout` (qemu-user's `-L` sysroot is added for it).
//! Options: `--handshakes N` (default 300), `--idle N` connections (default 1000),
//! `--seconds S` of fan-out (default 5), `--skip-fanout`, `--skip-idle`.
//! The client shares the machine's cores with the server; server CPU is read from /proc/PID.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Res<T> = Result<T, String>;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Ws = WebSocketStream<Box<dyn Io>>;

struct Options {
    bin: PathBuf,
    wrapper: Option<String>,
    handshakes: usize,
    idle: usize,
    seconds: f64,
    fanout: bool,
    idle_run: bool,
}

fn options() -> Res<Options> {
    let mut o = Options {
        bin: PathBuf::from("target/release/stomp-edge"),
        wrapper: None,
        handshakes: 300,
        idle: 1000,
        seconds: 5.0,
        fanout: true,
        idle_run: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--bin" => o.bin = PathBuf::from(value()?),
            "--wrapper" => o.wrapper = Some(value()?),
            "--handshakes" => o.handshakes = value()?.parse().map_err(|_| "--handshakes N")?,
            "--idle" => o.idle = value()?.parse().map_err(|_| "--idle N")?,
            "--seconds" => o.seconds = value()?.parse().map_err(|_| "--seconds S")?,
            "--skip-fanout" => o.fanout = false,
            "--skip-idle" => o.idle_run = false,
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    o.handshakes = o.handshakes.clamp(1, 100_000);
    o.idle = o.idle.clamp(1, 10_000);
    o.seconds = o.seconds.clamp(0.5, 120.0);
    Ok(o)
}

/// The board certificate (ECDSA P-256, as `--generate-cert` makes) in a temporary directory.
struct Cert {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Cert {
    fn new() -> Res<Cert> {
        let dir = std::env::temp_dir().join(format!("stomp-edge-bench-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (cert, key, _) = stomp_edge::tls::generate::write_pair(&dir, &["localhost".into()], &[])?;
        Ok(Cert { dir, cert, key })
    }

    fn client(&self) -> Res<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.cert).map_err(|e| e.to_string())? {
            roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        }
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(stomp_edge::tls::provider(false)))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
        // Every handshake a full one.
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(config))
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Server-side CPU of full handshakes with the server's own settings, in memory (no sockets):
/// microseconds per handshake, and the suite chosen.
fn in_process_handshakes(cert: &Cert, n: usize) -> Res<(f64, String)> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert.cert)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&cert.key).map_err(|e| e.to_string())?;
    let server = Arc::new(stomp_edge::tls::server_config(chain, key).map_err(|e| e.to_string())?);
    let client = cert.client()?;
    let mut server_time = Duration::ZERO;
    let mut suite = String::new();
    for _ in 0..n {
        let mut s = rustls::ServerConnection::new(server.clone()).map_err(|e| e.to_string())?;
        let mut c = rustls::ClientConnection::new(
            client.clone(),
            ServerName::try_from("localhost").map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        for _ in 0..10 {
            buf.clear();
            while c.wants_write() {
                c.write_tls(&mut buf).map_err(|e| e.to_string())?;
            }
            let start = thread_cpu();
            let mut slice = buf.as_slice();
            while !slice.is_empty() {
                s.read_tls(&mut slice).map_err(|e| e.to_string())?;
                s.process_new_packets().map_err(|e| e.to_string())?;
            }
            buf.clear();
            while s.wants_write() {
                s.write_tls(&mut buf).map_err(|e| e.to_string())?;
            }
            server_time += thread_cpu().saturating_sub(start);
            let mut slice = buf.as_slice();
            while !slice.is_empty() {
                c.read_tls(&mut slice).map_err(|e| e.to_string())?;
                c.process_new_packets().map_err(|e| e.to_string())?;
            }
            if !s.is_handshaking() && !c.is_handshaking() && !c.wants_write() {
                break;
            }
        }
        if s.is_handshaking() {
            return Err("in-process handshake did not finish".into());
        }
        suite = format!("{:?}", s.negotiated_cipher_suite().map(|s| s.suite()));
    }
    Ok((server_time.as_secs_f64() * 1e6 / n as f64, suite))
}

/// CPU time this thread has run (`/proc/thread-self/schedstat`, nanoseconds): unlike the wall
/// clock, not inflated by other processes on a busy machine.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// A running server process.
struct Server {
    child: Child,
    pid: u32,
    port: u16,
}

impl Server {
    fn start(o: &Options, tls: Option<&Cert>) -> Res<Server> {
        let mut cmd = match &o.wrapper {
            Some(w) => {
                let mut c = Command::new(w);
                if w.contains("qemu-aarch64") {
                    c.args(["-L", "/usr/aarch64-linux-gnu"]);
                }
                c.arg(&o.bin);
                c
            }
            None => Command::new(&o.bin),
        };
        cmd.args(["--listen", "127.0.0.1:0"]);
        cmd.env("STOMP_EDGE_LIMITS_MAX_CONNECTIONS", "20000");
        if let Some(cert) = tls {
            cmd.env("STOMP_EDGE_TLS_CERT_FILE", &cert.cert).env("STOMP_EDGE_TLS_KEY_FILE", &cert.key);
        }
        cmd.env_remove("STOMP_EDGE_BIN").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", o.bin.display()))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("SHA-256") {
                    // The server's own word on its cipher order (its CPU, maybe emulated).
                    println!("    server: {}", line[i..].split_once("; ").map_or("", |(_, r)| r));
                }
                if let Some(i) = line.find("listening on 127.0.0.1:") {
                    let port = line[i + 23..].split_whitespace().next().and_then(|p| p.parse::<u16>().ok());
                    let _ = tx.send(port);
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(60))
            .ok()
            .flatten()
            .ok_or("server did not report its port")?;
        let pid = child.id();
        Ok(Server { child, pid, port })
    }

    /// CPU seconds (user + system) of the process so far.
    fn cpu(&self) -> f64 {
        let ticks = 100.0; // USER_HZ on Linux
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|s| {
                let rest: Vec<String> =
                    s.rsplit_once(')')?.1.split_whitespace().map(str::to_string).collect();
                Some((rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?) / ticks)
            })
            .unwrap_or(0.0)
    }

    fn rss(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .map_or(0, |kib| kib * 1024)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// TCP, and TLS when `tls` is set, to the server.
async fn connect(port: u16, tls: Option<&Arc<rustls::ClientConfig>>) -> Res<Box<dyn Io>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    Ok(match tls {
        None => Box::new(tcp),
        Some(config) => {
            let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
            Box::new(
                tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| e.to_string())?,
            )
        }
    })
}

/// (frames sent, socket writes) from the server's `/metrics`.
async fn write_counts(port: u16, tls: Option<&Arc<rustls::ClientConfig>>) -> Res<(f64, f64)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut io = connect(port, tls).await?;
    io.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let _ = io.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw);
    let get = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((get("stomp_edge_frames_sent_total"), get("stomp_edge_socket_writes_total")))
}

/// TCP (and TLS when `tls` is set) to the server, then the WebSocket upgrade.
async fn open(port: u16, tls: Option<&Arc<rustls::ClientConfig>>) -> Res<Ws> {
    let io = connect(port, tls).await?;
    let url = format!("{}://localhost:{port}/ws", if tls.is_some() { "wss" } else { "ws" });
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str())
            .map_err(|e| e.to_string())?;
    request.headers_mut().insert("sec-websocket-protocol", "v12.stomp".parse().map_err(|_| "header")?);
    let (ws, _) = tokio_tungstenite::client_async(request, io).await.map_err(|e| e.to_string())?;
    Ok(ws)
}

/// Opens, CONNECTs and SUBSCRIBEs `destination` (waiting for the RECEIPT).
async fn subscriber(port: u16, tls: Option<&Arc<rustls::ClientConfig>>, destination: &str) -> Res<Ws> {
    let mut ws = open(port, tls).await?;
    let frames = format!(
        "CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\0SUBSCRIBE\nid:0\ndestination:{destination}\nreceipt:r\n\n\0"
    );
    ws.send(Message::text(frames)).await.map_err(|e| e.to_string())?;
    let mut receipt = false;
    while !receipt {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next()).await.map_err(|_| "no RECEIPT")?;
        match msg {
            Some(Ok(Message::Text(t))) => receipt = t.contains("RECEIPT"),
            Some(Ok(_)) => {}
            other => return Err(format!("subscribe: {other:?}")),
        }
    }
    Ok(ws)
}

/// Server CPU per full handshake: `n` handshakes one after another, each closed at once.
async fn handshake_cost(server: &Server, client: &Arc<rustls::ClientConfig>, n: usize) -> Res<f64> {
    let before = server.cpu();
    let start = Instant::now();
    for _ in 0..n {
        let tcp = TcpStream::connect(("127.0.0.1", server.port)).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(client.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        drop(stream);
    }
    let wall = start.elapsed().as_secs_f64();
    // Let the server finish with the last closes before reading its clock.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu = server.cpu() - before;
    println!("    {n} handshakes in {wall:.2} s wall, server CPU {cpu:.3} s");
    Ok(cpu * 1e3 / n as f64)
}

/// RSS added per idle subscribed connection, over `n` connections.
async fn idle_cost(server: &Server, tls: Option<&Arc<rustls::ClientConfig>>, n: usize) -> Res<f64> {
    // One connection first, so one-time allocations are not counted.
    let _warm = subscriber(server.port, tls, "/topic/idle-warm").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss();
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        held.push(subscriber(server.port, tls, &format!("/topic/idle-{}", i % 10)).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.rss();
    drop(held);
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

/// 100 subscribers on one destination, one publisher at full speed for `seconds`: deliveries
/// per second of server CPU, deliveries per second of wall time, frames per socket write (for
/// TLS: frames per batch handed to rustls, each batch encrypted into as few records as fit).
async fn fanout(
    server: &Server,
    tls: Option<&Arc<rustls::ClientConfig>>,
    seconds: f64,
) -> Res<(f64, f64, f64)> {
    let delivered = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let mut ws = subscriber(server.port, tls, "/topic/fan").await?;
        let delivered = delivered.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg {
                    delivered.fetch_add(t.matches("MESSAGE\n").count() as u64, Relaxed);
                }
            }
        }));
    }
    let mut publisher = open(server.port, tls).await?;
    publisher
        .send(Message::text("CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\0".to_string()))
        .await
        .map_err(|e| e.to_string())?;
    let body = "x".repeat(100);
    let (cpu0, d0, t0) = (server.cpu(), delivered.load(Relaxed), Instant::now());
    while t0.elapsed().as_secs_f64() < seconds {
        for _ in 0..16 {
            publisher
                .feed(Message::text(format!("SEND\ndestination:/topic/fan\n\n{body}\0")))
                .await
                .map_err(|e| e.to_string())?;
        }
        publisher.flush().await.map_err(|e| e.to_string())?;
    }
    let (cpu, d, wall) = (server.cpu() - cpu0, delivered.load(Relaxed) - d0, t0.elapsed().as_secs_f64());
    for t in tasks {
        t.abort();
    }
    let (frames, writes) = write_counts(server.port, tls).await?;
    Ok((d as f64 / cpu.max(1e-3), d as f64 / wall, frames / writes.max(1.0)))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("tls bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let o = options()?;
    let cert = Cert::new()?;
    let client = cert.client()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    println!(
        "TLS cost ({}{}), ECDSA P-256 certificate as --generate-cert makes",
        o.bin.display(),
        o.wrapper.as_ref().map(|w| format!(" under {w}")).unwrap_or_default()
    );
    println!("bench client CPU: {}", stomp_edge::tls::cipher_preference());
    if o.wrapper.is_none() {
        let (us, suite) = in_process_handshakes(&cert, o.handshakes)?;
        println!("full handshake, server side, in process (rustls alone): {us:.0} µs of one core ({suite})");
    }
    runtime.block_on(async {
        let tls_server = Server::start(&o, Some(&cert))?;
        let ms = handshake_cost(&tls_server, &client, o.handshakes).await?;
        println!("full handshake, server process CPU (accept + TLS + close): {ms:.3} ms per handshake");
        if o.idle_run {
            let plain_server = Server::start(&o, None)?;
            let plain = idle_cost(&plain_server, None, o.idle).await?;
            let tls = idle_cost(&tls_server, Some(&client), o.idle).await?;
            println!(
                "idle subscribed connection RSS ({} each): plain {:.2} KiB, TLS {:.2} KiB, TLS adds {:.2} KiB",
                o.idle,
                plain / 1024.0,
                tls / 1024.0,
                (tls - plain) / 1024.0
            );
        }
        if o.fanout {
            let plain_server = Server::start(&o, None)?;
            let (plain_per_cpu, plain_rate, plain_batch) = fanout(&plain_server, None, o.seconds).await?;
            drop(plain_server);
            let tls_server = Server::start(&o, Some(&cert))?;
            let (tls_per_cpu, tls_rate, tls_batch) = fanout(&tls_server, Some(&client), o.seconds).await?;
            println!("fan-out, 1 publisher -> 100 subscribers, 100-byte bodies:");
            println!(
                "    plain {:.0} k deliveries per server-CPU-second ({:.0} k/s wall, {plain_batch:.1} frames per write)",
                plain_per_cpu / 1e3,
                plain_rate / 1e3
            );
            println!(
                "    TLS   {:.0} k deliveries per server-CPU-second ({:.0} k/s wall, {tls_batch:.1} frames per write): {:.0} % of plain per core",
                tls_per_cpu / 1e3,
                tls_rate / 1e3,
                100.0 * tls_per_cpu / plain_per_cpu
            );
        }
        Ok::<(), String>(())
    })
}
