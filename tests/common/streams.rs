//! Helpers of the stream tests (one node and cluster): the streams config they run with, a
//! SUBSCRIBE that returns what came before its RECEIPT, and the offsets MESSAGE frames carry.

use super::{Client, Frame};

/// Streams on for the chat rooms and for `/topic/s/**` (the tests' streamed topics).
pub const STREAMS: &str = "[streams]\nprefixes = [\"/topic/room/\", \"/topic/s/\"]\n";

/// SUBSCRIBE with extra headers and a receipt; returns (messages before the RECEIPT, RECEIPT).
pub async fn subscribe_from(c: &mut Client, dest: &str, id: &str, headers: &str) -> (Vec<Frame>, Frame) {
    c.send_text(&format!("SUBSCRIBE\ndestination:{dest}\nid:{id}\nreceipt:r-{id}\n{headers}\n\0")).await;
    let mut early = Vec::new();
    loop {
        let f = c.recv().await;
        if f.command == "RECEIPT" {
            return (early, f);
        }
        assert_eq!(f.command, "MESSAGE", "{f:?}");
        early.push(f);
    }
}

/// The `x-stream-offset` of a MESSAGE (panics when it has none).
pub fn offset(f: &Frame) -> u64 {
    f.header("x-stream-offset").and_then(|o| o.parse().ok()).unwrap_or_else(|| panic!("no offset: {f:?}"))
}

/// The offsets of `frames`, in order.
pub fn offsets(frames: &[Frame]) -> Vec<u64> {
    frames.iter().map(offset).collect()
}
