//! End-to-end tests of the STOMP core against the real binary on a loopback port, with a real
//! WebSocket client (tokio-tungstenite) speaking raw STOMP frames.

mod common;

use std::time::Duration;

use common::{http_get, Client, Server};

#[test]
fn http_routes_answer_as_the_contract_says() {
    let server = Server::start();
    let (status, headers, body) = server.get("/");
    assert_eq!(status, 200);
    assert!(headers["content-type"].starts_with("text/html"));
    assert!(body.contains("<html"));
    let (status, _, body) = server.get("/healthz");
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["mode"], "local");
    assert_eq!(health["redis"], "disabled");
    assert_eq!(health["serverId"], "test1");
    assert_eq!(health["connections"], 0);
    assert!(health["uptimeSeconds"].is_u64());
    // Local mode answers exactly the contract's fields.
    assert_eq!(health.as_object().unwrap().len(), 6, "{health}");
    let (status, headers, body) = server.get("/metrics");
    assert_eq!(status, 200);
    assert!(headers["content-type"].starts_with("text/plain"));
    assert!(body.contains("stomp_edge_connections_current 0"));
    assert_eq!(server.get("/nope").0, 404);
    // A plain GET on /ws is refused with a clear 4xx.
    let (status, _, body) = server.get("/ws");
    assert_eq!(status, 400);
    assert!(body.contains("WebSocket"), "{body}");
}

#[tokio::test]
async fn subprotocol_negotiation_picks_the_highest_and_accepts_none() {
    let server = Server::start();
    let c = Client::open(&server.url(), &["v10.stomp", "v11.stomp", "v12.stomp"]).await;
    assert_eq!(c.subprotocol.as_deref(), Some("v12.stomp"));
    let c = Client::open(&server.url(), &["v10.stomp", "v11.stomp"]).await;
    assert_eq!(c.subprotocol.as_deref(), Some("v11.stomp"));
    let mut c = Client::open(&server.url(), &[]).await;
    assert_eq!(c.subprotocol, None);
    c.send_text("CONNECT\naccept-version:1.1,1.0\nheart-beat:10000,10000\n\n\0").await;
    let f = c.recv().await;
    assert_eq!((f.command.as_str(), f.header("version")), ("CONNECTED", Some("1.1")));
    // The server offers 10 s both ways by default and advertises exactly that.
    assert_eq!(f.header("heart-beat"), Some("10000,10000"));
}

#[tokio::test]
async fn connected_names_server_session_and_version() {
    let server = Server::start();
    let (_c, f) = Client::connect(&server.url()).await;
    assert_eq!(f.header("version"), Some("1.2"));
    assert!(f.header("server").unwrap().starts_with("stomp-edge/"));
    assert!(f.header("session").unwrap().starts_with("test1-"));
    assert_eq!(f.header("heart-beat"), Some("0,0"));
    let (_c2, f2) = Client::connect(&server.url()).await;
    assert_ne!(f.header("session"), f2.header("session"));
}

#[tokio::test]
async fn publish_subscribe_with_headers_receipts_and_binary() {
    let server = Server::start();
    let (mut a, _) = Client::connect(&server.url()).await;
    let (mut b, _) = Client::connect(&server.url()).await;
    a.subscribe("/topic/t", "sub-0").await;
    b.subscribe("/topic/t", "sub-0").await;
    b.send_text("SEND\ndestination:/topic/t\ncontent-type:text/plain\nx-trace:abc\nreceipt:s1\n\nhello\0")
        .await;
    let r = b.recv().await;
    let (r, m) = if r.command == "RECEIPT" { (r, b.recv().await) } else { (b.recv().await, r) };
    assert_eq!(r.header("receipt-id"), Some("s1"));
    for m in [a.recv().await, m] {
        assert_eq!(m.command, "MESSAGE");
        assert_eq!(m.header("destination"), Some("/topic/t"));
        assert_eq!(m.header("subscription"), Some("sub-0"));
        assert!(m.header("message-id").unwrap().starts_with("test1-"));
        assert_eq!(m.header("content-type"), Some("text/plain"));
        assert_eq!(m.header("content-length"), Some("5"));
        assert_eq!(m.header("x-trace"), Some("abc"));
        assert_eq!(m.header("receipt"), None);
        assert_eq!(m.body_text(), "hello");
    }
    // A binary WebSocket message with a body containing NUL (content-length) comes back binary.
    b.send_binary(b"SEND\ndestination:/topic/t\ncontent-length:3\n\na\0b\0").await;
    let m = a.recv().await;
    assert_eq!(m.body, b"a\0b");
}

#[tokio::test]
async fn frames_split_across_messages_and_batched_in_one() {
    let server = Server::start();
    let (mut a, _) = Client::connect(&server.url()).await;
    a.subscribe("/topic/s", "s").await;
    let (mut b, _) = Client::connect(&server.url()).await;
    let frame = "SEND\ndestination:/topic/s\n\nsplit-body\0";
    for chunk in frame.as_bytes().chunks(3) {
        b.send_text(std::str::from_utf8(chunk).unwrap()).await;
    }
    assert_eq!(a.recv().await.body_text(), "split-body");
    b.send_text("\n\nSEND\ndestination:/topic/s\n\none\0\nSEND\r\ndestination:/topic/s\r\n\r\ntwo\0\n").await;
    assert_eq!(a.recv().await.body_text(), "one");
    assert_eq!(a.recv().await.body_text(), "two");
}

#[tokio::test]
async fn ordering_unsubscribe_and_utf8() {
    let server = Server::start();
    let (mut a, _) = Client::connect(&server.url()).await;
    a.subscribe("/topic/o", "x").await;
    let (mut b, _) = Client::connect(&server.url()).await;
    for i in 0..300 {
        b.send_text(&format!("SEND\ndestination:/topic/o\n\n{i} 안녕 👋\0")).await;
    }
    for i in 0..300 {
        assert_eq!(a.recv().await.body_text(), format!("{i} 안녕 👋"));
    }
    a.send_text("UNSUBSCRIBE\nid:x\nreceipt:u\n\n\0").await;
    assert_eq!(a.recv().await.header("receipt-id"), Some("u"));
    b.send_text("SEND\ndestination:/topic/o\n\nafter\0").await;
    assert!(a.try_recv(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn protocol_errors_get_error_then_close() {
    let server = Server::start();
    // Unknown command.
    let (mut c, _) = Client::connect(&server.url()).await;
    c.send_text("BOGUS\n\n\0").await;
    let e = c.recv().await;
    assert_eq!(e.command, "ERROR");
    assert!(!e.header("message").unwrap().is_empty());
    assert!(c.closed_within(Duration::from_secs(3)).await);
    // A frame before CONNECT, with its receipt echoed.
    let mut c = Client::open(&server.url(), &[]).await;
    c.send_text("SEND\ndestination:/topic/x\nreceipt:77\n\nx\0").await;
    let e = c.recv().await;
    assert_eq!((e.command.as_str(), e.header("receipt-id")), ("ERROR", Some("77")));
    assert!(c.closed_within(Duration::from_secs(3)).await);
    // A header line without a colon.
    let (mut c, _) = Client::connect(&server.url()).await;
    c.send_text("SEND\nno-colon-here\n\nx\0").await;
    assert_eq!(c.recv().await.command, "ERROR");
    assert!(c.closed_within(Duration::from_secs(3)).await);
    // Unsupported version only.
    let mut c = Client::open(&server.url(), &[]).await;
    c.send_text("CONNECT\naccept-version:2.0\n\n\0").await;
    let e = c.recv().await;
    assert_eq!(e.command, "ERROR");
    assert!(e.header("message").unwrap().contains("1.2"));
    // SUBSCRIBE without id in 1.2.
    let (mut c, _) = Client::connect(&server.url()).await;
    c.send_text("SUBSCRIBE\ndestination:/topic/x\n\n\0").await;
    assert!(c.recv().await.header("message").unwrap().contains("id"));
    // The server is still fine.
    let (_c, _) = Client::connect(&server.url()).await;
    assert!(server.metric("stomp_edge_protocol_errors_total{reason=\"unknown_command\"}") >= 1);
    assert!(server.metric("stomp_edge_closes_total{reason=\"protocol_error\"}") >= 4);
}

#[tokio::test]
async fn oversized_frames_are_refused_and_64k_bodies_pass() {
    let server = Server::start();
    let (mut a, _) = Client::connect(&server.url()).await;
    a.subscribe("/topic/big", "b").await;
    let body = "x".repeat(64 * 1024);
    a.send_text(&format!("SEND\ndestination:/topic/big\n\n{body}\0")).await;
    assert_eq!(a.recv().await.body.len(), 64 * 1024);
    let huge = "y".repeat(200 * 1024);
    a.send_text(&format!("SEND\ndestination:/topic/big\n\n{huge}\0")).await;
    let e = a.recv().await;
    assert_eq!(e.command, "ERROR");
    assert!(a.closed_within(Duration::from_secs(3)).await);
}

#[tokio::test]
async fn transactions_hold_sends_until_commit_and_drop_on_abort() {
    let server = Server::start();
    let (mut a, _) = Client::connect(&server.url()).await;
    a.subscribe("/topic/tx", "t").await;
    let (mut b, _) = Client::connect(&server.url()).await;
    b.send_text("BEGIN\ntransaction:t1\n\n\0").await;
    b.send_text("SEND\ndestination:/topic/tx\ntransaction:t1\n\nheld\0").await;
    assert!(a.try_recv(Duration::from_millis(300)).await.is_none());
    b.send_text("COMMIT\ntransaction:t1\n\n\0").await;
    assert_eq!(a.recv().await.body_text(), "held");
    b.send_text("BEGIN\ntransaction:t2\n\n\0").await;
    b.send_text("SEND\ndestination:/topic/tx\ntransaction:t2\n\ndropped\0").await;
    b.send_text("ABORT\ntransaction:t2\nreceipt:ab\n\n\0").await;
    assert_eq!(b.recv().await.header("receipt-id"), Some("ab"));
    assert!(a.try_recv(Duration::from_millis(300)).await.is_none());
    // ACK/NACK are accepted for client acks.
    a.send_text("SUBSCRIBE\ndestination:/topic/ack\nid:k\nack:client-individual\n\n\0").await;
    b.send_text("SEND\ndestination:/topic/ack\n\nm\0").await;
    let m = a.recv().await;
    let ack = m.header("ack").expect("ack header for client-individual").to_string();
    a.send_text(&format!("ACK\nid:{ack}\nreceipt:acked\n\n\0")).await;
    assert_eq!(a.recv().await.header("receipt-id"), Some("acked"));
    // COMMIT of an unknown transaction is an error.
    b.send_text("COMMIT\ntransaction:nope\n\n\0").await;
    assert_eq!(b.recv().await.command, "ERROR");
}

#[tokio::test]
async fn disconnect_with_receipt_then_close() {
    let server = Server::start();
    let (mut c, _) = Client::connect(&server.url()).await;
    c.send_text("DISCONNECT\nreceipt:bye\n\n\0").await;
    assert_eq!(c.recv().await.header("receipt-id"), Some("bye"));
    assert!(c.closed_within(Duration::from_secs(3)).await);
}

#[tokio::test]
async fn heartbeats_are_sent_on_time_and_silent_clients_are_closed() {
    let server = Server::start_with("[stomp]\nheartbeat_send_ms = 300\nheartbeat_receive_ms = 300\n", &[]);
    let mut c = Client::open(&server.url(), &[]).await;
    c.send_text("CONNECT\naccept-version:1.2\nheart-beat:0,300\n\n\0").await;
    let f = c.recv().await;
    assert_eq!(f.header("heart-beat"), Some("300,0"));
    assert!(c.try_recv(Duration::from_millis(1000)).await.is_none());
    assert!(c.heartbeats >= 2, "got {} heart-beats in 1 s at 300 ms", c.heartbeats);
    // A client that promised heart-beats and went silent is closed with an ERROR.
    let mut c = Client::open(&server.url(), &[]).await;
    c.send_text("CONNECT\naccept-version:1.2\nheart-beat:300,0\n\n\0").await;
    assert_eq!(c.recv().await.header("heart-beat"), Some("0,300"));
    let e = c.try_recv(Duration::from_secs(3)).await.expect("an ERROR");
    assert_eq!(e.command, "ERROR");
    assert!(e.header("message").unwrap().contains("heart-beat"));
    assert!(server.metric("stomp_edge_closes_total{reason=\"heartbeat_timeout\"}") >= 1);
}

#[tokio::test]
async fn authentication_when_users_are_configured() {
    let server =
        Server::start_with(&format!("[auth]\nusers = [\"alice:secret\"]\n{}", common::METRICS_OPEN), &[]);
    let mut c = Client::open(&server.url(), &[]).await;
    c.send_text("CONNECT\naccept-version:1.2\nlogin:alice\npasscode:wrong\n\n\0").await;
    assert_eq!(c.recv().await.command, "ERROR");
    assert!(c.closed_within(Duration::from_secs(3)).await);
    let mut c = Client::open(&server.url(), &[]).await;
    c.send_text("CONNECT\naccept-version:1.2\n\n\0").await;
    assert_eq!(c.recv().await.command, "ERROR");
    let mut c = Client::open(&server.url(), &[]).await;
    c.send_text("CONNECT\naccept-version:1.2\nlogin:alice\npasscode:secret\n\n\0").await;
    assert_eq!(c.recv().await.command, "CONNECTED");
    assert_eq!(server.metric("stomp_edge_closes_total{reason=\"auth_failed\"}"), 2);
}

#[tokio::test]
async fn connection_limit_and_origin_check() {
    let server = Server::start_with("[limits]\nmax_connections = 2\n", &[]);
    let _a = Client::open(&server.url(), &[]).await;
    let _b = Client::open(&server.url(), &[]).await;
    let err = Client::open_with(&server.url(), &[], &[]).await.err().expect("third is refused");
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(server.metric("stomp_edge_connections_rejected_total{reason=\"limit\"}"), 1);
    drop((_a, _b));
    let server = Server::start();
    let host = server.addr.clone();
    let own = format!("http://{host}");
    assert!(Client::open_with(&server.url(), &[], &[("origin", &own)]).await.is_ok());
    let err =
        Client::open_with(&server.url(), &[], &[("origin", "http://evil.example")]).await.err().unwrap();
    assert!(err.to_string().contains("403"), "{err}");
    let (status, _, _) = http_get(&server.addr, "/ws", &[("Origin", "http://evil.example")]);
    assert_eq!(status, 400);
}

#[tokio::test]
async fn slow_consumer_is_closed_and_others_keep_receiving() {
    let server = Server::start_with("[limits]\nmax_outbound_bytes = 65536\n", &[]);
    let mut slow = Client::open(&server.url(), &[]).await;
    slow.send_text("CONNECT\naccept-version:1.2\n\n\0").await;
    slow.send_text("SUBSCRIBE\ndestination:/topic/flood\nid:s\n\n\0").await;
    let (mut fast, _) = Client::connect(&server.url()).await;
    fast.subscribe("/topic/flood", "f").await;
    let (mut publisher, _) = Client::connect(&server.url()).await;
    let body = "z".repeat(16 * 1024);
    // The slow client never reads: its socket buffers fill, then its queue overflows.
    // Loopback socket buffers can hold several MiB, so send well past them.
    for i in 0..2000 {
        publisher.send_text(&format!("SEND\ndestination:/topic/flood\n\n{i}{body}\0")).await;
        let m = fast.recv().await;
        assert!(m.body_text().starts_with(&i.to_string()));
    }
    assert!(server.wait_metric("stomp_edge_closes_total{reason=\"slow_consumer\"}", 1));
    assert!(server.metric("stomp_edge_messages_dropped_total{reason=\"slow_consumer\"}") >= 1);
    drop(slow);
}

#[test]
fn sigterm_drains_clients_and_exits() {
    let mut server = Server::start();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (mut c, _) = Client::connect(&server.url()).await;
        server.signal("TERM");
        let e = c.recv().await;
        assert_eq!(e.command, "ERROR");
        assert_eq!(e.header("message"), Some("server shutting down"));
        assert!(c.closed_within(Duration::from_secs(3)).await);
    });
    assert_eq!(server.wait_exit(Duration::from_secs(5)), Some(0));
}

#[test]
fn bad_configuration_stops_start_up_naming_the_key() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stomp-edge"))
        .args(["--listen", "127.0.0.1:0"])
        .env("STOMP_EDGE_LIMITS_MAX_FRAME_BYTES", "12")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("limits.max_frame_bytes"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stomp-edge")).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--listen"));
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_stomp-edge")).arg("--print-config").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("max_frame_bytes = 131072"));
}

#[tokio::test]
async fn a_client_that_asks_for_receipts_and_never_reads_is_bounded() {
    let server = Server::start_with("[limits]\nmax_outbound_bytes = 65536\n", &[]);
    let (mut c, _) = Client::connect(&server.url()).await;
    // Each SEND asks for a RECEIPT; the client never reads. Batches of 1000 frames per
    // WebSocket message, until the server closes it (socket buffers hold several MiB first).
    let batch: String =
        (0..1000).map(|i| format!("SEND\ndestination:/queue/none\nreceipt:{i}\n\n\0")).collect();
    for _ in 0..1000 {
        if futures_util::SinkExt::send(
            &mut c.ws,
            tokio_tungstenite::tungstenite::Message::text(batch.clone()),
        )
        .await
        .is_err()
        {
            break;
        }
        if server.metric("stomp_edge_closes_total{reason=\"slow_consumer\"}") >= 1 {
            break;
        }
    }
    assert!(server.wait_metric("stomp_edge_closes_total{reason=\"slow_consumer\"}", 1));
}
