//! What a [`Driver`](super::Driver) drives: the STOMP side of a connection ([`Stomp`]: the
//! session, its clock, its parser limits) and the [`Framing`] that differs between the
//! transports it carries (plain `/ws` in `transport::connection`, SockJS's `websocket` in
//! `transport::sockjs::websocket`).

use std::io;
use std::rc::Rc;

use tokio::time::Instant;

use crate::node::Node;
use crate::observability::metrics::CloseReason;
use crate::protocol::Limits;
use crate::session::input;
use crate::session::liveness::Liveness;
use crate::session::Session;
use crate::transport::outbound::Outbound;
use crate::transport::socket::Socket;

/// Most bytes a socket may make the server hold before its STOMP CONNECT: a CONNECT (see
/// [`input::CONNECT_FRAME_BYTES`]), with room for SockJS's JSON escaping and framing.
pub const BEFORE_CONNECT_BYTES: usize = 2 * input::CONNECT_FRAME_BYTES + 1024;

/// The STOMP side of one connection, whatever carries its bytes: the session state machine,
/// its clock and the parser limits it was opened with.
pub struct Stomp {
    /// The STOMP state machine.
    pub session: Session,
    /// The CONNECT deadline and the heart-beats.
    pub liveness: Liveness,
    /// `limits.max_frame_bytes`, `max_headers` and `max_header_line_bytes`, read once when the
    /// connection opened, as `u32`s (12 bytes of every connection's task, not 24; the
    /// configuration caps each far below `u32::MAX`): [`Stomp::limits`].
    limits: [u32; 3],
}

impl Stomp {
    /// The STOMP side of a new connection, with the node's current limits.
    pub fn new(node: &Node, connection: u64, session_id: Rc<str>, outbound: Rc<Outbound>) -> Stomp {
        let config = node.config();
        Stomp {
            session: Session::new(connection, session_id, outbound),
            liveness: Liveness::new(config.stomp.connect_timeout()),
            limits: [
                compact(config.limits.max_frame_bytes),
                compact(config.limits.max_headers),
                compact(config.limits.max_header_line_bytes),
            ],
        }
    }

    /// The parser limits this connection was opened with.
    pub fn limits(&self) -> Limits {
        let [max_frame_bytes, max_headers, max_header_line_bytes] = self.limits.map(|v| v as usize);
        Limits { max_frame_bytes, max_headers, max_header_line_bytes }
    }
}

/// A configured limit as a connection keeps it (the configuration's ceilings are far below
/// `u32::MAX`; a larger one would be taken as that).
fn compact(limit: usize) -> u32 {
    u32::try_from(limit).unwrap_or(u32::MAX)
}

/// What differs between the transports a [`Driver`] carries: how application bytes become STOMP
/// input, how queued frames are written, the transport's own clock and its goodbye.
pub trait Framing {
    /// Handles the de-framed WebSocket application bytes at the front of `data`. Returns the
    /// bytes consumed (the rest is the start of something not fully arrived) and `Err` when the
    /// connection must close (after flushing what was queued).
    fn receive(&mut self, stomp: &mut Stomp, node: &Node, data: &[u8]) -> (usize, Result<(), CloseReason>);

    /// Whether bytes are waiting for the socket to become writable.
    fn pending(&self, outbound: &Outbound) -> bool;

    /// Writes as much of what is queued as the socket takes now; returns the bytes written.
    fn flush<S: Socket>(&mut self, stream: &S, outbound: &Outbound) -> io::Result<usize>;

    /// The transport's own clock (SockJS heart-beats): does what is due and returns when to be
    /// called again, if ever.
    fn on_timer(&mut self, _outbound: &Outbound, _now: Instant) -> Option<Instant> {
        None
    }

    /// Whether the front queued frame is partly written (it must be finished, not dropped).
    fn partly_written(&self) -> bool {
        false
    }

    /// Queues the goodbye for `reason`: the STOMP ERROR when the reason calls for one, and the
    /// transport's close frames. Not called for a socket already gone.
    fn goodbye(&mut self, stomp: &mut Stomp, reason: CloseReason, outbound: &Outbound);

    /// Bytes the framing holds for this client (buffers), charged on the memory budget.
    fn held_bytes(&self) -> usize {
        0
    }

    /// Name for logs.
    fn name(&self) -> &'static str;

    /// The STOMP bytes received and not yet a whole frame, given the de-framed application
    /// bytes not consumed yet (`data`): where an ERROR looks for the interrupted frame's
    /// `receipt`. The plain framing's are `data` itself.
    fn pending_stomp<'a>(&'a self, data: &'a [u8]) -> &'a [u8] {
        data
    }
}
