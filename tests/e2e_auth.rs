//! CONNECT credentials end to end with the real binary: plain passcodes compared in constant
//! time whatever their length, and Argon2-hashed passcodes made by `--hash-passcode`.

mod common;

use std::process::Command;
use std::time::Instant;

use common::{Client, Server};

async fn connect(server: &Server, login: &str, passcode: &str) -> String {
    let mut c = Client::open(&server.url(), &[]).await;
    c.send_text(&format!("CONNECT\naccept-version:1.2\nlogin:{login}\npasscode:{passcode}\n\n\0")).await;
    c.recv().await.command
}

#[tokio::test]
async fn an_empty_passcode_does_not_match_a_65536_byte_one() {
    // With header lines allowed past 64 KiB, the old compare (length difference folded into
    // 16 bits) let a 65,536-byte passcode in where the configured one is empty.
    let server = Server::start_with(
        "[limits]\nmax_header_line_bytes = 200_000\nmax_frame_bytes = 400_000\n[auth]\nusers = ['alice:', 'bob:b']\n",
        &[],
    );
    for len in [65_536, 131_072] {
        assert_eq!(connect(&server, "alice", &"x".repeat(len)).await, "ERROR", "{len}");
    }
    assert_eq!(connect(&server, "bob", &format!("b{}", "x".repeat(65_536))).await, "ERROR");
    assert_eq!(connect(&server, "alice", "").await, "CONNECTED");
    assert_eq!(connect(&server, "bob", "b").await, "CONNECTED");
}

fn hash_of(passcode: &str) -> String {
    let out =
        Command::new(env!("CARGO_BIN_EXE_stomp-edge")).args(["--hash-passcode", passcode]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn hashed_passcodes_from_hash_passcode_work_beside_plain_ones() {
    let hash = hash_of("s3cret pass");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let server = Server::start_with(&format!("[auth]\nusers = ['alice:{hash}', 'guest:guest']\n"), &[]);
    assert_eq!(connect(&server, "alice", "wrong").await, "ERROR");
    assert_eq!(connect(&server, "alice", &hash).await, "ERROR");
    assert_eq!(connect(&server, "alice", "s3cret pass").await, "CONNECTED");
    assert_eq!(connect(&server, "guest", "guest").await, "CONNECTED");
    // A verified passcode is remembered: reconnecting costs no further hash.
    let start = Instant::now();
    for _ in 0..20 {
        assert_eq!(connect(&server, "alice", "s3cret pass").await, "CONNECTED");
    }
    println!("20 CONNECTs with a remembered hashed passcode: {:?}", start.elapsed());
    assert_eq!(server.metric("stomp_edge_closes_total{reason=\"auth_failed\"}"), 2);
}

#[test]
fn hash_passcode_reads_standard_input_and_a_bad_hash_stops_start_up() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_stomp-edge"))
        .args(["--hash-passcode", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"from stdin\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("$argon2id$v=19$"));
    let path = std::env::temp_dir().join(format!("stomp-edge-bad-hash-{}.toml", std::process::id()));
    std::fs::write(&path, "[auth]\nusers = ['alice:$argon2id$v=19$garbage']\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stomp-edge"))
        .arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2: `auth.users`: the passcode of \"alice\" is not an Argon2"), "{err}");
}
