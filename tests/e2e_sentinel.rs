//! Redis high availability end to end: a primary, a replica and three real
//! `redis-server --sentinel` processes on loopback, two real `stomp-edge` nodes with a
//! `redis-sentinel://` URL. The primary is killed with SIGKILL while the boards chat; a
//! sentinel is down throughout (2 of 3 left). Also: a primary that turns into a replica
//! (`READONLY`) and a `redis://` URL that points at a replica are never written to.

mod common;

use std::time::{Duration, Instant};

use common::redis::Redis;
use common::rooms::{member, say};
use common::sentinel::{Sentinel, SentinelSet, DOWN_AFTER_MS, MASTER};
use common::{Client, Server};
use serde_json::Value;

/// Short timings; the registry TTL stays above the failover time (see docs/HA.md: a shorter
/// one lets the nodes take each other for dead while the sentinels fail over).
const FAST: &str = "[cluster]\nheartbeat_ms = 500\nregistry_ttl_ms = 10000\ncommand_timeout_ms = 1000\nreconnect_min_ms = 50\nreconnect_max_ms = 3000\n";

fn node(url: &str, id: &str) -> Server {
    let server = Server::start_with(FAST, &["--redis", url, "--server-id", id]);
    assert!(
        wait_health(&server, |h| h["redis"] == "up", Duration::from_secs(10)),
        "{id} never reached Redis"
    );
    server
}

fn health(server: &Server) -> Value {
    serde_json::from_str(&server.get("/healthz").2).unwrap_or(Value::Null)
}

fn wait_health(server: &Server, ok: impl Fn(&Value) -> bool, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok(&health(server)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The next room event as (type, sender, message), or None within `limit`.
async fn next_event(c: &mut Client, limit: Duration) -> Option<(String, String, String)> {
    let f = c.try_recv(limit).await?;
    let v: Value = serde_json::from_slice(&f.body).unwrap_or(Value::Null);
    let field = |k: &str| v[k].as_str().unwrap_or("").to_string();
    Some((field("type"), field("sender"), field("message")))
}

/// Reads events until one matches `kind` and `sender`; returns every event seen until then.
async fn until(c: &mut Client, kind: &str, sender: &str, limit: Duration) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(event) = next_event(c, left).await else {
            panic!("no {kind} from {sender} within {limit:?}; saw {seen:?}")
        };
        let found = event.0 == kind && event.1 == sender;
        seen.push(event);
        if found {
            return seen;
        }
    }
}

fn metric_line(server: &Server, prefix: &str) -> Option<String> {
    server.get("/metrics").2.lines().find(|l| l.starts_with(prefix)).map(String::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_boards_follow_a_failover_without_any_client_reconnecting() {
    let mut set = SentinelSet::start();
    let old_primary = format!("127.0.0.1:{}", set.primary.port);
    let new_primary = format!("127.0.0.1:{}", set.replica.port);
    // One sentinel is down throughout, and it is the first one named: 2 of 3 are enough.
    set.sentinels[0].kill();
    let url = set.url(&[0, 1, 2]);
    let (n1, n2) = (node(&url, "n1"), node(&url, "n2"));
    for n in [&n1, &n2] {
        let h = health(n);
        assert_eq!(h["redisPrimary"], old_primary.as_str(), "{h}");
        assert_eq!((h["sentinelsUp"].as_u64(), h["sentinelsConfigured"].as_u64()), (Some(2), Some(3)), "{h}");
        assert!(h["sentinelErrors"].as_u64() >= Some(1), "the dead sentinel was counted: {h}");
        let down =
            format!("stomp_edge_cluster_sentinel_up{{sentinel=\"127.0.0.1:{}\"}}", set.sentinels[0].port);
        assert_eq!(metric_line(n, &down).as_deref(), Some(format!("{down} 0").as_str()));
        let up =
            format!("stomp_edge_cluster_sentinel_up{{sentinel=\"127.0.0.1:{}\"}}", set.sentinels[1].port);
        assert_eq!(metric_line(n, &up).as_deref(), Some(format!("{up} 1").as_str()));
    }
    let info = format!("stomp_edge_cluster_redis_primary_info{{address=\"{old_primary}\"}} 1");
    assert_eq!(metric_line(&n1, "stomp_edge_cluster_redis_primary_info").as_deref(), Some(info.as_str()));

    // One after the other, so every JOIN has reached alice before the checks below.
    let mut alice = member(&n1, "r", "alice").await;
    until(&mut alice, "JOIN", "alice", Duration::from_secs(5)).await;
    let mut amy = member(&n1, "r", "amy").await;
    until(&mut alice, "JOIN", "amy", Duration::from_secs(5)).await;
    let mut bob = member(&n2, "r", "bob").await;
    until(&mut alice, "JOIN", "bob", Duration::from_secs(5)).await;
    until(&mut bob, "JOIN", "bob", Duration::from_secs(5)).await;
    say(&mut alice, "r", "before").await;
    until(&mut bob, "CHAT", "alice", Duration::from_secs(5)).await;
    until(&mut amy, "CHAT", "alice", Duration::from_secs(5)).await;

    let resyncs: Vec<u64> = [&n1, &n2].iter().map(|n| n.metric("stomp_edge_cluster_resyncs_total")).collect();
    // SIGKILL the primary while alice keeps talking, one message every 50 ms. A thread
    // notes when the sentinels have promoted the replica.
    set.primary.kill();
    let killed = Instant::now();
    let watcher = {
        let (port, want) = (set.sentinels[1].port, new_primary.clone());
        std::thread::spawn(move || loop {
            let out = common::redis::cli(port, &[], &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER]);
            if out.lines().collect::<Vec<_>>().join(":") == want || killed.elapsed() > Duration::from_secs(30)
            {
                return killed.elapsed();
            }
            std::thread::sleep(Duration::from_millis(10));
        })
    };
    let mut sent = 0usize;
    let mut received: Vec<String> = Vec::new();
    let mut resumed = None;
    // Local chat never stops: amy (same board) hears each message at once.
    while resumed.is_none() || sent < 20 {
        assert!(
            killed.elapsed() < Duration::from_secs(25),
            "cross-node chat never resumed: got {received:?}"
        );
        say(&mut alice, "r", &format!("m{sent}")).await;
        sent += 1;
        let local = until(&mut amy, "CHAT", "alice", Duration::from_secs(2)).await;
        assert_eq!(local.last().map(|e| e.2.as_str()), Some(format!("m{}", sent - 1).as_str()));
        while let Some((k, s, m)) = next_event(&mut bob, Duration::from_millis(50)).await {
            if k == "CHAT" && s == "alice" {
                received.push(m);
                resumed.get_or_insert(killed.elapsed());
            }
        }
    }
    let resumed = resumed.unwrap_or_default();
    // The tail: every message sent after the resumption arrives.
    let last = format!("m{}", sent - 1);
    while received.last() != Some(&last) {
        let Some((k, s, m)) = next_event(&mut bob, Duration::from_secs(5)).await else {
            panic!("bob did not get {last}; got {received:?}")
        };
        if k == "CHAT" && s == "alice" {
            received.push(m);
        }
    }
    let switched = watcher.join().unwrap_or_default();
    set.wait_primary(&new_primary, Duration::from_secs(5));
    println!(
        "failover: sentinels promoted the replica {} ms after SIGKILL of the primary (down-after {DOWN_AFTER_MS} ms); \
         cross-node chat resumed {} ms after the kill, {} ms after the promotion; {}/{sent} messages of the \
         failover window crossed, the rest are counted (publish errors at the sender, gaps at the receiver)",
        switched.as_millis(),
        resumed.as_millis(),
        resumed.saturating_sub(switched).as_millis(),
        received.len()
    );
    // The issue's bound is down-after + failover + 3 s; slack for a loaded 2-core machine.
    assert!(
        resumed.saturating_sub(switched) < Duration::from_secs(6),
        "resumed {resumed:?}, switched {switched:?}"
    );

    // Counts match: each message crossed once, in order (buffered while the link was down,
    // appended to the room's stream on the new primary and read back by the receiver if its
    // pub/sub was not there yet), or is counted: the append that failed when the primary died
    // at the sender, an offset the stream no longer had when the receiver repaired a gap
    // (`cluster_sequence_gaps_total` counts gaps that were then read back too, so not that).
    let numbers: Vec<usize> = received.iter().filter_map(|m| m.strip_prefix('m')?.parse().ok()).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "order or duplicates: {received:?}");
    let lost = n2.metric("stomp_edge_stream_lost_total") as usize;
    let failed = (n1.metric("stomp_edge_cluster_publish_errors_total")
        + n1.metric("stomp_edge_cluster_relay_dropped_total")) as usize;
    assert_eq!(
        numbers.len() + lost + failed,
        sent,
        "received {numbers:?}, lost {lost}, failed at n1 {failed}"
    );
    assert_eq!(n2.metric("stomp_edge_cluster_duplicates_ignored_total"), 0);

    // Both nodes re-discovered the new primary and say so; they heard of it from the
    // sentinels' +switch-master, not only from failed commands.
    for n in [&n1, &n2] {
        let log = n.log.lock().map(|l| l.clone()).unwrap_or_default();
        assert!(log.contains(&format!("{MASTER} switched to {new_primary}")), "no +switch-master seen");
        assert!(wait_health(n, |h| h["redisPrimary"] == new_primary.as_str(), Duration::from_secs(5)));
        let h = health(n);
        assert_eq!((h["redis"].as_str(), h["redisFailovers"].as_u64()), (Some("up"), Some(1)), "{h}");
        assert!(n.metric("stomp_edge_cluster_redis_failovers_total") == 1);
    }
    // Room membership and the registry are whole on the new primary.
    let start = Instant::now();
    while set.replica.cli(&["SCARD", "stomp:rooms:r:participants"]).trim() != "3" {
        assert!(start.elapsed() < Duration::from_secs(5), "members on the new primary");
        std::thread::sleep(Duration::from_millis(50));
    }
    let known = set.replica.cli(&["SMEMBERS", "stomp:servers:known"]);
    assert!(known.contains("n1") && known.contains("n2"), "{known}");
    // Each node wrote its own state back onto the new primary (whatever replication had
    // carried over), as after a Redis restart.
    for (n, before) in [&n1, &n2].iter().zip(resyncs) {
        assert!(
            n.wait_metric("stomp_edge_cluster_resyncs_total", before + 1),
            "no catch-up after the failover"
        );
        assert_eq!(
            set.replica.cli(&["EXISTS", "stomp:servers:n1:alive", "stomp:servers:n2:alive"]).trim(),
            "2"
        );
    }
    // Nobody left or joined again: alice saw her own messages and bob's, no JOIN or LEAVE.
    say(&mut bob, "r", "after").await;
    let seen = until(&mut alice, "CHAT", "bob", Duration::from_secs(5)).await;
    assert!(seen.iter().all(|(k, s, _)| k == "CHAT" && (s == "alice" || s == "bob")), "{seen:?}");

    // The old primary comes back (as a primary, until the sentinels demote it): the nodes stay
    // with the sentinels' choice and nothing changes for the clients.
    set.primary.restart();
    let pubsub_before = n2.metric("stomp_edge_cluster_pubsub_reconnects_total");
    say(&mut alice, "r", "still here").await;
    let seen = until(&mut bob, "CHAT", "alice", Duration::from_secs(5)).await;
    assert!(seen.iter().all(|(k, _, _)| k == "CHAT"), "{seen:?}");
    say(&mut bob, "r", "me too").await;
    until(&mut alice, "CHAT", "bob", Duration::from_secs(5)).await;
    for n in [&n1, &n2] {
        assert_eq!(health(n)["redisPrimary"], new_primary.as_str());
        assert_eq!(n.metric("stomp_edge_cluster_redis_failovers_total"), 1);
    }
    assert_eq!(n2.metric("stomp_edge_cluster_pubsub_reconnects_total"), pubsub_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_never_written_to() {
    // A redis:// URL that points at a replica: the node refuses it and serves alone.
    let primary = Redis::start();
    let other = Redis::start();
    let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()], &[]);
    let lost = Server::start_with(FAST, &["--redis", &replica.url(), "--server-id", "lost"]);
    assert!(wait_health(
        &lost,
        |_| lost.metric("stomp_edge_cluster_redis_replica_refusals_total") >= 1,
        Duration::from_secs(5)
    ));
    assert!(wait_health(
        &lost,
        |_| lost.metric("stomp_edge_cluster_redis_replica_refusals_total") >= 2,
        Duration::from_secs(5)
    ));
    // Refused at connect (ROLE): no command was ever sent to it.
    let h = health(&lost);
    assert_eq!((h["redis"].as_str(), h["redisCommandErrors"].as_u64()), (Some("down"), Some(0)), "{h}");

    // A primary demoted by hand (REPLICAOF) answers the next write with READONLY: the node
    // stops writing there and comes back once it is a primary again.
    let n1 = node(&primary.url(), "n1");
    let mut alice = member(&n1, "r", "alice").await;
    until(&mut alice, "JOIN", "alice", Duration::from_secs(5)).await;
    primary.cli(&["REPLICAOF", "127.0.0.1", &other.port.to_string()]);
    assert!(wait_health(&n1, |h| h["redis"] == "down", Duration::from_secs(5)), "{}", health(&n1));
    assert!(n1.metric("stomp_edge_cluster_redis_replica_refusals_total") >= 1);
    // Its pub/sub connection is not left listening on a replica either.
    assert!(n1.wait_metric("stomp_edge_cluster_pubsub_reconnects_total", 1));
    // Local chat goes on meanwhile.
    say(&mut alice, "r", "alone").await;
    until(&mut alice, "CHAT", "alice", Duration::from_secs(5)).await;
    primary.cli(&["REPLICAOF", "NO", "ONE"]);
    assert!(wait_health(&n1, |h| h["redis"] == "up", Duration::from_secs(10)), "{}", health(&n1));
    // Its state is written back onto the primary (which had replicated the other, empty one).
    let start = Instant::now();
    while primary.cli(&["SCARD", "stomp:rooms:r:participants"]).trim() != "1" {
        assert!(start.elapsed() < Duration::from_secs(5), "alice written back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sentinel_and_data_node_passwords_are_given_apart() {
    let primary = Redis::start_with(&["--requirepass", "data-pw"], &["-a", "data-pw", "--no-auth-warning"]);
    let sentinel = Sentinel::start_with(
        primary.port,
        &format!("requirepass sentinel-pw\nsentinel auth-pass {MASTER} data-pw\n"),
        &["-a", "sentinel-pw", "--no-auth-warning"],
    );
    // The URL's password is the primary's (database 2); the sentinel's comes from the config,
    // here its environment variable.
    let url = format!("redis-sentinel://:data-pw@127.0.0.1:{}/2#{MASTER}", sentinel.port);
    let ok = Server::start_env(
        FAST,
        &["--redis", &url, "--server-id", "n1"],
        &[("STOMP_EDGE_CLUSTER_SENTINEL_PASSWORD", "sentinel-pw")],
    );
    assert!(wait_health(&ok, |h| h["redis"] == "up", Duration::from_secs(10)), "{}", health(&ok));
    assert_eq!(primary.cli(&["-n", "2", "SISMEMBER", "stomp:servers:known", "n1"]).trim(), "1");
    assert_eq!(health(&ok)["redisPrimary"], format!("127.0.0.1:{}", primary.port).as_str());
    // Without the sentinel's password the sentinel refuses the node, which serves alone.
    let refused = Server::start_with(FAST, &["--redis", &url, "--server-id", "n2"]);
    assert!(wait_health(&refused, |h| h["sentinelErrors"].as_u64() >= Some(2), Duration::from_secs(5)));
    let h = health(&refused);
    assert_eq!(
        (h["redis"].as_str(), h["mode"].as_str(), h["sentinelsUp"].as_u64()),
        (Some("down"), Some("local"), Some(0)),
        "{h}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_switchover_is_followed_with_the_old_primary_alive() {
    // SENTINEL FAILOVER (maintenance): the old primary stays up and becomes a replica.
    let set = SentinelSet::start();
    let new_primary = format!("127.0.0.1:{}", set.replica.port);
    let url = set.url(&[0, 1, 2]);
    let (n1, n2) = (node(&url, "n1"), node(&url, "n2"));
    let mut alice = member(&n1, "r", "alice").await;
    until(&mut alice, "JOIN", "alice", Duration::from_secs(5)).await;
    let mut bob = member(&n2, "r", "bob").await;
    until(&mut alice, "JOIN", "bob", Duration::from_secs(5)).await;
    until(&mut bob, "JOIN", "bob", Duration::from_secs(5)).await;
    assert_eq!(set.sentinels[0].cli(&["SENTINEL", "FAILOVER", MASTER]).trim(), "OK");
    set.wait_primary(&new_primary, Duration::from_secs(15));
    for n in [&n1, &n2] {
        assert!(
            wait_health(
                n,
                |h| h["redisPrimary"] == new_primary.as_str() && h["redis"] == "up",
                Duration::from_secs(10)
            ),
            "{}",
            health(n)
        );
    }
    // (The sentinels demote the old primary on their next look at it, ~10 s later; the nodes
    // have left it already.)
    say(&mut bob, "r", "over here").await;
    let seen = until(&mut alice, "CHAT", "bob", Duration::from_secs(5)).await;
    assert!(seen.iter().all(|(k, _, _)| k == "CHAT"), "a JOIN or LEAVE was announced again: {seen:?}");
    say(&mut alice, "r", "me too").await;
    until(&mut bob, "CHAT", "alice", Duration::from_secs(5)).await;
    let members = set.replica.cli(&["SCARD", "stomp:rooms:r:participants"]);
    assert_eq!(members.trim(), "2");
}
