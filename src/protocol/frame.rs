//! The vocabulary shared by the parser and the encoder: the protocol [`Version`], the [`Command`]
//! set and the zero-copy [`Frame`] that borrows its headers and body from the connection's read
//! buffer. Header text stays raw until asked for, so a frame allocates only for escaped headers.

use std::borrow::Cow;
use std::fmt;

/// Compile-time capacity of a frame's header list; `Limits::max_headers` is capped at this.
pub const MAX_HEADERS_CAP: usize = 64;

/// A STOMP protocol version; ordered so that `max` picks the newest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V1_0,
    V1_1,
    V1_2,
}

impl Version {
    /// The version as written in `accept-version` / `version` headers, e.g. `"1.2"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// Parses one exact version string (`"1.0"`, `"1.1"` or `"1.2"`).
    pub fn parse(s: &str) -> Option<Version> {
        match s {
            "1.0" => Some(Version::V1_0),
            "1.1" => Some(Version::V1_1),
            "1.2" => Some(Version::V1_2),
            _ => None,
        }
    }

    /// The highest supported version in a comma list such as `"1.1,1.0"`; `None` if none is.
    pub fn parse_list(accept_version: &str) -> Option<Version> {
        accept_version.split(',').filter_map(|v| Version::parse(v.trim())).max()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every STOMP command, client and server side alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    Connect,
    Stomp,
    Connected,
    Send,
    Subscribe,
    Unsubscribe,
    Ack,
    Nack,
    Begin,
    Commit,
    Abort,
    Disconnect,
    Message,
    Receipt,
    Error,
}

impl Command {
    /// All commands, for lookups and tests.
    pub const ALL: [Command; 15] = [
        Command::Connect,
        Command::Stomp,
        Command::Connected,
        Command::Send,
        Command::Subscribe,
        Command::Unsubscribe,
        Command::Ack,
        Command::Nack,
        Command::Begin,
        Command::Commit,
        Command::Abort,
        Command::Disconnect,
        Command::Message,
        Command::Receipt,
        Command::Error,
    ];

    /// The command line as sent on the wire (upper case).
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Connected => "CONNECTED",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    /// Looks a command line up; case-sensitive, no surrounding whitespace allowed.
    pub fn from_bytes(line: &[u8]) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.as_str().as_bytes() == line)
    }

    /// Whether header names and values of this command are escaped in `version`: never in 1.0,
    /// and never for CONNECT, STOMP and CONNECTED (the spec exempts the handshake frames).
    pub fn escapes_headers(self, version: Version) -> bool {
        version != Version::V1_0 && !matches!(self, Command::Connect | Command::Stomp | Command::Connected)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One header as byte offsets into [`Frame::head`]: `name = head[start..colon]`,
/// `value = head[colon + 1..end]`. Offsets keep a full header list at 12 bytes per entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawHeader {
    pub(crate) start: u32,
    pub(crate) colon: u32,
    pub(crate) end: u32,
}

/// The parser's fixed-capacity header list (`u8` length: the capacity is 64).
pub(crate) type HeaderList = heapless::Vec<RawHeader, MAX_HEADERS_CAP, u8>;

/// A frame borrowed from the read buffer: zero-copy, valid until the buffer is advanced.
#[derive(Clone)]
pub struct Frame<'a> {
    pub command: Command,
    pub body: &'a [u8],
    /// The header block (validated UTF-8) that the header offsets point into.
    head: &'a str,
    /// Raw header positions in wire order, repeats included; bounded by `MAX_HEADERS_CAP`.
    headers: HeaderList,
    /// Whether the raw text is escaped (decided by command and negotiated version at parse time).
    escaped: bool,
}

impl<'a> Frame<'a> {
    /// Assembles a frame; the parser guarantees the offsets are in bounds of `head` and on
    /// character boundaries, and that escapes are valid when `escaped` is set.
    pub(crate) fn new(
        command: Command,
        head: &'a str,
        headers: HeaderList,
        body: &'a [u8],
        escaped: bool,
    ) -> Frame<'a> {
        Frame { command, body, head, headers, escaped }
    }

    /// The value of the first header called `name` (STOMP 1.2: the first occurrence wins),
    /// unescaped. Allocates only if the raw value contained an escape.
    pub fn header(&self, name: &str) -> Option<Cow<'a, str>> {
        self.headers.iter().find_map(|h| {
            let (raw_name, raw_value) = self.raw(h);
            let matches = if self.escaped && raw_name.contains('\\') {
                unescape(raw_name) == name
            } else {
                raw_name == name
            };
            matches.then(|| self.unescaped(raw_value))
        })
    }

    /// All headers in wire order, repeats included, unescaped.
    pub fn headers(&self) -> impl Iterator<Item = (Cow<'a, str>, Cow<'a, str>)> + '_ {
        self.headers.iter().map(|h| {
            let (name, value) = self.raw(h);
            (self.unescaped(name), self.unescaped(value))
        })
    }

    /// Number of header lines, repeats included.
    pub fn header_count(&self) -> usize {
        self.headers.len()
    }

    fn raw(&self, h: &RawHeader) -> (&'a str, &'a str) {
        let head: &'a str = self.head;
        let name = head.get(h.start as usize..h.colon as usize).unwrap_or("");
        let value = head.get((h.colon as usize).saturating_add(1)..h.end as usize).unwrap_or("");
        (name, value)
    }

    fn unescaped(&self, raw: &'a str) -> Cow<'a, str> {
        if self.escaped {
            unescape(raw)
        } else {
            Cow::Borrowed(raw)
        }
    }
}

impl fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("command", &self.command)
            .field("headers", &self.headers().collect::<Vec<_>>())
            .field("body", &String::from_utf8_lossy(self.body))
            .finish()
    }
}

/// One item read from the front of the buffer.
// A frame is ~800 bytes of stack (64 header slots); boxing it would cost an allocation per
// frame, which is what the fixed-capacity list is there to avoid.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Parsed<'a> {
    /// One or more EOLs between frames (a heart-beat from the peer).
    HeartBeat,
    Frame(Frame<'a>),
}

/// Undoes STOMP header escaping (`\r`, `\n`, `\c`, `\\`); borrows when there is nothing to undo.
/// The parser has already rejected other escapes; should one slip through it is kept verbatim.
pub(crate) fn unescape(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('c') => out.push(':'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse, Limits};

    fn frame(input: &[u8], version: Version) -> Frame<'_> {
        match parse(input, version, &Limits::default()) {
            Ok(Some((Parsed::Frame(f), _))) => f,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[test]
    fn version_strings() {
        assert_eq!(Version::V1_0.as_str(), "1.0");
        assert_eq!(Version::V1_1.as_str(), "1.1");
        assert_eq!(Version::V1_2.to_string(), "1.2");
        assert_eq!(Version::parse("1.1"), Some(Version::V1_1));
        assert_eq!(Version::parse("1.3"), None);
    }

    #[test]
    fn version_parse_list_picks_highest_supported() {
        assert_eq!(Version::parse_list("1.1,1.0"), Some(Version::V1_1));
        assert_eq!(Version::parse_list("1.0,1.2,1.1"), Some(Version::V1_2));
        assert_eq!(Version::parse_list(" 1.0 , 1.1 "), Some(Version::V1_1));
        assert_eq!(Version::parse_list("1.0,2.0"), Some(Version::V1_0));
        assert_eq!(Version::parse_list("2.0,0.9"), None);
        assert_eq!(Version::parse_list(""), None);
    }

    #[test]
    fn command_round_trips_through_its_name() {
        for c in Command::ALL {
            assert_eq!(Command::from_bytes(c.as_str().as_bytes()), Some(c));
        }
        assert_eq!(Command::from_bytes(b"send"), None);
        assert_eq!(Command::from_bytes(b"SEND "), None);
        assert_eq!(Command::from_bytes(b""), None);
    }

    #[test]
    fn handshake_frames_are_never_escaped() {
        for v in [Version::V1_0, Version::V1_1, Version::V1_2] {
            assert!(!Command::Connect.escapes_headers(v));
            assert!(!Command::Stomp.escapes_headers(v));
            assert!(!Command::Connected.escapes_headers(v));
        }
        assert!(!Command::Send.escapes_headers(Version::V1_0));
        assert!(Command::Send.escapes_headers(Version::V1_1));
        assert!(Command::Message.escapes_headers(Version::V1_2));
    }

    #[test]
    fn unescape_borrows_without_backslash() {
        assert!(matches!(unescape("plain:text"), Cow::Borrowed("plain:text")));
        let owned = unescape(r"a\cb\nc\rd\\e");
        assert!(matches!(owned, Cow::Owned(_)));
        assert_eq!(owned, "a:b\nc\rd\\e");
        assert_eq!(unescape(r"tail\"), "tail\\");
    }

    #[test]
    fn first_header_wins_and_all_are_kept() {
        let f = frame(b"SEND\nfoo:1\nbar:x\nfoo:2\n\n\0", Version::V1_2);
        assert_eq!(f.header("foo").as_deref(), Some("1"));
        assert_eq!(f.header("bar").as_deref(), Some("x"));
        assert_eq!(f.header("baz"), None);
        assert_eq!(f.header("FOO"), None, "header names are case-sensitive");
        assert_eq!(f.header_count(), 3);
        let all: Vec<_> = f.headers().collect();
        assert_eq!(
            all,
            vec![("foo".into(), "1".into()), ("bar".into(), "x".into()), ("foo".into(), "2".into())]
        );
    }

    #[test]
    fn header_values_borrow_unless_escaped() {
        let f = frame(b"SEND\na:plain\nb:x\\cy\n\n\0", Version::V1_2);
        assert!(matches!(f.header("a"), Some(Cow::Borrowed("plain"))));
        assert!(matches!(f.header("b"), Some(Cow::Owned(ref s)) if s == "x:y"));
    }

    #[test]
    fn escaped_header_names_are_looked_up_unescaped() {
        let f = frame(b"SEND\nkey\\cwith\\ncolon:v\n\n\0", Version::V1_2);
        assert_eq!(f.header("key:with\ncolon").as_deref(), Some("v"));
        assert_eq!(f.header("key\\cwith\\ncolon"), None);
    }

    #[test]
    fn raw_text_is_kept_in_1_0_and_connect() {
        let f = frame(b"SEND\na:x\\cy\n\n\0", Version::V1_0);
        assert_eq!(f.header("a").as_deref(), Some("x\\cy"));
        let f = frame(b"CONNECT\npasscode:p\\cw\n\n\0", Version::V1_2);
        assert_eq!(f.header("passcode").as_deref(), Some("p\\cw"));
    }

    #[test]
    fn debug_shows_headers_and_body() {
        let f = frame(b"SEND\na:b\n\nhi\0", Version::V1_2);
        let s = format!("{f:?}");
        assert!(s.contains("Send") && s.contains("\"a\"") && s.contains("hi"), "{s}");
    }
}
