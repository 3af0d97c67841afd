//! Shared helpers for the end-to-end tests: start the real `stomp-edge` binary on a free
//! loopback port, speak raw STOMP to it over a real WebSocket client, read HTTP answers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream as StdTcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(5);

/// Config text that lets the tests (on 127.0.0.1) read `/metrics` without credentials when
/// accounts are configured (`http.metrics_open_to`); append it to a config with `[auth] users`.
pub const METRICS_OPEN: &str = "\n[http]\nmetrics_open_to = [\"127.0.0.1\"]\n";

/// A running server process; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub log: Arc<Mutex<String>>,
    config_path: Option<tempfile_path::TempPath>,
}

mod tempfile_path {
    /// A file removed on drop.
    pub struct TempPath(pub std::path::PathBuf);
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl Server {
    pub fn start() -> Server {
        Server::start_with("", &[])
    }

    /// Starts the binary with `config` (file text, may be empty) and extra arguments.
    pub fn start_with(config: &str, args: &[&str]) -> Server {
        Server::start_env(config, args, &[])
    }

    /// Like `start_with`, with extra environment variables.
    pub fn start_env(config: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stomp-edge"));
        cmd.args(["--listen", "127.0.0.1:0", "--server-id", "test1", "--log-level", "debug"]);
        let mut temp = None;
        if !config.is_empty() {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("stomp-edge-test-{}-{n}.toml", std::process::id()));
            std::fs::write(&path, config).expect("write config");
            cmd.arg("--config").arg(&path);
            temp = Some(tempfile_path::TempPath(path));
        }
        cmd.envs(env.iter().copied());
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn stomp-edge");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on ") {
                    let addr = line[i + 13..].split_whitespace().next().unwrap_or("").to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("server did not report its address; log:\n{}", log.lock().unwrap())
        });
        Server { child, addr, log, config_path: temp }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Rewrites the config file the server was started with (for SIGHUP tests).
    pub fn rewrite_config(&self, text: &str) {
        let path = &self.config_path.as_ref().expect("started with a config").0;
        std::fs::write(path, text).expect("rewrite config");
    }

    /// A plain HTTP/1.1 GET; returns (status, headers lower-cased, body).
    pub fn get(&self, path: &str) -> (u16, HashMap<String, String>, String) {
        http_get(&self.addr, path, &[])
    }

    pub fn metric(&self, name: &str) -> u64 {
        let (_, _, body) = self.get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} not found"))
    }

    /// Waits (bounded) until a metric reaches at least `at_least`.
    pub fn wait_metric(&self, name: &str, at_least: u64) -> bool {
        let start = std::time::Instant::now();
        while start.elapsed() < WAIT {
            if self.metric(name) >= at_least {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().expect("kill");
    }

    /// Waits (bounded) for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failing test shows what the server said.
            eprintln!(
                "---- log of server {} ----\n{}",
                self.addr,
                self.log.lock().map(|l| l.clone()).unwrap_or_default()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http_get(addr: &str, path: &str, extra: &[(&str, &str)]) -> (u16, HashMap<String, String>, String) {
    let mut s = StdTcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let (status, headers) = parse_head(head);
    (status, headers, body.to_string())
}

/// The status and the headers (names lower-cased) of an HTTP response head; status 0 when
/// there is none.
pub fn parse_head(head: &str) -> (u16, HashMap<String, String>) {
    let mut lines = head.lines();
    let status =
        lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

/// A parsed STOMP frame as the tests see it.
#[derive(Debug, Clone)]
pub struct Frame {
    pub command: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Frame {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// Parses one frame (no unescaping needed by the tests beyond 1.2 basics).
pub fn parse_frame(data: &[u8]) -> Frame {
    let head_end = data.windows(2).position(|w| w == b"\n\n").expect("blank line");
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let mut lines = head.lines();
    let command = lines.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.replace("\\c", ":").replace("\\n", "\n").replace("\\\\", "\\")))
        .collect();
    let rest = &data[head_end + 2..];
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or_else(|| rest.iter().position(|b| *b == 0).unwrap_or(rest.len()));
    Frame { command, headers, body: rest[..len.min(rest.len())].to_vec() }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw STOMP client over a real WebSocket.
pub struct Client {
    pub ws: Ws,
    pub subprotocol: Option<String>,
    /// Heart-beat EOLs received.
    pub heartbeats: usize,
    /// Frames that arrived while waiting for a RECEIPT, handed out by the next `recv`s.
    pending: std::collections::VecDeque<Frame>,
}

impl Client {
    pub async fn open(url: &str, protocols: &[&str]) -> Client {
        Client::open_with(url, protocols, &[]).await.expect("websocket connect")
    }

    pub async fn open_with(
        url: &str,
        protocols: &[&str],
        headers: &[(&'static str, &str)],
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let mut request = url.into_client_request()?;
        if !protocols.is_empty() {
            request.headers_mut().insert("sec-websocket-protocol", protocols.join(", ").parse().unwrap());
        }
        for (k, v) in headers {
            request.headers_mut().insert(*k, v.parse().unwrap());
        }
        let (ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect timed out")?;
        let subprotocol =
            response.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap_or("").to_string());
        Ok(Client { ws, subprotocol, heartbeats: 0, pending: Default::default() })
    }

    /// A client over a WebSocket opened elsewhere (e.g. from a chosen source address).
    pub fn from_ws(ws: Ws) -> Client {
        Client { ws, subprotocol: None, heartbeats: 0, pending: Default::default() }
    }

    /// Opens and CONNECTs; returns the client and the CONNECTED frame.
    pub async fn connect(url: &str) -> (Client, Frame) {
        let mut c = Client::open(url, &["v12.stomp"]).await;
        c.send_text("CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\0").await;
        let f = c.recv().await;
        assert_eq!(f.command, "CONNECTED", "{f:?}");
        (c, f)
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_string())).await.expect("send");
    }

    pub async fn send_binary(&mut self, data: &[u8]) {
        self.ws.send(Message::binary(data.to_vec())).await.expect("send");
    }

    pub async fn subscribe(&mut self, dest: &str, id: &str) {
        self.send_text(&format!("SUBSCRIBE\ndestination:{dest}\nid:{id}\nreceipt:r-{id}\n\n\0")).await;
        // Deliveries may come before the RECEIPT (in cluster mode it waits until the cluster
        // subscription is active): keep them for later.
        let mut early = Vec::new();
        loop {
            let r = self.recv().await;
            if r.command == "RECEIPT" {
                assert_eq!(r.header("receipt-id"), Some(format!("r-{id}").as_str()));
                break;
            }
            assert_eq!(r.command, "MESSAGE", "{r:?}");
            early.push(r);
        }
        self.pending.extend(early);
    }

    /// Next STOMP frame (skipping heart-beat EOLs); panics after WAIT.
    pub async fn recv(&mut self) -> Frame {
        self.try_recv(WAIT).await.expect("expected a frame")
    }

    /// Next frame within `limit`, or None on timeout or close.
    pub async fn try_recv(&mut self, limit: Duration) -> Option<Frame> {
        if let Some(f) = self.pending.pop_front() {
            return Some(f);
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()??.ok()?;
            let data: Vec<u8> = match msg {
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Binary(b) => b.to_vec(),
                Message::Close(_) => return None,
                _ => continue,
            };
            let trimmed: Vec<u8> = data.iter().copied().skip_while(|b| *b == b'\n' || *b == b'\r').collect();
            if trimmed.is_empty() {
                self.heartbeats += 1;
                continue;
            }
            return Some(parse_frame(&trimmed));
        }
    }

    /// Waits for the server to close the socket; returns true if it did within `limit`.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

pub mod redis;
pub mod rooms;
pub mod sentinel;
pub mod streams;
