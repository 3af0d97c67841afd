//! Micro benchmark of the STOMP codec hot paths (no harness): parsing a typical ~200-byte SEND
//! and encoding a MESSAGE, printed as ns per frame. Run with `cargo bench --bench parse`.

use std::hint::black_box;
use std::time::Instant;
use stomp_edge::protocol::{parse, Command, FrameWriter, Limits, Parsed, Version};

const ITERS: u32 = 1_000_000;

fn send_frame() -> Vec<u8> {
    let body = br#"{"message":"hello everyone, this is a typical chat line of some length"}"#;
    let mut out = Vec::new();
    let mut w = FrameWriter::new(&mut out, Command::Send, Version::V1_2);
    w.header("destination", "/app/room/lobby/message")
        .header("content-type", "application/json")
        .header("receipt", "r-42")
        .header("x-request-id", "5f0c1a9e-4b7d-4d2a-9a51-0c2f3d4e5f60");
    w.body(body);
    out
}

/// Times `f`; `bytes` is the frame size, for the printout only.
fn bench(name: &str, bytes: usize, mut f: impl FnMut()) {
    for _ in 0..ITERS / 10 {
        f(); // warm-up
    }
    let start = Instant::now();
    for _ in 0..ITERS {
        f();
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(ITERS);
    println!("{name:<28} {bytes:>4} B  {ns:>7.1} ns/frame");
}

fn main() {
    let wire = send_frame();
    let limits = Limits::default();
    bench("parse SEND + header()", wire.len(), || {
        if let Ok(Some((Parsed::Frame(f), n))) = parse(black_box(&wire), Version::V1_2, &limits) {
            black_box((f.header("destination"), f.body.len(), n));
        }
    });

    let body = br#"{"type":"CHAT","roomId":"lobby","sender":"alice","message":"hi","timestamp":1764067200000,"participantCount":3}"#;
    let mut out = Vec::with_capacity(512);
    bench("encode MESSAGE", 243, || {
        out.clear();
        let mut w = FrameWriter::new(&mut out, Command::Message, Version::V1_2);
        w.header("destination", black_box("/topic/room/lobby"))
            .header("content-type", "application/json")
            .header("subscription", "sub-0")
            .header("message-id", "node1-123456");
        w.body(black_box(body));
        black_box(&out);
    });
}
