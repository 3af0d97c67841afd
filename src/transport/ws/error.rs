//! Protocol violations a WebSocket client can commit, as values returned by the decoder.
//! Each maps to the close code to send back (`close_code`) and a stable label for logs and
//! metrics (`reason`).

use std::fmt;

/// Why the decoder gave up on a connection's inbound byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsError {
    /// A client frame arrived without the mask bit (RFC 6455 §5.1).
    Unmasked,
    /// RSV1-3 set, but no extension was negotiated.
    ReservedBits,
    /// Opcode 3-7 or 11-15.
    UnknownOpcode(u8),
    /// A control frame without FIN.
    FragmentedControl,
    /// A control frame with more than 125 payload bytes.
    ControlTooLong,
    /// A 64-bit payload length with its most significant bit set.
    InvalidLength,
    /// A continuation frame with no fragmented message open.
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is still open.
    ExpectedContinuation,
    /// A text message that is not valid UTF-8.
    InvalidUtf8,
    /// One message (all its fragments) is larger than the configured limit.
    MessageTooBig { limit: usize },
    /// A close frame with a 1-byte payload, a reserved or unknown code, or a non-UTF-8 reason.
    InvalidClosePayload,
}

impl WsError {
    /// The close code to answer with: 1007 for bad UTF-8, 1009 for an oversized message,
    /// 1002 (protocol error) otherwise.
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::InvalidUtf8 => 1007,
            WsError::MessageTooBig { .. } => 1009,
            _ => 1002,
        }
    }

    /// A snake_case label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            WsError::Unmasked => "unmasked_frame",
            WsError::ReservedBits => "reserved_bits",
            WsError::UnknownOpcode(_) => "unknown_opcode",
            WsError::FragmentedControl => "fragmented_control",
            WsError::ControlTooLong => "control_too_long",
            WsError::InvalidLength => "invalid_length",
            WsError::UnexpectedContinuation => "unexpected_continuation",
            WsError::ExpectedContinuation => "expected_continuation",
            WsError::InvalidUtf8 => "invalid_utf8",
            WsError::MessageTooBig { .. } => "message_too_big",
            WsError::InvalidClosePayload => "invalid_close_payload",
        }
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::Unmasked => f.write_str("client frame is not masked"),
            WsError::ReservedBits => f.write_str("reserved bits set without a negotiated extension"),
            WsError::UnknownOpcode(op) => write!(f, "unknown opcode {op}"),
            WsError::FragmentedControl => f.write_str("fragmented control frame"),
            WsError::ControlTooLong => f.write_str("control frame payload over 125 bytes"),
            WsError::InvalidLength => f.write_str("64-bit payload length has its high bit set"),
            WsError::UnexpectedContinuation => f.write_str("continuation frame without a fragmented message"),
            WsError::ExpectedContinuation => f.write_str("new data frame while a fragmented message is open"),
            WsError::InvalidUtf8 => f.write_str("text message is not valid UTF-8"),
            WsError::MessageTooBig { limit } => write!(f, "message larger than {limit} bytes"),
            WsError::InvalidClosePayload => f.write_str("invalid close frame payload"),
        }
    }
}

impl std::error::Error for WsError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_and_labels() {
        assert_eq!(WsError::Unmasked.close_code(), 1002);
        assert_eq!(WsError::UnknownOpcode(3).close_code(), 1002);
        assert_eq!(WsError::InvalidClosePayload.close_code(), 1002);
        assert_eq!(WsError::InvalidUtf8.close_code(), 1007);
        assert_eq!(WsError::MessageTooBig { limit: 8 }.close_code(), 1009);
        assert_eq!(WsError::MessageTooBig { limit: 8 }.reason(), "message_too_big");
        assert_eq!(WsError::UnknownOpcode(7).to_string(), "unknown opcode 7");
    }
}
