//! The boards' view of themselves end to end: `GET /api/nodes` on one board alone and on two
//! boards sharing a real `redis-server`.

mod common;

use std::time::{Duration, Instant};

use common::redis::Redis;
use common::{Client, Server};
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
