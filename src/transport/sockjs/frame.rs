//! SockJS framing (sockjs-protocol 0.3.3, as `sockjs-client` 1.x speaks it): the frames the
//! server writes (`o`, `h`, `a[...]`, `c[code,"reason"]`) with the extra JSON escapes SockJS
//! clients expect, and the decoding of what clients send (a JSON array of strings, or one JSON
//! string) straight into the STOMP byte stream. Decoding is two-phase like the STOMP parser: a
//! cheap [`message_end`] check finds one whole JSON value, then [`decode_message`] parses it.

use std::collections::VecDeque;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};

use crate::observability::metrics::METRICS;
use crate::transport::outbound::{FrameKind, OutFrame};

/// The open frame, first on every new session.
pub const OPEN: &[u8] = b"o";
/// The SockJS heart-beat frame (not a STOMP heart-beat: the client's SockJS layer eats it).
pub const HEARTBEAT: &[u8] = b"h";

/// `c[3000,"Go away!"]`: the server ended the session normally (Spring's `CloseStatus.GO_AWAY`).
pub const GO_AWAY: (u16, &str) = (3000, "Go away!");
/// Answer to a second receiving request while one is still open on the session.
pub const ANOTHER_CONNECTION: (u16, &str) = (2010, "Another connection still open");

/// What clients sent that is not a SockJS message; answered with "Broken JSON encoding.".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Broken;

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Broken JSON encoding.")
    }
}

/// A close frame, `c[code,"reason"]`.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut out = format!("c[{code},").into_bytes();
    push_json_string(&mut out, reason);
    out.push(b']');
    out
}

/// Characters SockJS servers escape as `\uXXXX` although JSON allows them raw: controls, the
/// invisible and line-breaking ranges browsers mangle in streamed text, and (as UTF-16
/// surrogate pairs) everything outside the Basic Multilingual Plane. The list is sockjs-node's
/// and Spring's.
fn needs_unicode_escape(c: char) -> bool {
    let c = c as u32;
    c < 0x20
        || (0x200c..=0x200f).contains(&c)
        || (0x2028..=0x202f).contains(&c)
        || (0x2060..=0x206f).contains(&c)
        || (0xfff0..=0xffff).contains(&c)
        || c > 0xffff
}

fn push_u_escape(out: &mut Vec<u8>, unit: u16) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[usize::from((unit >> shift) & 0xf)]);
    }
}

/// Appends `s` as a JSON string literal with SockJS's escapes.
pub fn push_json_string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0..=0x1f => b"",
                _ => {
                    i += 1;
                    continue;
                }
            };
            out.extend_from_slice(&bytes[start..i]);
            if escape.is_empty() {
                push_u_escape(out, u16::from(b));
            } else {
                out.extend_from_slice(escape);
            }
            i += 1;
            start = i;
            continue;
        }
        // `i` is on a character boundary: every earlier step moved by whole characters.
        let Some(c) = s[i..].chars().next() else { break };
        let len = c.len_utf8();
        if needs_unicode_escape(c) {
            out.extend_from_slice(&bytes[start..i]);
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                push_u_escape(out, *unit);
            }
            start = i + len;
        }
        i += len;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Writes one `a[...]` frame holding the STOMP frames at the front of `queue`, stopping before
/// a `Raw` frame (transport bytes, written by the caller as they are) and once `budget` bytes of
/// frames are in (one frame at least). Returns how many frames it took off the queue; `out` is
/// left empty when none of them could be written.
///
/// A frame that is not UTF-8 (a MESSAGE with a binary body) cannot travel in a SockJS string:
/// the client would decode other bytes than its `content-length` counts, and lose the frames
/// after it. Such a frame is taken but not written, and counted in
/// `messages_dropped_total{reason="sockjs_binary"}`; the frames around it go out exact.
pub fn write_messages(queue: &VecDeque<OutFrame>, budget: usize, out: &mut Vec<u8>) -> usize {
    let mut taken = 0;
    let mut written = 0;
    let mut bytes = 0;
    for frame in queue {
        if frame.kind == FrameKind::Raw || (written > 0 && bytes >= budget) {
            break;
        }
        taken += 1;
        let Ok(text) = std::str::from_utf8(&frame.bytes) else {
            METRICS.messages_dropped.inc("sockjs_binary");
            continue;
        };
        out.extend_from_slice(if written == 0 { b"a[" } else { b"," });
        push_json_string(out, text);
        bytes += frame.bytes.len();
        written += 1;
    }
    if written > 0 {
        out.push(b']');
    }
    taken
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Finds the end of the first JSON value in `buf` (after leading whitespace), which must be an
/// array or a string: `Ok(Some(end))` when it is complete, `Ok(None)` when more bytes are needed
/// (or `buf` is only whitespace). Strings and nesting are tracked; the grammar inside is left
/// to [`decode_message`].
pub fn message_end(buf: &[u8]) -> Result<Option<usize>, Broken> {
    let Some(start) = buf.iter().position(|b| !is_space(*b)) else { return Ok(None) };
    match buf[start] {
        b'[' | b'"' => {}
        _ => return Err(Broken),
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in buf.iter().enumerate().skip(start) {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                if depth == 0 {
                    return Ok(Some(i + 1));
                }
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                depth = depth.checked_sub(1).ok_or(Broken)?;
                if depth == 0 {
                    return Ok(Some(i + 1));
                }
            }
            _ => {}
        }
    }
    Ok(None)
}

/// Decodes one whole SockJS message, a JSON array of strings (`["a","b"]`) or one JSON string
/// (`"a"`), appending the strings' UTF-8 to `out`, which is the STOMP byte stream. On error
/// `out` may hold part of the message; the session is closed anyway.
pub fn decode_message(json: &[u8], out: &mut Vec<u8>) -> Result<(), Broken> {
    let mut de = serde_json::Deserializer::from_slice(json);
    Message(out).deserialize(&mut de).map_err(|_| Broken)?;
    de.end().map_err(|_| Broken)
}

/// Decodes the body of an `xhr_send`: a JSON array of strings only (a bare string is what
/// sockjs-node and Spring answer "Broken JSON encoding." to), appended to `out` like
/// [`decode_message`].
pub fn decode_array(json: &[u8], out: &mut Vec<u8>) -> Result<(), Broken> {
    if json.iter().find(|b| !is_space(**b)) != Some(&b'[') {
        return Err(Broken);
    }
    decode_message(json, out)
}

/// Decodes every whole message at the front of `buf` into `out`; returns the bytes consumed.
/// More than `max_pending` bytes of an unfinished message is an error.
pub fn decode_stream(buf: &[u8], out: &mut Vec<u8>, max_pending: usize) -> Result<usize, Broken> {
    let mut consumed = 0;
    while let Some(end) = message_end(&buf[consumed..])? {
        decode_message(&buf[consumed..consumed + end], out)?;
        consumed += end;
    }
    let rest = &buf[consumed..];
    if rest.iter().all(|b| is_space(*b)) {
        consumed = buf.len();
    } else if rest.len() > max_pending {
        return Err(Broken);
    }
    Ok(consumed)
}

/// Seed for one message: an array of strings or a string, appended to the buffer.
struct Message<'o>(&'o mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Message<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Message<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of strings or a JSON string")
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Str(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

/// Seed for one array element, which must be a string.
struct Str<'o>(&'o mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Str<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Str<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn json(s: &str) -> String {
        let mut out = Vec::new();
        push_json_string(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_json_with_sockjs_escapes() {
        assert_eq!(json("hi"), "\"hi\"");
        assert_eq!(json("SEND\ndestination:/a\n\n\"x\"\\\0"), r#""SEND\ndestination:/a\n\n\"x\"\\\u0000""#);
        assert_eq!(json("\r\t\u{1}"), r#""\r\t\u0001""#);
        // Raw UTF-8 where browsers cope, escapes where they do not.
        assert_eq!(json("héllo 日本"), "\"héllo 日本\"");
        assert_eq!(json("a\u{2028}b\u{200d}\u{fff9}"), r#""a\u2028b\u200d\ufff9""#);
        assert_eq!(json("😀"), r#""\ud83d\ude00""#);
        // The output is JSON that decodes back to the input.
        for s in ["", "x\0y\n", "日本\u{2028}😀\"\\", "\u{7f}\u{1f}"] {
            assert_eq!(serde_json::from_str::<String>(&json(s)).unwrap(), s);
        }
    }

    #[test]
    fn server_frames() {
        assert_eq!(close_frame(GO_AWAY.0, GO_AWAY.1), b"c[3000,\"Go away!\"]");
        assert_eq!(
            close_frame(ANOTHER_CONNECTION.0, ANOTHER_CONNECTION.1),
            b"c[2010,\"Another connection still open\"]"
        );
        let mut queue = VecDeque::new();
        queue.push_back(OutFrame::stomp(Bytes::from_static(b"MESSAGE\n\nhi\0")));
        queue.push_back(OutFrame::stomp(Bytes::from_static(b"\n")));
        queue.push_back(OutFrame { bytes: Bytes::from_static(b"\x8a\x00"), kind: FrameKind::Raw });
        queue.push_back(OutFrame::stomp(Bytes::from_static(b"\xff")));
        let mut out = Vec::new();
        assert_eq!(write_messages(&queue, 1 << 16, &mut out), 2);
        assert_eq!(out, br#"a["MESSAGE\n\nhi\u0000","\n"]"#);
        // A raw frame first: nothing written; a tiny budget still takes one frame.
        queue.pop_front();
        queue.pop_front();
        out.clear();
        assert_eq!(write_messages(&queue, 1, &mut out), 0);
        assert!(out.is_empty());
        queue.pop_front();
        // A binary frame is taken, not written, and counted; what follows it goes out.
        let dropped = METRICS.messages_dropped.get("sockjs_binary");
        assert_eq!(write_messages(&queue, 1, &mut out), 1);
        assert!(out.is_empty());
        assert_eq!(METRICS.messages_dropped.get("sockjs_binary"), dropped + 1);
        queue.push_back(OutFrame::stomp(Bytes::from_static(b"MESSAGE\ncontent-length:3\n\n\xe6\x97\xa5\0")));
        assert_eq!(write_messages(&queue, 1 << 16, &mut out), 2);
        assert_eq!(out, "a[\"MESSAGE\\ncontent-length:3\\n\\n日\\u0000\"]".as_bytes());
    }

    #[test]
    fn budget_splits_batches() {
        let queue: VecDeque<OutFrame> =
            (0..5).map(|_| OutFrame::stomp(Bytes::from_static(b"12345"))).collect();
        let mut out = Vec::new();
        assert_eq!(write_messages(&queue, 10, &mut out), 2);
        assert_eq!(out, br#"a["12345","12345"]"#);
    }

    #[test]
    fn message_boundaries() {
        assert_eq!(message_end(b""), Ok(None));
        assert_eq!(message_end(b"  \n"), Ok(None));
        assert_eq!(message_end(b"[\"a\"]"), Ok(Some(5)));
        assert_eq!(message_end(b" [\"a]\\\"\"]x"), Ok(Some(9)));
        assert_eq!(message_end(b"[\"a\""), Ok(None));
        assert_eq!(message_end(b"\"abc\"[]"), Ok(Some(5)));
        assert_eq!(message_end(b"\"a\\\""), Ok(None));
        assert_eq!(message_end(b"{}"), Err(Broken));
        assert_eq!(message_end(b"x"), Err(Broken));
        assert_eq!(message_end(b"[]]"), Ok(Some(2)));
    }

    #[test]
    fn decoding_arrays_and_bare_strings() {
        let mut out = Vec::new();
        decode_message(br#"["CONNECT\naccept-version:1.2\n\n\u0000","\n"]"#, &mut out).unwrap();
        assert_eq!(out, b"CONNECT\naccept-version:1.2\n\n\0\n");
        out.clear();
        decode_message(br#" "SEND\n\n\u00e9\ud83d\ude00\u0000" "#, &mut out).unwrap();
        assert_eq!(out, "SEND\n\né😀\0".as_bytes());
        out.clear();
        decode_array(br#" ["a","b"]"#, &mut out).unwrap();
        assert_eq!(out, b"ab");
        for bad in [&br#""SEND\n\n\u0000""#[..], b"1", b"", b" ", b"{}"] {
            assert_eq!(decode_array(bad, &mut Vec::new()), Err(Broken));
        }
        out.clear();
        decode_message(b"[]", &mut out).unwrap();
        assert!(out.is_empty());
        for bad in [
            &b"[1]"[..],
            b"[\"a\",]",
            b"{\"a\":1}",
            b"nul",
            b"[\"a\"",
            b"\"\\ud800\"",
            b"[\"a\"] x",
            b"[[\"a\"]]",
        ] {
            assert_eq!(decode_message(bad, &mut Vec::new()), Err(Broken), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn streams_of_messages_split_anywhere() {
        let input = br#"["CONNECT\n\n\u0000"] "SEND\n\nx\u0000"["\n","\n"]"#;
        for cut in 0..input.len() {
            let mut out = Vec::new();
            let mut pending = input[..cut].to_vec();
            let n = decode_stream(&pending, &mut out, 1 << 10).unwrap();
            pending.drain(..n);
            pending.extend_from_slice(&input[cut..]);
            let n = decode_stream(&pending, &mut out, 1 << 10).unwrap();
            assert_eq!(n, pending.len());
            assert_eq!(out, b"CONNECT\n\n\0SEND\n\nx\0\n\n", "cut at {cut}");
        }
        assert_eq!(decode_stream(b"[\"aaaaaaaa", &mut Vec::new(), 4), Err(Broken));
        assert_eq!(decode_stream(b"[\"a\"] !", &mut Vec::new(), 4), Err(Broken));
    }
}
