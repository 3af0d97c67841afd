//! Throughput of the WebSocket data path: `apply_mask` in MB/s (against a byte-at-a-time loop)
//! and `Decoder::decode` in frames/s for 200-byte client frames. Run with `cargo bench`.

use std::hint::black_box;
use std::time::{Duration, Instant};
use stomp_edge::transport::ws::*;

const KEY: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

/// Runs `f` (which processes `bytes` bytes and `items` items) for about a second.
fn measure(name: &str, bytes: usize, items: usize, mut f: impl FnMut()) {
    let (start, mut rounds) = (Instant::now(), 0u64);
    while start.elapsed() < Duration::from_secs(1) {
        f();
        rounds += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let mbps = (bytes as f64 * rounds as f64) / secs / 1e6;
    let per_sec = (items as f64 * rounds as f64) / secs;
    println!("{name:<28} {mbps:>9.0} MB/s {per_sec:>14.0} items/s");
}

/// 10 000 masked client frames of 200 bytes each, back to back.
fn client_frames(opcode: u8) -> Vec<u8> {
    let payload = [b'm'; 200];
    let mut out = Vec::new();
    for _ in 0..10_000 {
        out.extend_from_slice(&[0x80 | opcode, 0x80 | 126, 0, 200]);
        out.extend_from_slice(&KEY);
        let start = out.len();
        out.extend_from_slice(&payload);
        apply_mask(&mut out[start..], KEY, 0);
    }
    out
}

fn main() {
    let mut block = vec![0x5Au8; 64 * 1024];
    measure("apply_mask 64 KiB", block.len(), 1, || apply_mask(black_box(&mut block), KEY, 1));
    measure("bytewise mask 64 KiB", block.len(), 1, || {
        for (i, b) in black_box(&mut block).iter_mut().enumerate() {
            *b ^= KEY[(i + 1) & 3];
        }
    });
    for (name, opcode) in [("decode 200 B binary frames", OP_BINARY), ("decode 200 B text frames", OP_TEXT)] {
        let raw = client_frames(opcode);
        let mut buf = Vec::with_capacity(raw.len());
        measure(name, raw.len(), 10_000, || {
            buf.clear();
            buf.extend_from_slice(&raw);
            let (mut decoder, mut data_len) = (Decoder::new(1 << 20), 0);
            decoder.decode(&mut buf, &mut data_len, &mut |_| {}).expect("valid frames");
            assert_eq!(data_len, 2_000_000);
        });
    }
}
