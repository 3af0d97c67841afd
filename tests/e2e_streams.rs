//! End-to-end tests of streams on one node (local mode): every MESSAGE of a streamed
//! destination carries `x-stream-offset`/`x-stream-epoch`; SUBSCRIBE with `x-stream-offset`
//! (first, last, next, offset=N with x-stream-epoch) gets the kept messages, then live ones,
//! with no gap and no duplicate; the RECEIPT says whether everything asked for was there.

mod common;

use std::time::Duration;

use common::rooms::send;
use common::streams::{offset, offsets, subscribe_from, STREAMS as CONFIG};
use common::{Client, Server};

/// Sends `n` numbered messages and waits until the server has taken them all.
async fn publish(server: &Server, c: &mut Client, dest: &str, from: usize, n: usize) {
    let before = server.metric("stomp_edge_messages_published_total");
    for i in from..from + n {
        send(c, dest, &format!("m{i}")).await;
    }
    assert!(server.wait_metric("stomp_edge_messages_published_total", before + n as u64));
}

#[tokio::test]
async fn recovery_by_first_last_next_and_offset() {
    let server = Server::start_with(CONFIG, &[]);
    let (mut publisher, _) = Client::connect(&server.url()).await;
    publish(&server, &mut publisher, "/topic/s/a", 1, 5).await;

    let (mut c, _) = Client::connect(&server.url()).await;
    let (kept, receipt) = subscribe_from(&mut c, "/topic/s/a", "first", "x-stream-offset:first\n").await;
    assert_eq!(offsets(&kept), vec![1, 2, 3, 4, 5]);
    assert_eq!(kept[0].body_text(), "m1");
    assert_eq!(receipt.header("x-stream-recovered"), Some("true"));
    assert_eq!(receipt.header("x-stream-offset"), Some("6"));
    let epoch = receipt.header("x-stream-epoch").expect("epoch").to_string();
    assert!(kept.iter().all(|f| f.header("x-stream-epoch") == Some(epoch.as_str())));
    assert!(kept.iter().all(|f| f.header("subscription") == Some("first")));

    let h = format!("x-stream-offset:offset=3\nx-stream-epoch:{epoch}\n");
    let (kept, receipt) = subscribe_from(&mut c, "/topic/s/a", "at3", &h).await;
    assert_eq!((offsets(&kept), receipt.header("x-stream-recovered")), (vec![3, 4, 5], Some("true")));
    let (kept, _) = subscribe_from(&mut c, "/topic/s/a", "last", "x-stream-offset:last\n").await;
    assert_eq!(offsets(&kept), vec![5]);
    let (kept, receipt) = subscribe_from(&mut c, "/topic/s/a", "next", "").await;
    assert!(kept.is_empty());
    assert_eq!(receipt.header("x-stream-offset"), Some("6"));
    // Nothing missed: offset=next is a full recovery of nothing.
    let h = format!("x-stream-offset:offset=6\nx-stream-epoch:{epoch}\n");
    let (kept, receipt) = subscribe_from(&mut c, "/topic/s/a", "at6", &h).await;
    assert_eq!((kept.len(), receipt.header("x-stream-recovered")), (0, Some("true")));
    // Another epoch: what is kept, and the client is told it is not everything.
    let (kept, receipt) =
        subscribe_from(&mut c, "/topic/s/a", "old", "x-stream-offset:offset=4\nx-stream-epoch:gone\n").await;
    assert_eq!((offsets(&kept), receipt.header("x-stream-recovered")), (vec![1, 2, 3, 4, 5], Some("false")));

    // Live messages go on from offset 6, once per subscription.
    send(&mut publisher, "/topic/s/a", "m6").await;
    let mut live = Vec::new();
    for _ in 0..6 {
        let f = c.recv().await;
        assert_eq!(f.body_text(), "m6");
        live.push((f.header("subscription").unwrap().to_string(), offset(&f)));
    }
    live.sort();
    let subs: Vec<&str> = live.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(subs, ["at3", "at6", "first", "last", "next", "old"]);
    assert!(live.iter().all(|(_, o)| *o == 6));
    assert!(c.try_recv(Duration::from_millis(200)).await.is_none(), "no duplicate");
    assert_eq!(server.metric("stomp_edge_stream_recoveries_total"), 5);
    assert_eq!(server.metric("stomp_edge_stream_recoveries_incomplete_total"), 1);
    assert_eq!(server.metric("stomp_edge_stream_recovered_messages_total"), 5 + 3 + 1 + 5);

    // A client cannot forge a position: the stream headers of a SEND are not passed on.
    publisher
        .send_text("SEND\ndestination:/topic/s/a\nx-stream-offset:99\nx-stream-epoch:fake\n\nm7\0")
        .await;
    for _ in 0..6 {
        let f = c.recv().await;
        assert_eq!((offset(&f), f.header("x-stream-epoch")), (7, Some(epoch.as_str())), "{f:?}");
    }

    // Topics outside the prefixes have no stream headers; bad values are protocol errors.
    c.subscribe("/topic/plain", "plain").await;
    send(&mut publisher, "/topic/plain", "p").await;
    let f = c.recv().await;
    assert_eq!((f.body_text().as_str(), f.header("x-stream-offset")), ("p", None));
    let (mut bad, _) = Client::connect(&server.url()).await;
    bad.send_text("SUBSCRIBE\ndestination:/topic/s/a\nid:x\nreceipt:r\nx-stream-offset:yesterday\n\n\0")
        .await;
    let e = bad.recv().await;
    assert_eq!((e.command.as_str(), e.header("receipt-id")), ("ERROR", Some("r")));
}

#[tokio::test]
async fn retention_bound_and_restart_change_what_is_recovered() {
    let config = format!("{CONFIG}max_messages = 3\n");
    let mut server = Server::start_with(&config, &[]);
    let (mut publisher, _) = Client::connect(&server.url()).await;
    publish(&server, &mut publisher, "/topic/s/r", 1, 5).await;
    let (mut c, _) = Client::connect(&server.url()).await;
    let (kept, receipt) = subscribe_from(&mut c, "/topic/s/r", "all", "x-stream-offset:first\n").await;
    assert_eq!(offsets(&kept), vec![3, 4, 5], "only max_messages are kept");
    let epoch = receipt.header("x-stream-epoch").unwrap().to_string();
    let h = format!("x-stream-offset:offset=2\nx-stream-epoch:{epoch}\n");
    let (kept, receipt) = subscribe_from(&mut c, "/topic/s/r", "two", &h).await;
    assert_eq!((offsets(&kept), receipt.header("x-stream-recovered")), (vec![3, 4, 5], Some("false")));
    assert!(server.metric("stomp_edge_stream_trimmed_total") >= 2);

    // A board alone loses its histories on restart: same offsets, new epoch, not recovered.
    drop((c, publisher));
    let _ = server.child.kill();
    let _ = server.wait_exit(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(5)); // the epoch is the start time in ms
    let server = Server::start_with(&config, &[]);
    let (mut publisher, _) = Client::connect(&server.url()).await;
    publish(&server, &mut publisher, "/topic/s/r", 1, 1).await;
    let (mut c, _) = Client::connect(&server.url()).await;
    let h = format!("x-stream-offset:offset=6\nx-stream-epoch:{epoch}\n");
    let (kept, receipt) = subscribe_from(&mut c, "/topic/s/r", "again", &h).await;
    assert_eq!(offsets(&kept), vec![1]);
    assert_eq!(receipt.header("x-stream-recovered"), Some("false"));
    assert_ne!(receipt.header("x-stream-epoch"), Some(epoch.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_gap_and_no_duplicate_while_publishing_during_subscribe() {
    let server = Server::start_with(CONFIG, &[]);
    let url = server.url();
    const TOTAL: usize = 3000;
    const CHUNK: usize = 500;
    // The publisher sends in chunks, each when told; a subscriber joins while each chunk is
    // on its way, from the first kept message.
    let (go, mut told) = tokio::sync::mpsc::channel::<()>(1);
    let publisher = tokio::spawn(async move {
        let (mut p, _) = Client::connect(&url).await;
        for i in 1..=TOTAL {
            if i % CHUNK == 1 && told.recv().await.is_none() {
                break;
            }
            p.send_text(&format!("SEND\ndestination:/topic/s/busy\n\nm{i}\0")).await;
        }
        p
    });
    let config_kept = 100; // the default max_messages
    let mut subscribers = Vec::new();
    for n in 0..TOTAL / CHUNK {
        assert!(server.wait_metric("stomp_edge_messages_published_total", (n * CHUNK) as u64));
        let (mut c, _) = Client::connect(&server.url()).await;
        go.send(()).await.unwrap();
        let (kept, receipt) = subscribe_from(&mut c, "/topic/s/busy", "s", "x-stream-offset:first\n").await;
        subscribers.push((c, kept, receipt));
    }
    let _p = publisher.await.unwrap();
    let positions: Vec<u64> =
        subscribers.iter().map(|(_, _, r)| r.header("x-stream-offset").unwrap().parse().unwrap()).collect();
    assert!(
        positions.iter().any(|p| *p > 1 && *p <= TOTAL as u64),
        "some SUBSCRIBE must land while messages are published: {positions:?}"
    );
    assert!(server.wait_metric("stomp_edge_messages_published_total", TOTAL as u64));
    for (n, (mut c, kept, receipt)) in subscribers.into_iter().enumerate() {
        let mut got = offsets(&kept);
        assert!(got.len() <= config_kept);
        while got.last().copied().unwrap_or(0) < TOTAL as u64 {
            let f = c.recv().await;
            got.push(offset(&f));
            assert_eq!(f.body_text(), format!("m{}", offset(&f)));
        }
        let first = got[0];
        let expected: Vec<u64> = (first..=TOTAL as u64).collect();
        let dups = got.len() - {
            let mut d = got.clone();
            d.dedup();
            d.len()
        };
        assert_eq!(dups, 0, "subscriber {n}: duplicates");
        assert_eq!(got, expected, "subscriber {n}: a gap or disorder (receipt {receipt:?})");
        assert!(c.try_recv(Duration::from_millis(100)).await.is_none());
    }
}

#[tokio::test]
async fn room_events_are_streamed_and_replayed_on_join() {
    let server = Server::start();
    let (mut alice, _) = Client::connect(&server.url()).await;
    alice.subscribe("/topic/room/hall", "room").await;
    send(&mut alice, "/app/room/hall/join", r#"{"username":"alice"}"#).await;
    let join = alice.recv().await;
    assert_eq!(offset(&join), 1);
    send(&mut alice, "/app/room/hall/message", r#"{"message":"hello"}"#).await;
    assert_eq!(offset(&alice.recv().await), 2);
    // Bob opens the page later and sees the conversation so far.
    let (mut bob, _) = Client::connect(&server.url()).await;
    let (kept, receipt) =
        subscribe_from(&mut bob, "/topic/room/hall", "room", "x-stream-offset:first\n").await;
    assert_eq!(offsets(&kept), vec![1, 2]);
    assert!(kept[1].body_text().contains("\"message\":\"hello\""));
    assert_eq!(receipt.header("x-stream-recovered"), Some("true"));
    send(&mut alice, "/app/room/hall/message", r#"{"message":"again"}"#).await;
    assert_eq!(offset(&bob.recv().await), 3);
}
