//! TLS end to end: the real binary with `[tls]` on, a test CA made with `openssl` for each
//! test, and clients that check the server's certificate against it (rustls, as browsers and
//! Node check theirs): STOMP over `wss://`, HTTPS routes and the fingerprint on `/api/status`,
//! a certificate replaced and SIGHUP'd under an open connection, bad files at start-up and at
//! reload, `--generate-cert`, and two boards clustering through a `redis-server --tls-port`.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::{free_port, Redis};
use common::{parse_frame, parse_head, Frame, Server, WAIT};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A directory with a test CA (`ca.pem`, `ca.key`) made by `openssl`; removed on drop.
struct TestCa {
    dir: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) {
    let out =
        Command::new("openssl").args(args).current_dir(dir).output().expect("openssl must be installed");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let dir = std::env::temp_dir().join(format!("stomp-edge-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        openssl(
            &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
                .iter()
                .chain(&[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=stomp-edge test CA",
                ])
                .copied()
                .collect::<Vec<_>>(),
            &dir,
        );
        TestCa { dir }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).to_string_lossy().to_string()
    }

    /// Issues `NAME.pem` (the certificate followed by the CA's: a chain) and `NAME.key` for
    /// localhost and 127.0.0.1, signed by this CA.
    fn issue(&self, name: &str) -> (String, String) {
        let (key, csr, cert) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"));
        openssl(
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                "/CN=localhost",
            ],
            &self.dir,
        );
        std::fs::write(self.dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").expect("ext");
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.ext",
                "-out",
                &cert,
            ],
            &self.dir,
        );
        let leaf = std::fs::read_to_string(self.dir.join(&cert)).expect("cert");
        let ca = std::fs::read_to_string(self.dir.join("ca.pem")).expect("ca");
        std::fs::write(self.dir.join(format!("{name}.pem")), leaf + &ca).expect("chain");
        (self.path(&format!("{name}.pem")), self.path(&key))
    }

    /// A rustls client config that trusts this CA only.
    fn client(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.path("ca.pem")).expect("ca file") {
            roots.add(cert.expect("ca cert")).expect("add ca");
        }
        let provider = Arc::new(stomp_edge::tls::provider(false));
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `openssl x509 -fingerprint -sha256` of a PEM file's first certificate: `AB:CD:…`.
fn openssl_fingerprint(pem: &str) -> String {
    let out =
        Command::new("openssl").args(["x509", "-noout", "-fingerprint", "-sha256", "-in", pem]).output();
    let text = String::from_utf8_lossy(&out.expect("openssl").stdout).to_string();
    text.trim().split_once('=').map(|(_, f)| f.to_string()).unwrap_or(text)
}

fn tls_config(cert: &str, key: &str) -> String {
    format!("[tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n")
}

/// The port of a server's `127.0.0.1:PORT`.
fn port(server: &Server) -> u16 {
    server.addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port")
}

/// A blocking HTTPS GET to `localhost` checked against `ca`; (status, body, the certificate's
/// SHA-256 as the server presented it).
fn https_get(ca: &TestCa, port: u16, path: &str) -> (u16, String, String) {
    let name = ServerName::try_from("localhost").expect("name");
    let connection = rustls::ClientConnection::new(ca.client(), name).expect("client");
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).expect("https request");
    let mut raw = Vec::new();
    // A close without close_notify ends the read with an error after the body: keep what came.
    let _ = tls.read_to_end(&mut raw);
    let presented =
        tls.conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (parse_head(head).0, body.to_string(), stomp_edge::tls::fingerprint(&presented))
}

fn https_metric(ca: &TestCa, port: u16, name: &str) -> u64 {
    let (_, body, _) = https_get(ca, port, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} not found"))
}

type Wss = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// A STOMP client over `wss://localhost:PORT/ws`, checking the certificate against `ca`.
struct WssClient {
    ws: Wss,
    /// SHA-256 of the certificate the server presented.
    fingerprint: String,
}

impl WssClient {
    async fn connect(ca: &TestCa, port: u16) -> WssClient {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let connector = tokio_rustls::TlsConnector::from(ca.client());
        let name = ServerName::try_from("localhost").expect("name");
        let tls = tokio::time::timeout(WAIT, connector.connect(name, tcp))
            .await
            .expect("handshake time")
            .expect("tls");
        let presented = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
        let url = format!("wss://localhost:{port}/ws");
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str())
                .expect("request");
        request.headers_mut().insert("sec-websocket-protocol", "v12.stomp".parse().expect("header"));
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, tls))
            .await
            .expect("upgrade time")
            .expect("upgrade");
        let mut client =
            WssClient { ws, fingerprint: stomp_edge::tls::fingerprint(&presented.unwrap_or_default()) };
        client.send("CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\0").await;
        let connected = client.recv().await;
        assert_eq!(connected.command, "CONNECTED", "{connected:?}");
        client
    }

    async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_string())).await.expect("send");
    }

    async fn recv(&mut self) -> Frame {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next()).await.expect("a frame in time");
            match message.expect("open").expect("websocket") {
                Message::Text(t) if !t.trim().is_empty() => return parse_frame(t.as_bytes()),
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => {}
            }
        }
    }

    /// Subscribes to `destination` and waits for the RECEIPT, so a SEND after it is seen.
    async fn subscribe(&mut self, destination: &str) {
        self.send(&format!("SUBSCRIBE\nid:0\ndestination:{destination}\nreceipt:r\n\n\0")).await;
        assert_eq!(self.recv().await.command, "RECEIPT");
    }

    /// SENDs `count` messages to `destination` and reads them back (subscribed first).
    async fn round_trip(&mut self, destination: &str, count: usize) {
        for i in 0..count {
            self.send(&format!("SEND\ndestination:{destination}\n\nmessage {i}\0")).await;
        }
        for i in 0..count {
            let frame = self.recv().await;
            assert_eq!((frame.command.as_str(), frame.body_text()), ("MESSAGE", format!("message {i}")));
        }
    }
}

#[tokio::test]
async fn stomp_over_wss_and_https_routes_with_the_certificate_checked() {
    let ca = TestCa::new("wss");
    let (cert, key) = ca.issue("board");
    let server = Server::start_with(&tls_config(&cert, &key), &[]);
    let port = port(&server);
    assert!(
        server.log.lock().expect("log").contains(&openssl_fingerprint(&cert)),
        "start-up log names the fingerprint"
    );

    let mut client = WssClient::connect(&ca, port).await;
    assert_eq!(client.fingerprint, openssl_fingerprint(&cert));
    client.subscribe("/topic/tls").await;
    client.round_trip("/topic/tls", 100).await;

    let (status, body, _) = https_get(&ca, port, "/api/status");
    assert_eq!(status, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(status["tls"]["fingerprintSha256"], openssl_fingerprint(&cert).as_str());
    assert!(status["url"].as_str().is_some_and(|u| u.starts_with("https://")), "{status}");
    let (status, page, _) = https_get(&ca, port, "/");
    assert!(status == 200 && page.contains("<html"), "{status}");
    // The same port speaks no plain HTTP: a browser sent to http:// reads why, counted.
    let (plain, _, body) = common::http_get(&server.addr, "/healthz", &[]);
    assert_eq!((plain, body.as_str()), (400, "This port speaks HTTPS only: open it with https:// here.\n"));
    assert_eq!(https_metric(&ca, port, "stomp_edge_tls_handshakes_total{result=\"plain_http\"}"), 1);
}

#[tokio::test]
async fn a_sighup_swaps_the_certificate_and_open_connections_keep_theirs() {
    let ca = TestCa::new("reload");
    let (cert, key) = ca.issue("board");
    let old = openssl_fingerprint(&cert);
    let server = Server::start_with(&tls_config(&cert, &key), &[]);
    let port = port(&server);
    let mut open = WssClient::connect(&ca, port).await;
    open.subscribe("/topic/stay").await;

    // A renewed certificate (new key) lands in the same files, then SIGHUP.
    let (renewed_cert, renewed_key) = ca.issue("renewed");
    std::fs::copy(&renewed_cert, &cert).expect("copy cert");
    std::fs::copy(&renewed_key, &key).expect("copy key");
    let new = openssl_fingerprint(&cert);
    assert_ne!(old, new);
    server.signal("HUP");
    assert!(wait_log(&server, &format!("TLS certificate reloaded (SHA-256 {new})")), "no reload line");

    open.round_trip("/topic/stay", 20).await;
    let fresh = WssClient::connect(&ca, port).await;
    assert_eq!((open.fingerprint.as_str(), fresh.fingerprint.as_str()), (old.as_str(), new.as_str()));

    // A bad file at reload: the running certificate stays, the error names the file.
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
        .expect("break key");
    server.signal("HUP");
    assert!(wait_log(&server, "TLS reload failed, keeping the running certificate: tls."), "no failure line");
    assert!(server.log.lock().expect("log").contains(&key));
    assert_eq!(https_metric(&ca, port, "stomp_edge_tls_reload_failures_total"), 1);
    let after = WssClient::connect(&ca, port).await;
    assert_eq!(after.fingerprint, new);
    open.round_trip("/topic/stay", 5).await;
}

fn wait_log(server: &Server, text: &str) -> bool {
    let start = Instant::now();
    while start.elapsed() < WAIT {
        if server.log.lock().expect("log").contains(text) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Runs the binary with `config` and expects it to stop at start-up; its stderr.
fn start_fails(config: &str) -> String {
    let path =
        std::env::temp_dir().join(format!("stomp-edge-tls-bad-{}-{}.toml", std::process::id(), config.len()));
    std::fs::write(&path, config).expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_stomp-edge"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    let _ = std::fs::remove_file(&path);
    assert!(!out.status.success(), "started with {config}");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn a_missing_or_bad_file_stops_start_up_naming_it() {
    let ca = TestCa::new("bad");
    let (cert, key) = ca.issue("board");
    let missing = ca.path("missing.pem");
    let e = start_fails(&tls_config(&missing, &key));
    assert!(e.contains(&format!("tls.cert_file {missing}: cannot open")), "{e}");
    let e = start_fails(&tls_config(&cert, &missing));
    assert!(e.contains(&format!("tls.key_file {missing}: cannot open")), "{e}");
    let e = start_fails(&tls_config(&key, &key));
    assert!(e.contains(&format!("tls.cert_file {key}: holds no PEM certificate")), "{e}");
    let e = start_fails(&tls_config(&cert, &cert));
    assert!(e.contains(&format!("tls.key_file {cert}: holds no PEM private key")), "{e}");
    // A key that is not the certificate's.
    let (_, other_key) = ca.issue("other");
    let e = start_fails(&tls_config(&cert, &other_key));
    assert!(e.contains("cannot be used together") && e.contains(&other_key), "{e}");
    let e = start_fails(&format!("[tls]\ncert_file = \"{cert}\"\n"));
    assert!(e.contains("tls.cert_file and tls.key_file must be set together"), "{e}");
}

#[tokio::test]
async fn generate_cert_writes_a_pair_the_server_starts_with() {
    let dir = std::env::temp_dir().join(format!("stomp-edge-generated-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_stomp-edge"))
        .arg("--generate-cert")
        .arg(&dir)
        .output()
        .expect("run");
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{report}{}", String::from_utf8_lossy(&out.stderr));
    let cert = dir.join("cert.pem").to_string_lossy().to_string();
    let key = dir.join("key.pem").to_string_lossy().to_string();
    assert!(report.contains(&format!("SHA-256 fingerprint: {}", openssl_fingerprint(&cert))), "{report}");
    let sans =
        Command::new("openssl").args(["x509", "-noout", "-ext", "subjectAltName", "-in", &cert]).output();
    let sans = String::from_utf8_lossy(&sans.expect("openssl").stdout).to_string();
    assert!(
        sans.contains("DNS:localhost") && sans.contains("IP Address:127.0.0.1") && sans.contains(".local"),
        "{sans}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).expect("key").permissions().mode() & 0o777, 0o600);
    // Never over an existing pair.
    let again = Command::new(env!("CARGO_BIN_EXE_stomp-edge"))
        .arg("--generate-cert")
        .arg(&dir)
        .output()
        .expect("run");
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("exists already"));

    // The board starts with it, and a client trusting that certificate alone gets through.
    let server = Server::start_with(&tls_config(&cert, &key), &[]);
    let ca = TestCa::new("gen");
    std::fs::copy(&cert, ca.path("ca.pem")).expect("trust the self-signed certificate");
    let mut client = WssClient::connect(&ca, port(&server)).await;
    client.subscribe("/topic/gen").await;
    client.round_trip("/topic/gen", 3).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `redis-server` with a TLS port only (`--port 0`), its certificate from `ca`.
fn tls_redis(ca: &TestCa) -> (Redis, u16) {
    let (cert, key) = ca.issue("redis");
    let tls_port = free_port();
    let redis = Redis::start_with(
        &[
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca.path("ca.pem"),
            "--tls-auth-clients",
            "no",
        ],
        &[],
    );
    (redis, tls_port)
}

fn cluster_node(url: &str, id: &str, ca_file: &str) -> Server {
    let config = format!(
        "[cluster]\nheartbeat_ms = 500\nregistry_ttl_ms = 3000\ncommand_timeout_ms = 1000\nreconnect_min_ms = 50\nreconnect_max_ms = 500\n[tls]\nredis_ca_file = \"{ca_file}\"\n"
    );
    Server::start_with(&config, &["--redis", url, "--server-id", id])
}

fn redis_up(server: &Server, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if server.get("/healthz").2.contains("\"redis\":\"up\"") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[tokio::test]
async fn two_boards_cluster_through_a_tls_redis() {
    let ca = TestCa::new("rediss");
    let (redis, tls_port) = tls_redis(&ca);
    let url = format!("rediss://localhost:{tls_port}");
    let (a, b) = (cluster_node(&url, "a", &ca.path("ca.pem")), cluster_node(&url, "b", &ca.path("ca.pem")));
    assert!(
        redis_up(&a, Duration::from_secs(10)) && redis_up(&b, Duration::from_secs(10)),
        "boards never reached Redis"
    );
    // (The URL names the TLS port, where redis-server speaks nothing but TLS.)
    drop(redis.cli(&["PING"]));

    let (mut on_a, _) = common::Client::connect(&a.url()).await;
    on_a.subscribe("/topic/across", "s").await;
    let (mut on_b, _) = common::Client::connect(&b.url()).await;
    // The subscription reaches the cluster before the first publication.
    let start = Instant::now();
    let mut got = None;
    while got.is_none() && start.elapsed() < Duration::from_secs(10) {
        on_b.send_text("SEND\ndestination:/topic/across\n\nover tls\0").await;
        got = on_a.try_recv(Duration::from_millis(300)).await;
    }
    let frame = got.expect("a message from board b through the TLS Redis");
    assert_eq!(frame.body_text(), "over tls");

    // A board that trusts another CA does not get in.
    let stranger = TestCa::new("stranger");
    let c = cluster_node(&url, "c", &stranger.path("ca.pem"));
    assert!(!redis_up(&c, Duration::from_secs(2)), "a board with the wrong CA reached Redis");
}

#[tokio::test]
async fn a_board_finds_its_primary_through_sentinels_over_tls() {
    let ca = TestCa::new("sentinel");
    let (_primary, primary_tls) = tls_redis(&ca);
    let (cert, key) = ca.issue("sentinel");
    let sentinel_tls = free_port();
    // The sentinel speaks TLS to clients on its TLS port and to the primary (tls-replication).
    let extra = format!(
        "tls-port {sentinel_tls}\ntls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {}\n\
         tls-auth-clients no\ntls-replication yes\n",
        ca.path("ca.pem")
    );
    let sentinel = common::sentinel::Sentinel::start_with(primary_tls, &extra, &[]);
    let start = Instant::now();
    while sentinel.primary() != format!("127.0.0.1:{primary_tls}") {
        assert!(start.elapsed() < Duration::from_secs(10), "sentinel never named the primary");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("rediss-sentinel://127.0.0.1:{sentinel_tls}#{}", common::sentinel::MASTER);
    let board = cluster_node(&url, "s1", &ca.path("ca.pem"));
    assert!(
        redis_up(&board, Duration::from_secs(10)),
        "the board never reached the primary through TLS sentinels"
    );
    // The same URL without TLS finds no sentinel on that port.
    let plain = cluster_node(&url.replacen("rediss-", "redis-", 1), "s2", &ca.path("ca.pem"));
    assert!(!redis_up(&plain, Duration::from_secs(2)), "a plain sentinel client got through a TLS port");
}
