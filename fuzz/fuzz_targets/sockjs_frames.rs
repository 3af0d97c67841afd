//! libFuzzer target for SockJS framing: arbitrary bytes through the client-message decoders
//! (`message_end`, `decode_message`, `decode_array`, `decode_stream` in reads of a size the
//! first byte picks), and every valid UTF-8 string through the server's JSON string encoder and
//! back. Checks nothing panics, consumption stays within the input, the decoders agree, and
//! what the server writes decodes to exactly what it was given. Run with
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run sockjs_frames`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stomp_edge::transport::sockjs::frame::{decode_array, decode_message, decode_stream, message_end, push_json_string};

fuzz_target!(|data: &[u8]| {
    let Some((&knob, input)) = data.split_first() else {
        return;
    };
    // One message: the cheap boundary check and the full decode agree on whole values.
    if let Ok(Some(end)) = message_end(input) {
        assert!(end <= input.len());
    }
    let mut out = Vec::new();
    let message = decode_message(input, &mut out);
    let mut array_out = Vec::new();
    if decode_array(input, &mut array_out).is_ok() {
        assert!(message.is_ok());
        assert_eq!(array_out, out);
    }
    // A stream of messages arriving in reads, as the websocket transport gets them.
    let read_size = usize::from(knob % 32) + 1;
    let mut pending = Vec::new();
    let mut stomp = Vec::new();
    for read in input.chunks(read_size) {
        pending.extend_from_slice(read);
        match decode_stream(&pending, &mut stomp, 256) {
            Ok(consumed) => {
                assert!(consumed <= pending.len());
                pending.drain(..consumed);
            }
            Err(_) => break,
        }
    }
    // The server's strings decode back to what they carried.
    if let Ok(text) = std::str::from_utf8(input) {
        let mut json = Vec::new();
        push_json_string(&mut json, text);
        let mut back = Vec::new();
        decode_message(&json, &mut back).expect("the server's own string is valid SockJS JSON");
        assert_eq!(back, text.as_bytes());
        assert!(json.iter().all(|&b| b >= 0x20), "no raw control bytes in a frame");
    }
});
