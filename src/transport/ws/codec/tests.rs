//! Unit tests for the in-place decoder: one test per RFC 6455 rule it enforces, plus splitting
//! frames at every byte boundary and batching several frames into one read.

use super::*;

const KEY: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

/// A masked client frame with the minimal length encoding.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let first = if fin { 0x80 } else { 0 } | opcode;
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&KEY);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], KEY, 0);
    out
}

fn close(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    frame(true, OP_CLOSE, &payload)
}

/// What a connection saw after feeding `chunks` one read at a time.
#[derive(Debug, PartialEq)]
struct Outcome {
    data: Vec<u8>,
    controls: Vec<Control>,
    result: Result<(), WsError>,
}

fn feed_with(dec: &mut Decoder, chunks: &[&[u8]]) -> Outcome {
    let mut buf = Vec::new();
    let mut data_len = 0;
    let mut controls = Vec::new();
    let mut result = Ok(());
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        result = dec.decode(&mut buf, &mut data_len, &mut |c| controls.push(c));
        assert!(data_len <= buf.len());
        if result.is_err() {
            break;
        }
    }
    buf.truncate(data_len);
    Outcome { data: buf, controls, result }
}

fn feed(chunks: &[&[u8]]) -> Outcome {
    feed_with(&mut Decoder::new(1 << 20), chunks)
}

fn error_of(bytes: &[u8]) -> WsError {
    feed(&[bytes]).result.expect_err("should be rejected")
}

fn ping(payload: &[u8]) -> Control {
    Control::Ping(heapless::Vec::from_slice(payload).unwrap())
}

#[test]
fn decodes_a_masked_text_frame() {
    let out = feed(&[&frame(true, OP_TEXT, b"SEND\n\n\0")]);
    assert_eq!(out.data, b"SEND\n\n\0");
    assert_eq!(out.result, Ok(()));
}

#[test]
fn unmasked_frame_is_a_protocol_error() {
    let err = error_of(&[0x81, 0x02, b'h', b'i']);
    assert_eq!(err, WsError::Unmasked);
    assert_eq!(err.close_code(), 1002);
}

#[test]
fn reserved_bits_are_rejected() {
    for rsv in [0x40, 0x20, 0x10] {
        let mut f = frame(true, OP_TEXT, b"x");
        f[0] |= rsv;
        assert_eq!(error_of(&f), WsError::ReservedBits);
    }
}

#[test]
fn unknown_opcodes_are_rejected() {
    for op in (3..=7).chain(11..=15) {
        assert_eq!(error_of(&frame(true, op, b"")), WsError::UnknownOpcode(op));
    }
}

#[test]
fn control_frames_must_not_be_fragmented() {
    assert_eq!(error_of(&frame(false, OP_PING, b"")), WsError::FragmentedControl);
}

#[test]
fn control_payload_over_125_bytes_is_rejected() {
    // Rejected from the header alone (2 + 2 + 4 bytes), before any payload is buffered.
    let long = frame(true, OP_PING, &[0; 126]);
    assert_eq!(error_of(&long[..8]), WsError::ControlTooLong);
    assert_eq!(feed(&[&frame(true, OP_PING, &[1; 125])]).controls, vec![ping(&[1; 125])]);
}

#[test]
fn continuation_without_a_message_is_rejected() {
    assert_eq!(error_of(&frame(true, OP_CONTINUATION, b"x")), WsError::UnexpectedContinuation);
    // Also once the previous message has ended.
    let mut bytes = frame(true, OP_TEXT, b"a");
    bytes.extend(frame(true, OP_CONTINUATION, b"b"));
    assert_eq!(error_of(&bytes), WsError::UnexpectedContinuation);
}

#[test]
fn new_message_inside_a_fragmented_one_is_rejected() {
    let mut bytes = frame(false, OP_TEXT, b"a");
    bytes.extend(frame(true, OP_BINARY, b"b"));
    assert_eq!(error_of(&bytes), WsError::ExpectedContinuation);
}

#[test]
fn control_frames_may_be_interleaved_between_fragments() {
    let mut bytes = frame(false, OP_TEXT, b"he");
    bytes.extend(frame(true, OP_PING, b"p1"));
    bytes.extend(frame(false, OP_CONTINUATION, b"ll"));
    bytes.extend(frame(true, OP_PONG, b"whatever"));
    bytes.extend(frame(true, OP_CONTINUATION, b"o"));
    let out = feed(&[&bytes]);
    assert_eq!(out.result, Ok(()));
    assert_eq!(out.data, b"hello");
    assert_eq!(out.controls, vec![ping(b"p1"), Control::Pong]);
}

#[test]
fn invalid_utf8_in_text_is_rejected_but_fine_in_binary() {
    let err = error_of(&frame(true, OP_TEXT, &[b'a', 0xFF]));
    assert_eq!((err.clone(), err.close_code()), (WsError::InvalidUtf8, 1007));
    assert_eq!(feed(&[&frame(true, OP_BINARY, &[b'a', 0xFF])]).result, Ok(()));
}

#[test]
fn utf8_character_split_across_fragments_is_valid() {
    let euro = "€".as_bytes(); // E2 82 AC
    let mut bytes = frame(false, OP_TEXT, &euro[..1]);
    bytes.extend(frame(false, OP_CONTINUATION, &euro[1..2]));
    bytes.extend(frame(true, OP_CONTINUATION, &euro[2..]));
    let out = feed(&[&bytes]);
    assert_eq!((out.data.as_slice(), out.result), (euro, Ok(())));
}

#[test]
fn incomplete_utf8_at_end_of_text_message_is_rejected() {
    let mut bytes = frame(false, OP_TEXT, b"a");
    bytes.extend(frame(true, OP_CONTINUATION, &[0xE2, 0x82]));
    assert_eq!(error_of(&bytes), WsError::InvalidUtf8);
}

#[test]
fn close_frames_are_validated() {
    let empty = feed(&[&frame(true, OP_CLOSE, b"")]);
    let none = Control::Close { code: None, reason: heapless::String::new() };
    assert_eq!(empty.controls, vec![none]);
    for code in [1000, 1001, 1003, 1007, 1011, 3000, 4999] {
        let out = feed(&[&close(code, "bye")]);
        assert_eq!(out.result, Ok(()), "code {code}");
        let reason = heapless::String::try_from("bye").unwrap();
        assert_eq!(out.controls, vec![Control::Close { code: Some(code), reason }]);
    }
    for code in [0, 999, 1004, 1005, 1006, 1012, 1015, 2999, 5000, 65535] {
        assert_eq!(error_of(&close(code, "")), WsError::InvalidClosePayload, "code {code}");
    }
    assert_eq!(error_of(&frame(true, OP_CLOSE, &[0x03])), WsError::InvalidClosePayload);
    assert_eq!(error_of(&frame(true, OP_CLOSE, &[0x03, 0xE8, 0xFF])), WsError::InvalidClosePayload);
    assert_eq!(WsError::InvalidClosePayload.close_code(), 1002);
}

#[test]
fn bytes_after_close_are_ignored() {
    let mut bytes = frame(true, OP_TEXT, b"a");
    bytes.extend(close(1000, ""));
    bytes.extend(frame(true, OP_TEXT, b"ignored"));
    bytes.extend([0x00, 0x00]); // garbage that would otherwise be an error
    let mut dec = Decoder::new(100);
    let out = feed_with(&mut dec, &[&bytes, &frame(true, OP_TEXT, b"late")]);
    assert_eq!((out.data.as_slice(), out.result), (&b"a"[..], Ok(())));
    assert_eq!(out.controls.len(), 1);
    assert!(dec.is_closed());
}

#[test]
fn length_with_high_bit_set_is_rejected() {
    let mut bytes = vec![0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
    bytes.extend_from_slice(&KEY);
    assert_eq!(feed_with(&mut Decoder::new(usize::MAX), &[&bytes]).result, Err(WsError::InvalidLength));
}

#[test]
fn non_minimal_length_encodings_are_tolerated() {
    let mut bytes = vec![0x81, 0x80 | 126, 0, 2];
    bytes.extend_from_slice(&KEY);
    bytes.extend([b'o' ^ KEY[0], b'k' ^ KEY[1]]);
    bytes.extend([0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 1]);
    bytes.extend_from_slice(&KEY);
    bytes.push(b'!' ^ KEY[0]);
    let out = feed(&[&bytes]);
    assert_eq!((out.data.as_slice(), out.result), (&b"ok!"[..], Ok(())));
}

#[test]
fn oversized_message_is_rejected_from_its_header() {
    let f = frame(true, OP_BINARY, &[0; 1000]);
    // Only the 8-byte header has arrived: no payload is buffered before the verdict.
    let err = feed_with(&mut Decoder::new(999), &[&f[..8]]).result.unwrap_err();
    assert_eq!((err.clone(), err.close_code()), (WsError::MessageTooBig { limit: 999 }, 1009));
    assert_eq!(feed_with(&mut Decoder::new(1000), &[&f]).result, Ok(()));
    // The limit counts the sum of the fragments, and resets per message.
    let mut bytes = frame(false, OP_TEXT, &[b'a'; 60]);
    bytes.extend(frame(true, OP_CONTINUATION, &[b'a'; 40]));
    bytes.extend(frame(true, OP_TEXT, &[b'b'; 100]));
    assert_eq!(feed_with(&mut Decoder::new(100), &[&bytes]).result, Ok(()));
    bytes.extend(frame(false, OP_TEXT, &[b'a'; 60]));
    bytes.extend(frame(true, OP_CONTINUATION, &[b'a'; 41]));
    assert_eq!(
        feed_with(&mut Decoder::new(100), &[&bytes]).result,
        Err(WsError::MessageTooBig { limit: 100 })
    );
}

/// A mix of everything: 16-bit length, controls, fragments, a split UTF-8 character.
fn conversation() -> (Vec<u8>, Vec<u8>, Vec<Control>) {
    let long: Vec<u8> = (0..300u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut bytes = frame(true, OP_TEXT, &long);
    bytes.extend(frame(true, OP_PING, b"are you there"));
    bytes.extend(frame(false, OP_TEXT, &"x€".as_bytes()[..2]));
    bytes.extend(frame(true, OP_PONG, b""));
    bytes.extend(frame(true, OP_CONTINUATION, &"x€".as_bytes()[2..]));
    bytes.extend(frame(true, OP_BINARY, &[0, 1, 2, 255]));
    bytes.extend(frame(true, OP_TEXT, b""));
    bytes.extend(close(1000, "done"));
    let mut data = long;
    data.extend_from_slice("x€".as_bytes());
    data.extend_from_slice(&[0, 1, 2, 255]);
    let reason = heapless::String::try_from("done").unwrap();
    let controls = vec![ping(b"are you there"), Control::Pong, Control::Close { code: Some(1000), reason }];
    (bytes, data, controls)
}

#[test]
fn several_frames_in_one_read() {
    let (bytes, data, controls) = conversation();
    let out = feed(&[&bytes]);
    assert_eq!(out, Outcome { data, controls, result: Ok(()) });
}

#[test]
fn split_at_every_byte_boundary_gives_the_same_result() {
    let (bytes, data, controls) = conversation();
    let expected = Outcome { data, controls, result: Ok(()) };
    for i in 0..=bytes.len() {
        let (a, b) = bytes.split_at(i);
        assert_eq!(feed(&[a, b]), expected, "split at {i}");
    }
    // Every byte on its own read: splits inside each header, length and mask key.
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(feed(&singles), expected);
}

#[test]
fn partial_payload_is_delivered_and_tail_is_kept() {
    let f = frame(true, OP_BINARY, b"abcdef");
    let mut dec = Decoder::new(100);
    let mut buf = b"old".to_vec();
    let mut data_len = 3;
    let mut none = |_: Control| panic!("no control expected");
    buf.extend_from_slice(&f[..6 + 4]); // header + "abcd"
    dec.decode(&mut buf, &mut data_len, &mut none).unwrap();
    assert_eq!((&buf[..], data_len, dec.in_message()), (&b"oldabcd"[..], 7, true));
    // Rest of the frame plus half of a ping header: the header fragment stays as the tail.
    buf.extend_from_slice(&f[10..]);
    buf.extend_from_slice(&frame(true, OP_PING, b"x")[..3]);
    dec.decode(&mut buf, &mut data_len, &mut none).unwrap();
    assert_eq!((&buf[..data_len], buf.len()), (&b"oldabcdef"[..], 12));
    assert!(!dec.in_message());
}

#[test]
fn arbitrary_junk_does_not_panic() {
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..2000 {
        let mut bytes = Vec::new();
        for _ in 0..(seed % 40) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bytes.push(seed as u8 | if seed & 0x300 == 0 { 0x80 } else { 0 });
        }
        let _ = feed(&[&bytes]);
    }
}

#[test]
fn decoder_state_is_small() {
    // An idle connection pays for this struct; keep it well under a cache line or two.
    assert!(std::mem::size_of::<Decoder>() <= 64, "{}", std::mem::size_of::<Decoder>());
}

#[test]
fn error_leaves_only_the_decoded_data() {
    let mut bytes = frame(true, OP_BINARY, b"good");
    bytes.extend(frame(true, OP_TEXT, &[b'x', 0xFF, b'y']));
    let (mut buf, mut data_len) = (bytes, 0);
    let result = Decoder::new(100).decode(&mut buf, &mut data_len, &mut |_| {});
    assert_eq!(result, Err(WsError::InvalidUtf8));
    assert_eq!((&buf[..], data_len), (&b"good"[..], 4));
}
