//! Streams across nodes: real `redis-server` processes and two real `stomp-edge` nodes. Offsets
//! are the same on every node; a SUBSCRIBE with `x-stream-offset` recovers across nodes; a
//! node that missed publications (a sender that forgot its numbering, a Redis outage) reads
//! them back in order, once each; a flushed Redis shows as a new epoch.

mod common;

use std::time::{Duration, Instant};

use common::redis::Redis;
use common::rooms::send;
use common::streams::{offset, offsets, subscribe_from, STREAMS};
use common::{Client, Frame, Server};
use serde_json::Value;

/// Short timers; and a long `offset_wait_ms`, so the origin's own subscribers get their offset
/// even on a loaded test machine (these tests check offsets; the default 50 ms is tested in
/// `own_subscribers_never_wait_on_a_stalled_redis`).
const FAST: &str = "[cluster]\nheartbeat_ms = 500\nregistry_ttl_ms = 3000\ncommand_timeout_ms = 1000\nreconnect_min_ms = 50\nreconnect_max_ms = 500\noffset_wait_ms = 2000\n";

fn node(redis: &Redis, id: &str, extra: &str) -> Server {
    let config = format!("{FAST}{STREAMS}{extra}");
    let server = Server::start_with(&config, &["--redis", &redis.url(), "--server-id", id]);
    assert!(wait_mode(&server, "cluster", Duration::from_secs(10)), "{id} never reached Redis");
    server
}

fn wait_mode(server: &Server, mode: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        let h: Value = serde_json::from_str(&server.get("/healthz").2).unwrap_or(Value::Null);
        if h["mode"] == mode {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Receives `n` MESSAGE bodies (panics after the wait).
async fn bodies(c: &mut Client, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let f = c.try_recv(Duration::from_secs(10)).await.unwrap_or_else(|| panic!("only {out:?}"));
        assert_eq!(f.command, "MESSAGE", "{f:?}");
        out.push(f.body_text());
    }
    out
}

#[tokio::test]
async fn no_silent_loss_past_4096_channels() {
    let redis = Redis::start();
    let a = node(&redis, "a", "");
    let b = node(&redis, "b", "");
    let (mut sub, _) = Client::connect(&b.url()).await;
    sub.subscribe("/topic/seqX", "s").await;
    let (mut pubr, _) = Client::connect(&a.url()).await;
    for i in 1..=3 {
        send(&mut pubr, "/topic/seqX", &format!("x{i}")).await;
    }
    assert_eq!(bodies(&mut sub, 3).await, ["x1", "x2", "x3"]);
    for i in 0..4096 {
        send(&mut pubr, &format!("/topic/other{i}"), "o").await;
    }
    for i in 4..=6 {
        send(&mut pubr, "/topic/seqX", &format!("x{i}")).await;
    }
    assert_eq!(bodies(&mut sub, 3).await, ["x4", "x5", "x6"]);
    assert_eq!(b.metric("stomp_edge_cluster_duplicates_ignored_total"), 0);
    assert!(sub.try_recv(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn publications_buffered_through_an_outage_reach_the_other_node_once_in_order() {
    let mut redis = Redis::start();
    let a = node(&redis, "a", "");
    let b = node(&redis, "b", "");
    let (mut sub, _) = Client::connect(&b.url()).await;
    sub.subscribe("/topic/outX", "s").await;
    let (mut pubr, _) = Client::connect(&a.url()).await;
    redis.kill();
    assert!(wait_mode(&a, "local", Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_secs(4)).await;
    for i in 1..=5 {
        send(&mut pubr, "/topic/outX", &format!("o{i}")).await;
    }
    assert!(a.wait_metric("stomp_edge_cluster_relay_buffered", 5));
    redis.restart();
    assert_eq!(bodies(&mut sub, 5).await, ["o1", "o2", "o3", "o4", "o5"]);
    assert!(sub.try_recv(Duration::from_millis(500)).await.is_none(), "a duplicate");
    assert!(wait_mode(&b, "cluster", Duration::from_secs(10)));
}

#[tokio::test]
async fn recovery_by_offset_and_first_with_the_same_offsets_on_every_node() {
    let redis = Redis::start();
    let a = node(&redis, "a", "");
    let b = node(&redis, "b", "");
    let (mut pubr, _) = Client::connect(&a.url()).await;
    let before = (redis.calls("publish"), redis.calls("xadd"));
    for i in 1..=10 {
        send(&mut pubr, "/topic/s/x", &format!("m{i}")).await;
    }
    // Wait until all ten are in the stream.
    let start = Instant::now();
    while redis.cli(&["XLEN", "stomp:stream:data:s/x"]).trim() != "10" {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{}",
            redis.cli(&["XLEN", "stomp:stream:data:s/x"])
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One Redis call per message: the append script, whose XADD and PUBLISH run inside it.
    assert_eq!((redis.calls("publish") - before.0, redis.calls("xadd") - before.1), (10, 10));
    let (mut cb, _) = Client::connect(&b.url()).await;
    let (kept, receipt) = subscribe_from(&mut cb, "/topic/s/x", "first", "x-stream-offset:first\n").await;
    assert_eq!(offsets(&kept), (1..=10).collect::<Vec<_>>());
    assert_eq!(kept[9].body_text(), "m10");
    assert_eq!(
        (receipt.header("x-stream-recovered"), receipt.header("x-stream-offset")),
        (Some("true"), Some("11"))
    );
    let epoch = receipt.header("x-stream-epoch").unwrap().to_string();
    let h = format!("x-stream-offset:offset=7\nx-stream-epoch:{epoch}\n");
    let (kept, receipt) = subscribe_from(&mut cb, "/topic/s/x", "at7", &h).await;
    assert_eq!((offsets(&kept), receipt.header("x-stream-recovered")), (vec![7, 8, 9, 10], Some("true")));
    // The same history from the other node.
    let (mut ca, _) = Client::connect(&a.url()).await;
    let (kept, receipt) = subscribe_from(&mut ca, "/topic/s/x", "first", "x-stream-offset:first\n").await;
    assert_eq!(offsets(&kept), (1..=10).collect::<Vec<_>>());
    assert_eq!(receipt.header("x-stream-epoch"), Some(epoch.as_str()));
    // Live messages from either node carry the same offset everywhere.
    send(&mut pubr, "/topic/s/x", "m11").await;
    for c in [&mut ca, &mut cb] {
        let f = c.recv().await;
        assert_eq!(
            (offset(&f), f.header("x-stream-epoch"), f.body_text().as_str()),
            (11, Some(epoch.as_str()), "m11")
        );
    }
    let f = cb.recv().await;
    assert_eq!((f.header("subscription"), offset(&f)), (Some("at7"), 11));

    // FLUSHALL loses the history: the next message starts a new epoch at offset 1, and a
    // client that asks from its old position is told it did not recover everything.
    redis.cli(&["FLUSHALL"]);
    send(&mut pubr, "/topic/s/x", "after").await;
    for c in [&mut ca, &mut cb] {
        let f = c.recv().await;
        assert_eq!((offset(&f), f.body_text().as_str()), (1, "after"));
        assert_ne!(f.header("x-stream-epoch"), Some(epoch.as_str()));
    }
    let _ = cb.recv().await; // at7's copy
    let (mut late, _) = Client::connect(&b.url()).await;
    let h = format!("x-stream-offset:offset=12\nx-stream-epoch:{epoch}\n");
    let (kept, receipt) = subscribe_from(&mut late, "/topic/s/x", "old", &h).await;
    assert_eq!((offsets(&kept), receipt.header("x-stream-recovered")), (vec![1], Some("false")));
    assert!(b.metric("stomp_edge_stream_epoch_changes_total") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_gap_and_no_duplicate_across_nodes_while_publishing_during_subscribe() {
    let redis = Redis::start();
    let a = node(&redis, "a", "");
    let b = node(&redis, "b", "");
    const TOTAL: u64 = 1500;
    let url = a.url();
    let publisher = tokio::spawn(async move {
        let (mut p, _) = Client::connect(&url).await;
        for i in 1..=TOTAL {
            p.send_text(&format!("SEND\ndestination:/topic/s/busy\n\nm{i}\0")).await;
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        p
    });
    let mut subscribers = Vec::new();
    for n in 0..4 {
        tokio::time::sleep(Duration::from_millis(40 + 30 * n)).await;
        let (mut c, _) = Client::connect(&b.url()).await;
        let (kept, receipt) = subscribe_from(&mut c, "/topic/s/busy", "s", "x-stream-offset:first\n").await;
        subscribers.push((c, kept, receipt));
    }
    let _p = publisher.await.unwrap();
    let (mut checked, mut mid) = (0, 0);
    for (n, (mut c, kept, receipt)) in subscribers.into_iter().enumerate() {
        let next: u64 = receipt.header("x-stream-offset").unwrap().parse().unwrap();
        if next > 1 && next <= TOTAL {
            mid += 1;
        }
        let mut got = offsets(&kept);
        while got.last().copied().unwrap_or(0) < TOTAL {
            let f = c
                .try_recv(Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("{n}: stopped at {:?}", got.last()));
            got.push(offset(&f));
            assert_eq!(f.body_text(), format!("m{}", offset(&f)));
        }
        let expected: Vec<u64> = (got[0]..=TOTAL).collect();
        assert_eq!(got, expected, "subscriber {n}: a gap, a duplicate or disorder");
        assert!(c.try_recv(Duration::from_millis(100)).await.is_none());
        checked += got.len();
    }
    assert!(checked > 0);
    eprintln!("checked {checked} deliveries; {mid} SUBSCRIBEs landed mid-publication");
    assert_eq!(b.metric("stomp_edge_stream_lost_total"), 0);
}

#[tokio::test]
async fn retention_bounds_hold_in_redis() {
    let redis = Redis::start();
    // Redis keeps at least `relay_buffer_messages` (20) for boards catching up; clients
    // recover the newest `max_messages` (5).
    let config = format!("{FAST}relay_buffer_messages = 20\n{STREAMS}max_messages = 5\n");
    let a = Server::start_with(&config, &["--redis", &redis.url(), "--server-id", "a"]);
    assert!(wait_mode(&a, "cluster", Duration::from_secs(10)));
    let (mut pubr, _) = Client::connect(&a.url()).await;
    for i in 1..=25 {
        send(&mut pubr, "/topic/s/r", &format!("m{i}")).await;
    }
    let start = Instant::now();
    while redis.cli(&["HGET", "stomp:stream:meta:s/r", "offset"]).trim() != "25" {
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(redis.cli(&["XLEN", "stomp:stream:data:s/r"]).trim(), "20");
    let ttl: i64 = redis.cli(&["PTTL", "stomp:stream:data:s/r"]).trim().parse().unwrap();
    assert!(ttl > 86_000_000 && ttl <= 86_400_000, "{ttl}");
    let (mut c, _) = Client::connect(&a.url()).await;
    let (kept, receipt) = subscribe_from(&mut c, "/topic/s/r", "all", "x-stream-offset:offset=3\n").await;
    assert_eq!(
        (offsets(&kept), receipt.header("x-stream-recovered")),
        (vec![21, 22, 23, 24, 25], Some("false"))
    );
    // Other topics keep only a short repair window.
    send(&mut pubr, "/topic/plain", "p").await;
    let start = Instant::now();
    while redis.cli(&["EXISTS", "stomp:stream:data:plain"]).trim() != "1" {
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ttl: i64 = redis.cli(&["PTTL", "stomp:stream:data:plain"]).trim().parse().unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");
}

/// A Redis stall long enough to time out an append: the origin delivers the message to its
/// own subscribers at once, without an offset; when Redis resumes and applies the append
/// after all, the message comes back with its offset and must not be delivered there again
/// (found from outside: the same message-id twice, once without and once with an offset).
#[tokio::test]
async fn an_append_that_timed_out_in_a_stall_is_not_delivered_twice_on_its_own_node() {
    let redis = Redis::start();
    let a = node(&redis, "a", "");
    let b = node(&redis, "b", "");
    let (mut here, _) = Client::connect(&a.url()).await;
    subscribe_from(&mut here, "/topic/s/stall", "h", "").await;
    let (mut there, _) = Client::connect(&b.url()).await;
    subscribe_from(&mut there, "/topic/s/stall", "t", "").await;
    let (mut publisher, _) = Client::connect(&a.url()).await;
    send(&mut publisher, "/topic/s/stall", "before").await;
    assert_eq!(bodies(&mut here, 1).await, ["before"]);
    assert_eq!(bodies(&mut there, 1).await, ["before"]);

    redis.pause();
    send(&mut publisher, "/topic/s/stall", "s0").await;
    // Past the 1 s command timeout: the append failed as far as node a knows.
    let first = here.try_recv(Duration::from_secs(10)).await.expect("s0 delivered on its own node");
    assert_eq!(first.body_text(), "s0");
    redis.resume();

    // Whatever Redis did with the late append, node a shows s0 once; node b gets it at most once.
    let mut seen_here = vec![first.body_text()];
    while let Some(f) = here.try_recv(Duration::from_secs(3)).await {
        seen_here.push(f.body_text());
    }
    assert_eq!(seen_here, ["s0"], "node a's subscriber");
    let mut seen_there = Vec::new();
    while let Some(f) = there.try_recv(Duration::from_secs(1)).await {
        seen_there.push(f.body_text());
    }
    // Store-and-forward: the append is sent again once Redis answers, and appended once.
    assert_eq!(seen_there, ["s0"], "node b's subscriber");
    // And the cluster goes on: a message after the stall reaches both, once.
    send(&mut publisher, "/topic/s/stall", "after").await;
    assert_eq!(bodies(&mut here, 1).await, ["after"]);
    let rest = bodies(&mut there, 1).await;
    assert_eq!(rest, ["after"]);
}

/// A room's JOIN and LEAVE events are streamed like its CHATs on every node, the origin node
/// included: each carries `x-stream-offset`, and every node sees the same offsets in the same
/// order (found from outside: the origin delivered its own JOIN/LEAVE at once, without offsets,
/// and two joins made at once on two nodes came in a different order on each).
#[tokio::test]
async fn room_joins_and_leaves_carry_the_same_offsets_on_every_node() {
    let redis = Redis::start();
    let a = node(&redis, "a", "");
    let b = node(&redis, "b", "");
    let room = "/topic/room/evts";
    let (mut on_a, _) = Client::connect(&a.url()).await;
    subscribe_from(&mut on_a, room, "wa", "").await;
    let (mut on_b, _) = Client::connect(&b.url()).await;
    subscribe_from(&mut on_b, room, "wb", "").await;
    let (mut ann, _) = Client::connect(&a.url()).await;
    let (mut bo, _) = Client::connect(&b.url()).await;
    // Two joins at once, one on each node, then a chat and a leave on a.
    send(&mut ann, "/app/room/evts/join", r#"{"username":"ann"}"#).await;
    send(&mut bo, "/app/room/evts/join", r#"{"username":"bo"}"#).await;
    let seen_a = frames(&mut on_a, 2).await;
    send(&mut ann, "/app/room/evts/message", r#"{"message":"hi"}"#).await;
    send(&mut ann, "/app/room/evts/leave", "{}").await;
    let seen_a = [seen_a, frames(&mut on_a, 2).await].concat();
    let seen_b = frames(&mut on_b, 4).await;
    let kinds = |fs: &[Frame]| -> Vec<(u64, String, String)> {
        fs.iter()
            .map(|f| {
                let v: Value = serde_json::from_str(&f.body_text()).unwrap_or(Value::Null);
                (
                    offset(f),
                    v["type"].as_str().unwrap_or("").to_string(),
                    v["sender"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let (ka, kb) = (kinds(&seen_a), kinds(&seen_b));
    assert_eq!(ka, kb, "both nodes see the same events at the same offsets, in the same order");
    let offs: Vec<u64> = ka.iter().map(|k| k.0).collect();
    assert!(offs.windows(2).all(|w| w[1] == w[0] + 1), "offsets in order without gaps: {offs:?}");
    assert_eq!(ka[3].1, "LEAVE");
    // Nothing more arrives (each event once).
    assert!(on_a.try_recv(Duration::from_millis(500)).await.is_none());
    assert!(on_b.try_recv(Duration::from_millis(100)).await.is_none());
}

/// Receives `n` MESSAGE frames (panics after the wait).
async fn frames(c: &mut Client, n: usize) -> Vec<Frame> {
    let mut out = Vec::new();
    while out.len() < n {
        let f = c.try_recv(Duration::from_secs(10)).await.unwrap_or_else(|| panic!("only {out:?}"));
        assert_eq!(f.command, "MESSAGE", "{f:?}");
        out.push(f);
    }
    out
}

/// Two boards, a subscriber of `destination` on each, and a publisher on each.
struct Boards {
    a: Server,
    b: Server,
    on_a: Client,
    on_b: Client,
    pa: Client,
    pb: Client,
}

async fn boards(redis: &Redis, destination: &str) -> Boards {
    let (a, b) = (node(redis, "a", ""), node(redis, "b", ""));
    let (mut on_a, _) = Client::connect(&a.url()).await;
    subscribe_from(&mut on_a, destination, "a", "").await;
    let (mut on_b, _) = Client::connect(&b.url()).await;
    subscribe_from(&mut on_b, destination, "b", "").await;
    let (pa, _) = Client::connect(&a.url()).await;
    let (pb, _) = Client::connect(&b.url()).await;
    Boards { a, b, on_a, on_b, pa, pb }
}

/// A SUBSCRIBE to a streamed destination nobody wrote to yet gets a real epoch in its RECEIPT,
/// so a client resuming from it after the history was lost (FLUSHALL) is told
/// `x-stream-recovered:false` (found from outside: an empty epoch, then `true` after a flush
/// that took 5 messages with it).
#[tokio::test]
async fn a_receipt_always_carries_a_real_epoch_and_a_lost_history_is_told() {
    let redis = Redis::start();
    let a = node(&redis, "a", "");
    let (mut c, _) = Client::connect(&a.url()).await;
    let (_, receipt) = subscribe_from(&mut c, "/topic/s/fresh", "f", "").await;
    let epoch = receipt.header("x-stream-epoch").unwrap_or("").to_string();
    assert!(!epoch.is_empty(), "RECEIPT of an unwritten stream: {:?}", receipt.header("x-stream-epoch"));
    assert_eq!(receipt.header("x-stream-offset"), Some("1"));
    let (mut p, _) = Client::connect(&a.url()).await;
    for i in 1..=5 {
        send(&mut p, "/topic/s/fresh", &format!("m{i}")).await;
    }
    let got = frames(&mut c, 5).await;
    assert!(
        got.iter().all(|f| f.header("x-stream-epoch") == Some(epoch.as_str())),
        "the RECEIPT's epoch is used"
    );
    redis.cli(&["FLUSHALL"]);
    let (mut late, _) = Client::connect(&a.url()).await;
    let (kept, receipt) = subscribe_from(
        &mut late,
        "/topic/s/fresh",
        "l",
        &format!("x-stream-offset:offset=1\nx-stream-epoch:{epoch}\n"),
    )
    .await;
    assert!(kept.is_empty());
    assert_eq!(receipt.header("x-stream-recovered"), Some("false"));
    assert_ne!(receipt.header("x-stream-epoch"), Some(epoch.as_str()));
}

/// A subscriber that reads promptly recovers a history larger than its queue's limit without
/// being cut (found from outside: 100 kept messages of 20 KB against the default 1 MiB limit
/// cut the subscriber at once, with no RECEIPT).
#[tokio::test]
async fn a_recovery_larger_than_the_client_queue_is_paced_by_the_reader() {
    let redis = Redis::start();
    let a = node(&redis, "a", "");
    let (mut p, _) = Client::connect(&a.url()).await;
    let big = "x".repeat(20_000);
    for i in 1..=100 {
        send(&mut p, "/topic/s/big", &format!("{i}:{big}")).await;
    }
    let start = Instant::now();
    while redis.cli(&["HGET", "stomp:stream:meta:s/big", "offset"]).trim() != "100" {
        assert!(start.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut c, _) = Client::connect(&a.url()).await;
    let (kept, receipt) = subscribe_from(&mut c, "/topic/s/big", "b", "x-stream-offset:first\n").await;
    assert_eq!(offsets(&kept), (1..=100).collect::<Vec<u64>>());
    assert_eq!(receipt.header("x-stream-recovered"), Some("true"));
    assert_eq!(a.metric("stomp_edge_messages_dropped_total{reason=\"slow_consumer\"}"), 0);
}

/// A Redis stall of 4 s while both boards publish: every message reaches every subscriber
/// once, in each sender's order, the publisher's own board at once; and nothing is counted
/// lost or failed (found from outside: all delivered, yet a publish error and gaps counted).
#[tokio::test]
async fn a_redis_stall_loses_nothing_and_counts_no_loss() {
    let redis = Redis::start();
    let Boards { a, b, mut on_a, mut on_b, mut pa, mut pb } = boards(&redis, "/topic/s/stall4").await;
    for i in 0..60 {
        if i == 10 {
            redis.pause();
        }
        if i == 50 {
            redis.resume();
        }
        send(&mut pa, "/topic/s/stall4", &format!("a{i}")).await;
        send(&mut pb, "/topic/s/stall4", &format!("b{i}")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (name, c) in [("a", &mut on_a), ("b", &mut on_b)] {
        let got = bodies(c, 120).await;
        for sender in ["a", "b"] {
            let mine: Vec<usize> =
                got.iter().filter_map(|b| b.strip_prefix(sender)).filter_map(|n| n.parse().ok()).collect();
            assert_eq!(mine, (0..60).collect::<Vec<usize>>(), "{sender}'s messages on {name}");
        }
        assert!(c.try_recv(Duration::from_millis(500)).await.is_none(), "a duplicate on {name}");
    }
    for n in [&a, &b] {
        assert_eq!(n.metric("stomp_edge_stream_lost_total"), 0);
        assert_eq!(n.metric("stomp_edge_cluster_publish_errors_total"), 0);
        assert_eq!(n.metric("stomp_edge_cluster_relay_dropped_total"), 0);
    }
}

/// A history whose counter went back under an offset the boards had seen (a replica promoted
/// without the primary's last writes; here the counter is set back by hand) cannot vouch for
/// its offsets: the next append starts a new epoch, and every board goes on delivering (found
/// from outside: after a failover from a hung primary a board delivered nothing more on that
/// destination, its new offsets taken for duplicates).
#[tokio::test]
async fn an_epoch_that_lost_offsets_is_replaced_and_delivery_goes_on() {
    let redis = Redis::start();
    let Boards { a, b: _b, mut on_a, mut on_b, mut pa, mut pb } = boards(&redis, "/topic/s/lag").await;
    for i in 1..=6 {
        send(&mut pa, "/topic/s/lag", &format!("m{i}")).await;
    }
    let before = frames(&mut on_b, 6).await;
    assert_eq!(bodies(&mut on_a, 6).await.len(), 6);
    let epoch = before[5].header("x-stream-epoch").unwrap_or("").to_string();
    // The promoted replica had only the first two.
    redis.cli(&["HSET", "stomp:stream:meta:s/lag", "offset", "2"]);
    send(&mut pb, "/topic/s/lag", "after-b").await;
    send(&mut pa, "/topic/s/lag", "after-a").await;
    for c in [&mut on_a, &mut on_b] {
        let got = frames(c, 2).await;
        let texts: Vec<String> = got.iter().map(Frame::body_text).collect();
        assert!(
            texts.contains(&"after-a".to_string()) && texts.contains(&"after-b".to_string()),
            "{texts:?}"
        );
    }
    let now = redis.cli(&["HGET", "stomp:stream:meta:s/lag", "epoch"]);
    assert_ne!(now.trim(), epoch, "a new epoch");
    assert_eq!(a.metric("stomp_edge_cluster_duplicates_ignored_total"), 0);
}

/// A board's own subscribers get its messages while Redis is hung, in order and without
/// offsets, long before any Redis command could time out; the other board gets them once Redis
/// is back, once each and in order (found from outside: during a cut of 10 s a board's own
/// clients got its first messages 5 s late, after newer ones: local delivery waited on Redis).
#[tokio::test]
async fn own_subscribers_never_wait_on_a_stalled_redis() {
    let redis = Redis::start();
    // The default offset wait (50 ms) against a command timeout of 10 s.
    let config = format!(
        "[cluster]\ncommand_timeout_ms = 10000\nheartbeat_ms = 500\nregistry_ttl_ms = 30000\n{STREAMS}"
    );
    let start = |id: &str| {
        let s = Server::start_with(&config, &["--redis", &redis.url(), "--server-id", id]);
        assert!(wait_mode(&s, "cluster", Duration::from_secs(10)), "{id} never reached Redis");
        s
    };
    let (a, b) = (start("a"), start("b"));
    let (mut on_a, _) = Client::connect(&a.url()).await;
    subscribe_from(&mut on_a, "/topic/s/own", "a", "").await;
    let (mut on_b, _) = Client::connect(&b.url()).await;
    subscribe_from(&mut on_b, "/topic/s/own", "b", "").await;
    let (mut pa, _) = Client::connect(&a.url()).await;
    redis.pause();
    for i in 0..10 {
        send(&mut pa, "/topic/s/own", &format!("m{i}")).await;
    }
    // All ten while Redis is still hung (until they are all here; the command timeout is 10 s).
    let mut got = Vec::new();
    while got.len() < 10 {
        let f = on_a.try_recv(Duration::from_secs(3)).await.expect("own board's message while Redis is hung");
        assert_eq!(f.header("x-stream-offset"), None, "no offset is known yet");
        got.push(f.body_text());
    }
    assert_eq!(got, (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.resume();
    assert_eq!(bodies(&mut on_b, 10).await, (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert!(on_a.try_recv(Duration::from_secs(1)).await.is_none(), "delivered twice on its own board");
    assert!(on_b.try_recv(Duration::from_millis(500)).await.is_none(), "delivered twice on the other board");
}

/// Board a with an outbox of `n` publications, board b with a subscriber of `destination`, and a
/// publisher on a whose `first` message b has received.
struct SmallOutbox {
    a: Server,
    b: Server,
    sub: Client,
    pubr: Client,
}

async fn small_outbox(redis: &Redis, n: usize, destination: &str, first: &str) -> SmallOutbox {
    let config = format!("{FAST}relay_buffer_messages = {n}\n{STREAMS}");
    let a = Server::start_with(&config, &["--redis", &redis.url(), "--server-id", "a"]);
    assert!(wait_mode(&a, "cluster", Duration::from_secs(10)), "a never reached Redis");
    let b = node(redis, "b", "");
    let (mut sub, _) = Client::connect(&b.url()).await;
    sub.subscribe(destination, "s").await;
    let (mut pubr, _) = Client::connect(&a.url()).await;
    send(&mut pubr, destination, first).await;
    assert_eq!(bodies(&mut sub, 1).await, [first]);
    SmallOutbox { a, b, sub, pubr }
}

/// Publications an origin's outbox gave up (Redis away longer than `relay_buffer_messages`
/// allows) are told on the other boards: found by a break pass, where a board's subscribers
/// missed 51 messages of each sender on the other board, counted only there
/// (`relay_dropped_total`), with no `x-stream-recovered:false` and no loss counted where they
/// were missed.
#[tokio::test]
async fn publications_an_outbox_gave_up_are_counted_and_told_on_the_other_node() {
    let redis = Redis::start();
    let SmallOutbox { a, b, mut sub, mut pubr } = small_outbox(&redis, 3, "/topic/s/drop", "d0").await;
    redis.pause();
    assert!(wait_mode(&a, "local", Duration::from_secs(15)), "a never saw Redis gone");
    for i in 1..=5 {
        send(&mut pubr, "/topic/s/drop", &format!("d{i}")).await;
    }
    assert_eq!(a.metric("stomp_edge_cluster_relay_dropped_total"), 2, "d1 and d2 gave way");
    redis.resume();
    let got = frames(&mut sub, 3).await;
    let bodies: Vec<String> = got.iter().map(Frame::body_text).collect();
    assert_eq!(bodies, ["d3", "d4", "d5"]);
    let told: Vec<Option<&str>> = got.iter().map(|f| f.header("x-stream-recovered")).collect();
    assert_eq!(told, [Some("false"), None, None], "the first after the loss tells it");
    assert!(b.wait_metric("stomp_edge_stream_lost_total", 2));
    assert_eq!(b.metric("stomp_edge_stream_lost_total"), 2);
    assert!(sub.try_recv(Duration::from_millis(500)).await.is_none(), "a duplicate");
    // A recovery from d0 on is not complete either (d1 and d2 never reached the stream); one
    // from d4 on is.
    let (epoch, d0) = (got[0].header("x-stream-epoch").unwrap().to_string(), offset(&got[0]) - 1);
    let (mut late, _) = Client::connect(&b.url()).await;
    let h = format!("x-stream-offset:offset={d0}\nx-stream-epoch:{epoch}\n");
    let (kept, receipt) = subscribe_from(&mut late, "/topic/s/drop", "from-d0", &h).await;
    let bodies: Vec<String> = kept.iter().map(Frame::body_text).collect();
    assert_eq!(
        (bodies, receipt.header("x-stream-recovered")),
        (vec!["d0".into(), "d3".into(), "d4".into(), "d5".into()], Some("false"))
    );
    let h = format!("x-stream-offset:offset={}\nx-stream-epoch:{epoch}\n", d0 + 2);
    let (kept, receipt) = subscribe_from(&mut late, "/topic/s/drop", "from-d4", &h).await;
    assert_eq!((kept.len(), receipt.header("x-stream-recovered")), (2, Some("true")));
}

/// A board stopped while Redis is away takes its outbox with it: it says so, with the number
/// (found by a break pass: the messages vanished for the other boards without a word).
#[tokio::test]
async fn a_board_stopped_with_messages_not_relayed_says_how_many() {
    let redis = Redis::start();
    let mut a = node(&redis, "a", "");
    let (mut pubr, _) = Client::connect(&a.url()).await;
    redis.pause();
    assert!(wait_mode(&a, "local", Duration::from_secs(15)), "a never saw Redis gone");
    for i in 1..=4 {
        send(&mut pubr, "/topic/s/stop", &format!("s{i}")).await;
    }
    assert!(a.wait_metric("stomp_edge_cluster_relay_buffered", 4));
    a.signal("TERM");
    assert!(a.wait_exit(Duration::from_secs(20)).is_some(), "a did not stop");
    redis.resume();
    let log = a.log.lock().unwrap().clone();
    assert!(log.contains("stopping with 4 messages not relayed to the other boards"), "{log}");
}

/// A publication sent in a call that got no answer may still be applied by Redis (a stalled
/// Redis runs what it read once it wakes): it never gives way, and is neither counted lost nor
/// told anywhere (found by a break pass: the outbox dropped it in the stall, Redis appended it
/// after, and the other board delivered it and also counted it lost).
#[tokio::test]
async fn a_publication_a_stalled_redis_may_have_applied_is_never_given_up() {
    let redis = Redis::start();
    let SmallOutbox { a, b, mut sub, mut pubr } = small_outbox(&redis, 1, "/topic/s/stall1", "m0").await;
    redis.pause();
    send(&mut pubr, "/topic/s/stall1", "m1").await; // in a call Redis read but did not answer
    assert!(a.wait_metric("stomp_edge_cluster_publish_retries_total", 1), "m1's call never failed");
    assert!(wait_mode(&a, "local", Duration::from_secs(15)), "a never saw Redis gone");
    send(&mut pubr, "/topic/s/stall1", "m2").await; // gives way to m3: truly lost
    send(&mut pubr, "/topic/s/stall1", "m3").await;
    assert!(a.wait_metric("stomp_edge_cluster_relay_dropped_total", 1));
    redis.resume();
    let got = frames(&mut sub, 2).await;
    let bodies: Vec<String> = got.iter().map(Frame::body_text).collect();
    assert_eq!(bodies, ["m1", "m3"]);
    let told: Vec<Option<&str>> = got.iter().map(|f| f.header("x-stream-recovered")).collect();
    assert_eq!(told, [None, Some("false")]);
    assert!(b.wait_metric("stomp_edge_stream_lost_total", 1));
    assert!(sub.try_recv(Duration::from_millis(500)).await.is_none(), "a duplicate");
    assert_eq!(b.metric("stomp_edge_stream_lost_total"), 1, "only m2");
    assert_eq!(a.metric("stomp_edge_cluster_relay_dropped_total"), 1, "only m2");
}
