//! The server's life on a board, end to end with the real binary: systemd readiness and
//! watchdog notifications, SIGHUP reload without dropping clients, and the SIGTERM drain that
//! keeps answering `/healthz` with 503 until the last client is gone.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{Client, Server};

fn notifications(socket: &UnixDatagram, until: &str, limit: Duration) -> Vec<String> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    while start.elapsed() < limit {
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let done = text.lines().any(|l| l == until);
            got.push(text);
            if done {
                break;
            }
        }
    }
    got
}

#[test]
fn systemd_ready_watchdog_reload_and_stopping() {
    let dir = std::env::temp_dir().join(format!("stomp-edge-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).unwrap();
    let started = Instant::now();
    let mut server = Server::start_env(
        "log_level = \"info\"\n",
        &[],
        &[("NOTIFY_SOCKET", path.to_str().unwrap()), ("WATCHDOG_USEC", "2000000")],
    );
    let got = notifications(&socket, "READY=1", Duration::from_secs(5));
    assert!(got.iter().any(|m| m.contains("READY=1")), "{got:?}");
    println!("start to READY: {} ms", started.elapsed().as_millis());
    let got = notifications(&socket, "WATCHDOG=1", Duration::from_secs(3));
    assert!(got.iter().any(|m| m.contains("WATCHDOG=1")), "{got:?}");
    server.signal("HUP");
    let got = notifications(&socket, "READY=1", Duration::from_secs(5));
    assert!(got.iter().any(|m| m.contains("RELOADING=1")), "{got:?}");
    server.signal("TERM");
    let got = notifications(&socket, "STOPPING=1", Duration::from_secs(5));
    assert!(got.iter().any(|m| m.contains("STOPPING=1")), "{got:?}");
    assert_eq!(server.wait_exit(Duration::from_secs(5)), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sighup_reloads_limits_without_dropping_clients() {
    let server = Server::start_with("[limits]\nmax_connections = 100\n", &[]);
    let (mut a, _) = Client::connect(&server.url()).await;
    a.subscribe("/topic/r", "s").await;
    server.rewrite_config("log_level = \"debug\"\n[limits]\nmax_connections = 1\n");
    server.signal("HUP");
    let start = Instant::now();
    loop {
        // The one connection already open fills the new limit of 1.
        match Client::open_with(&server.url(), &[], &[]).await {
            Err(e) if e.to_string().contains("503") => break,
            _ => {}
        }
        assert!(start.elapsed() < Duration::from_secs(5), "reload never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.send_text("SEND\ndestination:/topic/r\n\nstill here\0").await;
    assert_eq!(a.recv().await.body_text(), "still here");
    // A bad config is refused and the running one kept.
    server.rewrite_config("[limits]\nmax_connections = nope\n");
    server.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.send_text("SEND\ndestination:/topic/r\n\nstill fine\0").await;
    assert_eq!(a.recv().await.body_text(), "still fine");
    assert!(server.log.lock().unwrap().contains("reload failed"));
}

#[test]
fn drain_answers_503_until_the_last_client_is_gone() {
    let mut server =
        Server::start_with("shutdown_timeout_ms = 8000\n[limits]\nmax_outbound_bytes = 67108864\n", &[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        // A client that stops reading, with far more queued for it than socket buffers hold,
        // keeps its connection in the closing flush for a while.
        let mut slow = Client::open(&server.url(), &[]).await;
        slow.send_text("CONNECT\naccept-version:1.2\n\n\0").await;
        slow.send_text("SUBSCRIBE\ndestination:/topic/big\nid:s\nreceipt:r\n\n\0").await;
        let (mut publisher, _) = Client::connect(&server.url()).await;
        let body = "b".repeat(60 * 1024);
        for _ in 0..400 {
            publisher.send_text(&format!("SEND\ndestination:/topic/big\n\n{body}\0")).await;
        }
        publisher.send_text("DISCONNECT\nreceipt:d\n\n\0").await;
        assert_eq!(publisher.recv().await.header("receipt-id"), Some("d"));
        server.signal("TERM");
        let start = Instant::now();
        let (status, body) = loop {
            let (status, _, body) = server.get("/healthz");
            if status == 503 || start.elapsed() > Duration::from_secs(3) {
                break (status, body);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("\"status\":\"draining\""), "{body}");
        let refused =
            Client::open_with(&server.url(), &[], &[]).await.err().expect("no new clients while draining");
        assert!(refused.to_string().contains("503"), "{refused}");
        drop(slow);
    });
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
}
