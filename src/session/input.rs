//! The transport-independent STOMP input step: bytes a client sent (however they arrived: raw
//! WebSocket messages or SockJS messages) → `protocol::parse` → `Session::handle`. Both the raw
//! WebSocket `transport::connection` and the SockJS sessions append every incoming message to
//! one buffer and call [`feed`] on it, so batched frames, split frames and heart-beat EOLs are
//! all the same.

use crate::node::Node;
use crate::observability::metrics::{CloseReason, METRICS};
use crate::protocol::{self, Limits, Parsed};
use crate::session::{Outcome, Session};

/// Largest STOMP frame accepted before CONNECT, whatever `limits.max_frame_bytes` says: a
/// CONNECT with credentials fits, and a client that never connects cannot make the server
/// buffer a large unfinished frame (issue 13).
pub const CONNECT_FRAME_BYTES: usize = 8 * 1024;

/// What [`feed`] did with the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Bytes at the front of the buffer that were handled (whole frames and heart-beats); the
    /// caller removes them. The rest is the start of a frame that has not fully arrived.
    pub consumed: usize,
    /// `Err` when the connection must close (after flushing the ERROR or RECEIPT queued).
    pub result: Result<(), CloseReason>,
}

/// Handles every complete STOMP frame at the front of `data`. A parse error is answered with an
/// ERROR frame on the session's queue and ends the connection. Until the session is connected,
/// frames are limited to [`CONNECT_FRAME_BYTES`]. Handling stops after a CONNECT whose passcode
/// check runs off the event loop (`Session::awaiting_login`). With `pace`, handling stops after a
/// frame whose deliveries found subscribers backed up (flow control): the caller stops reading and
/// feeds the rest once they drained.
pub fn feed(session: &mut Session, node: &Node, limits: &Limits, data: &[u8], pace: bool) -> Fed {
    let mut consumed = 0;
    while consumed < data.len() {
        if session.awaiting_login() {
            break; // the rest waits for the CONNECT's passcode check
        }
        let mut now = *limits;
        if !session.is_connected() {
            now.max_frame_bytes = now.max_frame_bytes.min(CONNECT_FRAME_BYTES);
        }
        match protocol::parse(&data[consumed..], session.version(), &now) {
            Ok(None) => break,
            Ok(Some((Parsed::HeartBeat, n))) => consumed += n,
            Ok(Some((Parsed::Frame(frame), n))) => {
                consumed += n;
                if let Outcome::Close(reason) = session.handle(&frame, node) {
                    return Fed { consumed, result: Err(reason) };
                }
                if pace && node.hub.has_backed_up() {
                    break;
                }
            }
            Err(e) => {
                METRICS.protocol_errors.inc(e.reason());
                let rest = &data[consumed..];
                let receipt = protocol::pending_receipt(rest, session.version(), limits);
                session.send_error(&e.to_string(), receipt.as_deref());
                return Fed { consumed, result: Err(CloseReason::ProtocolError) };
            }
        }
    }
    Fed { consumed, result: Ok(()) }
}

/// [`feed`] over a whole buffer, removing what it handled from the front.
pub fn feed_buffer(
    session: &mut Session,
    node: &Node,
    limits: &Limits,
    buf: &mut Vec<u8>,
    pace: bool,
) -> Result<(), CloseReason> {
    let fed = feed(session, node, limits, buf, pace);
    buf.drain(..fed.consumed);
    fed.result
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::config::Config;
    use crate::engine::memory::MemoryBroker;
    use crate::transport::outbound::Outbound;

    fn setup() -> (Node, Session, Rc<Outbound>) {
        let node = Node::new(Config::embedded(), Rc::new(MemoryBroker));
        let out = Rc::new(Outbound::new(1 << 20));
        let session = Session::new(1, Rc::from("s1"), out.clone());
        (node, session, out)
    }

    #[test]
    fn split_and_batched_frames_and_heartbeats() {
        let (node, mut session, out) = setup();
        let limits = Limits::default();
        let mut buf = b"\nCONNECT\naccept-version:1.2\n\n".to_vec();
        assert_eq!(feed_buffer(&mut session, &node, &limits, &mut buf, false), Ok(()));
        assert!(!session.is_connected());
        assert_eq!(buf, b"CONNECT\naccept-version:1.2\n\n");
        buf.extend_from_slice(b"\0\nSUBSCRIBE\nid:0\ndestination:/topic/a\nreceipt:r\n\n\0");
        assert_eq!(feed_buffer(&mut session, &node, &limits, &mut buf, false), Ok(()));
        assert!(session.is_connected() && buf.is_empty());
        assert_eq!(out.with_queue(|q| q.len()), 2); // CONNECTED, RECEIPT
    }

    #[test]
    fn errors_and_disconnect_close() {
        let (node, mut session, _out) = setup();
        let limits = Limits::default();
        let fed = feed(&mut session, &node, &limits, b"BOGUS\n\n\0", false);
        assert_eq!(fed.result, Err(CloseReason::ProtocolError));
        let (node, mut session, _out) = setup();
        let fed = feed(&mut session, &node, &limits, b"CONNECT\n\n\0DISCONNECT\n\n\0SEND\n\n\0", false);
        assert_eq!(fed.result, Err(CloseReason::ClientDisconnect));
        assert_eq!(fed.consumed, b"CONNECT\n\n\0DISCONNECT\n\n\0".len());
    }
}
