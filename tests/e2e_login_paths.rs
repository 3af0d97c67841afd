//! End-to-end tests that every way to log in is guarded alike: HTTP Basic on each route that
//! takes it (`/status`, `/api/status`, `/metrics`, `/api/rooms/{id}`) shares the STOMP
//! CONNECT throttle (counts per address and login, growing delay, WARN line,
//! `login_failures_total`); behind a trusted proxy the real client's address is what is
//! throttled, logged and matched by `http.metrics_open_to`; `/metrics` and `/api/rooms/{id}`
//! need an account when accounts are configured.

mod common;

use std::time::{Duration, Instant};

use common::{parse_head, Client, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn basic(credentials: &str) -> String {
    format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, credentials))
}

/// One HTTP/1.1 request from the loopback address `source` with extra headers (and a
/// `text/plain` body when not empty); returns the status, the body and how long the answer took.
async fn request_from(
    server: &Server,
    source: &str,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, String, Duration) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(server.addr.parse().unwrap()).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", server.addr);
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!("Content-Type: text/plain\r\nContent-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    let start = Instant::now();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut raw))
        .await
        .expect("an answer")
        .unwrap();
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (parse_head(head).0, body.to_string(), took)
}

/// A GET from `source`; returns the status and how long the answer took.
async fn get_from(server: &Server, source: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Duration) {
    let (status, _, took) = request_from(server, source, "GET", path, "", headers).await;
    (status, took)
}

/// A POST of `body` to `path` (a SockJS xhr URL) from 127.0.0.1; returns the status and body.
async fn post(server: &Server, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (status, body, _) = request_from(server, "127.0.0.1", "POST", path, body, headers).await;
    (status, body)
}

/// A failed STOMP CONNECT over `/ws` from `source` (with extra handshake headers); returns how
/// long its ERROR took.
async fn stomp_fail_from(
    server: &Server,
    source: &str,
    login: &str,
    headers: &[(&'static str, &str)],
) -> Duration {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(server.addr.parse().unwrap()).await.unwrap();
    let mut request = server.url().into_client_request().unwrap();
    for (k, v) in headers {
        request.headers_mut().insert(*k, v.parse().unwrap());
    }
    let (ws, _) = tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream))
        .await
        .expect("websocket handshake");
    let mut c = Client::from_ws(ws);
    let start = Instant::now();
    c.send_text(&format!("CONNECT\naccept-version:1.2\nlogin:{login}\npasscode:guess\nreceipt:r\n\n\0"))
        .await;
    let e = c.try_recv(Duration::from_secs(20)).await.expect("an ERROR");
    assert_eq!((e.command.as_str(), e.header("receipt-id")), ("ERROR", Some("r")), "{e:?}");
    assert!(e.body_text().contains("bad credentials"), "{e:?}");
    start.elapsed()
}

fn warns(server: &Server) -> Vec<String> {
    let log = server.log.lock().unwrap().clone();
    log.lines().filter(|l| l.starts_with("WARN") && l.contains("failed login")).map(str::to_string).collect()
}

const THROTTLE: &str = "throttle_after_failures = 2\nthrottle_delay_ms = 300\nthrottle_max_delay_ms = 5000\n";

#[tokio::test]
async fn basic_on_every_route_shares_the_stomp_throttle_count_and_warn() {
    // Before: Basic was neither throttled, counted nor logged, and an address slowed on STOMP
    // was answered at once over Basic.
    let server = Server::start_with(
        &format!(
            "[auth]\nusers = [\"alice:secret\"]\n{THROTTLE}\n[http]\nmetrics_open_to = [\"127.0.0.1\"]\n"
        ),
        &[],
    );
    let wrong = basic("mallory:guess");
    let auth = [("Authorization", wrong.as_str())];
    // From 127.0.0.2: two free failures, then 300, 600 ms, each on another route...
    let mut took = Vec::new();
    for path in ["/status", "/api/status", "/metrics", "/api/rooms/lobby"] {
        let (status, t) = get_from(&server, "127.0.0.2", path, &auth).await;
        assert_eq!(status, 401, "{path}");
        took.push(t);
    }
    assert!(took[2] >= Duration::from_millis(300) && took[3] >= Duration::from_millis(600), "{took:?}");
    // ...and the next STOMP CONNECT from that address waits on the same count (1200 ms).
    let stomp = stomp_fail_from(&server, "127.0.0.2", "trudy", &[]).await;
    assert!(stomp >= Duration::from_millis(1200), "{stomp:?}");
    // The other way round: slowed on STOMP (two free, then 300 ms), then Basic waits 600 ms.
    for _ in 0..3 {
        stomp_fail_from(&server, "127.0.0.3", "eve", &[]).await;
    }
    let (status, t) =
        get_from(&server, "127.0.0.3", "/api/status", &[("Authorization", &basic("eve:x"))]).await;
    assert_eq!(status, 401);
    assert!(t >= Duration::from_millis(600), "{t:?}");
    // Counted, delays counted, and one WARN line each, naming the route, never the passcode.
    assert_eq!(server.metric("stomp_edge_login_failures_total"), 9);
    assert_eq!(server.metric("stomp_edge_login_failures_delayed_total"), 5);
    let warns = warns(&server);
    assert_eq!(warns.len(), 9, "{warns:#?}");
    for route in ["/status", "/api/status", "/metrics", "/api/rooms/{id}"] {
        let line = format!("login \"mallory\" from 127.0.0.2 (HTTP Basic, {route})");
        assert_eq!(warns.iter().filter(|l| l.contains(&line)).count(), 1, "{route}: {warns:#?}");
    }
    assert!(!server.log.lock().unwrap().contains("guess"));
    // No credentials at all is not a failed login (a browser's first request).
    assert_eq!(get_from(&server, "127.0.0.4", "/status", &[]).await.0, 401);
    assert_eq!(server.metric("stomp_edge_login_failures_total"), 9);
    // The right account gets in at once from a slowed address, and clears its count.
    let (status, t) =
        get_from(&server, "127.0.0.2", "/api/status", &[("Authorization", &basic("alice:secret"))]).await;
    assert_eq!(status, 200);
    assert!(t < Duration::from_millis(300), "{t:?}");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_real_client_is_throttled_logged_and_matched() {
    let server = Server::start_with(
        &format!(
            "[auth]\nusers = [\"alice:secret\"]\n{THROTTLE}\n[http]\ntrusted_proxies = [\"127.0.0.1\", \"::1\"]\nmetrics_open_to = [\"127.0.0.5\", \"198.51.100.0/24\"]\n"
        ),
        &[],
    );
    let xff = |client: &'static str| [("X-Forwarded-For", client)];
    // Two clients of the one proxy are throttled apart: 203.0.113.1 is slowed at its third
    // failure, 203.0.113.2's first is answered at once.
    for (i, login) in ["m1", "m2", "m3"].into_iter().enumerate() {
        let t = stomp_fail_from(&server, "127.0.0.1", login, &xff("10.9.9.9, 203.0.113.1")).await;
        assert_eq!(t >= Duration::from_millis(300), i == 2, "failure {i}: {t:?}");
    }
    let credentials = basic("m4:x");
    let (status, t) = get_from(
        &server,
        "127.0.0.1",
        "/api/status",
        &[("X-Forwarded-For", "203.0.113.2"), ("Authorization", credentials.as_str())],
    )
    .await;
    assert_eq!(status, 401);
    assert!(t < Duration::from_millis(300), "another client of the proxy is not slowed: {t:?}");
    // RFC 7239 Forwarded too, when there is no X-Forwarded-For.
    let t =
        stomp_fail_from(&server, "127.0.0.1", "m5", &[("Forwarded", "for=203.0.113.1;proto=https")]).await;
    assert!(t >= Duration::from_millis(600), "{t:?}");
    // An untrusted peer's header is ignored: it is its own address, fresh, answered at once.
    let t = stomp_fail_from(&server, "127.0.0.2", "m6", &xff("203.0.113.1")).await;
    assert!(t < Duration::from_millis(300), "{t:?}");
    // A SockJS xhr session opened through the proxy is the real client's too.
    let via = [("X-Forwarded-For", "203.0.113.3")];
    assert_eq!(post(&server, "/ws/000/px/xhr", "", &via).await, (200, "o\n".to_string()));
    let connect = r#"["CONNECT\naccept-version:1.2\nlogin:m7\npasscode:guess\nreceipt:x\n\n\u0000"]"#;
    assert_eq!(post(&server, "/ws/000/px/xhr_send", connect, &via).await.0, 204);
    let (_, answer) = post(&server, "/ws/000/px/xhr", "", &via).await;
    assert!(answer.contains("a[\"ERROR\\n"), "{answer}");
    let warns = warns(&server);
    assert_eq!(
        warns.iter().filter(|l| l.contains("login \"m7\" from 203.0.113.3 (session")).count(),
        1,
        "{warns:#?}"
    );
    assert_eq!(warns.iter().filter(|l| l.contains(" from 203.0.113.1 ")).count(), 4, "{warns:#?}");
    assert_eq!(warns.iter().filter(|l| l.contains("login \"m4\" from 203.0.113.2 (HTTP Basic")).count(), 1);
    assert_eq!(warns.iter().filter(|l| l.contains("login \"m6\" from 127.0.0.2 ")).count(), 1, "{warns:#?}");
    assert!(!warns.iter().any(|l| l.contains("from 127.0.0.1 ")), "the proxy is never named: {warns:#?}");
    // metrics_open_to matches the real client, through the proxy only.
    assert_eq!(get_from(&server, "127.0.0.1", "/metrics", &xff("198.51.100.7")).await.0, 200);
    assert_eq!(get_from(&server, "127.0.0.1", "/metrics", &xff("203.0.113.9")).await.0, 401);
    assert_eq!(get_from(&server, "127.0.0.2", "/metrics", &xff("198.51.100.7")).await.0, 401);
    // A header too long to read is not believed (the proxy's own address is used) and counted.
    let long = vec!["198.51.100.7"; 400].join(", ");
    assert_eq!(
        get_from(&server, "127.0.0.1", "/metrics", &[("X-Forwarded-For", long.as_str())]).await.0,
        401
    );
    assert_eq!(get_from(&server, "127.0.0.5", "/metrics", &[]).await.0, 200);
    let (_, _, body) = common::http_get(&server.addr, "/metrics", &[("X-Forwarded-For", "198.51.100.1")]);
    assert!(body.contains("stomp_edge_forwarded_ignored_total{reason=\"too_long\"} 1"), "{body}");
}

#[tokio::test]
async fn metrics_and_room_details_need_an_account_when_accounts_are_configured() {
    let server = Server::start_with("[auth]\nusers = [\"alice:secret\"]\n", &[]);
    let good = basic("alice:secret");
    let with = [("Authorization", good.as_str())];
    for path in ["/metrics", "/api/rooms/lobby"] {
        let (status, headers, body) = common::http_get(&server.addr, path, &[]);
        assert_eq!(status, 401, "{path}: {body}");
        assert!(headers.get("www-authenticate").is_some_and(|h| h.starts_with("Basic ")), "{path}");
        assert!(!body.contains("stomp_edge_"), "{path}");
    }
    let (status, _, body) = common::http_get(&server.addr, "/metrics", &with);
    assert_eq!(status, 200);
    assert!(body.contains("stomp_edge_login_failures_total 0"), "no credentials is no failed login");
    assert_eq!(common::http_get(&server.addr, "/api/rooms/lobby", &with).0, 404, "no such room, but let in");
    // Without accounts both stay open; a network in metrics_open_to reads /metrics without.
    let open = Server::start();
    assert_eq!(open.get("/metrics").0, 200);
    assert_eq!(open.get("/api/rooms/lobby").0, 404);
    let lan = Server::start_with(
        "[auth]\nusers = [\"alice:secret\"]\n[http]\nmetrics_open_to = [\"127.0.0.0/8\"]\n",
        &[],
    );
    assert_eq!(lan.get("/metrics").0, 200);
    assert_eq!(lan.get("/api/rooms/lobby").0, 401, "only /metrics is opened");
    // status.require_auth = false opens them all, as before.
    let off = Server::start_with("[auth]\nusers = [\"alice:secret\"]\n[status]\nrequire_auth = false\n", &[]);
    assert_eq!(off.get("/metrics").0, 200);
}

#[tokio::test]
async fn a_delay_longer_than_the_connect_timeout_still_answers_bad_credentials() {
    // Before: the CONNECT deadline fired during the delay and the client got "no CONNECT
    // within 300 ms" without its receipt-id.
    let server = Server::start_with(
        "[stomp]\nconnect_timeout_ms = 300\n[auth]\nusers = [\"alice:secret\"]\nthrottle_after_failures = 0\nthrottle_delay_ms = 700\n",
        &[],
    );
    let t = stomp_fail_from(&server, "127.0.0.1", "mallory", &[]).await;
    assert!(t >= Duration::from_millis(700), "{t:?}");
}
