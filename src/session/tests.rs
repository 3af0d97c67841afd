//! The session's unit tests: frames fed through `input::feed`, replies read off the
//! outbound queue.

use std::rc::Rc;
use std::time::Duration;

use super::command::parse_heartbeat;
use super::connect::negotiate_heartbeat;
use super::send::{HELD_HEADER_OVERHEAD, HELD_SEND_OVERHEAD};
use super::Session;
use crate::config::Config;
use crate::engine::memory::MemoryBroker;
use crate::node::Node;
use crate::observability::metrics::CloseReason;
use crate::protocol::Limits;
use crate::session::input::feed;
use crate::transport::outbound::Outbound;

fn node() -> Node {
    Node::new(Config::embedded(), Rc::new(MemoryBroker))
}

fn session(id: u64) -> (Session, Rc<Outbound>) {
    let out = Rc::new(Outbound::new(1 << 20));
    (Session::new(id, Rc::from(format!("s{id}")), out.clone()), out)
}

/// Feeds frames; returns the close reason, if the session must close.
fn frames(s: &mut Session, node: &Node, data: &str) -> Option<CloseReason> {
    feed(s, node, &Limits::default(), data.as_bytes(), false).result.err()
}

/// Every frame queued for the client, as text, and empties the queue.
fn sent(out: &Outbound) -> Vec<String> {
    let frames =
        out.with_queue(|q| q.iter().map(|f| String::from_utf8_lossy(&f.bytes).to_string()).collect());
    out.pop_written(out.with_queue(|q| q.len()));
    frames
}

const CONNECT: &str = "CONNECT\naccept-version:1.2\nhost:h\n\n\0";

#[test]
fn server_owned_destinations_are_refused_alone_and_at_commit() {
    let node = node();
    let (mut member, member_out) = session(1);
    assert_eq!(frames(&mut member, &node, CONNECT), None);
    assert_eq!(frames(&mut member, &node, "SUBSCRIBE\nid:r\ndestination:/topic/room/lobby\n\n\0"), None);
    let (mut mallory, out) = session(2);
    assert_eq!(frames(&mut mallory, &node, CONNECT), None);
    assert_eq!(frames(&mut mallory, &node, "SUBSCRIBE\nid:e\ndestination:/user/queue/errors\n\n\0"), None);
    sent(&out);
    sent(&member_out);
    let forged = r#"{"type":"JOIN","sender":"admin","participantCount":999}"#;
    assert_eq!(
        frames(&mut mallory, &node, &format!("SEND\ndestination:/topic/room/lobby\n\n{forged}\0")),
        None
    );
    let tx =
        format!("BEGIN\ntransaction:t\n\n\0SEND\ndestination:/topic/room/lobby\ntransaction:t\n\n{forged}\0");
    assert_eq!(frames(&mut mallory, &node, &tx), None);
    assert_eq!(sent(&out).len(), 1, "a SEND held in a transaction is only checked at COMMIT");
    assert_eq!(frames(&mut mallory, &node, "COMMIT\ntransaction:t\nreceipt:c\n\n\0"), None);
    let replies = sent(&out);
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(replies[0].contains("\"code\":\"forbidden\"") && replies[0].contains("/user/queue/errors"));
    assert!(replies[1].starts_with("RECEIPT\n"), "the session stays open: {replies:?}");
    assert!(sent(&member_out).is_empty(), "nothing reached the room's subscriber");
    // Other topics stay open to clients.
    assert_eq!(frames(&mut mallory, &node, "SEND\ndestination:/topic/roomy\n\nhi\0"), None);
    assert!(sent(&out).is_empty());
}

#[test]
fn frames_before_connect_and_a_second_connect_close_the_session() {
    let node = node();
    let (mut s, out) = session(1);
    assert_eq!(
        frames(&mut s, &node, "SEND\ndestination:/topic/a\nreceipt:x\n\nhi\0"),
        Some(CloseReason::ProtocolError)
    );
    let replies = sent(&out);
    assert!(replies[0].starts_with("ERROR\n") && replies[0].contains("receipt-id:x"), "{replies:?}");
    let (mut s, out) = session(2);
    assert_eq!(frames(&mut s, &node, CONNECT), None);
    assert!(s.is_connected() && sent(&out)[0].starts_with("CONNECTED\n"));
    assert_eq!(frames(&mut s, &node, CONNECT), Some(CloseReason::ProtocolError));
    assert_eq!(frames(&mut s, &node, "DISCONNECT\n\n\0"), Some(CloseReason::ClientDisconnect));
}

#[test]
fn subscriptions_are_released_when_the_session_ends() {
    let node = node();
    let (mut s, out) = session(1);
    assert_eq!(frames(&mut s, &node, CONNECT), None);
    for (id, dest) in [("a", "/topic/a"), ("b", "/topic/b"), ("e", "/user/queue/errors")] {
        assert_eq!(frames(&mut s, &node, &format!("SUBSCRIBE\nid:{id}\ndestination:{dest}\n\n\0")), None);
    }
    assert_eq!(
        frames(&mut s, &node, "SUBSCRIBE\nid:a\ndestination:/topic/c\n\n\0"),
        Some(CloseReason::ProtocolError)
    );
    assert_eq!(node.hub.destination_count(), 2);
    assert_eq!(frames(&mut s, &node, "UNSUBSCRIBE\nid:a\n\n\0"), None);
    assert_eq!(node.hub.destination_count(), 1);
    s.end(&node);
    assert_eq!(node.hub.destination_count(), 0);
    assert!(!s.is_connected());
    drop(sent(&out));
}

#[tokio::test(flavor = "current_thread")]
async fn a_hashed_passcode_holds_the_frames_behind_its_connect_until_checked() {
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let node = node();
            let hash = crate::auth::hash_passcode("right").unwrap();
            node.auth.replace(crate::auth::Authenticator::new(vec![("alice".into(), hash)]));
            let (mut s, out) = session(1);
            let connect = "CONNECT\naccept-version:1.2\nlogin:alice\npasscode:right\n\n\0";
            let subscribe = "SUBSCRIBE\nid:1\ndestination:/topic/a\nreceipt:r\n\n\0";
            let input = format!("{connect}{subscribe}");
            let fed = feed(&mut s, &node, &Limits::default(), input.as_bytes(), false);
            assert_eq!((fed.consumed, fed.result), (connect.len(), Ok(())), "the SUBSCRIBE waits");
            assert!(s.awaiting_login() && !s.is_connected() && sent(&out).is_empty());
            assert_eq!(s.resume_connect(&node), None, "still being checked");
            while s.resume_connect(&node).is_none() {
                out.notified().await; // the check's end wakes the connection's task
            }
            assert!(s.is_connected() && !s.awaiting_login());
            assert_eq!(frames(&mut s, &node, subscribe), None);
            let replies = sent(&out);
            assert!(replies[0].starts_with("CONNECTED\n") && replies[1].starts_with("RECEIPT\n"));
            // Remembered: the next CONNECT with it is answered at once.
            let (mut again, out) = session(2);
            assert_eq!(frames(&mut again, &node, connect), None);
            assert!(again.is_connected() && sent(&out)[0].starts_with("CONNECTED\n"));
        })
        .await;
}

/// Bytes the session's open transactions hold on the memory budget.
fn held(s: &Session) -> usize {
    s.transactions.iter().flat_map(|open| open.iter()).map(|t| t.charge.bytes()).sum()
}

#[test]
fn held_sends_are_charged_at_their_cost_and_given_back_by_commit_abort_and_end() {
    let node = node();
    let (mut s, out) = session(1);
    assert_eq!(frames(&mut s, &node, CONNECT), None);
    let body = "x".repeat(1000);
    let send = |tx: &str| format!("SEND\ndestination:/topic/t\ntransaction:{tx}\nx-k:v\n\n{body}\0");
    assert_eq!(frames(&mut s, &node, &format!("BEGIN\ntransaction:a\n\n\0{}{}", send("a"), send("a"))), None);
    let one = HELD_SEND_OVERHEAD + "/topic/t".len() + 1000 + "x-k".len() + "v".len() + HELD_HEADER_OVERHEAD;
    assert_eq!(held(&s), 2 * one, "body, destination, headers and overheads");
    assert_eq!(frames(&mut s, &node, &format!("BEGIN\ntransaction:b\n\n\0{}", send("b"))), None);
    assert_eq!(held(&s), 3 * one);
    assert_eq!(frames(&mut s, &node, "ABORT\ntransaction:a\n\n\0"), None);
    assert_eq!(held(&s), one);
    assert_eq!(frames(&mut s, &node, "COMMIT\ntransaction:b\n\n\0"), None);
    assert_eq!(held(&s), 0);
    assert_eq!(frames(&mut s, &node, &format!("BEGIN\ntransaction:c\n\n\0{}", send("c"))), None);
    assert_eq!(held(&s), one);
    let c = s.transactions.as_ref().map_or(0, |open| open[0].charge.bytes());
    s.end(&node);
    assert!(s.transactions.is_none() && c == one, "the session's end drops its transactions");
    drop(sent(&out));
}

#[test]
fn heartbeats_take_the_larger_interval_or_none() {
    let hb = negotiate_heartbeat((1000, 1000), 10_000, 10_000);
    assert_eq!(hb.send(), Some(Duration::from_secs(10)));
    assert_eq!(hb.receive(), Some(Duration::from_secs(10)));
    let hb = negotiate_heartbeat((20_000, 0), 10_000, 10_000);
    assert_eq!((hb.send(), hb.receive()), (None, Some(Duration::from_secs(20))));
    let hb = negotiate_heartbeat((0, 5000), 0, 10_000);
    assert_eq!((hb.send(), hb.receive()), (None, None));
    // Past u32::MAX ms (49.7 days) an interval is taken as that.
    let hb = negotiate_heartbeat((u64::MAX, u64::MAX), 10_000, 10_000);
    assert_eq!(hb.receive(), Some(Duration::from_millis(u64::from(u32::MAX))));
    assert_eq!(parse_heartbeat("10000, 5000"), Some((10000, 5000)));
    assert_eq!(parse_heartbeat("x,1"), None);
    assert_eq!(parse_heartbeat("-1,1"), None);
}
