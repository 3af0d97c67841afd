//! The STOMP connection inside a SockJS session, whatever its transport: the `Session`, the
//! buffer every SockJS message's STOMP bytes are appended to (so frames split or batched across
//! messages parse as one stream), and the STOMP clock. The transports only move SockJS frames.

use std::rc::Rc;

use crate::liveness::Liveness;
use crate::metrics::CloseReason;
use crate::node::Node;
use crate::outbound::Outbound;
use crate::protocol::Limits;
use crate::session::Session;
use crate::stomp_input;

use super::frame::{self, Broken};

/// A buffer larger than this is given back once it is empty again.
const KEEP_INPUT: usize = 16 * 1024;

pub struct Core {
    pub session: Session,
    /// STOMP bytes received and not yet a whole frame; `protocol::parse` bounds it by
    /// `limits.max_frame_bytes` (a larger pending frame is an error).
    input: Vec<u8>,
    limits: Limits,
    /// The CONNECT deadline and the STOMP heart-beats.
    pub liveness: Liveness,
}

/// What a SockJS message did to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Handled; the STOMP connection stays open.
    Open,
    /// Handled; the connection must close for this reason (an ERROR or RECEIPT is queued).
    Close(CloseReason),
}

impl Core {
    pub fn new(node: &Node, connection: u64, session_id: Rc<str>, outbound: Rc<Outbound>) -> Core {
        let config = node.config();
        Core {
            session: Session::new(connection, session_id, outbound),
            input: Vec::new(),
            limits: Limits {
                max_frame_bytes: config.limits.max_frame_bytes,
                max_headers: config.limits.max_headers,
                max_header_line_bytes: config.limits.max_header_line_bytes,
            },
            liveness: Liveness::new(config.stomp.connect_timeout()),
        }
    }

    /// Handles one whole SockJS message (`["…","…"]` or `"…"`) from the client.
    /// A broken message is dropped whole: the STOMP stream stays as it was.
    pub fn receive_message(&mut self, node: &Node, json: &[u8]) -> Result<Received, Broken> {
        let before = self.input.len();
        if let Err(broken) = frame::decode_message(json, &mut self.input) {
            self.input.truncate(before);
            return Err(broken);
        }
        Ok(self.process(node))
    }

    /// Handles the whole messages at the front of `buf` (a stream of them, as the WebSocket
    /// transport de-frames them); returns the bytes consumed. An unfinished message longer than
    /// `max_pending` is an error.
    pub fn receive_stream(
        &mut self,
        node: &Node,
        buf: &[u8],
        max_pending: usize,
    ) -> Result<(usize, Received), Broken> {
        let consumed = frame::decode_stream(buf, &mut self.input, max_pending)?;
        Ok((consumed, self.process(node)))
    }

    fn process(&mut self, node: &Node) -> Received {
        self.liveness.last_read = tokio::time::Instant::now();
        let result = stomp_input::feed_buffer(&mut self.session, node, &self.limits, &mut self.input);
        if self.input.is_empty() && self.input.capacity() > KEEP_INPUT {
            self.input = Vec::new();
        }
        match result {
            Ok(()) => Received::Open,
            Err(reason) => Received::Close(reason),
        }
    }

    /// Queues the goodbye the reason calls for (an ERROR frame the client can show) and returns
    /// the SockJS close frame's code and reason: `3000 "Go away!"` for a normal end, the codes
    /// of the raw WebSocket endpoint otherwise.
    pub fn goodbye(&mut self, reason: CloseReason, dropped_front: bool) -> (u16, &'static str) {
        self.session.send_goodbye(reason, self.liveness.connect_timeout(), dropped_front);
        match reason {
            CloseReason::ServerShutdown | CloseReason::HeartbeatTimeout | CloseReason::ConnectTimeout => {
                (1001, reason.as_str())
            }
            CloseReason::ProtocolError
            | CloseReason::AuthFailed
            | CloseReason::SlowConsumer
            | CloseReason::WebSocketProtocolError => (1008, reason.as_str()),
            CloseReason::ClientDisconnect
            | CloseReason::SocketClosed
            | CloseReason::WebSocketClose
            | CloseReason::IoError => frame::GO_AWAY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::memory::MemoryBroker;

    #[tokio::test(flavor = "current_thread")]
    async fn frames_split_and_batched_across_messages() {
        let node = Node::new(Config::embedded(), Rc::new(MemoryBroker));
        let out = Rc::new(Outbound::new(1 << 20));
        let mut core = Core::new(&node, 1, Rc::from("s"), out.clone());
        assert_eq!(
            core.receive_message(&node, br#"["CONNECT\naccept-","version:1.2\n"]"#),
            Ok(Received::Open)
        );
        assert!(!core.session.is_connected());
        assert_eq!(core.receive_message(&node, br#""\n\u0000\n""#), Ok(Received::Open));
        assert!(core.session.is_connected());
        let both = br#"["SUBSCRIBE\nid:1\ndestination:/topic/t\n\n\u0000DISCONNECT\nreceipt:9\n\n\u0000"]"#;
        assert_eq!(core.receive_message(&node, both), Ok(Received::Close(CloseReason::ClientDisconnect)));
        assert_eq!(out.with_queue(|q| q.len()), 2); // CONNECTED, RECEIPT
        assert_eq!(core.receive_message(&node, b"[1]"), Err(Broken));
        assert_eq!(core.goodbye(CloseReason::ClientDisconnect, false), (3000, "Go away!"));
        assert_eq!(core.goodbye(CloseReason::ConnectTimeout, false), (1001, "connect_timeout"));
        assert_eq!(out.with_queue(|q| q.len()), 3); // + the ERROR
    }
}
