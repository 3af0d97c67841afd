//! Helpers of the room tests (one node and cluster): chat requests, a client watching rooms,
//! the events it saw as small tuples, and what `/api/rooms` says.

use std::time::Duration;

use serde_json::Value;

use super::{Client, Server};

/// (subscription id, event type or error code, sender, participantCount).
pub type Event = (String, String, String, u64);

pub fn ev(sub: &str, kind: &str, sender: &str, count: u64) -> Event {
    (sub.into(), kind.into(), sender.into(), count)
}

pub async fn send(c: &mut Client, dest: &str, body: &str) {
    c.send_text(&format!("SEND\ndestination:{dest}\n\n{body}\0")).await;
}

pub async fn join(c: &mut Client, room: &str, name: &str) {
    send(c, &format!("/app/room/{room}/join"), &format!("{{\"username\":\"{name}\"}}")).await;
}

/// Sends a chat message to `room` (`SEND /app/room/{room}/message`).
pub async fn say(c: &mut Client, room: &str, text: &str) {
    send(c, &format!("/app/room/{room}/message"), &format!("{{\"message\":\"{text}\"}}")).await;
}

/// An anonymous chat member: connected, subscribed to its errors (subscription id `errors`)
/// and to the room's events (subscription id `room`), its join sent but not yet answered.
pub async fn member(server: &Server, room: &str, name: &str) -> Client {
    let (mut c, _) = Client::connect(&server.url()).await;
    c.subscribe("/user/queue/errors", "errors").await;
    c.subscribe(&format!("/topic/room/{room}"), "room").await;
    join(&mut c, room, name).await;
    c
}

/// A client (logged in as `login` with passcode `pw`, if given) subscribed to its errors
/// (subscription id `errors`) and to each room's events (subscription id: the room id).
pub async fn watcher_as(server: &Server, login: Option<&str>, rooms: &[&str]) -> Client {
    let mut c = Client::open(&server.url(), &["v12.stomp"]).await;
    let credentials = login.map_or(String::new(), |l| format!("login:{l}\npasscode:pw\n"));
    c.send_text(&format!("CONNECT\naccept-version:1.2\nhost:localhost\n{credentials}\n\0")).await;
    let f = c.recv().await;
    assert_eq!(f.command, "CONNECTED", "{f:?}");
    c.subscribe("/user/queue/errors", "errors").await;
    for room in rooms {
        c.subscribe(&format!("/topic/room/{room}"), room).await;
    }
    c
}

pub async fn watcher(server: &Server, rooms: &[&str]) -> Client {
    watcher_as(server, None, rooms).await
}

/// Every frame for `window`, as events.
pub async fn collect(c: &mut Client, window: Duration) -> Vec<Event> {
    let deadline = tokio::time::Instant::now() + window;
    let mut out = Vec::new();
    while let Some(f) = c.try_recv(deadline.saturating_duration_since(tokio::time::Instant::now())).await {
        let v: Value = serde_json::from_slice(&f.body).unwrap_or(Value::Null);
        out.push((
            f.header("subscription").unwrap_or("").to_string(),
            v["type"].as_str().or(v["code"].as_str()).unwrap_or("").to_string(),
            v["sender"].as_str().unwrap_or("").to_string(),
            v["participantCount"].as_u64().unwrap_or(0),
        ));
    }
    out
}

/// (status, participants) of `/api/rooms/{room}`.
pub fn members(server: &Server, room: &str) -> (u16, Vec<String>) {
    let (status, _, body) = server.get(&format!("/api/rooms/{room}"));
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let names = v["participants"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default();
    (status, names)
}

/// The room's count in `/api/rooms` (None: not listed).
pub fn listed(server: &Server, room: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(&server.get("/api/rooms").2).unwrap_or(Value::Null);
    v.as_array()?.iter().find(|r| r["roomId"] == room).and_then(|r| r["participantCount"].as_u64())
}
