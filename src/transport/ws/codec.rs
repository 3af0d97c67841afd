//! The in-place WebSocket frame decoder: turns the raw bytes a client sent into the plain
//! application-data byte stream the STOMP layer reads, inside the connection's one read buffer.
//! Control frames go to a callback; protocol violations come back as [`WsError`] values.

use super::error::WsError;
use super::frame::{
    apply_mask, DataKind, MAX_CONTROL_PAYLOAD, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG,
    OP_TEXT,
};
use super::utf8::Utf8Validator;

/// A complete control frame received from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Answer with a pong echoing this payload.
    Ping(heapless::Vec<u8, 125>),
    /// Proof of life; the payload is dropped.
    Pong,
    /// The client starts (or answers) the closing handshake. `code` is `None` for an empty close.
    Close { code: Option<u16>, reason: heapless::String<123> },
}

/// Decoding state carried between reads; a few dozen bytes, so an idle connection stays cheap.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Bound on one message, checked against every data frame header before its payload is
    /// read, so a client cannot make the read buffer grow past it.
    max_message_bytes: usize,
    /// Payload bytes of the current data frame that have not arrived yet.
    remaining: u64,
    /// Masking key of the current data frame.
    mask: [u8; 4],
    /// Offset of the next payload byte in its frame, mod 4: which key byte unmasks it.
    phase: u8,
    /// Whether the current data frame is the last of its message.
    fin: bool,
    /// Kind of the message being received, `None` between messages.
    message: Option<DataKind>,
    /// Bytes of the current message announced so far (all headers seen, not all received).
    message_len: u64,
    /// Carries a character split across frames or reads of a text message.
    utf8: Utf8Validator,
    /// A close frame was received: everything after it is discarded.
    closed: bool,
}

/// A parsed frame header.
struct Header {
    fin: bool,
    opcode: u8,
    len: u64,
    mask: [u8; 4],
    /// Bytes the header occupies (2-14).
    size: usize,
}

impl Decoder {
    /// `max_message_bytes` bounds one WebSocket message (sum of its fragments).
    pub fn new(max_message_bytes: usize) -> Self {
        Decoder {
            max_message_bytes,
            remaining: 0,
            mask: [0; 4],
            phase: 0,
            fin: false,
            message: None,
            message_len: 0,
            utf8: Utf8Validator::default(),
            closed: false,
        }
    }

    /// Changes the bound on one message (a connection allows only a CONNECT-sized message before
    /// its STOMP CONNECT). Applies from the next frame header on.
    pub fn set_max_message_bytes(&mut self, max_message_bytes: usize) {
        self.max_message_bytes = max_message_bytes;
    }

    /// Whether a data message has started and not yet ended (a frame or a fragment is pending).
    pub fn in_message(&self) -> bool {
        self.message.is_some()
    }

    /// Whether a close frame was received (all later bytes are ignored).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Decode in place. `buf[..*data_len]` is application data already decoded; `buf[*data_len..]`
    /// raw bytes. On return `buf[..*data_len]` has grown by the newly decoded payload bytes and
    /// `buf.len()` is `*data_len` plus the undecoded tail (an incomplete header or control
    /// frame, at most 14 + 125 bytes). Each complete control frame is passed to `on_control` in
    /// order; after a close frame the rest of the input is dropped. On error the raw bytes are
    /// dropped, `buf` holds only the data decoded before it, and the connection must be closed
    /// with `err.close_code()`.
    pub fn decode(
        &mut self,
        buf: &mut Vec<u8>,
        data_len: &mut usize,
        on_control: &mut dyn FnMut(Control),
    ) -> Result<(), WsError> {
        let start = (*data_len).min(buf.len());
        let (mut read, mut write) = (start, start);
        let result = self.decode_frames(buf, &mut read, &mut write, on_control);
        let end = buf.len();
        if self.closed || result.is_err() {
            // Nothing after a close or an error will be decoded; keep only the data.
            buf.truncate(write);
        } else {
            buf.copy_within(read..end, write);
            buf.truncate(write + (end - read));
        }
        *data_len = write;
        result
    }

    /// The decoding loop. Invariant: `write <= read <= buf.len()`; payload moves from `read`
    /// down to `write`.
    fn decode_frames(
        &mut self,
        buf: &mut [u8],
        read: &mut usize,
        write: &mut usize,
        on_control: &mut dyn FnMut(Control),
    ) -> Result<(), WsError> {
        while !self.closed {
            if self.remaining > 0 {
                let avail = buf.len() - *read;
                if avail == 0 {
                    return Ok(());
                }
                let n = usize::try_from(self.remaining).map_or(avail, |r| r.min(avail));
                self.take_payload(buf, *read, *write, n)?;
                *read += n;
                *write += n;
                if self.remaining == 0 {
                    self.end_frame()?;
                }
                continue;
            }
            let Some(header) = parse_header(buf.get(*read..).unwrap_or_default())? else {
                return Ok(());
            };
            if header.opcode & 0x08 != 0 {
                // Control frames are handled whole; wait until all of one has arrived.
                let total = header.size + header.len as usize; // len <= 125, checked
                let Some(payload) = buf.get_mut(*read + header.size..*read + total) else {
                    return Ok(());
                };
                apply_mask(payload, header.mask, 0);
                let control = parse_control(header.opcode, payload)?;
                *read += total;
                self.closed = matches!(control, Control::Close { .. });
                on_control(control);
            } else {
                self.start_data_frame(&header)?;
                *read += header.size;
                if self.remaining == 0 {
                    self.end_frame()?;
                }
            }
        }
        Ok(())
    }

    /// Moves `n` payload bytes from `read` down to `write`, unmasks and (for text) validates them.
    fn take_payload(&mut self, buf: &mut [u8], read: usize, write: usize, n: usize) -> Result<(), WsError> {
        if read != write {
            buf.copy_within(read..read + n, write);
        }
        let chunk = &mut buf[write..write + n]; // write + n <= read + n <= buf.len()
        apply_mask(chunk, self.mask, usize::from(self.phase));
        self.phase = ((usize::from(self.phase) + n) & 3) as u8;
        self.remaining -= n as u64;
        if self.message == Some(DataKind::Text) {
            self.utf8.feed(chunk).map_err(|()| WsError::InvalidUtf8)?;
        }
        Ok(())
    }

    /// Checks a data frame header against the fragmentation state and the size limit.
    fn start_data_frame(&mut self, header: &Header) -> Result<(), WsError> {
        let kind = match (header.opcode, self.message) {
            (OP_CONTINUATION, Some(kind)) => kind,
            (OP_CONTINUATION, None) => return Err(WsError::UnexpectedContinuation),
            (_, Some(_)) => return Err(WsError::ExpectedContinuation),
            (OP_TEXT, None) => DataKind::Text,
            (_, None) => DataKind::Binary,
        };
        let total = self.message_len.saturating_add(header.len);
        if total > self.max_message_bytes as u64 {
            return Err(WsError::MessageTooBig { limit: self.max_message_bytes });
        }
        self.message = Some(kind);
        self.message_len = total;
        self.remaining = header.len;
        self.mask = header.mask;
        self.phase = 0;
        self.fin = header.fin;
        Ok(())
    }

    /// All payload of a data frame is in; if it was the last fragment, the message ends.
    fn end_frame(&mut self) -> Result<(), WsError> {
        if self.fin {
            let text = self.message == Some(DataKind::Text);
            self.message = None;
            self.message_len = 0;
            if text {
                self.utf8.finish().map_err(|()| WsError::InvalidUtf8)?;
            }
        }
        Ok(())
    }
}

/// Parses a client frame header from the start of `raw`; `Ok(None)` if more bytes are needed.
/// Violations visible in the first two bytes are reported before the rest has arrived.
fn parse_header(raw: &[u8]) -> Result<Option<Header>, WsError> {
    let (b0, b1) = match raw {
        [b0, b1, ..] => (*b0, *b1),
        _ => return Ok(None),
    };
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    if b0 & 0x70 != 0 {
        return Err(WsError::ReservedBits);
    }
    if !matches!(opcode, OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG) {
        return Err(WsError::UnknownOpcode(opcode));
    }
    if b1 & 0x80 == 0 {
        return Err(WsError::Unmasked);
    }
    let control = opcode & 0x08 != 0;
    if control && !fin {
        return Err(WsError::FragmentedControl);
    }
    // A longer length encoding than needed is tolerated (RFC says minimal, clients rarely err).
    let (len, size) = match b1 & 0x7F {
        126 => match raw.get(2..4) {
            Some(&[hi, lo]) => (u64::from(u16::from_be_bytes([hi, lo])), 4),
            _ => return Ok(None),
        },
        127 => match raw.get(2..10) {
            Some(bytes) => {
                let mut word = [0u8; 8];
                word.copy_from_slice(bytes);
                let len = u64::from_be_bytes(word);
                if len >> 63 != 0 {
                    return Err(WsError::InvalidLength);
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    if control && len > MAX_CONTROL_PAYLOAD as u64 {
        return Err(WsError::ControlTooLong);
    }
    let Some(&[m0, m1, m2, m3]) = raw.get(size..size + 4) else {
        return Ok(None);
    };
    Ok(Some(Header { fin, opcode, len, mask: [m0, m1, m2, m3], size: size + 4 }))
}

/// Builds the [`Control`] for an unmasked control frame payload (at most 125 bytes).
fn parse_control(opcode: u8, payload: &[u8]) -> Result<Control, WsError> {
    match opcode {
        OP_PING => heapless::Vec::from_slice(payload).map(Control::Ping).map_err(|_| WsError::ControlTooLong),
        OP_PONG => Ok(Control::Pong),
        _ => parse_close(payload),
    }
}

/// A close payload is empty, or a valid code followed by a UTF-8 reason.
fn parse_close(payload: &[u8]) -> Result<Control, WsError> {
    let (code, reason) = match payload {
        [] => (None, ""),
        [hi, lo, rest @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let reason = std::str::from_utf8(rest).map_err(|_| WsError::InvalidClosePayload)?;
            if !is_valid_close_code(code) {
                return Err(WsError::InvalidClosePayload);
            }
            (Some(code), reason)
        }
        [_] => return Err(WsError::InvalidClosePayload),
    };
    let mut text = heapless::String::new();
    text.push_str(reason).map_err(|_| WsError::InvalidClosePayload)?;
    Ok(Control::Close { code, reason: text })
}

/// Close codes a peer may send (RFC 6455 §7.4): the defined ones except those reserved for
/// local use (1004-1006, 1015), and the registered/private ranges 3000-4999.
fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// Unit tests live in `codec/tests.rs` to keep this file short.
#[cfg(test)]
mod tests;
