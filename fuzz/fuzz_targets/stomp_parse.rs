//! libFuzzer target for the STOMP parser: drains arbitrary input with `parse` the way a
//! connection does, under small limits and every version, checking it never panics or
//! over-consumes; where it stops with an error, the ERROR's `receipt-id` scan runs on the rest. Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run stomp_parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stomp_edge::protocol::{Limits, Parsed, Version, parse, pending_receipt};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the version and limits, the rest is the stream.
    let Some((&knob, stream)) = data.split_first() else {
        return;
    };
    let version = [Version::V1_0, Version::V1_1, Version::V1_2][usize::from(knob % 3)];
    let limits = Limits {
        max_frame_bytes: 64 + usize::from(knob) * 4,
        max_headers: usize::from(knob % 9),
        max_header_line_bytes: 8 + usize::from(knob / 4),
    };
    let mut buf = stream;
    loop {
        let (parsed, n) = match parse(buf, version, &limits) {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(_) => {
                if let Some(receipt) = pending_receipt(buf, version, &limits) {
                    assert!(receipt.chars().count() <= limits.max_header_line_bytes);
                }
                break;
            }
        };
        assert!(n > 0 && n <= buf.len());
        if let Parsed::Frame(f) = parsed {
            assert!(f.header_count() <= limits.max_headers);
            assert!(f.body.len() < limits.max_frame_bytes);
            for (name, value) in f.headers() {
                std::hint::black_box((name, value));
            }
        }
        buf = &buf[n..];
    }
});
