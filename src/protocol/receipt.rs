//! The `receipt` header of a frame the parser refused: STOMP 1.2 says an ERROR caused by a
//! frame carries that frame's `receipt-id`, and a client waiting on a receipt must learn why
//! it will never come. [`pending_receipt`] reads it from the refused frame's header block
//! without trusting the rest of the frame (the parser has just said it is broken).

use super::error::Limits;
use super::frame::{unescape, Command, Version};

/// The value of the first `receipt` header of the (possibly broken or unfinished) frame at
/// the front of `buf`, unescaped as the frame's command and `version` call for; `None` when
/// there is none in the header lines already received.
///
/// Bounded: looks at most at `max_headers` lines of at most `max_header_line_bytes`, within
/// `max_frame_bytes`, and stops at the blank line, at a NUL or at the end of `buf`. Leading
/// heart-beat EOLs are skipped. Lines that are not `name:value` are passed over, so a bad
/// header before the receipt (the usual reason the frame was refused) does not hide it.
pub fn pending_receipt(buf: &[u8], version: Version, limits: &Limits) -> Option<String> {
    let start = buf.iter().position(|&b| b != b'\n' && b != b'\r')?;
    let reach = buf.len().min(start.saturating_add(limits.max_frame_bytes));
    let frame = buf.get(start..reach)?;
    // A NUL ends the frame, header block or not.
    let frame = frame.split(|&b| b == 0).next().unwrap_or_default();
    let mut lines = frame.split(|&b| b == b'\n');
    let command = Command::from_bytes(strip_cr(lines.next()?));
    // An unknown command is answered in the negotiated version's manner.
    let escaped = command.is_none_or(|c| c.escapes_headers(version));
    let line_limit = limits.max_header_line_bytes;
    for line in lines.take(limits.max_headers.max(1)) {
        let line = strip_cr(line);
        if line.is_empty() {
            return None; // the blank line: the header block ended without a receipt
        }
        let Some(value) = line.strip_prefix(b"receipt:") else { continue };
        if line.len() > line_limit {
            return None;
        }
        let value = String::from_utf8_lossy(value);
        return Some(if escaped { unescape(&value).into_owned() } else { value.into_owned() });
    }
    None
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(buf: &[u8]) -> Option<String> {
        pending_receipt(buf, Version::V1_2, &Limits::default())
    }

    #[test]
    fn found_before_and_after_the_bad_line() {
        assert_eq!(receipt(b"SEND\nreceipt:R2\ndestination:/topic/a\nx:a\\tb\n\nx\0").as_deref(), Some("R2"));
        assert_eq!(receipt(b"SEND\nno colon here\nreceipt:R3\n\n\0").as_deref(), Some("R3"));
        assert_eq!(
            receipt(b"\r\n\nSEND\r\ncontent-length:abc\r\nreceipt:R4\r\n\r\n\0").as_deref(),
            Some("R4")
        );
        // Unfinished frames too (a large frame still arriving).
        assert_eq!(receipt(b"SEND\ncontent-length:999999\nreceipt:R5\n\nabc").as_deref(), Some("R5"));
        assert_eq!(receipt(b"SEND\nreceipt:R6").as_deref(), Some("R6"));
    }

    #[test]
    fn first_wins_unescaped_and_only_in_the_header_block() {
        assert_eq!(receipt(b"SEND\nreceipt:a\\cb\nreceipt:2\n\n\0").as_deref(), Some("a:b"));
        assert_eq!(
            pending_receipt(b"SEND\nreceipt:a\\cb\n\n\0", Version::V1_0, &Limits::default()).as_deref(),
            Some("a\\cb")
        );
        assert_eq!(receipt(b"CONNECT\nreceipt:a\\cb\n\n\0").as_deref(), Some("a\\cb"));
        assert_eq!(receipt(b"SEND\nx:1\n\nreceipt:body\n\0"), None);
        assert_eq!(receipt(b"SEND\nx:1\0receipt:r\n\n\0"), None);
        assert_eq!(receipt(b"SEND\nreceipts:1\n\n\0"), None);
        assert_eq!(receipt(b""), None);
        assert_eq!(receipt(b"\n\n"), None);
    }

    #[test]
    fn bounded_by_the_limits() {
        let limits = Limits { max_frame_bytes: 64, max_headers: 2, max_header_line_bytes: 16 };
        let v = Version::V1_2;
        assert_eq!(pending_receipt(b"SEND\na:1\nb:2\nreceipt:r\n\n\0", v, &limits), None);
        assert_eq!(pending_receipt(b"SEND\na:1\nreceipt:r\n\n\0", v, &limits).as_deref(), Some("r"));
        assert_eq!(pending_receipt(b"SEND\nreceipt:0123456789abcdef\n\n\0", v, &limits), None);
        let far = [&b"SEND\n"[..], &[b'x'; 70], b"\nreceipt:r\n\n\0"].concat();
        assert_eq!(pending_receipt(&far, v, &Limits { max_header_line_bytes: 100, ..limits }), None);
    }
}
