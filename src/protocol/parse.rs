//! The incremental STOMP parser: [`parse`] reads one heart-beat or one frame from the front of the
//! connection's read buffer, borrowing everything from it. Incomplete input is `Ok(None)` (read
//! more), and over-limit input is refused as soon as it is visible so nothing buffers unboundedly.

use super::error::{Limits, ParseError};
use super::frame::{Command, Frame, HeaderList, Parsed, RawHeader, Version, MAX_HEADERS_CAP};

/// Longest command line with its EOL: `UNSUBSCRIBE\r\n`.
const MAX_COMMAND_LINE: usize = 13;

/// Parses one item from the front of `buf`.
///
/// - `Ok(None)`: incomplete, read more.
/// - `Ok(Some((Parsed::HeartBeat, n)))`: `buf` starts with EOLs (LF or CRLF); `n` covers all of them.
/// - `Ok(Some((Parsed::Frame(f), n)))`: a whole frame; `n` covers it, its NUL and any EOLs after it.
///
/// `version` is the negotiated version (use `V1_2` before CONNECT): it decides header escaping.
pub fn parse<'a>(
    buf: &'a [u8],
    version: Version,
    limits: &Limits,
) -> Result<Option<(Parsed<'a>, usize)>, ParseError> {
    let eols = eol_run(buf);
    if eols > 0 {
        return Ok(Some((Parsed::HeartBeat, eols)));
    }
    if buf.is_empty() {
        return Ok(None);
    }
    match parse_frame(buf, version, limits)? {
        Some((frame, end)) => {
            let trailing = eol_run(buf.get(end..).unwrap_or_default());
            Ok(Some((Parsed::Frame(frame), end + trailing)))
        }
        // Completing the frame needs at least one more byte.
        None if buf.len() >= limits.max_frame_bytes => Err(too_large(limits)),
        None => Ok(None),
    }
}

/// Length of the run of complete EOLs (`\n` or `\r\n`) at the start of `buf`.
fn eol_run(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match buf.get(i..) {
            Some([b'\n', ..]) => i += 1,
            Some([b'\r', b'\n', ..]) => i += 2,
            _ => return i,
        }
    }
}

fn too_large(limits: &Limits) -> ParseError {
    ParseError::FrameTooLarge { limit: limits.max_frame_bytes }
}

/// Drops one trailing CR (the CR of a CRLF line ending).
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses a frame starting at `buf[0]`; returns it and the offset just past its NUL.
fn parse_frame<'a>(
    buf: &'a [u8],
    version: Version,
    limits: &Limits,
) -> Result<Option<(Frame<'a>, usize)>, ParseError> {
    let Some((command, head_start)) = parse_command(buf)? else {
        return Ok(None);
    };
    let escaped = command.escapes_headers(version);
    let max_headers = limits.max_headers.min(MAX_HEADERS_CAP);
    let line_limit = limits.max_header_line_bytes;
    let mut headers = HeaderList::new();
    let mut content_length = None;
    let mut pos = head_start;

    // Header lines up to the blank line; each scan is bounded by the line limit.
    loop {
        if pos > limits.max_frame_bytes {
            return Err(too_large(limits));
        }
        let rest = buf.get(pos..).unwrap_or_default();
        let window = rest.get(..line_limit.saturating_add(2)).unwrap_or(rest);
        let Some(eol) = window.iter().position(|&b| b == b'\n' || b == 0) else {
            if strip_cr(rest).len() > line_limit {
                return Err(ParseError::HeaderLineTooLong { limit: line_limit });
            }
            return Ok(None);
        };
        let raw_line = rest.get(..eol).unwrap_or_default();
        if window.get(eol) == Some(&0) {
            // A NUL before the blank line: the header block was never closed.
            return Err(ParseError::MalformedHeader);
        }
        let line = strip_cr(raw_line);
        if line.len() > line_limit {
            return Err(ParseError::HeaderLineTooLong { limit: line_limit });
        }
        let line_start = pos - head_start;
        pos += eol + 1;
        if line.is_empty() {
            break;
        }
        if headers.len() >= max_headers {
            return Err(ParseError::TooManyHeaders { limit: max_headers });
        }
        let colon = match line.iter().position(|&b| b == b':') {
            Some(0) | None => return Err(ParseError::MalformedHeader),
            Some(c) => c,
        };
        if escaped {
            check_escapes(line)?;
        }
        let (name, value) = line.split_at(colon);
        if content_length.is_none() && name == b"content-length" {
            let len = parse_content_length(value.get(1..).unwrap_or_default())?;
            if len > limits.max_frame_bytes {
                return Err(too_large(limits));
            }
            content_length = Some(len);
        }
        let offset = |n: usize| u32::try_from(line_start + n).map_err(|_| too_large(limits));
        let header = RawHeader { start: offset(0)?, colon: offset(colon)?, end: offset(line.len())? };
        if headers.push(header).is_err() {
            return Err(ParseError::TooManyHeaders { limit: max_headers });
        }
    }

    let head = buf.get(head_start..pos).unwrap_or_default();
    let head = std::str::from_utf8(head).map_err(|_| ParseError::InvalidUtf8)?;
    let body_start = pos;
    let nul = match content_length {
        Some(len) => {
            let nul = body_start.checked_add(len).ok_or_else(|| too_large(limits))?;
            if nul >= limits.max_frame_bytes {
                return Err(too_large(limits));
            }
            match buf.get(nul) {
                None => return Ok(None),
                Some(0) => nul,
                Some(_) => return Err(ParseError::MissingNul),
            }
        }
        None => {
            // Only look as far as a frame within the limit could reach.
            let reach = buf.len().min(limits.max_frame_bytes);
            let body = buf.get(body_start..reach).unwrap_or_default();
            match body.iter().position(|&b| b == 0) {
                Some(i) => body_start + i,
                None => return Ok(None),
            }
        }
    };
    let body = buf.get(body_start..nul).unwrap_or_default();
    let frame = Frame::new(command, head, headers, body, escaped);
    Ok(Some((frame, nul + 1)))
}

/// Reads the command line; returns the command and the offset of the first header line.
/// Fails as soon as the bytes seen cannot begin any command.
fn parse_command(buf: &[u8]) -> Result<Option<(Command, usize)>, ParseError> {
    let window = buf.get(..MAX_COMMAND_LINE).unwrap_or(buf);
    match window.iter().position(|&b| b == b'\n') {
        Some(eol) => {
            let line = strip_cr(window.get(..eol).unwrap_or_default());
            let command = Command::from_bytes(line).ok_or(ParseError::UnknownCommand)?;
            Ok(Some((command, eol + 1)))
        }
        None => {
            let seen = strip_cr(window);
            // A lone CR may still become a CRLF heart-beat; `CMD\r` must be a whole command.
            let plausible = if seen.len() < window.len() && !seen.is_empty() {
                Command::from_bytes(seen).is_some()
            } else {
                Command::ALL.iter().any(|c| c.as_str().as_bytes().starts_with(seen))
            };
            if plausible && window.len() < MAX_COMMAND_LINE {
                Ok(None)
            } else {
                Err(ParseError::UnknownCommand)
            }
        }
    }
}

/// Accepts only `\r`, `\n`, `\c` and `\\` (1.1 clients get `\r` leniently too).
fn check_escapes(line: &[u8]) -> Result<(), ParseError> {
    if !line.contains(&b'\\') {
        return Ok(());
    }
    let mut bytes = line.iter();
    while let Some(&b) = bytes.next() {
        if b == b'\\' && !matches!(bytes.next(), Some(b'r' | b'n' | b'c' | b'\\')) {
            return Err(ParseError::InvalidEscape);
        }
    }
    Ok(())
}

/// A non-negative decimal; surrounding spaces are tolerated, anything else is refused.
fn parse_content_length(raw: &[u8]) -> Result<usize, ParseError> {
    let digits = raw.trim_ascii();
    if digits.is_empty() {
        return Err(ParseError::BadContentLength);
    }
    digits.iter().try_fold(0usize, |acc, &b| {
        if !b.is_ascii_digit() {
            return Err(ParseError::BadContentLength);
        }
        acc.checked_mul(10)
            .and_then(|a| a.checked_add(usize::from(b - b'0')))
            .ok_or(ParseError::BadContentLength)
    })
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
