//! End-to-end tests of login throttling: failed CONNECTs are slowed per address and per login
//! after a few, each is logged once at WARN with the address and login (never the passcode),
//! and counted.

mod common;

use std::time::{Duration, Instant};

use common::{Client, Server};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

const CONFIG: &str = "[auth]\nusers = [\"alice:secret\"]\nthrottle_after_failures = 2\nthrottle_delay_ms = 400\nthrottle_max_delay_ms = 5000\n[http]\nmetrics_open_to = [\"127.0.0.1\"]\n";

/// Opens a WebSocket from the loopback address `source` (any of 127.0.0.0/8).
async fn open_from(server: &Server, source: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(server.addr.parse().unwrap()).await.unwrap();
    let (ws, _) =
        tokio_tungstenite::client_async(server.url(), tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .expect("websocket handshake");
    Client::from_ws(ws)
}

/// One failed login from `source`; returns the ERROR and how long it took to come.
async fn fail(server: &Server, source: &str, login: &str, receipt: &str) -> (common::Frame, Duration) {
    let mut c = open_from(server, source).await;
    let frame = format!(
        "CONNECT\naccept-version:1.2\nlogin:{login}\npasscode:hunter2-guess\nreceipt:{receipt}\n\n\0"
    );
    let start = Instant::now();
    c.ws.send(Message::text(frame)).await.unwrap();
    let e = c.try_recv(Duration::from_secs(10)).await.expect("an ERROR");
    let took = start.elapsed();
    assert_eq!(e.command, "ERROR", "{e:?}");
    assert!(e.body_text().contains("bad credentials"), "{e:?}");
    assert_eq!(e.header("receipt-id"), Some(receipt));
    assert!(c.closed_within(Duration::from_secs(5)).await, "closed after the ERROR");
    (e, took)
}

#[tokio::test]
async fn failed_logins_are_slowed_logged_and_counted() {
    let server = Server::start_with(CONFIG, &[]);
    // Two free failures, then 400 ms, then 800 ms.
    fail(&server, "127.0.0.1", "mallory", "f1").await;
    fail(&server, "127.0.0.1", "mallory", "f2").await;
    let (_, third) = fail(&server, "127.0.0.1", "mallory", "f3").await;
    assert!(third >= Duration::from_millis(400), "third failure answered after {third:?}");
    let (_, fourth) = fail(&server, "127.0.0.1", "mallory", "f4").await;
    assert!(fourth >= Duration::from_millis(800), "fourth failure answered after {fourth:?}");
    // The same login from another address is slowed too (per login)...
    let (_, other_address) = fail(&server, "127.0.0.2", "mallory", "f5").await;
    assert!(other_address >= Duration::from_millis(1600), "{other_address:?}");
    // ...and another login from the first address (per address).
    let (_, other_login) = fail(&server, "127.0.0.1", "trudy", "f6").await;
    assert!(other_login >= Duration::from_millis(1600), "{other_login:?}");
    // A fresh address and login is not slowed: its first failure is free.
    assert_eq!(server.metric("stomp_edge_login_failures_delayed_total"), 4);
    fail(&server, "127.0.0.3", "eve", "f7").await;
    assert_eq!(server.metric("stomp_edge_login_failures_delayed_total"), 4);
    assert_eq!(server.metric("stomp_edge_login_failures_total"), 7);
    // The right passcode still gets in from a throttled address and login.
    let mut c = open_from(&server, "127.0.0.1").await;
    c.send_text("CONNECT\naccept-version:1.2\nlogin:alice\npasscode:secret\n\n\0").await;
    assert_eq!(c.recv().await.command, "CONNECTED");
    // One WARN line per failure, with address and login, never the passcode.
    let log = server.log.lock().unwrap().clone();
    let warns: Vec<&str> =
        log.lines().filter(|l| l.starts_with("WARN") && l.contains("failed login")).collect();
    assert_eq!(warns.len(), 7, "{log}");
    assert_eq!(warns.iter().filter(|l| l.contains("login \"mallory\" from 127.0.0.1 ")).count(), 4, "{log}");
    assert_eq!(warns.iter().filter(|l| l.contains("login \"mallory\" from 127.0.0.2 ")).count(), 1, "{log}");
    assert_eq!(warns.iter().filter(|l| l.contains("login \"trudy\" from 127.0.0.1 ")).count(), 1, "{log}");
    assert!(!log.contains("hunter2"), "the passcode is never logged");
}

#[tokio::test]
async fn frames_after_a_throttled_failure_are_ignored_until_its_error() {
    let server = Server::start_with(CONFIG, &[]);
    for r in ["a", "b"] {
        fail(&server, "127.0.0.1", "mallory", r).await;
    }
    // A client that does not wait for the answer cannot skip the delay by sending more.
    let mut c = open_from(&server, "127.0.0.1").await;
    let start = Instant::now();
    c.send_text("CONNECT\naccept-version:1.2\nlogin:mallory\npasscode:x\nreceipt:c\n\n\0SEND\ndestination:/topic/a\nreceipt:s\n\n\0CONNECT\nlogin:alice\npasscode:secret\n\n\0").await;
    let e = c.recv().await;
    assert!(start.elapsed() >= Duration::from_millis(400));
    assert_eq!((e.command.as_str(), e.header("receipt-id")), ("ERROR", Some("c")));
    assert!(c.try_recv(Duration::from_millis(200)).await.is_none(), "nothing after the ERROR");
}
