//! The STOMP encoder: [`FrameWriter`] appends one frame to an output buffer, escaping header
//! names and values as the negotiated version requires. Used for every outgoing frame (CONNECTED,
//! MESSAGE, RECEIPT, ERROR), so it writes straight into the caller's `Vec` without temporaries.

use super::frame::{Command, Version};

/// A heart-beat as sent between frames: one EOL.
pub const HEARTBEAT: &[u8] = b"\n";

/// How header text is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escaping {
    /// 1.0 and the handshake frames: no escapes exist, so CR and LF become spaces (and `:` in a
    /// name becomes `_`) rather than corrupting the frame.
    Raw,
    /// 1.1: `\n`, `\c`, `\\` (a CR is written as is).
    V11,
    /// 1.2: `\r`, `\n`, `\c`, `\\`.
    V12,
}

/// Writes one frame: command, headers, blank line, body, NUL.
///
/// Header names and values are escaped per version (1.2: `\r \n \c \\`; 1.1: `\n \c \\`;
/// 1.0: none), except that CONNECT, STOMP and CONNECTED frames are never escaped. A NUL in a
/// header cannot be represented in any version and is written as a space.
pub struct FrameWriter<'b> {
    /// The connection's output buffer; the frame is appended to it.
    out: &'b mut Vec<u8>,
    escaping: Escaping,
    /// Set once the caller wrote `content-length` itself, so `body` does not add a second one.
    has_content_length: bool,
}

impl<'b> FrameWriter<'b> {
    /// Starts a frame by writing its command line.
    pub fn new(out: &'b mut Vec<u8>, command: Command, version: Version) -> Self {
        out.extend_from_slice(command.as_str().as_bytes());
        out.push(b'\n');
        let escaping = if !command.escapes_headers(version) {
            Escaping::Raw
        } else if version == Version::V1_1 {
            Escaping::V11
        } else {
            Escaping::V12
        };
        FrameWriter { out, escaping, has_content_length: false }
    }

    /// Adds one header line. A `content-length` given here must match the body.
    pub fn header(&mut self, name: &str, value: &str) -> &mut Self {
        if name == "content-length" {
            self.has_content_length = true;
        }
        write_text(self.out, name, self.escaping, true);
        self.out.push(b':');
        write_text(self.out, value, self.escaping, false);
        self.out.push(b'\n');
        self
    }

    /// Finishes the frame: `content-length` when the body is non-empty (unless already given),
    /// the blank line, the body and the NUL.
    pub fn body(self, body: &[u8]) {
        if !body.is_empty() && !self.has_content_length {
            self.out.extend_from_slice(b"content-length:");
            write_decimal(self.out, body.len());
            self.out.push(b'\n');
        }
        self.out.push(b'\n');
        self.out.extend_from_slice(body);
        self.out.push(0);
    }
}

/// Whether `b` needs more than a plain copy.
fn is_special(b: u8, escaping: Escaping, is_name: bool) -> bool {
    match escaping {
        Escaping::Raw => matches!(b, 0 | b'\r' | b'\n') || (is_name && b == b':'),
        Escaping::V11 => matches!(b, 0 | b'\n' | b':' | b'\\'),
        Escaping::V12 => matches!(b, 0 | b'\r' | b'\n' | b':' | b'\\'),
    }
}

fn write_text(out: &mut Vec<u8>, text: &str, escaping: Escaping, is_name: bool) {
    let bytes = text.as_bytes();
    if !bytes.iter().any(|&b| is_special(b, escaping, is_name)) {
        out.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        if !is_special(b, escaping, is_name) {
            out.push(b);
            continue;
        }
        match (escaping, b) {
            (Escaping::Raw, b':') => out.push(b'_'),
            (_, 0) | (Escaping::Raw, _) => out.push(b' '),
            (_, b'\r') => out.extend_from_slice(b"\\r"),
            (_, b'\n') => out.extend_from_slice(b"\\n"),
            (_, b':') => out.extend_from_slice(b"\\c"),
            _ => out.extend_from_slice(b"\\\\"),
        }
    }
}

fn write_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(i..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse, Limits, Parsed};

    fn encode(command: Command, version: Version, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = FrameWriter::new(&mut out, command, version);
        for (n, v) in headers {
            w.header(n, v);
        }
        w.body(body);
        out
    }

    fn headers_back(bytes: &[u8], version: Version) -> Vec<(String, String)> {
        match parse(bytes, version, &Limits::default()) {
            Ok(Some((Parsed::Frame(f), n))) => {
                assert_eq!(n, bytes.len());
                f.headers().map(|(n, v)| (n.into_owned(), v.into_owned())).collect()
            }
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[test]
    fn writes_the_wire_format() {
        let out = encode(Command::Message, Version::V1_2, &[("destination", "/topic/a")], b"hi");
        assert_eq!(out, b"MESSAGE\ndestination:/topic/a\ncontent-length:2\n\nhi\0");
        let out = encode(Command::Receipt, Version::V1_2, &[("receipt-id", "7")], b"");
        assert_eq!(out, b"RECEIPT\nreceipt-id:7\n\n\0");
    }

    #[test]
    fn appends_to_existing_output() {
        let mut out = b"\n".to_vec();
        FrameWriter::new(&mut out, Command::Error, Version::V1_0).body(b"");
        assert_eq!(out, b"\nERROR\n\n\0");
    }

    #[test]
    fn explicit_content_length_is_not_duplicated() {
        let out = encode(Command::Send, Version::V1_2, &[("content-length", "3")], b"a\0b");
        assert_eq!(out, b"SEND\ncontent-length:3\n\na\0b\0");
    }

    #[test]
    fn decimal_formatting() {
        for n in [0usize, 7, 10, 12345, usize::MAX] {
            let mut out = Vec::new();
            write_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn escapes_per_version() {
        let h = [("k:\\", "a:b\nc\rd\\e")];
        let out = encode(Command::Message, Version::V1_2, &h, b"");
        assert_eq!(out, b"MESSAGE\nk\\c\\\\:a\\cb\\nc\\rd\\\\e\n\n\0");
        let out = encode(Command::Message, Version::V1_1, &h, b"");
        assert_eq!(out, b"MESSAGE\nk\\c\\\\:a\\cb\\nc\rd\\\\e\n\n\0");
        let out = encode(Command::Message, Version::V1_0, &h, b"");
        assert_eq!(out, b"MESSAGE\nk_\\:a:b c d\\e\n\n\0");
    }

    #[test]
    fn handshake_frames_are_not_escaped() {
        let out = encode(Command::Connected, Version::V1_2, &[("server", "edge:1\\x")], b"");
        assert_eq!(out, b"CONNECTED\nserver:edge:1\\x\n\n\0");
        let out = encode(Command::Connect, Version::V1_2, &[("login", "a\nb")], b"");
        assert_eq!(out, b"CONNECT\nlogin:a b\n\n\0", "no header injection");
    }

    #[test]
    fn nul_in_header_becomes_space() {
        let out = encode(Command::Message, Version::V1_2, &[("a", "x\0y")], b"");
        assert_eq!(out, b"MESSAGE\na:x y\n\n\0");
    }

    #[test]
    fn round_trips_through_the_parser() {
        let tricky = "a:b\\c\nd\re\\\\n\\c:";
        let h = [(tricky, tricky), ("plain", "v")];
        let want: Vec<_> = h.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        let out = encode(Command::Message, Version::V1_2, &h, b"");
        assert_eq!(headers_back(&out, Version::V1_2), want);
        let no_cr = "a:b\\c\nd\\\\n\\c:";
        let out = encode(Command::Send, Version::V1_1, &[(no_cr, no_cr)], b"x");
        let back = headers_back(&out, Version::V1_1);
        assert_eq!(back[0], (no_cr.to_string(), no_cr.to_string()));
        assert_eq!(back[1], ("content-length".to_string(), "1".to_string()));
    }

    #[test]
    fn raw_frames_keep_their_header_count() {
        let out = encode(Command::Connected, Version::V1_2, &[("a:\r\n", "b\r\n:c")], b"");
        assert_eq!(headers_back(&out, Version::V1_2), [("a_  ".into(), "b  :c".into())]);
    }
}
