//! The envelope a publication travels in between nodes: origin server id, a per-origin,
//! per-channel sequence number (receivers count gaps as messages lost between nodes), the
//! message id, and the publication itself. JSON, with the body as text or base64 if binary.

use std::rc::Rc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::broker::Publication;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The destination's offset, put in by the append script (see `stream`); first, so the
    /// script can add it to the JSON without parsing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The epoch of `offset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sepoch: Option<String>,
    /// Envelope format version.
    pub v: u8,
    pub origin: String,
    /// When the origin process started (ms): a restarted origin numbers afresh.
    #[serde(default)]
    pub epoch: u64,
    pub seq: u64,
    /// The origin delivered it to its own subscribers when it accepted it (so the origin skips
    /// it when it reads it back); false when the origin waits for its offset to deliver it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delivered: bool,
    /// When the origin accepted it (ms since the Unix epoch): kept messages past the stream's
    /// age bound are not recovered.
    #[serde(default)]
    pub at: u64,
    pub id: String,
    pub destination: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// The body when it is UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The body, base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body64: Option<String>,
}

impl Envelope {
    pub fn wrap(origin: &str, epoch: u64, seq: u64, p: &Publication) -> Envelope {
        let (body, body64) = match std::str::from_utf8(&p.body) {
            Ok(text) => (Some(text.to_string()), None),
            Err(_) => (None, Some(base64_encode(&p.body))),
        };
        Envelope {
            offset: None,
            sepoch: None,
            delivered: true,
            at: crate::chat::room::now_ms(),
            origin: origin.to_string(),
            v: 1,
            epoch,
            seq,
            id: p.message_id.to_string(),
            destination: p.destination.to_string(),
            headers: p.headers.clone(),
            body,
            body64,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope, String> {
        let e: Envelope = serde_json::from_slice(bytes).map_err(|e| format!("bad envelope: {e}"))?;
        if e.v != 1 || !e.destination.starts_with("/topic/") {
            return Err(format!("unsupported envelope v{} for {}", e.v, e.destination));
        }
        Ok(e)
    }

    pub fn into_publication(self) -> Result<Publication, String> {
        let body = match (self.body, self.body64) {
            (Some(text), _) => Bytes::from(text),
            (None, Some(b64)) => Bytes::from(base64_decode(&b64).ok_or("bad base64 body")?),
            (None, None) => Bytes::new(),
        };
        Ok(Publication {
            destination: Rc::from(self.destination),
            message_id: Rc::from(self.id),
            headers: self.headers,
            body,
            stream: None,
        })
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|a| *a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_text_and_binary() {
        for body in [Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"\xff\x00\x01bin")] {
            let p = Publication {
                destination: Rc::from("/topic/room/r"),
                message_id: Rc::from("n1-9"),
                headers: vec![("content-type".into(), "application/json".into())],
                body,
                stream: None,
            };
            let e = Envelope::wrap("n1", 1, 7, &p);
            let back = Envelope::decode(&e.encode()).unwrap();
            assert_eq!((back.origin.as_str(), back.seq), ("n1", 7));
            assert_eq!(back.into_publication().unwrap(), p);
        }
        assert!(Envelope::decode(b"{}").is_err());
        assert!(Envelope::decode(b"not json").is_err());
    }

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (plain, encoded) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).unwrap(), plain.as_bytes());
        }
        assert_eq!(base64_decode("!!"), None);
    }
}
