//! Property tests of the WebSocket decoder through the public API: arbitrary or corrupted bytes
//! never panic, and random messages, randomly masked, fragmented and split into reads, decode to
//! exactly their concatenated payloads.

use proptest::prelude::*;
use stomp_edge::transport::ws::*;

/// One message to send: text or binary, its payload, how to fragment it, the masking key seed,
/// and whether to slip a ping in after the first fragment.
#[derive(Debug, Clone)]
struct Message {
    text: bool,
    payload: Vec<u8>,
    fragment_sizes: Vec<usize>,
    key: [u8; 4],
    ping: bool,
}

fn message() -> impl Strategy<Value = Message> {
    let text = proptest::collection::vec(any::<char>(), 0..120)
        .prop_map(|chars| (true, String::from_iter(chars).into_bytes()));
    let binary = proptest::collection::vec(any::<u8>(), 0..400).prop_map(|bytes| (false, bytes));
    (prop_oneof![text, binary], proptest::collection::vec(0usize..150, 0..4), any::<[u8; 4]>(), any::<bool>())
        .prop_map(|((text, payload), fragment_sizes, key, ping)| Message {
            text,
            payload,
            fragment_sizes,
            key,
            ping,
        })
}

/// A masked client frame; `wide` uses the 64-bit length form even for short payloads.
fn client_frame(fin: bool, opcode: u8, payload: &[u8], key: [u8; 4], wide: bool) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 && !wide => out.push(0x80 | n as u8),
        n if n <= 0xFFFF && !wide => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key, 0);
    out
}

/// Encodes the messages as a client would; returns the wire bytes, the expected data stream
/// and the number of pings.
fn encode(messages: &[Message]) -> (Vec<u8>, Vec<u8>, usize) {
    let (mut wire, mut data, mut pings) = (Vec::new(), Vec::new(), 0);
    for m in messages {
        let mut rest = m.payload.as_slice();
        let mut opcode = if m.text { OP_TEXT } else { OP_BINARY };
        for (i, &size) in m.fragment_sizes.iter().enumerate() {
            let (piece, tail) = rest.split_at(size.min(rest.len()));
            let key = m.key.map(|b| b.wrapping_add(i as u8));
            wire.extend(client_frame(false, opcode, piece, key, size % 7 == 3));
            if i == 0 && m.ping {
                wire.extend(client_frame(true, OP_PING, b"hb", key, false));
                pings += 1;
            }
            opcode = OP_CONTINUATION;
            rest = tail;
        }
        wire.extend(client_frame(true, opcode, rest, m.key, false));
        data.extend_from_slice(&m.payload);
    }
    (wire, data, pings)
}

/// Feeds `wire` in reads of the given sizes (cycled); returns data, control count and result.
fn decode(wire: &[u8], reads: &[usize], limit: usize) -> (Vec<u8>, usize, Result<(), WsError>) {
    let mut decoder = Decoder::new(limit);
    let (mut buf, mut data_len, mut controls) = (Vec::new(), 0, 0);
    let mut rest = wire;
    let mut sizes = reads.iter().cycle();
    while !rest.is_empty() {
        let size = sizes.next().copied().unwrap_or(rest.len()).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        buf.extend_from_slice(chunk);
        let result = decoder.decode(&mut buf, &mut data_len, &mut |_| controls += 1);
        assert!(data_len <= buf.len());
        assert!(buf.len() - data_len <= 14 + 125, "undecoded tail is bounded");
        if result.is_err() {
            buf.truncate(data_len);
            return (buf, controls, result);
        }
    }
    buf.truncate(data_len);
    (buf, controls, Ok(()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn random_messages_decode_to_their_payloads(
        messages in proptest::collection::vec(message(), 0..8),
        reads in proptest::collection::vec(1usize..200, 1..16),
    ) {
        let (wire, expected, pings) = encode(&messages);
        let (data, controls, result) = decode(&wire, &reads, 1 << 20);
        prop_assert_eq!(result, Ok(()));
        prop_assert_eq!(controls, pings);
        prop_assert_eq!(data, expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        wire in proptest::collection::vec(any::<u8>(), 0..600),
        reads in proptest::collection::vec(1usize..64, 1..8),
        limit in 0usize..1000,
    ) {
        let _ = decode(&wire, &reads, limit);
    }

    #[test]
    fn corrupted_streams_never_panic(
        messages in proptest::collection::vec(message(), 1..4),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        reads in proptest::collection::vec(1usize..64, 1..8),
    ) {
        let (mut wire, _, _) = encode(&messages);
        for (index, xor) in flips {
            let i = index.index(wire.len());
            wire[i] ^= xor;
        }
        let _ = decode(&wire, &reads, 300);
    }
}
