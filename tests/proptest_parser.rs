//! Property tests of the STOMP codec through its public API: arbitrary bytes never make `parse`
//! panic or over-consume, and any frame written by `FrameWriter` parses back to the same command,
//! headers and body however the bytes are split into reads. Case counts keep it under a few seconds.

use proptest::prelude::*;
use stomp_edge::protocol::*;

const VERSIONS: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];

fn small_limits() -> impl Strategy<Value = Limits> {
    (0usize..300, 0usize..10, 0usize..40).prop_map(|(f, h, l)| Limits {
        max_frame_bytes: f,
        max_headers: h,
        max_header_line_bytes: l,
    })
}

/// Bytes that look like STOMP often enough to reach deep into the parser.
fn stompish() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"SEND\n".to_vec()),
        Just(b"CONNECT\r\n".to_vec()),
        Just(b"content-length:".to_vec()),
        Just(b"a:b".to_vec()),
        Just(b"\\".to_vec()),
        Just(b":".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\0".to_vec()),
        (0u32..500).prop_map(|n| n.to_string().into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

/// Drains `buf` the way a connection does; asserts every step consumes within bounds.
fn drain(mut buf: &[u8], version: Version, limits: &Limits) {
    loop {
        match parse(buf, version, limits) {
            Ok(Some((_, n))) => {
                assert!(n > 0 && n <= buf.len(), "n = {n}, len = {}", buf.len());
                buf = &buf[n..];
            }
            Ok(None) | Err(_) => return,
        }
    }
}

/// Characters a header may carry in the escaping mode of `command` under `version`, i.e. those
/// that `FrameWriter` writes without loss.
fn representable(c: char, command: Command, version: Version, is_name: bool) -> bool {
    match c {
        '\0' => false,
        '\r' => command.escapes_headers(version) && version == Version::V1_2,
        '\n' => command.escapes_headers(version),
        ':' => !is_name || command.escapes_headers(version),
        _ => true,
    }
}

fn text() -> impl Strategy<Value = String> {
    let c = prop_oneof![
        Just(':'),
        Just('\\'),
        Just('\n'),
        Just('\r'),
        Just('c'),
        Just('n'),
        Just('\0'),
        any::<char>(),
    ];
    proptest::collection::vec(c, 0..12).prop_map(|v| v.into_iter().collect())
}

#[derive(Debug, Clone)]
struct Case {
    command: Command,
    version: Version,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::sample::select(Command::ALL.to_vec()),
        proptest::sample::select(VERSIONS.to_vec()),
        proptest::collection::vec((text(), text()), 0..8),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(command, version, headers, body)| {
            let keep = |s: &str, is_name| {
                s.chars().filter(|&c| representable(c, command, version, is_name)).collect::<String>()
            };
            let headers = headers
                .iter()
                .map(|(n, v)| (keep(n, true), keep(v, false)))
                .filter(|(n, _)| !n.is_empty() && n != "content-length")
                .collect();
            Case { command, version, headers, body }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        limits in small_limits(),
        v in 0usize..3,
    ) {
        drain(&bytes, VERSIONS[v], &limits);
    }

    #[test]
    fn stompish_bytes_never_panic(bytes in stompish(), limits in small_limits(), v in 0usize..3) {
        drain(&bytes, VERSIONS[v], &limits);
        drain(&bytes, VERSIONS[v], &Limits::default());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn frames_round_trip_in_any_split(
        case in case(),
        splits in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
        leading_beat in any::<bool>(),
    ) {
        let mut wire = if leading_beat { HEARTBEAT.to_vec() } else { Vec::new() };
        let mut w = FrameWriter::new(&mut wire, case.command, case.version);
        for (n, v) in &case.headers {
            w.header(n, v);
        }
        w.body(&case.body);

        let mut cuts: Vec<usize> = splits.iter().map(|i| i.index(wire.len())).collect();
        cuts.push(wire.len());
        cuts.sort_unstable();
        let limits = Limits { max_frame_bytes: 1 << 16, max_headers: 64, max_header_line_bytes: 1 << 12 };

        let mut start = 0; // bytes consumed so far
        let mut got = None;
        for cut in cuts {
            loop {
                let buf = &wire[start..cut];
                match parse(buf, case.version, &limits) {
                    Ok(None) => break,
                    Ok(Some((Parsed::HeartBeat, n))) => start += n,
                    Ok(Some((Parsed::Frame(f), n))) => {
                        prop_assert!(got.is_none(), "one frame only");
                        let headers: Vec<(String, String)> =
                            f.headers().map(|(n, v)| (n.into_owned(), v.into_owned())).collect();
                        got = Some((f.command, headers, f.body.to_vec()));
                        start += n;
                    }
                    Err(e) => prop_assert!(false, "{e} on {wire:?}"),
                }
            }
        }
        prop_assert_eq!(start, wire.len());
        let mut want_headers = case.headers.clone();
        if !case.body.is_empty() {
            want_headers.push(("content-length".into(), case.body.len().to_string()));
        }
        prop_assert_eq!(got, Some((case.command, want_headers, case.body)));
    }
}
