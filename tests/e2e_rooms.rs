//! Rooms the server owns, on one node: a client cannot write to `/topic/room/**` (any STOMP
//! version, in a transaction or not, member or not), chat names are logins where accounts are
//! configured, and membership stays exact through renames and moves.

mod common;

use std::time::Duration;

use common::rooms::{collect, ev, join, listed, members, send, watcher, watcher_as};
use common::{Client, Frame, Server};
use serde_json::Value;

fn json(f: &Frame) -> Value {
    serde_json::from_slice(&f.body).unwrap_or(Value::Null)
}

const FORGED_CHAT: &str = r#"{"type":"CHAT","roomId":"lobby","sender":"alice","message":"I quit","timestamp":1,"participantCount":999}"#;
const FORGED_JOIN: &str = r#"{"type":"JOIN","roomId":"lobby","sender":"admin","message":"admin joined","timestamp":1,"participantCount":999}"#;

#[tokio::test]
async fn clients_cannot_write_to_room_topics_in_any_version_or_transaction() {
    let server = Server::start();
    let mut alice = watcher(&server, &["lobby"]).await;
    join(&mut alice, "lobby", "alice").await;
    let seen = collect(&mut alice, Duration::from_millis(300)).await;
    assert_eq!(seen, vec![("lobby".into(), "JOIN".into(), "alice".into(), 1)]);

    // A stranger, once per STOMP version, and once inside a transaction.
    for (protocol, version) in [("v10.stomp", "1.0"), ("v11.stomp", "1.1"), ("v12.stomp", "1.2")] {
        let mut mallory = Client::open(&server.url(), &[protocol]).await;
        mallory.send_text(&format!("CONNECT\naccept-version:{version}\nhost:localhost\n\n\0")).await;
        assert_eq!(mallory.recv().await.command, "CONNECTED");
        mallory.subscribe("/user/queue/errors", "errors").await;
        send(&mut mallory, "/topic/room/lobby", FORGED_CHAT).await;
        mallory.send_text("BEGIN\ntransaction:t1\n\n\0").await;
        mallory
            .send_text(&format!("SEND\ndestination:/topic/room/lobby\ntransaction:t1\n\n{FORGED_JOIN}\0"))
            .await;
        mallory.send_text("COMMIT\ntransaction:t1\nreceipt:c1\n\n\0").await;
        let mut errors = Vec::new();
        loop {
            let f = mallory.recv().await;
            if f.command == "RECEIPT" {
                break;
            }
            let v = json(&f);
            assert_eq!(
                (v["code"].as_str(), v["destination"].as_str()),
                (Some("forbidden"), Some("/topic/room/lobby"))
            );
            errors.push(v);
        }
        // The commit's error may follow its receipt: the session is still open for it.
        while errors.len() < 2 {
            let v = json(&mallory.recv().await);
            assert_eq!(v["code"], "forbidden", "{version}");
            errors.push(v);
        }
    }
    // A member may not write there either; the session stays open and chats on.
    send(&mut alice, "/topic/room/lobby", FORGED_JOIN).await;
    send(&mut alice, "/app/room/lobby/message", r#"{"message":"still here"}"#).await;
    let seen = collect(&mut alice, Duration::from_millis(500)).await;
    assert_eq!(
        seen,
        vec![
            ("errors".into(), "forbidden".into(), "".into(), 0),
            ("lobby".into(), "CHAT".into(), "alice".into(), 1)
        ],
        "nobody got a forged event"
    );
    assert_eq!(server.metric(r#"stomp_edge_app_errors_total{code="forbidden"}"#), 7);
    assert_eq!(server.metric(r#"stomp_edge_messages_dropped_total{reason="server_owned_destination"}"#), 7);
    // Other topics are still open to clients (Spring simple-broker behaviour).
    let (mut c, _) = Client::connect(&server.url()).await;
    c.subscribe("/topic/news", "n").await;
    send(&mut c, "/topic/news", "hello").await;
    assert_eq!(c.recv().await.body_text(), "hello");
}

#[tokio::test]
async fn server_owned_prefixes_are_configurable() {
    let server =
        Server::start_with("[stomp]\nserver_owned_prefixes = [\"/topic/room/\", \"/topic/alerts/\"]\n", &[]);
    let mut c = watcher(&server, &["lobby"]).await;
    c.subscribe("/topic/alerts/fire", "alerts").await;
    send(&mut c, "/topic/alerts/fire", "forged").await;
    let seen = collect(&mut c, Duration::from_millis(300)).await;
    assert_eq!(seen, vec![("errors".into(), "forbidden".into(), "".into(), 0)]);
}

#[tokio::test]
async fn a_rename_in_the_same_room_keeps_the_count_exact() {
    let server = Server::start();
    let mut alice = watcher(&server, &["r"]).await;
    join(&mut alice, "r", "alice").await;
    join(&mut alice, "r", "alice2").await;
    send(&mut alice, "/app/room/r/message", r#"{"message":"hi"}"#).await;
    let seen = collect(&mut alice, Duration::from_millis(500)).await;
    assert_eq!(
        seen,
        vec![
            ("r".into(), "JOIN".into(), "alice".into(), 1),
            ("r".into(), "LEAVE".into(), "alice".into(), 0),
            ("r".into(), "JOIN".into(), "alice2".into(), 1),
            ("r".into(), "CHAT".into(), "alice2".into(), 1),
        ]
    );
    assert_eq!(members(&server, "r"), (200, vec!["alice2".to_string()]));
    assert_eq!(listed(&server, "r"), Some(1));
    // The old name is free again; a rename to a taken name changes nothing.
    let mut bob = watcher(&server, &["r"]).await;
    join(&mut bob, "r", "alice").await;
    join(&mut bob, "r", "alice2").await;
    let seen = collect(&mut bob, Duration::from_millis(500)).await;
    assert_eq!(
        seen,
        vec![
            ("r".into(), "JOIN".into(), "alice".into(), 2),
            ("errors".into(), "username_taken".into(), "".into(), 0)
        ]
    );
    assert_eq!(members(&server, "r"), (200, vec!["alice2".to_string(), "alice".to_string()]));
}

#[tokio::test]
async fn a_join_elsewhere_moves_the_member() {
    let server = Server::start();
    let mut alice = watcher(&server, &["a", "b"]).await;
    join(&mut alice, "a", "alice").await;
    join(&mut alice, "b", "al").await;
    let seen = collect(&mut alice, Duration::from_millis(500)).await;
    assert_eq!(
        seen,
        vec![
            ("a".into(), "JOIN".into(), "alice".into(), 1),
            ("a".into(), "LEAVE".into(), "alice".into(), 0),
            ("b".into(), "JOIN".into(), "al".into(), 1),
        ]
    );
    assert_eq!(members(&server, "a").0, 404);
    assert_eq!(members(&server, "b"), (200, vec!["al".to_string()]));
}

#[tokio::test]
async fn chat_names_are_logins_where_accounts_are_configured() {
    let users = "[auth]\nusers = [\"alice:pw\", \"bob:pw\"]\n";
    let server = Server::start_with(users, &[]);
    let mut alice = watcher_as(&server, Some("alice"), &["r"]).await;
    join(&mut alice, "r", "bob").await;
    send(&mut alice, "/app/room/r/join", "{}").await;
    send(&mut alice, "/app/room/r/join", "").await;
    join(&mut alice, "r", "alice").await;
    let seen = collect(&mut alice, Duration::from_millis(500)).await;
    assert_eq!(
        seen,
        vec![ev("errors", "forbidden", "", 0), ev("r", "JOIN", "alice", 1)],
        "speaking as bob is refused; the login is the name"
    );
    // The switch frees the names again.
    let server = Server::start_with(&format!("{users}[chat]\nfree_usernames = true\n"), &[]);
    let mut alice = watcher_as(&server, Some("alice"), &["r"]).await;
    join(&mut alice, "r", "captain").await;
    let seen = collect(&mut alice, Duration::from_millis(500)).await;
    assert_eq!(seen, vec![ev("r", "JOIN", "captain", 1)]);
}

/// A STOMP client over SockJS's websocket transport (`/ws/{server}/{session}/websocket`): each
/// message is a JSON array of strings; the server's are `o`, `h`, `a[...]`, `c[...]`.
struct SockJs {
    ws: common::Ws,
}

impl SockJs {
    async fn open(server: &Server, session: &str) -> SockJs {
        use futures_util::StreamExt;
        let url = format!("ws://{}/ws/000/{session}/websocket", server.addr);
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("sockjs websocket");
        let open = ws.next().await.expect("open frame").expect("open frame");
        assert_eq!(open.to_text().unwrap_or(""), "o");
        SockJs { ws }
    }

    async fn send(&mut self, frame: &str) {
        use futures_util::SinkExt;
        let text = serde_json::to_string(&[frame]).unwrap_or_default();
        self.ws.send(tokio_tungstenite::tungstenite::Message::text(text)).await.expect("send");
    }

    /// STOMP frames received within `window`.
    async fn frames(&mut self, window: Duration) -> Vec<Frame> {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + window;
        let mut out = Vec::new();
        while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            let text = m.to_text().unwrap_or("").to_string();
            let Some(array) = text.strip_prefix('a') else { continue };
            let items: Vec<String> = serde_json::from_str(array).unwrap_or_default();
            for item in items {
                let trimmed = item.trim_start_matches(['\n', '\r']);
                if !trimmed.is_empty() {
                    out.push(common::parse_frame(trimmed.as_bytes()));
                }
            }
        }
        out
    }
}

#[tokio::test]
async fn forgery_over_sockjs_is_refused_too() {
    let server = Server::start();
    let mut alice = watcher(&server, &["lobby"]).await;
    join(&mut alice, "lobby", "alice").await;
    assert_eq!(collect(&mut alice, Duration::from_millis(300)).await.len(), 1);
    let mut mallory = SockJs::open(&server, "mallory1").await;
    mallory.send("CONNECT\naccept-version:1.1,1.2\nhost:localhost\n\n\0").await;
    mallory.send("SUBSCRIBE\ndestination:/user/queue/errors\nid:errors\n\n\0").await;
    mallory.send(&format!("SEND\ndestination:/topic/room/lobby\n\n{FORGED_CHAT}\0")).await;
    mallory.send("BEGIN\ntransaction:t\n\n\0").await;
    mallory.send(&format!("SEND\ndestination:/topic/room/lobby\ntransaction:t\n\n{FORGED_JOIN}\0")).await;
    mallory.send("COMMIT\ntransaction:t\n\n\0").await;
    let frames = mallory.frames(Duration::from_millis(800)).await;
    let codes: Vec<String> = frames
        .iter()
        .filter(|f| f.command == "MESSAGE")
        .map(|f| json(f)["code"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(frames.first().map(|f| f.command.as_str()), Some("CONNECTED"));
    assert_eq!(codes, vec!["forbidden", "forbidden"]);
    assert!(collect(&mut alice, Duration::from_millis(300)).await.is_empty(), "alice saw a forged event");
}
