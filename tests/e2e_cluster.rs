//! Cluster mode end to end: real `redis-server` processes on free loopback ports and two or
//! three real `stomp-edge` nodes. Cross-node chat, cluster-wide state, a node killed with
//! SIGKILL, Redis stopped and restarted, FLUSHALL, and a partition through a paused proxy.

mod common;

use std::time::{Duration, Instant};

use common::redis::{Proxy, Redis};
use common::rooms::{member, say};
use common::{Client, Server};
use serde_json::Value;

/// Short timings so failures and recoveries happen within a test's patience.
/// (Tolerant enough for a loaded 2-core machine running several clusters at once.)
const FAST: &str = "[cluster]\nheartbeat_ms = 500\nregistry_ttl_ms = 3000\ncommand_timeout_ms = 1000\nreconnect_min_ms = 50\nreconnect_max_ms = 500\n";

fn node(redis_url: &str, id: &str) -> Server {
    let server = Server::start_with(FAST, &["--redis", redis_url, "--server-id", id]);
    assert!(wait_health(&server, "cluster", Duration::from_secs(10)), "{id} never reached Redis");
    server
}

fn health(server: &Server) -> Value {
    serde_json::from_str(&server.get("/healthz").2).unwrap_or(Value::Null)
}

fn wait_health(server: &Server, mode: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        let h = health(server);
        if h["mode"] == mode && h["redis"] == if mode == "cluster" { "up" } else { "down" } {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn participants(server: &Server, room: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(&server.get(&format!("/api/rooms/{room}")).2).unwrap_or(Value::Null);
    v["participants"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Waits until the room's participant list (sorted) is `expected` on `server`.
async fn wait_participants(server: &Server, room: &str, expected: &[&str]) {
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    let start = Instant::now();
    loop {
        let mut got = participants(server, room);
        got.sort();
        if got == want {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "participants of {room}: {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Collects room events for `window`, as (type, sender, message).
async fn events(c: &mut Client, window: Duration) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + window;
    let mut out = Vec::new();
    while let Some(f) = c.try_recv(deadline.saturating_duration_since(Instant::now())).await {
        let v: Value = serde_json::from_slice(&f.body).unwrap_or(Value::Null);
        if f.header("subscription") == Some("room") {
            out.push((
                v["type"].as_str().unwrap_or("").into(),
                v["sender"].as_str().unwrap_or("").into(),
                v["message"].as_str().unwrap_or("").into(),
            ));
        } else if f.header("subscription") == Some("errors") {
            out.push(("ERROR".into(), v["code"].as_str().unwrap_or("").into(), String::new()));
        }
    }
    out
}

/// Waits for an event matching `kind` and `sender`; returns every event seen until then.
async fn until(c: &mut Client, kind: &str, sender: &str, limit: Duration) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let batch = events(c, left.min(Duration::from_millis(100))).await;
        let found = batch.iter().any(|(k, s, _)| k == kind && s == sender);
        seen.extend(batch);
        if found {
            return seen;
        }
        assert!(Instant::now() < deadline, "no {kind} from {sender}; saw {seen:?}");
    }
}

fn count(events: &[(String, String, String)], kind: &str, sender: &str) -> usize {
    events.iter().filter(|(k, s, _)| k == kind && s == sender).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_node_chat_with_cluster_wide_state_and_no_duplicates() {
    let redis = Redis::start();
    let (n1, n2) = (node(&redis.url(), "n1"), node(&redis.url(), "n2"));
    let mut alice = member(&n1, "lobby", "alice").await;
    until(&mut alice, "JOIN", "alice", Duration::from_secs(5)).await;
    let mut bob = member(&n2, "lobby", "bob").await;
    until(&mut alice, "JOIN", "bob", Duration::from_secs(5)).await;
    until(&mut bob, "JOIN", "bob", Duration::from_secs(5)).await;
    wait_participants(&n1, "lobby", &["alice", "bob"]).await;
    wait_participants(&n2, "lobby", &["alice", "bob"]).await;
    let rooms: Value = serde_json::from_str(&n2.get("/api/rooms").2).unwrap();
    assert_eq!(rooms, serde_json::json!([{"roomId":"lobby","participantCount":2}]));
    // A name is unique across the cluster.
    let mut fake = member(&n2, "lobby", "alice").await;
    assert_eq!(until(&mut fake, "ERROR", "username_taken", Duration::from_secs(5)).await.len(), 1);

    // 50 messages each way: every one arrives once, in order per sender, to both.
    let publishes_before = redis.calls("publish");
    for i in 0..50 {
        say(&mut alice, "lobby", &format!("a{i}")).await;
        say(&mut bob, "lobby", &format!("b{i}")).await;
    }
    for c in [&mut alice, &mut bob] {
        let got = events(c, Duration::from_millis(1500)).await;
        let chats: Vec<&(String, String, String)> = got.iter().filter(|(k, _, _)| k == "CHAT").collect();
        assert_eq!(chats.len(), 100, "{got:?}");
        for sender in ["alice", "bob"] {
            let texts: Vec<&str> =
                chats.iter().filter(|(_, s, _)| s == sender).map(|(_, _, m)| m.as_str()).collect();
            let want: Vec<String> = (0..50).map(|i| format!("{}{i}", &sender[..1])).collect();
            assert_eq!(texts, want);
        }
    }
    // One PUBLISH per broadcast message, whatever the number of subscribers and nodes.
    assert_eq!(redis.calls("publish") - publishes_before, 100);
    assert_eq!(n1.metric("stomp_edge_stream_lost_total"), 0);
    assert_eq!(n1.metric("stomp_edge_cluster_duplicates_ignored_total"), 0);
    // A healthy link stays up through many heart-beat pings.
    assert_eq!(n1.metric("stomp_edge_cluster_pubsub_reconnects_total"), 0);
    assert_eq!(n2.metric("stomp_edge_cluster_pubsub_reconnects_total"), 0);
    assert!(n1.metric("stomp_edge_cluster_echoes_ignored_total") >= 50);
    // Every metric of a cluster node with the chat is declared with its help text (one registry).
    let (_, _, text) = n1.get("/metrics");
    for line in text.lines().filter(|l| l.starts_with("# HELP ")) {
        assert!(line.splitn(4, ' ').nth(3).is_some_and(|help| !help.is_empty()), "undeclared: {line}");
    }

    // Plain /topic/** SENDs cross nodes too, only to nodes with interest.
    let (mut sub, _) = Client::connect(&n2.url()).await;
    sub.subscribe("/topic/sensors/t1", "s").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut publisher, _) = Client::connect(&n1.url()).await;
    for i in 0..20 {
        publisher.send_text(&format!("SEND\ndestination:/topic/sensors/t1\nx-n:{i}\n\n{i}\0")).await;
    }
    for i in 0..20 {
        let m = sub.recv().await;
        assert_eq!((m.body_text(), m.header("x-n")), (i.to_string(), Some(i.to_string().as_str())));
    }
    assert!(sub.try_recv(Duration::from_millis(300)).await.is_none());
    let key = redis.cli(&["SMEMBERS", "stomp:servers:n1:sessions"]);
    assert_eq!(key.lines().count(), 2, "sessions of n1 (alice, publisher) in redis: {key}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_members_leave_exactly_once() {
    let redis = Redis::start();
    let (n1, n2) = (node(&redis.url(), "n1"), node(&redis.url(), "n2"));
    let mut n3 = node(&redis.url(), "n3");
    let mut alice = member(&n1, "r", "alice").await;
    let mut bob = member(&n2, "r", "bob").await;
    let _carol = member(&n3, "r", "carol").await;
    wait_participants(&n1, "r", &["alice", "bob", "carol"]).await;
    until(&mut alice, "JOIN", "carol", Duration::from_secs(5)).await;
    until(&mut bob, "JOIN", "carol", Duration::from_secs(5)).await;
    n3.signal("KILL");
    n3.wait_exit(Duration::from_secs(5));
    let start = Instant::now();
    let mut seen_a = until(&mut alice, "LEAVE", "carol", Duration::from_secs(20)).await;
    let noticed = start.elapsed();
    let mut seen_b = until(&mut bob, "LEAVE", "carol", Duration::from_secs(5)).await;
    // Both survivors noticed; still exactly one LEAVE each.
    seen_a.extend(events(&mut alice, Duration::from_secs(2)).await);
    seen_b.extend(events(&mut bob, Duration::from_millis(200)).await);
    assert_eq!(
        (count(&seen_a, "LEAVE", "carol"), count(&seen_b, "LEAVE", "carol")),
        (1, 1),
        "{seen_a:?} {seen_b:?}"
    );
    // Within twice the registry TTL, plus a heartbeat and some slack for a loaded machine.
    assert!(noticed < Duration::from_secs(2 * 3 + 2), "took {noticed:?} (ttl 3 s)");
    wait_participants(&n2, "r", &["alice", "bob"]).await;
    assert_eq!(
        n1.metric("stomp_edge_cluster_dead_nodes_cleaned_total")
            + n2.metric("stomp_edge_cluster_dead_nodes_cleaned_total"),
        1
    );
    assert!(!redis.cli(&["SMEMBERS", "stomp:servers:known"]).contains("n3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_serve_alone_without_redis_and_resume_when_it_returns() {
    let mut redis = Redis::start();
    let (n1, n2) = (node(&redis.url(), "n1"), node(&redis.url(), "n2"));
    let mut alice = member(&n1, "r", "alice").await;
    let mut bob = member(&n2, "r", "bob").await;
    until(&mut alice, "JOIN", "bob", Duration::from_secs(5)).await;
    redis.kill();
    assert!(wait_health(&n1, "local", Duration::from_secs(5)));
    assert!(wait_health(&n2, "local", Duration::from_secs(5)));
    // Local chat goes on: a newcomer on n1 joins and talks with alice.
    let mut amy = member(&n1, "r", "amy").await;
    until(&mut alice, "JOIN", "amy", Duration::from_secs(5)).await;
    say(&mut amy, "r", "no redis, no problem").await;
    until(&mut alice, "CHAT", "amy", Duration::from_secs(5)).await;
    // Redis comes back empty: cross-node chat resumes with no client reconnecting.
    let down_at = Instant::now();
    redis.restart();
    assert!(wait_health(&n1, "cluster", Duration::from_secs(10)));
    assert!(wait_health(&n2, "cluster", Duration::from_secs(10)));
    let resumed = down_at.elapsed();
    wait_participants(&n2, "r", &["alice", "amy", "bob"]).await;
    // bob hears about amy once, from the resync.
    let seen = until(&mut bob, "JOIN", "amy", Duration::from_secs(5)).await;
    assert_eq!(count(&seen, "JOIN", "amy"), 1);
    say(&mut bob, "r", "back").await;
    until(&mut alice, "CHAT", "bob", Duration::from_secs(5)).await;
    say(&mut alice, "r", "welcome back").await;
    until(&mut bob, "CHAT", "alice", Duration::from_secs(5)).await;
    assert!(resumed < Duration::from_secs(10), "took {resumed:?}");
    assert!(n1.metric("stomp_edge_cluster_redis_reconnects_total") >= 1);
    assert!(health(&n1)["redisReconnects"].as_u64() >= Some(1));
    assert!(health(&n1)["redisCommandErrors"].is_u64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_is_rebuilt_from_the_live_nodes() {
    let redis = Redis::start();
    let (n1, n2) = (node(&redis.url(), "n1"), node(&redis.url(), "n2"));
    let mut alice = member(&n1, "r", "alice").await;
    let _bob = member(&n2, "r", "bob").await;
    until(&mut alice, "JOIN", "bob", Duration::from_secs(5)).await;
    wait_participants(&n1, "r", &["alice", "bob"]).await;
    redis.cli(&["FLUSHALL"]);
    wait_participants(&n1, "r", &["alice", "bob"]).await;
    assert!(redis.cli(&["SMEMBERS", "stomp:servers:known"]).contains("n1"));
    // No JOIN was announced again: nobody came or went.
    let seen = events(&mut alice, Duration::from_millis(500)).await;
    assert_eq!(count(&seen, "JOIN", "bob"), 0, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_rejoins_with_a_consistent_state() {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.port);
    let n1 = node(&proxy.url(), "n1");
    let n2 = node(&redis.url(), "n2");
    let mut alice = member(&n1, "r", "alice").await;
    let _ann = member(&n1, "r", "ann").await;
    let mut bob = member(&n2, "r", "bob").await;
    wait_participants(&n2, "r", &["alice", "ann", "bob"]).await;
    until(&mut bob, "JOIN", "bob", Duration::from_secs(5)).await;
    proxy.pause();
    assert!(wait_health(&n1, "local", Duration::from_secs(5)));
    // n2 sees n1 as dead and removes its members.
    let seen = until(&mut bob, "LEAVE", "alice", Duration::from_secs(10)).await;
    assert!(count(&seen, "LEAVE", "alice") == 1);
    // Meanwhile on n1: alice leaves, dave joins.
    alice.send_text("SEND\ndestination:/app/room/r/leave\n\n\0").await;
    let mut dave = member(&n1, "r", "dave").await;
    until(&mut dave, "JOIN", "dave", Duration::from_secs(5)).await;
    proxy.resume();
    assert!(wait_health(&n1, "cluster", Duration::from_secs(10)));
    // One consistent state: no ghost alice, ann and dave back, bob kept.
    wait_participants(&n2, "r", &["ann", "bob", "dave"]).await;
    wait_participants(&n1, "r", &["ann", "bob", "dave"]).await;
    let seen = until(&mut bob, "JOIN", "dave", Duration::from_secs(5)).await;
    let more = events(&mut bob, Duration::from_millis(500)).await;
    assert_eq!(count(&seen, "JOIN", "alice") + count(&more, "JOIN", "alice"), 0);
    say(&mut dave, "r", "hi bob").await;
    until(&mut bob, "CHAT", "dave", Duration::from_secs(5)).await;
}

#[test]
fn graceful_shutdown_leaves_the_cluster() {
    let redis = Redis::start();
    let n1 = node(&redis.url(), "n1");
    let mut n2 = node(&redis.url(), "n2");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut alice = member(&n1, "r", "alice").await;
        let _bob = member(&n2, "r", "bob").await;
        until(&mut alice, "JOIN", "bob", Duration::from_secs(5)).await;
        n2.signal("TERM");
        let seen = until(&mut alice, "LEAVE", "bob", Duration::from_secs(5)).await;
        let more = events(&mut alice, Duration::from_secs(2)).await;
        assert_eq!(count(&seen, "LEAVE", "bob") + count(&more, "LEAVE", "bob"), 1);
    });
    assert_eq!(n2.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(!redis.cli(&["SMEMBERS", "stomp:servers:known"]).contains("n2"));
    assert_eq!(redis.cli(&["EXISTS", "stomp:servers:n2:alive"]).trim(), "0");
    assert_eq!(redis.cli(&["SCARD", "stomp:servers:n2:sessions"]).trim(), "0");
}

#[test]
fn redis_urls_with_password_acl_user_and_database() {
    // A password (requirepass) and database 3.
    let redis = Redis::start_with(&["--requirepass", "s3cret"], &["-a", "s3cret", "--no-auth-warning"]);
    let n1 = node(&format!("redis://:s3cret@127.0.0.1:{}/3", redis.port), "n1");
    assert_eq!(redis.cli(&["-n", "3", "SISMEMBER", "stomp:servers:known", "n1"]).trim(), "1");
    assert_eq!(redis.cli(&["-n", "0", "EXISTS", "stomp:servers:known"]).trim(), "0");
    drop(n1);
    // An ACL user, and a wrong password that never gets the node up.
    let redis = Redis::start_with(&[], &[]);
    redis.cli(&["ACL", "SETUSER", "edge", "on", ">pw", "~stomp:*", "&stomp:*", "+@all"]);
    let n2 = node(&format!("redis://edge:pw@127.0.0.1:{}/0", redis.port), "n2");
    assert_eq!(redis.cli(&["SISMEMBER", "stomp:servers:known", "n2"]).trim(), "1");
    drop(n2);
    let bad = Server::start_with(
        FAST,
        &["--redis", &format!("redis://edge:wrong@127.0.0.1:{}", redis.port), "--server-id", "n3"],
    );
    assert!(!wait_health(&bad, "cluster", Duration::from_secs(2)));
    assert_eq!(health(&bad)["redis"], "down");
    assert_eq!(health(&bad)["mode"], "local");
}

/// Waits until the server's log contains `text`.
fn wait_log(server: &Server, text: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if server.log.lock().unwrap().contains(text) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_id_taken_twice_is_refused_and_the_live_node_left_alone() {
    let redis = Redis::start();
    let (a, b) = (node(&redis.url(), "node-a"), node(&redis.url(), "node-b"));
    let mut alice = member(&a, "r1", "alice").await;
    let mut bob = member(&b, "r1", "bob").await;
    until(&mut alice, "JOIN", "bob", Duration::from_secs(5)).await;
    until(&mut bob, "JOIN", "bob", Duration::from_secs(5)).await;
    wait_participants(&b, "r1", &["alice", "bob"]).await;
    let entry_before = redis.cli(&["GET", "stomp:servers:node-a:alive"]);

    // A third process with node-a's id: it refuses to join, says so, and serves alone.
    let intruder = Server::start_with(FAST, &["--redis", &redis.url(), "--server-id", "node-a"]);
    assert!(
        wait_log(&intruder, "server id node-a is in use by another live node", Duration::from_secs(10)),
        "{}",
        intruder.log.lock().unwrap()
    );
    let h = health(&intruder);
    assert_eq!((h["mode"].as_str(), h["status"].as_str()), (Some("local"), Some("ok")), "{h}");
    assert!(h["clusterRefused"].as_str().is_some_and(|r| r.contains("node-a")), "{h}");
    assert!(health(&a)["clusterRefused"].is_null());
    let mut carol = member(&intruder, "r1", "carol").await;
    until(&mut carol, "JOIN", "carol", Duration::from_secs(5)).await;

    // Several heartbeats and a registry TTL later, alice is untouched: no LEAVE, still listed,
    // still chatting with bob both ways; carol stayed on her own board.
    let seen = events(&mut bob, Duration::from_secs(4)).await;
    assert_eq!(count(&seen, "LEAVE", "alice") + count(&seen, "JOIN", "carol"), 0, "{seen:?}");
    wait_participants(&a, "r1", &["alice", "bob"]).await;
    wait_participants(&b, "r1", &["alice", "bob"]).await;
    say(&mut alice, "r1", "still here").await;
    until(&mut bob, "CHAT", "alice", Duration::from_secs(5)).await;
    say(&mut bob, "r1", "hi alice").await;
    until(&mut alice, "CHAT", "bob", Duration::from_secs(5)).await;
    let registry = redis.cli(&["GET", "stomp:servers:node-a:alive"]);
    let instance =
        |entry: &str| serde_json::from_str::<Value>(entry).map(|v| v["instance"].clone()).unwrap_or_default();
    assert_eq!(instance(&registry), instance(&entry_before), "the live node keeps its entry");
    assert!(
        intruder.log.lock().unwrap().matches("is in use by another live node").count() == 1,
        "logged once"
    );

    // The intruder goes away: alice neither leaves nor joins again.
    drop(intruder);
    let seen = events(&mut bob, Duration::from_secs(2)).await;
    assert_eq!(count(&seen, "LEAVE", "alice") + count(&seen, "JOIN", "alice"), 0, "{seen:?}");
    wait_participants(&b, "r1", &["alice", "bob"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_restarted_after_a_crash_takes_its_id_back() {
    let redis = Redis::start();
    let b = node(&redis.url(), "node-b");
    let mut a = node(&redis.url(), "node-a");
    let mut bob = member(&b, "r1", "bob").await;
    let _alice = member(&a, "r1", "alice").await;
    until(&mut bob, "JOIN", "alice", Duration::from_secs(5)).await;
    a.signal("KILL");
    a.wait_exit(Duration::from_secs(5));
    // Restarted at once: its old entry (another instance's token) is still live for up to the
    // TTL; once it runs out the new process joins, and its users are back in the rooms.
    let a2 = Server::start_with(FAST, &["--redis", &redis.url(), "--server-id", "node-a"]);
    assert!(wait_health(&a2, "cluster", Duration::from_secs(15)), "{}", a2.log.lock().unwrap());
    assert!(health(&a2)["clusterRefused"].is_null());
    let mut alice = member(&a2, "r1", "alice").await;
    until(&mut bob, "JOIN", "alice", Duration::from_secs(10)).await;
    wait_participants(&b, "r1", &["alice", "bob"]).await;
    say(&mut alice, "r1", "back").await;
    until(&mut bob, "CHAT", "alice", Duration::from_secs(5)).await;
}
