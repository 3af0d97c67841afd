//! WebSocket frame constants, the masking routine and the server-side frame writers.
//! Server frames are never masked and never fragmented, so writing one is a 2-10 byte header
//! (`encode_header`) followed by the payload; close and pong frames are built whole.

use bytes::{BufMut, Bytes, BytesMut};

/// Continuation frame opcode.
pub const OP_CONTINUATION: u8 = 0;
/// Text frame opcode.
pub const OP_TEXT: u8 = 1;
/// Binary frame opcode.
pub const OP_BINARY: u8 = 2;
/// Close frame opcode.
pub const OP_CLOSE: u8 = 8;
/// Ping frame opcode.
pub const OP_PING: u8 = 9;
/// Pong frame opcode.
pub const OP_PONG: u8 = 10;

/// Largest payload of a control frame.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Opcode of an outbound data frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataKind {
    Text,
    Binary,
}

impl DataKind {
    /// The frame opcode for this kind of message.
    pub fn opcode(self) -> u8 {
        match self {
            DataKind::Text => OP_TEXT,
            DataKind::Binary => OP_BINARY,
        }
    }
}

/// Writes an unmasked server frame header (FIN set) for a payload of `len` bytes into `out`,
/// returns the header length (2, 4 or 10).
pub fn encode_header(kind_opcode: u8, len: usize, out: &mut [u8; 10]) -> usize {
    out[0] = 0x80 | (kind_opcode & 0x0F);
    if len < 126 {
        out[1] = len as u8;
        2
    } else if let Ok(len16) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&len16.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// A complete close frame carrying `code` and `reason`; the reason is cut at a char boundary so
/// the payload fits in 125 bytes.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    let mut frame = BytesMut::with_capacity(4 + reason.len());
    frame.put_u8(0x80 | OP_CLOSE);
    frame.put_u8((2 + reason.len()) as u8);
    frame.put_u16(code);
    frame.put_slice(reason);
    frame.freeze()
}

/// A complete pong frame echoing `payload` (cut to 125 bytes, the most a control frame holds).
pub fn pong_frame(payload: &[u8]) -> Bytes {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    let mut frame = BytesMut::with_capacity(2 + payload.len());
    frame.put_u8(0x80 | OP_PONG);
    frame.put_u8(payload.len() as u8);
    frame.put_slice(payload);
    frame.freeze()
}

/// XORs `data` with the 4-byte masking `key`, starting at key byte `phase % 4` (the position of
/// `data[0]` within its frame's payload, modulo 4). Masking and unmasking are the same operation.
pub fn apply_mask(data: &mut [u8], key: [u8; 4], phase: usize) {
    let k = [key[phase & 3], key[(phase + 1) & 3], key[(phase + 2) & 3], key[(phase + 3) & 3]];
    // Eight bytes at a time: the key repeated twice lines up with every 8-byte chunk because
    // 8 is a multiple of 4. Byte-wise XOR, so the word's endianness does not matter.
    let wide = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (byte, m) in chunks.into_remainder().iter_mut().zip(k.iter().cycle()) {
        *byte ^= m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths() {
        let mut out = [0u8; 10];
        assert_eq!(encode_header(OP_TEXT, 0, &mut out), 2);
        assert_eq!(&out[..2], &[0x81, 0]);
        assert_eq!(encode_header(OP_BINARY, 125, &mut out), 2);
        assert_eq!(&out[..2], &[0x82, 125]);
        assert_eq!(encode_header(OP_TEXT, 126, &mut out), 4);
        assert_eq!(&out[..4], &[0x81, 126, 0, 126]);
        assert_eq!(encode_header(OP_TEXT, 65535, &mut out), 4);
        assert_eq!(&out[..4], &[0x81, 126, 0xFF, 0xFF]);
        assert_eq!(encode_header(OP_BINARY, 65536, &mut out), 10);
        assert_eq!(&out[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(DataKind::Binary.opcode(), OP_BINARY);
    }

    #[test]
    fn close_frame_layout_and_truncation() {
        assert_eq!(&close_frame(1000, "bye")[..], &[0x88, 5, 0x03, 0xE8, b'b', b'y', b'e']);
        // 130 bytes of 2-byte chars: cut to 122 bytes (61 chars), not mid-character.
        let long = "é".repeat(65);
        let frame = close_frame(1009, &long);
        assert_eq!(frame[1] as usize, frame.len() - 2);
        assert_eq!(frame.len() - 4, 122);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
        let ascii = "x".repeat(200);
        assert_eq!(close_frame(1000, &ascii)[1], 125);
    }

    #[test]
    fn pong_frame_echoes_payload() {
        assert_eq!(&pong_frame(b"hi")[..], &[0x8A, 2, b'h', b'i']);
        assert_eq!(pong_frame(&[7; 200]).len(), 127);
    }

    #[test]
    fn mask_matches_bytewise_reference_at_every_phase() {
        let key = [0x12, 0x34, 0x56, 0x78];
        let original: Vec<u8> = (0..37u8).collect();
        for phase in 0..8 {
            let mut fast = original.clone();
            apply_mask(&mut fast, key, phase);
            let slow: Vec<u8> = original.iter().enumerate().map(|(i, b)| b ^ key[(i + phase) % 4]).collect();
            assert_eq!(fast, slow, "phase {phase}");
            apply_mask(&mut fast, key, phase);
            assert_eq!(fast, original);
        }
    }
}
