//! CONNECT credentials end to end with the real binary: plain passcodes compared in constant
//! time whatever their length, and Argon2-hashed passcodes made by `--hash-passcode`.

mod common;

use std::process::Command;
use std::time::Instant;

use common::{Client, Server, METRICS_OPEN};

async fn connect(server: &Server, login: &str, passcode: &str) -> String {
    let mut c = Client::open(&server.url(), &[]).await;
    c.send_text(&format!("CONNECT\naccept-version:1.2\nlogin:{login}\npasscode:{passcode}\n\n\0")).await;
    c.recv().await.command
}

#[tokio::test]
async fn a_passcode_65536_bytes_longer_than_the_configured_one_does_not_match() {
    // With header lines allowed past 64 KiB, the old compare (length difference folded into
    // 16 bits) let a passcode 65,536 bytes longer than the configured one in. (An empty
    // configured passcode, the first way this was found, is now refused at start-up.)
    let server = Server::start_with(
        "[limits]\nmax_header_line_bytes = 200_000\nmax_frame_bytes = 400_000\n[auth]\nusers = ['alice:a', 'bob:b']\n",
        &[],
    );
    for len in [65_536, 131_072] {
        assert_eq!(connect(&server, "alice", &format!("a{}", "x".repeat(len))).await, "ERROR", "{len}");
    }
    assert_eq!(connect(&server, "bob", &format!("b{}", "x".repeat(65_536))).await, "ERROR");
    assert_eq!(connect(&server, "alice", "a").await, "CONNECTED");
    assert_eq!(connect(&server, "bob", "b").await, "CONNECTED");
}

fn hash_of(passcode: &str) -> String {
    let out =
        Command::new(env!("CARGO_BIN_EXE_stomp-edge")).args(["--hash-passcode", passcode]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn hashed_passcodes_from_hash_passcode_work_beside_plain_ones() {
    let hash = hash_of("s3cret pass");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let server =
        Server::start_with(&format!("[auth]\nusers = ['alice:{hash}', 'guest:guest']\n{METRICS_OPEN}"), &[]);
    assert_eq!(connect(&server, "alice", "wrong").await, "ERROR");
    assert_eq!(connect(&server, "alice", &hash).await, "ERROR");
    assert_eq!(connect(&server, "alice", "s3cret pass").await, "CONNECTED");
    assert_eq!(connect(&server, "guest", "guest").await, "CONNECTED");
    // A verified passcode is remembered: reconnecting costs no further hash.
    let start = Instant::now();
    for _ in 0..20 {
        assert_eq!(connect(&server, "alice", "s3cret pass").await, "CONNECTED");
    }
    println!("20 CONNECTs with a remembered hashed passcode: {:?}", start.elapsed());
    assert_eq!(server.metric("stomp_edge_closes_total{reason=\"auth_failed\"}"), 2);
}

#[tokio::test]
async fn an_unknown_login_costs_an_argon2_run_like_a_known_hashed_one() {
    // Before, an unknown login was refused at once and a known hashed one after a hash: a
    // timing hint of which logins exist.
    let hash = hash_of("right one");
    let server =
        Server::start_with(&format!("[auth]\nusers = ['alice:{hash}', 'guest:guest']\n{METRICS_OPEN}"), &[]);
    const MISMATCHED: &str = "stomp_edge_login_checks_total{result=\"mismatched\"}";
    // Even alice's passcode does not let an unknown login in.
    assert_eq!(connect(&server, "mallory", "right one").await, "ERROR");
    assert_eq!(server.metric(MISMATCHED), 1, "checked against the configured hash");
    assert_eq!(connect(&server, "alice", "wrong").await, "ERROR");
    assert_eq!(server.metric(MISMATCHED), 2);
    // Both are remembered alike: tried again, no further run.
    assert_eq!(connect(&server, "mallory", "right one").await, "ERROR");
    assert_eq!(connect(&server, "alice", "wrong").await, "ERROR");
    assert_eq!(server.metric(MISMATCHED), 2);
    // Over HTTP Basic as well, through the same queue.
    let auth =
        format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "eve:x"));
    assert_eq!(common::http_get(&server.addr, "/api/status", &[("Authorization", &auth)]).0, 401);
    assert_eq!(server.metric(MISMATCHED), 3);
    assert_eq!(connect(&server, "alice", "right one").await, "CONNECTED");
}

#[test]
fn hash_passcode_reads_standard_input_and_a_bad_hash_stops_start_up() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_stomp-edge"))
        .args(["--hash-passcode", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"from stdin\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("$argon2id$v=19$"));
    let path = std::env::temp_dir().join(format!("stomp-edge-bad-hash-{}.toml", std::process::id()));
    std::fs::write(&path, "[auth]\nusers = ['alice:$argon2id$v=19$garbage']\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stomp-edge"))
        .arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2: `auth.users`: the passcode of \"alice\" is not an Argon2"), "{err}");
}

/// An Argon2id PHC string whose check takes far longer than any test (1 MiB, a million
/// passes: minutes of CPU), so a CONNECT checked against it is still being checked when the
/// test looks. No passcode matches it (the digest is made up); the server is killed at the end.
const SLOW_HASH: &str =
    "$argon2id$v=19$m=1024,t=1000000,p=1$c2FsdHNhbHRzYWx0c2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

const WAITING: &str = "stomp_edge_login_checks_waiting";
const RUNNING: &str = "stomp_edge_login_checks_running";

/// Waits until one check runs and `waiting` wait.
fn wait_checks(server: &Server, waiting: u64) {
    assert!(server.wait_metric(RUNNING, 1), "a check runs");
    assert!(server.wait_metric(WAITING, waiting), "{waiting} checks wait");
}

/// A client that sent a CONNECT for the slow account and is waiting for its answer.
async fn slow_login(server: &Server, passcode: &str) -> Client {
    let mut c = Client::open(&server.url(), &[]).await;
    c.send_text(&format!(
        "CONNECT\naccept-version:1.2\nlogin:slow\npasscode:{passcode}\nreceipt:c-{passcode}\n\n\0"
    ))
    .await;
    c
}

async fn guest(server: &Server) -> Client {
    let mut c = Client::open(&server.url(), &[]).await;
    c.send_text("CONNECT\naccept-version:1.2\nlogin:guest\npasscode:guest\n\n\0").await;
    assert_eq!(c.recv().await.command, "CONNECTED");
    c
}

#[tokio::test]
async fn other_clients_are_served_while_a_hashed_passcode_is_checked() {
    // Before the fix the check ran on the event loop: the board froze for its whole length.
    let server = Server::start_with(
        &format!("[auth]\nusers = ['slow:{SLOW_HASH}', 'guest:guest']\n{METRICS_OPEN}"),
        &[],
    );
    let mut subscriber = guest(&server).await;
    subscriber.subscribe("/topic/t", "s").await;
    let mut waiting = Vec::new();
    for i in 0..3 {
        waiting.push(slow_login(&server, &format!("wrong{i}")).await);
    }
    // One check running, two queued: the event loop is free.
    wait_checks(&server, 2);
    let mut publisher = guest(&server).await;
    for i in 0..5 {
        publisher.send_text(&format!("SEND\ndestination:/topic/t\n\nm{i}\0")).await;
    }
    publisher.send_text("SEND\ndestination:/topic/t\nreceipt:p\n\nlast\0").await;
    assert_eq!(publisher.recv().await.header("receipt-id"), Some("p"));
    let bodies: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..6 {
            let m = subscriber.recv().await;
            assert_eq!(m.command, "MESSAGE");
            v.push(m.body_text());
        }
        v
    };
    assert_eq!(bodies, ["m0", "m1", "m2", "m3", "m4", "last"]);
    // The logins are still being checked, and their clients have had no answer.
    assert_eq!((server.metric(RUNNING), server.metric(WAITING)), (1, 2));
    assert_eq!(server.metric("stomp_edge_login_checks_total{result=\"mismatched\"}"), 0);
    for c in &mut waiting {
        assert!(c.try_recv(std::time::Duration::from_millis(50)).await.is_none());
    }
    assert!(server.metric("stomp_edge_flow_control_pauses_total{reason=\"login_check\"}") >= 3);
}

#[tokio::test]
async fn connects_past_the_login_check_queue_are_refused_at_once() {
    let server = Server::start_with(
        &format!(
            "[auth]\nusers = ['slow:{SLOW_HASH}', 'guest:guest']\nmax_pending_logins = 2\n{METRICS_OPEN}"
        ),
        &[],
    );
    // The first runs; two wait (the queue's bound).
    let _running = slow_login(&server, "a").await;
    wait_checks(&server, 0);
    let _queued = [slow_login(&server, "b").await, slow_login(&server, "c").await];
    wait_checks(&server, 2);
    // The same question as a queued one shares its check and takes no place.
    let _same = slow_login(&server, "b").await;
    let mut refused = Vec::new();
    for p in ["d", "e"] {
        let mut c = slow_login(&server, p).await;
        let error = c.recv().await;
        assert_eq!(error.command, "ERROR", "{error:?}");
        assert_eq!(error.header("receipt-id"), Some(format!("c-{p}").as_str()));
        assert!(error.header("message").is_some_and(|m| m.starts_with("server busy")), "{error:?}");
        assert!(c.closed_within(common::WAIT).await);
        refused.push(c);
    }
    assert_eq!(server.metric("stomp_edge_login_checks_rejected_total{reason=\"queue_full\"}"), 2);
    assert_eq!((server.metric(RUNNING), server.metric(WAITING)), (1, 2));
    // Plain accounts need no check and still get in.
    guest(&server).await;
}

#[tokio::test]
async fn a_throttled_address_may_have_one_check_waiting() {
    let server = Server::start_with(
        &format!(
            "[auth]\nusers = ['slow:{SLOW_HASH}', 'guest:guest']\nthrottle_after_failures = 1\nthrottle_delay_ms = 1\n{METRICS_OPEN}"
        ),
        &[],
    );
    // A check runs before the address is throttled; then one failure (a plain account's,
    // answered at once) and the next is slowed: the address is throttled.
    let _running = slow_login(&server, "a").await;
    wait_checks(&server, 0);
    assert_eq!(connect(&server, "guest", "wrong").await, "ERROR");
    let _waiting = slow_login(&server, "b").await;
    wait_checks(&server, 1);
    let mut refused = slow_login(&server, "c").await;
    let error = refused.recv().await;
    assert_eq!(error.command, "ERROR", "{error:?}");
    assert_eq!(error.header("receipt-id"), Some("c-c"));
    assert!(error.header("message").is_some_and(|m| m.contains("from this address")), "{error:?}");
    assert_eq!(server.metric("stomp_edge_login_checks_rejected_total{reason=\"throttled\"}"), 1);
    assert_eq!(server.metric("stomp_edge_login_checks_rejected_total{reason=\"queue_full\"}"), 0);
    assert_eq!((server.metric(RUNNING), server.metric(WAITING)), (1, 1), "no check for it");
    // A plain account's right passcode is never held back.
    guest(&server).await;
}

#[test]
fn a_budget_too_small_for_the_hashes_and_an_empty_passcode_stop_at_once() {
    // Before, an 8 MiB budget with a 19 MiB Argon2 hash started fine and the account could
    // never log in ("server busy"), with nothing at start-up to say why.
    let hash = hash_of("right one");
    let path = std::env::temp_dir().join(format!("stomp-edge-small-budget-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        format!("[limits]\nmemory_budget_bytes = 8388608\n[auth]\nusers = ['alice:{hash}', 'guest:guest']\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stomp-edge"))
        .arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: a server that starts anyway is killed, and the test fails.
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() && start.elapsed() < common::WAIT {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("limits.memory_budget_bytes") && err.contains("auth.users") && err.contains("\"alice\""),
        "{err}"
    );
    // An empty passcode is not hashed (its hash would let the login in alone).
    for (arg, stdin) in [("", ""), ("-", "\n")] {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_stomp-edge"))
            .args(["--hash-passcode", arg])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{arg:?}");
        assert!(out.stdout.is_empty());
        assert!(String::from_utf8_lossy(&out.stderr).contains("empty passcode"), "{arg:?}");
    }
}

/// A SockJS xhr-polling request: POST `path` with `body`; returns (status, body as sent, chunk
/// sizes included).
fn xhr(addr: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(common::WAIT)).unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn a_right_hashed_passcode_is_checked_once_then_remembered_on_every_transport() {
    let hash = hash_of("right one");
    let bob = hash_of("bob's");
    let server =
        Server::start_with(&format!("[auth]\nusers = ['alice:{hash}', 'bob:{bob}']\n{METRICS_OPEN}"), &[]);
    const MATCHED: &str = "stomp_edge_login_checks_total{result=\"matched\"}";
    // Frames sent behind the CONNECT wait for its check, then are handled in order.
    let mut c = Client::open(&server.url(), &[]).await;
    c.send_text(concat!(
        "CONNECT\naccept-version:1.2\nlogin:alice\npasscode:right one\n\n\0",
        "SUBSCRIBE\nid:1\ndestination:/topic/x\nreceipt:r\n\n\0",
        "SEND\ndestination:/topic/x\n\nhello\0"
    ))
    .await;
    let frames = [c.recv().await, c.recv().await, c.recv().await];
    assert_eq!(frames.each_ref().map(|f| f.command.as_str()), ["CONNECTED", "RECEIPT", "MESSAGE"]);
    assert_eq!(frames[2].body_text(), "hello");
    assert_eq!(server.metric(MATCHED), 1);
    // Again over /ws, and over SockJS xhr: remembered, no second Argon2 run.
    assert_eq!(connect(&server, "alice", "right one").await, "CONNECTED");
    let addr = server.addr.clone();
    assert_eq!(xhr(&addr, "/ws/000/h1/xhr", ""), (200, "o\n".to_string()));
    let connect = r#"["CONNECT\naccept-version:1.2\nlogin:alice\npasscode:right one\n\n\u0000"]"#;
    assert_eq!(xhr(&addr, "/ws/000/h1/xhr_send", connect).0, 204);
    let (status, body) = xhr(&addr, "/ws/000/h1/xhr", "");
    assert_eq!(status, 200);
    assert!(body.contains("a[\"CONNECTED\\n"), "{body}");
    assert_eq!(server.metric(MATCHED), 1);
    // A wrong passcode over SockJS xhr waits for its check, then fails as usual.
    assert_eq!(xhr(&addr, "/ws/000/h2/xhr", ""), (200, "o\n".to_string()));
    let wrong = r#"["CONNECT\naccept-version:1.2\nlogin:alice\npasscode:wrong\nreceipt:w\n\n\u0000"]"#;
    assert_eq!(xhr(&addr, "/ws/000/h2/xhr_send", wrong).0, 204);
    let (_, body) = xhr(&addr, "/ws/000/h2/xhr", "");
    assert!(body.contains("a[\"ERROR\\n") && body.contains("receipt-id:w"), "{body}");
    assert_eq!(server.metric("stomp_edge_login_checks_total{result=\"mismatched\"}"), 1);
    // Over SockJS's websocket transport, a first login and the frame behind it.
    {
        use futures_util::{SinkExt, StreamExt};
        let url = format!("ws://{addr}/ws/000/b1/websocket");
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("sockjs websocket");
        let frames = serde_json::to_string(&[
            "CONNECT\naccept-version:1.2\nlogin:bob\npasscode:bob's\n\n\0",
            "SUBSCRIBE\nid:1\ndestination:/topic/b\nreceipt:rb\n\n\0",
        ])
        .unwrap();
        ws.send(tokio_tungstenite::tungstenite::Message::text(frames)).await.unwrap();
        let mut commands = Vec::new();
        while commands.len() < 2 {
            let m = tokio::time::timeout(common::WAIT, ws.next()).await.expect("a frame").unwrap().unwrap();
            let text = m.to_text().unwrap_or("").to_string();
            let Some(array) = text.strip_prefix('a') else { continue };
            let items: Vec<String> = serde_json::from_str(array).unwrap();
            commands.extend(items.iter().map(|i| i.split('\n').next().unwrap_or("").to_string()));
        }
        assert_eq!(commands, ["CONNECTED", "RECEIPT"]);
        assert_eq!(server.metric(MATCHED), 2);
    }
    // HTTP Basic on the status API goes through the same checks.
    let basic = |credentials: &str| {
        use base64::Engine;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials))
    };
    let status = |credentials: &str| {
        common::http_get(&addr, "/api/status", &[("Authorization", &basic(credentials))]).0
    };
    assert_eq!(status("alice:right one"), 200);
    assert_eq!(server.metric(MATCHED), 2, "remembered");
    assert_eq!(status("alice:another wrong one"), 401);
    assert_eq!(server.metric("stomp_edge_login_checks_total{result=\"mismatched\"}"), 2);
}
