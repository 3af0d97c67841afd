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
