//! The boards' view of themselves end to end: `GET /api/nodes` and `GET /api/status` on one
//! board alone and on two boards sharing a real `redis-server`, and the HTTP Basic login
//! that guards `/status` when accounts are configured.

mod common;

use std::time::{Duration, Instant};

use common::redis::Redis;
use common::{http_get, Client, Server};
use serde_json::Value;

/// Short registry timings, so a killed board expires within a test's patience.
const FAST: &str = "[cluster]\nheartbeat_ms = 300\nregistry_ttl_ms = 2000\ncommand_timeout_ms = 1000\nreconnect_min_ms = 50\nreconnect_max_ms = 500\n";

fn nodes(server: &Server) -> Value {
    let (status, headers, body) = server.get("/api/nodes");
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers.get("content-type").map(String::as_str), Some("application/json"));
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Polls `/api/nodes` on `server` until `done` holds for it (bounded); returns the last answer.
fn wait_nodes(server: &Server, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let v = nodes(server);
        if done(&v) {
            return v;
        }
        assert!(start.elapsed() < limit, "gave up waiting; /api/nodes says {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn api_nodes_in_local_mode_is_this_board_with_its_address() {
    let server = Server::start();
    let (_client, _) = Client::connect(&server.url()).await;
    let v = nodes(&server);
    assert_eq!(
        v,
        serde_json::json!([{
            "serverId": "test1",
            "url": format!("http://{}", server.addr),
            "self": true,
            "alive": true,
            "connections": 1
        }])
    );
}

#[test]
fn api_nodes_uses_the_configured_advertise_url() {
    let server =
        Server::start_env("", &[], &[("STOMP_EDGE_CLUSTER_ADVERTISE_URL", "http://board-a.lan:8080/")]);
    assert_eq!(nodes(&server)[0]["url"], "http://board-a.lan:8080");
    assert!(server.log.lock().unwrap().contains("advertised as http://board-a.lan:8080"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_nodes_lists_every_live_board_and_drops_a_dead_one_within_the_ttl() {
    let redis = Redis::start();
    let a = Server::start_with(FAST, &["--redis", &redis.url(), "--server-id", "a"]);
    let mut b = Server::start_env(
        FAST,
        &["--redis", &redis.url(), "--server-id", "b"],
        &[("STOMP_EDGE_CLUSTER_ADVERTISE_URL", "http://board-b.lan:8080")],
    );
    let (_c1, _) = Client::connect(&b.url()).await;
    let (_c2, _) = Client::connect(&b.url()).await;
    // b's entry carries its URL and, from its next heartbeat on, its two connections.
    let v = wait_nodes(&a, Duration::from_secs(10), |v| {
        v.as_array().is_some_and(|l| l.len() == 2 && l[1]["connections"] == 2)
    });
    assert_eq!(
        v,
        serde_json::json!([
            {"serverId": "a", "url": format!("http://{}", a.addr), "self": true, "alive": true, "connections": 0},
            {"serverId": "b", "url": "http://board-b.lan:8080", "self": false, "alive": true, "connections": 2},
        ])
    );
    // Every board answers the same list, itself marked `self`.
    let v = wait_nodes(&b, Duration::from_secs(10), |v| v.as_array().is_some_and(|l| l.len() == 2));
    assert_eq!((v[0]["serverId"].as_str(), v[0]["self"].as_bool()), (Some("b"), Some(true)));
    assert_eq!(
        (v[1]["serverId"].as_str(), v[1]["url"].as_str()),
        (Some("a"), Some(&*format!("http://{}", a.addr)))
    );
    // A board killed without a goodbye is gone from the list once its entry expires.
    b.signal("KILL");
    b.wait_exit(Duration::from_secs(5));
    let killed = Instant::now();
    wait_nodes(&a, Duration::from_secs(10), |v| v.as_array().is_some_and(|l| l.len() == 1));
    // Within the TTL (2 s) plus a heartbeat and slack for a loaded machine.
    assert!(killed.elapsed() < Duration::from_secs(5), "took {:?}", killed.elapsed());
}

fn status_of(server: &Server, path: &str, extra: &[(&str, &str)]) -> (u16, Value) {
    let (status, _, body) = http_get(&server.addr, path, extra);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A client that joined `room` as `name` (CONNECT with `login`/`passcode` when given).
async fn member(server: &Server, room: &str, name: &str, login: Option<(&str, &str)>) -> Client {
    let mut c = Client::open(&server.url(), &["v12.stomp"]).await;
    let creds = login.map(|(l, p)| format!("login:{l}\npasscode:{p}\n")).unwrap_or_default();
    c.send_text(&format!("CONNECT\naccept-version:1.2\nhost:localhost\n{creds}heart-beat:0,0\n\n\0")).await;
    assert_eq!(c.recv().await.command, "CONNECTED");
    c.subscribe(&format!("/topic/room/{room}"), "room").await;
    c.send_text(&format!("SEND\ndestination:/app/room/{room}/join\n\n{{\"username\":\"{name}\"}}\0")).await;
    assert!(c.recv().await.body_text().contains("JOIN"));
    c
}

#[tokio::test]
async fn api_status_is_a_snapshot_of_this_board_without_secrets() {
    let server = Server::start();
    let mut alice = member(&server, "lobby", "alice", None).await;
    let _bob = member(&server, "lobby", "bob", None).await;
    let _carol = member(&server, "attic", "carol", None).await;
    alice.send_text("SEND\ndestination:/app/room/lobby/message\n\n{\"message\":\"a secret plan\"}\0").await;
    // A frame over the limit: a rejected frame the page must single out.
    let mut rude = Client::open(&server.url(), &["v12.stomp"]).await;
    rude.send_text(&format!("CONNECT\naccept-version:1.2\nhost:x\n\n{}\0", "x".repeat(200_000))).await;
    assert!(rude.closed_within(Duration::from_secs(5)).await);
    // A SockJS session (its WebSocket transport) counts as SockJS.
    let _sockjs = Client::open(&format!("ws://{}/ws/000/abcdefgh/websocket", server.addr), &[]).await;
    let start = Instant::now();
    let (body, s) = loop {
        let (status, _, body) = server.get("/api/status");
        assert_eq!(status, 200);
        let s: Value = serde_json::from_str(&body).unwrap();
        if s["connections"]["sockjs"] == 1 || start.elapsed() > Duration::from_secs(5) {
            break (body, s);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (s["serverId"].as_str(), s["mode"].as_str(), s["redis"]["state"].as_str()),
        (Some("test1"), Some("local"), Some("disabled"))
    );
    assert_eq!(s["url"], format!("http://{}", server.addr));
    assert_eq!(s["connections"], serde_json::json!({"total": 4, "websocket": 3, "sockjs": 1}));
    assert_eq!(
        s["rooms"],
        serde_json::json!([{"roomId": "lobby", "participantCount": 2}, {"roomId": "attic", "participantCount": 1}])
    );
    assert_eq!(s["roomCount"], 2);
    assert!(s["subscriptions"].as_u64().unwrap() >= 3);
    let group =
        |key: &str| s["trouble"].as_array().unwrap().iter().find(|g| g["key"] == key).cloned().unwrap();
    assert_eq!(group("rejected_frames")["total"], 1, "{}", group("rejected_frames"));
    assert_eq!(group("rejected_frames")["lastMinute"], 1);
    assert_eq!(group("slow_consumers")["total"], 0);
    assert!(s["counters"]["stomp_edge_messages_delivered_total"].as_u64().unwrap() > 0);
    assert!(s["history"]["intervalSeconds"] == 10 && s["history"]["connections"].is_array());
    // Counts only: no message body, no session id.
    assert!(!body.contains("secret plan"), "{body}");
    assert!(!body.contains("test1-"), "a session or message id leaked: {body}");
}

/// Accounts; the test's wrong logins are not slowed (their throttling is tested in
/// e2e_login_paths), and the test reads /metrics from 127.0.0.1 without credentials.
const ACCOUNTS: &str = "[auth]\nusers = [\"alice:wonder land\", \"ops:s3cret\"]\nthrottle_after_failures = 100\n[http]\nmetrics_open_to = [\"127.0.0.1\"]\n";

#[tokio::test]
async fn status_needs_a_stomp_account_by_http_basic_when_accounts_are_configured() {
    let server = Server::start_with(ACCOUNTS, &[]);
    let _alice = member(&server, "lobby", "alice", Some(("alice", "wonder land"))).await;
    let basic = |creds: &str| {
        format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, creds.as_bytes())
        )
    };
    for path in ["/status", "/status.js", "/api/status", "/api/status?node=elsewhere"] {
        let (status, headers, _) = http_get(&server.addr, path, &[]);
        assert_eq!(status, 401, "{path}");
        assert_eq!(
            headers.get("www-authenticate").map(String::as_str),
            Some("Basic realm=\"stomp-edge status\", charset=\"UTF-8\"")
        );
        let (status, _, _) = http_get(&server.addr, path, &[("Authorization", &basic("alice:wrong"))]);
        assert_eq!(status, 401, "{path} with a wrong passcode");
        let (status, _, _) = http_get(&server.addr, path, &[("Authorization", &basic("nobody:s3cret"))]);
        assert_eq!(status, 401, "{path} with an unknown login");
    }
    let (status, _, page) = http_get(&server.addr, "/status", &[("Authorization", &basic("ops:s3cret"))]);
    assert_eq!(status, 200);
    assert!(page.contains("/status.js"));
    let (status, s) = status_of(&server, "/api/status", &[("Authorization", &basic("alice:wonder land"))]);
    assert_eq!(status, 200);
    assert_eq!(s["rooms"][0]["participantCount"], 1);
    let text = s.to_string();
    assert!(!text.contains("wonder land") && !text.contains("s3cret"), "{text}");
    assert!(server.metric("stomp_edge_http_requests_total{route=\"unauthorized\"}") >= 12);
    // The chat itself and /api/nodes stay as they were.
    assert_eq!(server.get("/").0, 200);
    assert_eq!(server.get("/api/nodes").0, 200);
}

#[test]
fn status_can_be_opened_to_everyone_or_turned_off() {
    let open = Server::start_with(&format!("{ACCOUNTS}[status]\nrequire_auth = false\n"), &[]);
    assert_eq!(open.get("/api/status").0, 200);
    assert_eq!(open.get("/status").0, 200);
    let off = Server::start_with("[status]\nenabled = false\n", &[]);
    assert_eq!(off.get("/status").0, 404);
    assert_eq!(off.get("/api/status").0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_shows_another_boards_status_with_the_visitors_login() {
    let redis = Redis::start();
    let config = format!("{FAST}{ACCOUNTS}");
    let a = Server::start_with(&config, &["--redis", &redis.url(), "--server-id", "a"]);
    let mut b = Server::start_with(&config, &["--redis", &redis.url(), "--server-id", "b"]);
    let _ops = member(&b, "lobby", "ops", Some(("ops", "s3cret"))).await;
    let auth = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b"ops:s3cret")
    );
    let headers = [("Authorization", auth.as_str())];
    wait_nodes(&a, Duration::from_secs(10), |v| v.as_array().is_some_and(|l| l.len() == 2));
    let (status, s) = status_of(&a, "/api/status?node=b", &headers);
    assert_eq!(status, 200, "{s}");
    assert_eq!((s["serverId"].as_str(), s["connections"]["total"].as_u64()), (Some("b"), Some(1)));
    assert_eq!(s["redis"]["primary"], format!("127.0.0.1:{}", redis.port), "{}", s["redis"]);
    assert_eq!(s["rooms"][0], serde_json::json!({"roomId": "lobby", "participantCount": 1}));
    // b wants the login too: a passes on the visitor's, and a wrong one fails on b.
    let wrong =
        format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b"ops:nope"));
    assert_eq!(status_of(&a, "/api/status?node=b", &[("Authorization", &wrong)]).0, 401);
    // Only boards of the registry are fetched.
    assert_eq!(status_of(&a, "/api/status?node=elsewhere", &headers).0, 404);
    assert_eq!(status_of(&a, "/api/status?node=a", &headers).1["serverId"], "a");
    b.signal("KILL");
    b.wait_exit(Duration::from_secs(5));
    let (status, s) = status_of(&a, "/api/status?node=b", &headers);
    assert!(status == 502 || status == 404, "{status} {s}");
}
