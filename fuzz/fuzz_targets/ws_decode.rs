//! libFuzzer target for the in-place WebSocket decoder: arbitrary client bytes, cut into reads
//! of a size the first byte picks, decoded the way the socket driver does (appending each read
//! to one buffer, draining the decoded data now and then). Checks it never panics, never
//! reports more data than it was given, keeps an undecoded tail no larger than a header plus a
//! control frame, and stops for good after an error or a close. Run with
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run ws_decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stomp_edge::transport::ws::Decoder;

/// Longest undecoded tail: a 14-byte header and a 125-byte control payload.
const MAX_TAIL: usize = 14 + 125;

fuzz_target!(|data: &[u8]| {
    let Some((&knob, stream)) = data.split_first() else {
        return;
    };
    let read_size = usize::from(knob % 64) + 1;
    let mut decoder = Decoder::new(16 + usize::from(knob) * 8);
    let mut buf = Vec::new();
    let mut data_len = 0;
    let mut given = 0usize;
    let mut decoded = 0usize;
    for (i, read) in stream.chunks(read_size).enumerate() {
        buf.extend_from_slice(read);
        given += read.len();
        let before = data_len;
        let result = decoder.decode(&mut buf, &mut data_len, &mut |control| {
            std::hint::black_box(control);
        });
        assert!(data_len <= buf.len());
        decoded += data_len - before;
        assert!(decoded <= given, "decoded more than was sent");
        if result.is_err() || decoder.is_closed() {
            assert_eq!(buf.len(), data_len, "nothing undecoded is kept after an error or a close");
            return;
        }
        assert!(buf.len() - data_len <= MAX_TAIL + read_size, "undecoded tail of {}", buf.len() - data_len);
        // The driver hands decoded data on and drops it; do so every few reads.
        if i % 3 == 0 {
            buf.drain(..data_len);
            data_len = 0;
        }
    }
});
