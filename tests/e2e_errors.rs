//! End-to-end tests of how protocol errors reach the client: every ERROR caused by a frame
//! carries that frame's `receipt-id`, whichever layer refused it (parser, limits, session), and
//! arrives before the close even when the client is still sending (the lingering close).

mod common;

use std::time::Duration;

use common::{Client, Server};

/// Sends `frame` on a connected session and returns the ERROR that answers it; the socket
/// must close after it.
async fn error_for(server: &Server, frame: &[u8]) -> common::Frame {
    let (mut c, _) = Client::connect(&server.url()).await;
    c.send_binary(frame).await;
    let e = c.recv().await;
    assert_eq!(e.command, "ERROR", "{e:?}");
    assert!(c.closed_within(Duration::from_secs(5)).await, "closed after the ERROR");
    e
}

#[tokio::test]
async fn every_refused_frame_gets_its_receipt_id() {
    let server = Server::start_with("[limits]\nmax_headers = 8\nmax_header_line_bytes = 128\n", &[]);
    let long = format!("SEND\nreceipt:R9\ndestination:/topic/a\nx:{}\n\n\0", "y".repeat(200));
    let many = format!("SEND\nreceipt:R10\n{}\n\0", "h:1\n".repeat(9));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        // Parser: the inputs of the report, and the receipt after the bad line too.
        ("R2", b"SEND\nreceipt:R2\ndestination:/topic/a\nx:a\\tb\n\nx\0".to_vec(), "invalid escape"),
        ("R3", b"SEND\nreceipt:R3\nno colon here\n\n\0".to_vec(), "malformed header"),
        (
            "R4",
            b"SEND\ndestination:/topic/a\ncontent-length:abc\nreceipt:R4\n\n\0".to_vec(),
            "content-length",
        ),
        ("R5", b"SEND\nreceipt:R5\ndestination:/topic/a\ncontent-length:999999\n\n\0".to_vec(), "exceeds"),
        ("R6", b"SEND\nreceipt:R6\ndestination:/topic/a\ncontent-length:1\n\nab\0".to_vec(), "NUL"),
        ("R7", b"SEND\nreceipt:R7\ndest\\ination:/topic/a\n\n\0".to_vec(), "invalid escape"),
        ("R8", b"SEND\nreceipt:R8\n:empty name\n\n\0".to_vec(), "malformed header"),
        // Limits.
        ("R9", long.into_bytes(), "header line exceeds 128"),
        ("R10", many.into_bytes(), "more than 8 headers"),
        // Session.
        ("R1", b"SEND\nreceipt:R1\n\n\0".to_vec(), "destination"),
        ("R11", b"SUBSCRIBE\nreceipt:R11\nid:1\ndestination:/topic/a\nack:sometimes\n\n\0".to_vec(), "ack"),
        ("R12", b"COMMIT\nreceipt:R12\ntransaction:nope\n\n\0".to_vec(), "unknown transaction"),
        ("R13", b"CONNECT\nreceipt:R13\naccept-version:1.2\n\n\0".to_vec(), "already connected"),
        ("R14", b"MESSAGE\nreceipt:R14\n\n\0".to_vec(), "server frame"),
    ];
    for (receipt, frame, says) in cases {
        let e = error_for(&server, &frame).await;
        assert_eq!(e.header("receipt-id"), Some(receipt), "{e:?} for {}", String::from_utf8_lossy(&frame));
        assert!(e.body_text().contains(says), "{e:?} should say {says:?}");
    }
    // Before CONNECT.
    let mut c = Client::open(&server.url(), &["v12.stomp"]).await;
    c.send_text("SEND\nreceipt:R15\ndestination:/topic/a\n\nx\0").await;
    let e = c.recv().await;
    assert_eq!((e.command.as_str(), e.header("receipt-id")), ("ERROR", Some("R15")));
    // An escaped receipt comes back as the same value.
    let e = error_for(&server, b"SEND\nreceipt:a\\cb\nx:\\t\n\n\0").await;
    assert_eq!(e.header("receipt-id"), Some("a:b"));
    // No receipt header, no receipt-id.
    let e = error_for(&server, b"SEND\ndestination:/topic/a\nx:\\t\n\n\0").await;
    assert_eq!(e.header("receipt-id"), None);
}

/// A client-side WebSocket frame (masked with a zero key, which leaves the payload as it is).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(payload);
    out
}

/// A 1 MiB frame sent as 32 KiB WebSocket messages without a NUL: the server refuses it at
/// `limits.max_frame_bytes` while the client is still sending. The ERROR (with its receipt-id)
/// and the close frame must reach the client and the connection end with a FIN, not a TCP
/// reset (which browsers and `ws` report as close 1006, losing the ERROR).
#[test]
fn error_survives_a_client_still_sending() {
    use std::io::{Read, Write};
    let server = Server::start();
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let upgrade = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    s.write_all(upgrade.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1);
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    s.write_all(&client_frame(1, b"CONNECT\naccept-version:1.2\n\n\0")).unwrap();
    // 160 KiB of a frame that never ends: the server refuses it at 128 KiB.
    let chunk = vec![b'z'; 32 * 1024];
    let mut first = b"SEND\ndestination:/topic/a\nreceipt:R-big\n\n".to_vec();
    first.extend_from_slice(&chunk);
    s.write_all(&client_frame(1, &first)).unwrap();
    for _ in 0..4 {
        s.write_all(&client_frame(1, &chunk)).unwrap();
    }
    // Read until the ERROR and the close frame (opcode 8, code 1008) are in.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let close = loop {
        if let Some(at) = got.windows(4).position(|w| w[0] == 0x88 && w[2..] == 1008u16.to_be_bytes()) {
            break at;
        }
        match s.read(&mut buf) {
            Ok(0) => panic!("end of stream before the close frame: {}", String::from_utf8_lossy(&got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("{e} before the close frame: {}", String::from_utf8_lossy(&got)),
        }
    };
    let text = String::from_utf8_lossy(&got[..close]).to_string();
    let error = &text[text.find("ERROR\n").expect("an ERROR frame")..];
    assert!(error.contains("receipt-id:R-big") && error.contains("exceeds"), "{error}");
    // A client that has not read them yet is still sending the rest of its 1 MiB: the server
    // must go on reading (and dropping) it, not reset the connection under it.
    for i in 0..27 {
        if let Err(e) = s.write_all(&client_frame(1, &chunk)) {
            panic!("the server reset the connection: write {i} after the close failed: {e}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let end = loop {
        match s.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(_) => {}
            Err(e) => break Err(e),
        }
    };
    assert!(end.is_ok(), "the connection was reset instead of closed: {end:?}");
}

/// Frames the server refuses part way through one WebSocket message keep their receipt-id.
#[tokio::test]
async fn error_for_a_message_cut_short_keeps_its_receipt() {
    let server = Server::start();
    // One message the server stops reading in the middle of.
    let (mut c, _) = Client::connect(&server.url()).await;
    c.send_text(&format!("SEND\ndestination:/topic/a\nreceipt:R16\n\n{}", "z".repeat(131_500))).await;
    let e = c.recv().await;
    assert_eq!((e.command.as_str(), e.header("receipt-id")), ("ERROR", Some("R16")));
    // One message over the WebSocket limit: refused by the codec (1009), the ERROR still comes
    // first and carries the receipt of the frame it began.
    let (mut c, _) = Client::connect(&server.url()).await;
    c.send_text("SEND\ndestination:/topic/a\nreceipt:R17\n\n").await;
    c.send_text(&"z".repeat(1 << 20)).await;
    let e = c.recv().await;
    assert_eq!((e.command.as_str(), e.header("receipt-id")), ("ERROR", Some("R17")));
    assert!(e.body_text().contains("websocket"), "{e:?}");
}
