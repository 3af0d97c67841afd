//! The configuration end to end with the real binary: TOML spellings the old hand-written
//! reader refused, errors that name the key and line and stop start-up, and a SIGHUP reload
//! that applies `live` keys and keeps `restart` keys alike in local and cluster mode.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::redis::Redis;
use common::{Client, Frame, Server};
use serde_json::Value;

#[tokio::test]
async fn literal_strings_inline_tables_and_multi_line_arrays_are_read() {
    let server = Server::start_with(
        "shutdown_timeout_ms = 1_000\nchat = { max_username_chars = 5 }\n\
         [auth]\nusers = [\n  'guest:guest', # the LAN default\n  '''alice:p\"w''',\n]\n",
        &[],
    );
    for (login, passcode, expect) in
        [("guest", "guest", "CONNECTED"), ("alice", "p\"w", "CONNECTED"), ("alice", "pw", "ERROR")]
    {
        let mut c = Client::open(&server.url(), &[]).await;
        c.send_text(&format!("CONNECT\naccept-version:1.2\nlogin:{login}\npasscode:{passcode}\n\n\0")).await;
        assert_eq!(c.recv().await.command, expect, "{login}:{passcode}");
    }
}

fn start_up_error(config: &str, env: &[(&str, &str)]) -> String {
    let path = std::env::temp_dir().join(format!("stomp-edge-config-error-{}.toml", std::process::id()));
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stomp-edge"))
        .arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(2), "start-up should stop");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn unknown_keys_and_bad_values_stop_start_up_naming_the_key_and_line() {
    let err = start_up_error("# comment\n[limits]\nmax_connections = 10\nmax_conections = 10\n", &[]);
    assert!(err.contains("line 4: unknown key `limits.max_conections`"), "{err}");
    let err = start_up_error("[chat]\nmax_rooms = 'many'\n", &[]);
    assert!(err.contains("line 2: `chat.max_rooms`: invalid type"), "{err}");
    let err = start_up_error("[chat]\n\nmax_room_id_chars = 65\n", &[]);
    assert!(err.contains("line 3: `chat.max_room_id_chars` must be between 1 and 64, not 65"), "{err}");
    let err = start_up_error("", &[("STOMP_EDGE_CHAT_MAX_ROOMS", "0")]);
    assert!(err.contains("environment STOMP_EDGE_CHAT_MAX_ROOMS: `chat.max_rooms` must be between"), "{err}");
}

/// The server's log, waited on until it contains `text`.
fn wait_log(server: &Server, text: &str) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if server.log.lock().unwrap().contains(text) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A chat member whose JOIN has come back.
async fn member(server: &Server, room: &str, name: &str) -> Client {
    let mut c = common::rooms::member(server, room, name).await;
    let joined = next(&mut c, "room").await;
    assert_eq!(joined["type"], "JOIN");
    c
}

async fn next(c: &mut Client, subscription: &str) -> Value {
    loop {
        let f: Frame = c.recv().await;
        if f.header("subscription") == Some(subscription) {
            return serde_json::from_slice(&f.body).unwrap();
        }
    }
}

/// One reload, the same in both engines: `chat.max_message_bytes`, `chat.max_rooms` and
/// `limits.max_destinations` (live) apply at once, `cluster.key_prefix` (restart) keeps its
/// running value, and the log names each.
async fn reload_per_key(server: &Server) {
    let mut a = member(server, "one", "a").await;
    let mut b = member(server, "two", "b").await;
    server.rewrite_config(
        "[limits]\nmax_destinations = 2\n[chat]\nmax_message_bytes = 10\nmax_rooms = 2\n\
         [cluster]\nkey_prefix = 'x:'\n",
    );
    server.signal("HUP");
    assert!(wait_log(server, "reload: `chat.max_message_bytes` changed, applied"));
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("reload: `chat.max_rooms` changed, applied"), "{log}");
    assert!(log.contains("reload: `limits.max_destinations` changed, applied"), "{log}");
    assert!(log.contains("reload: `cluster.key_prefix` changed, needs a restart"), "{log}");
    a.send_text("SEND\ndestination:/app/room/one/message\n\n{\"message\":\"longer than ten\"}\0").await;
    assert_eq!(next(&mut a, "errors").await["code"], "invalid_message");
    a.send_text("SEND\ndestination:/app/room/one/message\n\n{\"message\":\"short\"}\0").await;
    assert_eq!(next(&mut a, "room").await["message"], "short");
    // Two rooms are open: a third is refused now.
    let (mut c, _) = Client::connect(&server.url()).await;
    c.subscribe("/user/queue/errors", "errors").await;
    c.send_text("SEND\ndestination:/app/room/three/join\n\n{\"username\":\"c\"}\0").await;
    assert_eq!(next(&mut c, "errors").await["code"], "too_many_rooms");
    b.send_text("SEND\ndestination:/app/room/two/message\n\n{\"message\":\"ok\"}\0").await;
    assert_eq!(next(&mut b, "room").await["message"], "ok");
    // The hub holds at least two destinations (the rooms' topics): a new one is refused.
    let (mut d, _) = Client::connect(&server.url()).await;
    d.send_text("SUBSCRIBE\nid:1\ndestination:/topic/new\nreceipt:r\n\n\0").await;
    let refused = d.recv().await;
    assert_eq!(refused.command, "ERROR", "{refused:?}");
    assert!(refused.body_text().contains("maximum of 2 destinations"), "{refused:?}");
}

#[tokio::test]
async fn reload_per_key_in_local_mode() {
    let server = Server::start_with("[chat]\nmax_message_bytes = 4096\n", &[]);
    reload_per_key(&server).await;
}

#[tokio::test]
async fn reload_per_key_in_cluster_mode() {
    let redis = Redis::start();
    let url = redis.url();
    let server = Server::start_with("[chat]\nmax_message_bytes = 4096\n", &["--redis", &url]);
    let start = Instant::now();
    while !server.get("/healthz").2.contains("\"redis\":\"up\"") {
        assert!(start.elapsed() < Duration::from_secs(10), "never reached Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reload_per_key(&server).await;
}

#[test]
fn a_config_piped_on_standard_input_is_used() {
    // The configuration is read once, from a pipe that cannot be read again.
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_stomp-edge"))
        .args(["--config", "/dev/stdin", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stomp-edge");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"server_id = \"piped\"\n").unwrap();
    drop(stdin);
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut addr = None;
    for line in stderr.lines().map_while(Result::ok) {
        if let Some(i) = line.find("listening on ") {
            addr = line[i + 13..].split_whitespace().next().map(str::to_string);
            break;
        }
    }
    let addr = addr.expect("the server reported its address");
    let (status, _, body) = common::http_get(&addr, "/healthz", &[]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"serverId\":\"piped\""), "{body}");
}
