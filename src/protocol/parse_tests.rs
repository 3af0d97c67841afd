//! Unit tests of the parser (kept in their own file so `parse.rs` stays short): every grammar
//! rule, every limit, escapes per version, and frames split at every byte or batched together.

use super::*;
use crate::protocol::Frame;
use Version::{V1_0, V1_1, V1_2};

fn lim() -> Limits {
    Limits { max_frame_bytes: 256, max_headers: 4, max_header_line_bytes: 32 }
}

fn run(input: &[u8], version: Version) -> Result<Option<(Parsed<'_>, usize)>, ParseError> {
    parse(input, version, &lim())
}

/// The frame at the front of `input`, asserting it is whole.
fn frame(input: &[u8], version: Version) -> (Frame<'_>, usize) {
    match run(input, version) {
        Ok(Some((Parsed::Frame(f), n))) => (f, n),
        other => panic!("expected a frame from {input:?}, got {other:?}"),
    }
}

fn err(input: &[u8], version: Version) -> ParseError {
    match run(input, version) {
        Err(e) => e,
        other => panic!("expected an error from {input:?}, got {other:?}"),
    }
}

fn incomplete(input: &[u8]) -> bool {
    matches!(run(input, V1_2), Ok(None))
}

fn value(f: &Frame<'_>, name: &str) -> Option<String> {
    f.header(name).map(|v| v.into_owned())
}

#[test]
fn empty_input_is_incomplete() {
    assert!(incomplete(b""));
}

#[test]
fn leading_eols_are_one_heart_beat() {
    for (input, n) in [(&b"\n"[..], 1), (b"\r\n", 2), (b"\n\r\n\n", 4), (b"\n\nSEND\n\n\0", 2), (b"\n\r", 1)]
    {
        assert!(matches!(run(input, V1_2), Ok(Some((Parsed::HeartBeat, m))) if m == n), "{input:?}");
    }
    assert!(incomplete(b"\r"), "a lone CR may be half a CRLF");
}

#[test]
fn minimal_frames() {
    let (f, n) = frame(b"DISCONNECT\n\n\0", V1_2);
    assert_eq!((f.command, n, f.body, f.header_count()), (Command::Disconnect, 13, &b""[..], 0));
    let (f, _) = frame(b"SEND\ndestination:/a\n\nhello\0", V1_2);
    assert_eq!(f.body, b"hello");
    assert_eq!(value(&f, "destination").as_deref(), Some("/a"));
}

#[test]
fn every_command_parses() {
    for c in Command::ALL {
        let input = format!("{}\n\n\0", c.as_str());
        assert_eq!(frame(input.as_bytes(), V1_2).0.command, c);
    }
}

#[test]
fn unknown_commands() {
    for input in [&b"send\n\n\0"[..], b"FOO\n\n\0", b"SEND \n\n\0", b" SEND\n"] {
        assert_eq!(err(input, V1_2), ParseError::UnknownCommand, "{input:?}");
    }
    assert_eq!(err(b"\rX", V1_2), ParseError::UnknownCommand);
    assert_eq!(err(b"SEND\r\r\n\n\0", V1_2), ParseError::UnknownCommand);
}

#[test]
fn unknown_commands_fail_before_an_eol_arrives() {
    assert_eq!(err(b"GET / HTTP/1.1", V1_2), ParseError::UnknownCommand);
    assert_eq!(err(b"SENX", V1_2), ParseError::UnknownCommand);
    assert_eq!(err(b"SEND\rX", V1_0), ParseError::UnknownCommand);
    assert_eq!(err(b"SENDX", V1_0), ParseError::UnknownCommand);
    assert_eq!(err(b"UNSUBSCRIBEXX", V1_2), ParseError::UnknownCommand);
    assert!(incomplete(b"SEN"));
    assert!(incomplete(b"UNSUBSCRIBE\r"));
    assert!(incomplete(b"CONNECT"), "could still be CONNECTED");
}

#[test]
fn crlf_and_lf_line_endings_in_every_version() {
    for v in [V1_0, V1_1, V1_2] {
        let input = b"SEND\r\ndestination:/a\r\nx:y\n\r\nbody\0";
        let (f, n) = frame(input, v);
        assert_eq!(n, input.len());
        assert_eq!(value(&f, "destination").as_deref(), Some("/a"));
        assert_eq!(value(&f, "x").as_deref(), Some("y"));
        assert_eq!(f.body, b"body");
    }
}

#[test]
fn values_split_at_the_first_colon() {
    let (f, _) = frame(b"SEND\nurl:http://x:80/a\nempty:\n\n\0", V1_2);
    assert_eq!(value(&f, "url").as_deref(), Some("http://x:80/a"));
    assert_eq!(value(&f, "empty").as_deref(), Some(""));
}

#[test]
fn malformed_headers() {
    assert_eq!(err(b"SEND\nnocolon\n\n\0", V1_2), ParseError::MalformedHeader);
    assert_eq!(err(b"SEND\n:value\n\n\0", V1_2), ParseError::MalformedHeader);
    assert_eq!(err(b"SEND\na:b\0", V1_2), ParseError::MalformedHeader);
    assert_eq!(err(b"SEND\n\0", V1_2), ParseError::MalformedHeader);
}

#[test]
fn escapes_in_1_2() {
    let (f, _) = frame(b"MESSAGE\nk\\c\\\\:a\\cb\\nc\\rd\\\\e\n\n\0", V1_2);
    assert_eq!(value(&f, "k:\\").as_deref(), Some("a:b\nc\rd\\e"));
}

#[test]
fn escapes_in_1_1_accept_cr_leniently() {
    let (f, _) = frame(b"SEND\na:x\\cy\\nz\\r\\\\\n\n\0", V1_1);
    assert_eq!(value(&f, "a").as_deref(), Some("x:y\nz\r\\"));
}

#[test]
fn invalid_escapes() {
    for v in [V1_1, V1_2] {
        for input in [&b"SEND\na:\\t\n\n\0"[..], b"SEND\na:x\\\n\n\0", b"SEND\n\\x:v\n\n\0"] {
            assert_eq!(err(input, v), ParseError::InvalidEscape, "{input:?} {v}");
        }
    }
}

#[test]
fn no_escapes_in_1_0() {
    let (f, _) = frame(b"SEND\na:\\t\\c\\\n\n\0", V1_0);
    assert_eq!(value(&f, "a").as_deref(), Some("\\t\\c\\"));
}

#[test]
fn handshake_frames_are_not_unescaped() {
    for cmd in ["CONNECT", "STOMP", "CONNECTED"] {
        for v in [V1_1, V1_2] {
            let input = format!("{cmd}\npasscode:a\\cb\\t\n\n\0");
            let (f, _) = frame(input.as_bytes(), v);
            assert_eq!(value(&f, "passcode").as_deref(), Some("a\\cb\\t"), "{cmd} {v}");
        }
    }
}

#[test]
fn headers_must_be_utf8() {
    assert_eq!(err(b"SEND\na:\xff\n\n\0", V1_2), ParseError::InvalidUtf8);
    assert_eq!(err(b"SEND\n\xc3:v\n\n\0", V1_0), ParseError::InvalidUtf8);
    let (f, _) = frame("SEND\nnom:Zoë 東京\n\n\0".as_bytes(), V1_2);
    assert_eq!(value(&f, "nom").as_deref(), Some("Zoë 東京"));
}

#[test]
fn body_is_not_checked_for_utf8() {
    let (f, _) = frame(b"SEND\n\n\xff\xfe\0", V1_2);
    assert_eq!(f.body, b"\xff\xfe");
}

#[test]
fn body_without_content_length_runs_to_the_first_nul() {
    let input = b"SEND\n\nab\0cd\0";
    let (f, n) = frame(input, V1_2);
    assert_eq!((f.body, n), (&b"ab"[..], 9));
}

#[test]
fn content_length_body_may_contain_nul() {
    let input = b"SEND\ncontent-length:5\n\na\0b\0c\0";
    let (f, n) = frame(input, V1_2);
    assert_eq!((f.body, n), (&b"a\0b\0c"[..], input.len()));
    let (f, _) = frame(b"SEND\ncontent-length:0\n\n\0", V1_2);
    assert_eq!(f.body, b"");
    let (f, _) = frame(b"SEND\ncontent-length: 2 \n\nab\0", V1_2);
    assert_eq!(f.body, b"ab", "surrounding spaces are tolerated");
}

#[test]
fn first_content_length_wins() {
    let (f, _) = frame(b"SEND\ncontent-length:1\ncontent-length:oops\n\nx\0", V1_2);
    assert_eq!(f.body, b"x");
}

#[test]
fn missing_nul_after_content_length_body() {
    assert!(incomplete(b"SEND\ncontent-length:2\n\nab"));
    assert_eq!(err(b"SEND\ncontent-length:2\n\nabc\0", V1_2), ParseError::MissingNul);
    assert_eq!(err(b"SEND\ncontent-length:0\n\nx", V1_2), ParseError::MissingNul);
}

#[test]
fn bad_content_length() {
    for cl in ["-1", "abc", "", "1 2", "+3", "0x10", "1.0", "99999999999999999999999999"] {
        let input = format!("SEND\ncontent-length:{cl}\n\n\0");
        let r = parse(input.as_bytes(), V1_2, &Limits::default());
        assert_eq!(r.err(), Some(ParseError::BadContentLength), "{cl:?}");
    }
}

#[test]
fn content_length_over_the_limit_fails_at_once() {
    let too_large = ParseError::FrameTooLarge { limit: 256 };
    // Before the blank line, before any body byte.
    assert_eq!(err(b"SEND\ncontent-length:257\n", V1_2), too_large);
    assert_eq!(err(b"SEND\ncontent-length:240\n\n", V1_2), too_large);
    assert_eq!(err(b"SEND\ncontent-length:231\n\n", V1_2), too_large);
    // 5 + 19 + 1 + 230 = 255 bytes before the NUL: exactly 256 with it.
    let mut input = b"SEND\ncontent-length:230\n\n".to_vec();
    assert!(incomplete(&input));
    input.extend_from_slice(&[b'x'; 230]);
    input.push(0);
    assert_eq!(frame(&input, V1_2).1, 256);
}

#[test]
fn too_many_headers() {
    let ok = b"SEND\na:1\nb:2\na:3\nd:4\n\n\0";
    assert_eq!(frame(ok, V1_2).0.header_count(), 4);
    let limit = ParseError::TooManyHeaders { limit: 4 };
    assert_eq!(err(b"SEND\na:1\nb:2\na:3\nd:4\ne:5\n\n\0", V1_2), limit);
    assert_eq!(err(b"SEND\na:1\nb:2\na:3\nd:4\ne:5\n", V1_2), limit, "early");
}

#[test]
fn header_limit_is_capped_by_capacity() {
    let limits = Limits { max_headers: 1000, max_frame_bytes: 4096, ..lim() };
    let mut input = b"SEND\n".to_vec();
    for i in 0..=MAX_HEADERS_CAP {
        input.extend_from_slice(format!("h{i}:v\n").as_bytes());
    }
    input.extend_from_slice(b"\n\0");
    let want = ParseError::TooManyHeaders { limit: MAX_HEADERS_CAP };
    assert_eq!(parse(&input, V1_2, &limits).err(), Some(want));
}

#[test]
fn header_line_length() {
    let line = format!("k:{}", "v".repeat(30)); // 32 bytes: the limit
    let ok = format!("SEND\n{line}\r\n\n\0");
    assert_eq!(frame(ok.as_bytes(), V1_2).0.header_count(), 1, "EOL is not counted");
    let too_long = ParseError::HeaderLineTooLong { limit: 32 };
    let bad = format!("SEND\n{line}v\n\n\0");
    assert_eq!(err(bad.as_bytes(), V1_2), too_long);
    assert!(incomplete(format!("SEND\n{line}\r").as_bytes()));
    assert_eq!(err(format!("SEND\n{line}v").as_bytes(), V1_2), too_long, "early");
    assert_eq!(err(format!("SEND\n{line}\rv").as_bytes(), V1_2), too_long, "early");
}

#[test]
fn frame_size_limit() {
    let mut input = b"SEND\n\n".to_vec();
    input.resize(255, b'x');
    assert!(incomplete(&input));
    input.push(0);
    assert_eq!(frame(&input, V1_2).1, 256, "exactly the limit");
    let too_large = ParseError::FrameTooLarge { limit: 256 };
    input.pop();
    input.push(b'x');
    assert_eq!(err(&input, V1_2), too_large, "early: a 257th byte is needed");
    input.push(0);
    assert_eq!(err(&input, V1_2), too_large);
}

#[test]
fn header_block_over_the_frame_limit() {
    let mut input = b"SEND\n".to_vec();
    while input.len() < 300 {
        input.extend_from_slice(b"k:vvvvvvvvvvvvvvvvvvvvvvvvvv\n");
    }
    let limits = Limits { max_headers: 64, ..lim() };
    let want = Some(ParseError::FrameTooLarge { limit: 256 });
    assert_eq!(parse(&input, V1_2, &limits).err(), want);
}

#[test]
fn trailing_eols_are_consumed_with_the_frame() {
    let input = b"SEND\n\n\0\n\r\n\nSEND";
    assert_eq!(frame(input, V1_2).1, 11);
    assert_eq!(frame(b"SEND\n\n\0\r", V1_2).1, 7, "half a CRLF is left");
}

/// Sample frames, each whole: (bytes, version).
fn samples() -> Vec<(Vec<u8>, Version)> {
    vec![
        (b"SEND\ndestination:/a\n\nhello\0".to_vec(), V1_2),
        (b"SEND\r\ncontent-length:3\r\n\r\na\0b\0\r\n".to_vec(), V1_2),
        (b"MESSAGE\nk\\c:v\\n\nsubscription:1\n\n\0\n".to_vec(), V1_1),
        (b"CONNECT\naccept-version:1.2\nhost:x\n\n\0".to_vec(), V1_0),
    ]
}

#[test]
fn split_at_every_byte_boundary() {
    for (input, v) in samples() {
        let nul = input.iter().rposition(|&b| b == 0).unwrap_or_default();
        for i in 0..=nul {
            let r = run(&input[..i], v);
            assert!(matches!(r, Ok(None)), "prefix {i} of {input:?}: {r:?}");
        }
        for i in nul + 1..=input.len() {
            let (f, n) = frame(&input[..i], v);
            let half_crlf = usize::from(input[i - 1] == b'\r');
            assert_eq!(n, i - half_crlf, "frame and the EOLs seen so far");
            let (whole, _) = frame(&input, v);
            assert_eq!(format!("{f:?}"), format!("{whole:?}"));
        }
    }
}

/// Feeds `stream` to a buffer `chunk` bytes at a time, draining everything parseable after
/// each chunk, as a connection does; returns the frames (as Debug text) and heart-beat count.
fn feed(stream: &[u8], chunk: usize) -> (Vec<String>, usize) {
    let mut buf = Vec::new();
    let (mut frames, mut beats) = (Vec::new(), 0);
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let n = match run(&buf, V1_2) {
                Ok(Some((Parsed::HeartBeat, n))) => {
                    beats += 1;
                    n
                }
                Ok(Some((Parsed::Frame(f), n))) => {
                    frames.push(format!("{f:?}"));
                    n
                }
                Ok(None) => break,
                Err(e) => panic!("chunk {chunk}: {e}"),
            };
            assert!(n > 0 && n <= buf.len());
            buf.drain(..n);
        }
    }
    assert!(buf.is_empty(), "chunk {chunk}: left over {buf:?}");
    (frames, beats)
}

#[test]
fn batched_frames_and_heart_beats_in_any_chunking() {
    let stream: &[u8] = b"\n\nSEND\ndestination:/a\n\none\0\nSEND\ncontent-length:1\n\n\0\0\r\n\
        SUBSCRIBE\r\nid:0\r\n\r\n\0";
    let (frames, beats) = feed(stream, stream.len());
    assert_eq!(frames.len(), 3);
    assert_eq!(beats, 1, "EOLs after a NUL belong to the frame");
    assert!(frames[0].contains("one") && frames[2].contains("Subscribe"), "{frames:?}");
    for chunk in 1..stream.len() {
        let (f, b) = feed(stream, chunk);
        assert_eq!(f, frames, "chunk {chunk}");
        assert!(b >= 1, "chunk {chunk}");
    }
}

#[test]
fn zero_copy_slices_point_into_the_buffer() {
    let input = b"SEND\na:b\n\nbody\0";
    let (f, _) = frame(input, V1_2);
    let range = input.as_ptr_range();
    assert!(range.contains(&f.body.as_ptr()));
    let a = f.header("a");
    assert!(matches!(a, Some(std::borrow::Cow::Borrowed(s)) if range.contains(&s.as_ptr())));
}

#[test]
fn helpers() {
    assert_eq!(eol_run(b"\r\n\n\rx"), 3);
    assert_eq!(strip_cr(b"a\r"), b"a");
    assert_eq!(strip_cr(b"a\r\r"), b"a\r");
    let max = usize::MAX.to_string();
    assert_eq!(parse_content_length(max.as_bytes()), Ok(usize::MAX));
    assert_eq!(check_escapes(b"a\\\\b\\c"), Ok(()));
}
