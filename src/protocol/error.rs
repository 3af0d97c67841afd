//! What the parser refuses and how far it goes: the [`Limits`] a connection enforces on incoming
//! frames and the [`ParseError`] returned when a frame breaks them or the STOMP grammar. Every
//! parse error is fatal to the connection: the caller sends an ERROR frame with the `Display` text.

use std::fmt;

/// Size limits for incoming frames; they bound how much a connection ever buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Whole frame, command line through NUL (leading heart-beat EOLs excluded).
    pub max_frame_bytes: usize,
    /// Header lines per frame, repeats included; capped at `MAX_HEADERS_CAP`.
    pub max_headers: usize,
    /// One header line without its EOL.
    pub max_header_line_bytes: usize,
}

impl Default for Limits {
    /// 64 KiB frames, 32 headers, 4 KiB header lines.
    fn default() -> Self {
        Limits { max_frame_bytes: 64 * 1024, max_headers: 32, max_header_line_bytes: 4096 }
    }
}

/// Why a frame was rejected; one variant per reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The command line is not one of the (upper-case) STOMP commands.
    UnknownCommand,
    /// The frame is, or will be, larger than `Limits::max_frame_bytes`.
    FrameTooLarge { limit: usize },
    /// More header lines than `Limits::max_headers`.
    TooManyHeaders { limit: usize },
    /// A header line longer than `Limits::max_header_line_bytes`.
    HeaderLineTooLong { limit: usize },
    /// A header line without `:`, with an empty name, or with a NUL byte.
    MalformedHeader,
    /// A backslash not followed by `r`, `n`, `c` or `\` in an escaped header.
    InvalidEscape,
    /// The header block is not valid UTF-8.
    InvalidUtf8,
    /// `content-length` is not a non-negative decimal integer.
    BadContentLength,
    /// The `content-length` bytes of body are not followed by a NUL.
    MissingNul,
}

impl ParseError {
    /// Short snake_case label, for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::UnknownCommand => "unknown_command",
            ParseError::FrameTooLarge { .. } => "frame_too_large",
            ParseError::TooManyHeaders { .. } => "too_many_headers",
            ParseError::HeaderLineTooLong { .. } => "header_line_too_long",
            ParseError::MalformedHeader => "malformed_header",
            ParseError::InvalidEscape => "invalid_escape",
            ParseError::InvalidUtf8 => "invalid_utf8",
            ParseError::BadContentLength => "bad_content_length",
            ParseError::MissingNul => "missing_nul",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::UnknownCommand => f.write_str("unknown command"),
            ParseError::FrameTooLarge { limit } => write!(f, "frame exceeds {limit} bytes"),
            ParseError::TooManyHeaders { limit } => {
                write!(f, "frame has more than {limit} headers")
            }
            ParseError::HeaderLineTooLong { limit } => {
                write!(f, "header line exceeds {limit} bytes")
            }
            ParseError::MalformedHeader => f.write_str("malformed header line, expected name:value"),
            ParseError::InvalidEscape => f.write_str("invalid escape sequence in header"),
            ParseError::InvalidUtf8 => f.write_str("header is not valid UTF-8"),
            ParseError::BadContentLength => f.write_str("invalid content-length header"),
            ParseError::MissingNul => f.write_str("frame body not terminated by NUL"),
        }
    }
}

impl std::error::Error for ParseError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_human_and_carry_limits() {
        assert_eq!(ParseError::FrameTooLarge { limit: 131072 }.to_string(), "frame exceeds 131072 bytes");
        assert_eq!(ParseError::TooManyHeaders { limit: 32 }.to_string(), "frame has more than 32 headers");
        assert_eq!(ParseError::HeaderLineTooLong { limit: 10 }.to_string(), "header line exceeds 10 bytes");
        assert_eq!(ParseError::UnknownCommand.to_string(), "unknown command");
    }

    #[test]
    fn messages_fit_in_a_header_value() {
        let all = [
            ParseError::UnknownCommand,
            ParseError::FrameTooLarge { limit: 1 },
            ParseError::TooManyHeaders { limit: 1 },
            ParseError::HeaderLineTooLong { limit: 1 },
            ParseError::MalformedHeader,
            ParseError::InvalidEscape,
            ParseError::InvalidUtf8,
            ParseError::BadContentLength,
            ParseError::MissingNul,
        ];
        let mut reasons: Vec<_> = all.iter().map(ParseError::reason).collect();
        for (e, r) in all.iter().zip(&reasons) {
            let msg = e.to_string();
            assert!(!msg.contains(['\n', '\r', '\0']), "{msg}");
            assert!(r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{r}");
        }
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), all.len(), "reasons are distinct");
    }

    #[test]
    fn default_limits_are_sane() {
        let l = Limits::default();
        assert!(l.max_headers <= crate::protocol::MAX_HEADERS_CAP);
        assert!(l.max_header_line_bytes < l.max_frame_bytes);
    }
}
