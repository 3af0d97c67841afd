//! The STOMP connection inside a SockJS session, whatever its transport: the `Session`, the
//! buffer every SockJS message's STOMP bytes are appended to (so frames split or batched across
//! messages parse as one stream), and the STOMP clock. The transports only move SockJS frames.

use std::rc::Rc;

use crate::node::Node;
use crate::observability::metrics::{CloseReason, METRICS};
use crate::session::input;
use crate::session::Outcome;
use crate::transport::driver::{trim_buffer, Stomp, BEFORE_CONNECT_BYTES};
use crate::transport::outbound::Outbound;

use super::frame::{self, Broken};

pub struct Core {
    /// The session, its clock and limits, as a socket's driver holds them.
    pub stomp: Stomp,
    /// STOMP bytes received and not yet a whole frame; `protocol::parse` bounds it by
    /// `limits.max_frame_bytes` (a larger pending frame is an error).
    input: Vec<u8>,
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
        Core { stomp: Stomp::new(node, connection, session_id, outbound), input: Vec::new() }
    }

    /// Handles the body of one `xhr_send` (`["…","…"]`, a JSON array of strings only).
    /// A broken message is dropped whole: the STOMP stream stays as it was.
    pub fn receive_message(&mut self, node: &Node, json: &[u8]) -> Result<Received, Broken> {
        let before = self.input.len();
        if let Err(broken) = frame::decode_array(json, &mut self.input) {
            self.input.truncate(before);
            return Err(broken);
        }
        self.stomp.liveness.read_at(tokio::time::Instant::now());
        Ok(self.feed(node))
    }

    /// Answers the CONNECT once its passcode check is over (`crate::auth::login_check`), then
    /// handles the frames that came after it. None while there is nothing to answer.
    pub fn resume_connect(&mut self, node: &Node) -> Option<Received> {
        match self.stomp.session.resume_connect(node)? {
            Outcome::Close(reason) => Some(Received::Close(reason)),
            Outcome::Continue => Some(self.feed(node)),
        }
    }

    /// Handles the whole frames in `input`. Before CONNECT (and while it waits for its passcode
    /// check) only a CONNECT's worth may be held.
    fn feed(&mut self, node: &Node) -> Received {
        let stomp = &mut self.stomp;
        let limits = stomp.limits();
        let result = input::feed_buffer(&mut stomp.session, node, &limits, &mut self.input, false);
        trim_buffer(&mut self.input);
        if let Err(reason) = result {
            return Received::Close(reason);
        }
        if !stomp.session.is_connected() && self.input.len() > BEFORE_CONNECT_BYTES {
            METRICS.protocol_errors.inc("frame_too_large");
            let message = format!("more than {BEFORE_CONNECT_BYTES} bytes sent before CONNECT");
            stomp.session.send_error(&message, None);
            return Received::Close(CloseReason::ProtocolError);
        }
        Received::Open
    }

    /// Queues the goodbye the reason calls for (an ERROR frame the client can show) and returns
    /// the SockJS close frame's code and reason (see [`close_code`]).
    pub fn goodbye(&mut self, reason: CloseReason, dropped_front: bool) -> (u16, &'static str) {
        self.stomp.session.send_goodbye(reason, self.stomp.liveness.connect_timeout(), dropped_front);
        close_code(reason)
    }
}

/// The SockJS close frame's code and reason for `reason`: `3000 "Go away!"` for a normal end,
/// the codes of the raw WebSocket endpoint otherwise.
pub fn close_code(reason: CloseReason) -> (u16, &'static str) {
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
        assert!(!core.stomp.session.is_connected());
        assert_eq!(core.receive_message(&node, br#""\n\u0000\n""#), Err(Broken), "a bare string");
        assert_eq!(core.receive_message(&node, br#"["\n\u0000\n"]"#), Ok(Received::Open));
        assert!(core.stomp.session.is_connected());
        let both = br#"["SUBSCRIBE\nid:1\ndestination:/topic/t\n\n\u0000DISCONNECT\nreceipt:9\n\n\u0000"]"#;
        assert_eq!(core.receive_message(&node, both), Ok(Received::Close(CloseReason::ClientDisconnect)));
        assert_eq!(out.with_queue(|q| q.len()), 2); // CONNECTED, RECEIPT
        assert_eq!(core.receive_message(&node, b"[1]"), Err(Broken));
        assert_eq!(core.goodbye(CloseReason::ClientDisconnect, false), (3000, "Go away!"));
        assert_eq!(core.goodbye(CloseReason::ConnectTimeout, false), (1001, "connect_timeout"));
        assert_eq!(out.with_queue(|q| q.len()), 3); // + the ERROR
    }
}
