//! The envelope a publication travels in between nodes: its destination's offset and epoch
//! (put first by the append script; receivers deliver in offset order and repair gaps, see
//! `order`), the origin server id, the message id, and the publication itself. JSON, with the
//! body as text or base64 if binary.

use std::rc::Rc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::hub::{Kind, Publication};

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
    /// The origin process's number for it (`outbox::Outgoing::seq`): 1, 2, 3, … in the order
    /// it accepted its publications; the append script applies each number once.
    #[serde(default)]
    pub seq: u64,
    /// The origin delivered it to its own subscribers when it accepted it; false when the
    /// origin waited for its offset. Informational: a process never delivers what it appended
    /// itself when it reads it back (`origin` and `epoch` name the process).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delivered: bool,
    /// Publications of this destination the origin accepted before this one and gave up
    /// relaying (its outbox full or too old, or Redis refusing them): a receiver counts them
    /// lost (`stream_lost_total`) and its subscribers are told on this one
    /// (`x-stream-recovered:false`), as for a gap the stream could not fill.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
    /// When the origin accepted it (ms since the Unix epoch): kept messages past the stream's
    /// age bound are not recovered.
    #[serde(default)]
    pub at: u64,
    pub id: String,
    pub destination: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// The publication's kind (`message`, `join`, `leave`, `system`); absent means message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The room the publication belongs to, when its application set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
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
            dropped: 0,
            at: crate::board::clock::now_ms(),
            origin: origin.to_string(),
            v: 1,
            epoch,
            seq,
            id: p.message_id.to_string(),
            destination: p.destination.to_string(),
            headers: p.headers.clone(),
            kind: (p.kind != Kind::Message).then(|| p.kind.as_str().to_string()),
            room: p.room.as_deref().map(str::to_string),
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
        let kind = match self.kind.as_deref() {
            None => Kind::Message,
            Some(text) => Kind::parse(text).ok_or_else(|| format!("unknown publication kind {text}"))?,
        };
        Ok(Publication {
            destination: Rc::from(self.destination),
            message_id: Rc::from(self.id),
            headers: self.headers,
            body,
            kind,
            room: self.room.map(Rc::from),
            stream: None,
        })
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The envelope JSON `payload` with `dropped` set to `n` (None: not an envelope).
pub fn with_dropped(payload: &[u8], n: u64) -> Option<Vec<u8>> {
    let mut e = Envelope::decode(payload).ok()?;
    e.dropped = n;
    Some(e.encode())
}

/// Standard base64 (RFC 4648, with padding), what every node writes and reads.
fn base64_encode(data: &[u8]) -> String {
    BASE64.encode(data)
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    BASE64.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_text_and_binary() {
        for body in [Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"\xff\x00\x01bin")] {
            let mut p = Publication::message(
                Rc::from("/topic/room/r"),
                Rc::from("n1-9"),
                vec![("content-type".into(), "application/json".into())],
                body,
            );
            p.kind = Kind::Leave;
            p.room = Some(Rc::from("r"));
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
        assert_eq!(base64_decode("Zg"), None, "unpadded is not what a node writes");
    }
}
