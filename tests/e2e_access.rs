//! End-to-end tests of who may talk to the board: the Host allow-list on every route (DNS
//! rebinding), 400 without Host, the Origin compared by scheme, host and port, and no CORS
//! grant on a refusal.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;

use common::{Server, WAIT};

/// Sends raw request bytes; returns the status and the headers (lower-case) of the answer.
fn raw(addr: &str, request: &[u8]) -> (u16, HashMap<String, String>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    common::parse_head(&String::from_utf8_lossy(&head))
}

/// A request for `method path` with `host` (None: no Host line) and extra header lines.
fn request(method: &str, path: &str, host: Option<&str>, extra: &[&str]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\n");
    if let Some(host) = host {
        r.push_str(&format!("Host: {host}\r\n"));
    }
    for line in extra {
        r.push_str(line);
        r.push_str("\r\n");
    }
    r.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    r.into_bytes()
}

const UPGRADE: [&str; 4] = [
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
];

/// Every route of the one port, as (method, path, extra header lines).
fn routes() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    vec![
        ("GET", "/", vec![]),
        ("GET", "/app.js", vec![]),
        ("GET", "/healthz", vec![]),
        ("GET", "/metrics", vec![]),
        ("GET", "/api/rooms", vec![]),
        ("GET", "/api/rooms/r1", vec![]),
        ("GET", "/api/nodes", vec![]),
        ("GET", "/status", vec![]),
        ("GET", "/nope", vec![]),
        ("GET", "/ws", UPGRADE.to_vec()),
        ("GET", "/ws/info", vec![]),
        ("OPTIONS", "/ws/info", vec![]),
        ("POST", "/ws/000/sess1/xhr", vec![]),
        ("POST", "/ws/000/sess1/xhr_streaming", vec![]),
        ("GET", "/ws/000/sess1/eventsource", vec![]),
        ("POST", "/ws/000/sess1/xhr_send", vec![]),
        ("GET", "/ws/000/sess1/websocket", UPGRADE.to_vec()),
    ]
}

#[test]
fn dns_rebinding_is_refused_on_every_route() {
    let server = Server::start();
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    let evil = format!("evil.example:{port}");
    let evil_origin = format!("Origin: http://evil.example:{port}");
    for (method, path, mut extra) in routes() {
        extra.push(&evil_origin);
        let (status, headers) = raw(&server.addr, &request(method, path, Some(&evil), &extra));
        assert_eq!(status, 403, "{method} {path} with Host {evil}");
        assert!(!headers.contains_key("access-control-allow-origin"), "{method} {path}: {headers:?}");
        assert!(!headers.contains_key("access-control-allow-credentials"), "{method} {path}");
    }
    assert!(
        server.metric("stomp_edge_http_rejected_total{reason=\"host_not_allowed\"}") >= routes().len() as u64
    );
    // The board's own names pass: its address, localhost.
    for host in [server.addr.clone(), format!("localhost:{port}"), format!("[::1]:{port}")] {
        let (status, _) = raw(&server.addr, &request("GET", "/healthz", Some(&host), &[]));
        assert_eq!(status, 200, "Host {host}");
        let origin = format!("Origin: http://{host}");
        let mut extra = UPGRADE.to_vec();
        extra.push(&origin);
        assert_eq!(raw(&server.addr, &request("GET", "/ws", Some(&host), &extra)).0, 101, "Host {host}");
    }
}

#[test]
fn allowed_hosts_adds_names_and_star_allows_all() {
    let server = Server::start_with("[http]\nallowed_hosts = [\"chat.example.lan\", \".boards.lan\"]\n", &[]);
    let ok = |host: &str| raw(&server.addr, &request("GET", "/healthz", Some(host), &[])).0;
    assert_eq!(ok("chat.example.lan:8080"), 200);
    assert_eq!(ok("b1.boards.lan"), 200);
    assert_eq!(ok("evil.example"), 403);
    let server = Server::start_env("", &[], &[("STOMP_EDGE_HTTP_ALLOWED_HOSTS", "*")]);
    assert_eq!(raw(&server.addr, &request("GET", "/healthz", Some("evil.example"), &[])).0, 200);
}

#[test]
fn a_request_without_host_is_400_on_every_route() {
    let server = Server::start();
    for (method, path, extra) in routes() {
        assert_eq!(raw(&server.addr, &request(method, path, None, &extra)).0, 400, "{method} {path}");
    }
    // Two Host lines, or a malformed one, are 400 too.
    let two = format!("GET /healthz HTTP/1.1\r\nHost: {0}\r\nHost: {0}\r\n\r\n", server.addr);
    assert_eq!(raw(&server.addr, two.as_bytes()).0, 400);
    assert_eq!(raw(&server.addr, &request("GET", "/healthz", Some("a b"), &[])).0, 400);
    assert!(server.metric("stomp_edge_http_rejected_total{reason=\"missing_host\"}") > routes().len() as u64);
    // HTTP/1.0 may leave Host out (no browser does).
    assert_eq!(raw(&server.addr, b"GET /healthz HTTP/1.0\r\n\r\n").0, 200);
}

#[test]
fn origin_is_compared_by_scheme_host_and_port_and_refusals_grant_no_cors() {
    let server = Server::start();
    let host = server.addr.clone();
    let port: u16 = host.rsplit(':').next().unwrap().parse().unwrap();
    let same = format!("http://{host}");
    let refused = [
        format!("https://{host}"),
        format!("http://127.0.0.1:{}", port.wrapping_add(1)),
        "http://127.0.0.1".to_string(),
        "http://evil.example".to_string(),
        "null".to_string(),
        host.clone(),
        format!("http://{host}/path"),
    ];
    let sockjs = [
        ("GET", "/ws/info"),
        ("OPTIONS", "/ws/info"),
        ("POST", "/ws/000/s2/xhr"),
        ("OPTIONS", "/ws/000/s2/xhr"),
        ("POST", "/ws/000/s2/xhr_streaming"),
        ("POST", "/ws/000/s2/xhr_send"),
        ("GET", "/ws/000/s2/eventsource"),
    ];
    for origin in &refused {
        let line = format!("Origin: {origin}");
        let mut extra = UPGRADE.to_vec();
        extra.push(&line);
        assert_eq!(
            raw(&server.addr, &request("GET", "/ws", Some(&host), &extra)).0,
            403,
            "/ws from {origin}"
        );
        assert_eq!(
            raw(&server.addr, &request("GET", "/ws/000/s2/websocket", Some(&host), &extra)).0,
            403,
            "SockJS websocket from {origin}"
        );
        for (method, path) in sockjs {
            let (status, headers) = raw(&server.addr, &request(method, path, Some(&host), &[&line]));
            assert_eq!(status, 403, "{method} {path} from {origin}");
            assert!(!headers.contains_key("access-control-allow-origin"), "{method} {path}: {headers:?}");
            assert!(!headers.contains_key("access-control-allow-credentials"), "{method} {path}");
        }
    }
    // An Origin with a raw non-ASCII byte is malformed, not absent.
    let mut bad = format!("GET /ws/info HTTP/1.1\r\nHost: {host}\r\nOrigin: http://caf").into_bytes();
    bad.extend_from_slice(b"\xe9\r\nConnection: close\r\n\r\n");
    assert_eq!(raw(&server.addr, &bad).0, 403);
    // The board's own page origin, and no Origin at all (not a browser), pass with CORS.
    let (status, headers) =
        raw(&server.addr, &request("GET", "/ws/info", Some(&host), &[&format!("Origin: {same}")]));
    assert_eq!(status, 200);
    assert_eq!(headers.get("access-control-allow-origin"), Some(&same));
    assert_eq!(raw(&server.addr, &request("GET", "/ws/info", Some(&host), &[])).0, 200);
    let line = format!("Origin: {same}");
    let mut extra = UPGRADE.to_vec();
    extra.push(&line);
    assert_eq!(raw(&server.addr, &request("GET", "/ws", Some(&host), &extra)).0, 101);
}
