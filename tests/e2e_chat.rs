//! End-to-end tests of the chat rooms against the real binary: the contract's JSON, one room
//! per session, every leave path, application errors on `/user/queue/errors`, and the REST API.

mod common;

use std::time::Duration;

use common::rooms::member;
use common::{Client, Frame, Server};
use serde_json::Value;

fn json(f: &Frame) -> Value {
    serde_json::from_slice(&f.body).unwrap_or_else(|e| panic!("not JSON: {e}: {f:?}"))
}

/// Next room event of the given type (skipping others).
async fn event(c: &mut Client, kind: &str) -> Value {
    loop {
        let f = c.recv().await;
        assert_eq!(f.command, "MESSAGE", "{f:?}");
        let v = json(&f);
        if v["type"] == kind {
            assert_eq!(f.header("content-type"), Some("application/json"));
            return v;
        }
    }
}

async fn error(c: &mut Client) -> Value {
    loop {
        let f = c.recv().await;
        if f.header("subscription") == Some("errors") {
            return json(&f);
        }
    }
}

async fn send(c: &mut Client, dest: &str, body: &str) {
    c.send_text(&format!("SEND\ndestination:{dest}\n\n{body}\0")).await;
}

#[tokio::test]
async fn join_chat_leave_with_the_contract_json() {
    let server = Server::start();
    let mut alice = member(&server, "lobby", "alice").await;
    let j = event(&mut alice, "JOIN").await;
    assert_eq!(
        (j["roomId"].as_str(), j["sender"].as_str(), j["participantCount"].as_u64()),
        (Some("lobby"), Some("alice"), Some(1))
    );
    let mut bob = member(&server, "lobby", "bob").await;
    assert_eq!(event(&mut alice, "JOIN").await["participantCount"], 2);
    send(&mut bob, "/app/room/lobby/message", r#"{"message":"hi 👋"}"#).await;
    for c in [&mut alice, &mut bob] {
        let m = event(c, "CHAT").await;
        assert_eq!((m["sender"].as_str(), m["message"].as_str()), (Some("bob"), Some("hi 👋")));
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        assert!((now - m["timestamp"].as_i64().unwrap()).abs() < 5000);
        assert_eq!(m["participantCount"], 2);
    }
    let (_, _, body) = server.get("/api/rooms");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        serde_json::json!([{"roomId":"lobby","participantCount":2}])
    );
    let (_, _, body) = server.get("/api/rooms/lobby");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        serde_json::json!({"roomId":"lobby","participants":["alice","bob"]})
    );
    send(&mut bob, "/app/room/lobby/leave", "").await;
    let l = event(&mut alice, "LEAVE").await;
    assert_eq!((l["sender"].as_str(), l["participantCount"].as_u64()), (Some("bob"), Some(1)));
    send(&mut alice, "/app/room/lobby/leave", "{}").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.get("/api/rooms").2, "[]");
    assert_eq!(server.get("/api/rooms/lobby").0, 404);
}

#[tokio::test]
async fn every_leave_path_broadcasts_a_leave() {
    let server = Server::start_with("[stomp]\nheartbeat_receive_ms = 300\n", &[]);
    let mut watcher = member(&server, "a", "watcher").await;
    event(&mut watcher, "JOIN").await;
    // Switching rooms leaves the old one.
    let mut s = member(&server, "a", "switcher").await;
    event(&mut watcher, "JOIN").await;
    send(&mut s, "/app/room/b/join", r#"{"username":"switcher"}"#).await;
    assert_eq!(event(&mut watcher, "LEAVE").await["sender"], "switcher");
    // DISCONNECT.
    let mut d = member(&server, "a", "disconnecter").await;
    event(&mut watcher, "JOIN").await;
    d.send_text("DISCONNECT\n\n\0").await;
    assert_eq!(event(&mut watcher, "LEAVE").await["sender"], "disconnecter");
    // Socket close without DISCONNECT.
    let c = member(&server, "a", "closer").await;
    event(&mut watcher, "JOIN").await;
    drop(c);
    assert_eq!(event(&mut watcher, "LEAVE").await["sender"], "closer");
    // Heart-beat timeout: promises 300 ms heart-beats, then goes silent.
    let mut h = Client::open(&server.url(), &[]).await;
    h.send_text("CONNECT\naccept-version:1.2\nheart-beat:300,0\n\n\0").await;
    h.send_text("SEND\ndestination:/app/room/a/join\n\n{\"username\":\"sleeper\"}\0").await;
    event(&mut watcher, "JOIN").await;
    let l = event(&mut watcher, "LEAVE").await;
    assert_eq!(l["sender"], "sleeper");
    drop(h);
}

#[tokio::test]
async fn application_errors_go_to_the_sender_alone_and_the_session_stays() {
    let server = Server::start_with("[chat]\nmax_participants_per_room = 2\nmax_rooms = 2\n", &[]);
    let (mut c, _) = Client::connect(&server.url()).await;
    c.subscribe("/user/queue/errors", "errors").await;
    let cases = [
        ("/app/room/x/message", r#"{"message":"early"}"#, "not_joined"),
        ("/app/room//join", r#"{"username":"a"}"#, "invalid_room_id"),
        ("/app/room/a.b/join", r#"{"username":"a"}"#, "invalid_room_id"),
        ("/app/room/x/join", r#"{"username":""}"#, "invalid_username"),
        ("/app/room/x/join", r#"{"username":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#, "invalid_username"),
        ("/app/room/x/join", "not json", "invalid_payload"),
        ("/app/room/x/leave", "", "not_joined"),
        ("/app/room/x/dance", "{}", "unknown_destination"),
        ("/queue/nowhere", "x", "unknown_destination"),
    ];
    for (dest, body, code) in cases {
        send(&mut c, dest, body).await;
        let e = error(&mut c).await;
        assert_eq!((e["code"].as_str(), e["destination"].as_str()), (Some(code), Some(dest)), "{e}");
        assert!(!e["message"].as_str().unwrap().is_empty());
    }
    let long = format!(r#"{{"message":"{}"}}"#, "m".repeat(4097));
    send(&mut c, "/app/room/x/join", r#"{"username":"me"}"#).await;
    send(&mut c, "/app/room/x/message", &long).await;
    assert_eq!(error(&mut c).await["code"], "invalid_message");
    // Name clash, full room, too many rooms.
    let mut other = member(&server, "x", "me").await;
    assert_eq!(error(&mut other).await["code"], "username_taken");
    send(&mut other, "/app/room/x/join", r#"{"username":"you"}"#).await;
    let mut third = member(&server, "x", "third").await;
    assert_eq!(error(&mut third).await["code"], "room_full");
    send(&mut third, "/app/room/y/join", r#"{"username":"third"}"#).await;
    let mut fourth = member(&server, "z", "fourth").await;
    assert_eq!(error(&mut fourth).await["code"], "too_many_rooms");
    // Still connected and useful.
    c.subscribe("/topic/room/x", "room").await;
    send(&mut c, "/app/room/x/message", r#"{"message":"still here"}"#).await;
    assert_eq!(event(&mut c, "CHAT").await["message"], "still here");
    assert!(server.metric("stomp_edge_app_errors_total{code=\"room_full\"}") >= 1);
}
