//! One client's STOMP session: the protocol state machine from CONNECT to DISCONNECT. It turns
//! parsed frames into effects on the node (subscribe, publish, the `/app` application) and
//! queues its replies (CONNECTED, RECEIPT, ERROR) on its own outbound queue. No I/O here:
//! the socket task (`transport::driver`) owns the socket and the timers.
//!
//! A frame is checked against the session's state here ([`Session::handle`]), made a typed
//! command once (`command`), and handled by the file of its command:
//!
//! - `command`: [`command::Command::from_frame`], every header read and checked.
//! - `destination`: every destination rule (`/topic`, `/app`, `/user`, server-owned, streamed).
//! - `connect`: CONNECT, the login check and heart-beats.
//! - `send`: SEND and transactions (BEGIN, COMMIT, ABORT).
//! - `subscribe`: SUBSCRIBE (with a stream's recovery) and UNSUBSCRIBE.
//! - `reply`: RECEIPT, ERROR and the goodbye ERROR.

use std::net::IpAddr;
use std::rc::Rc;

use crate::app::SessionHandle;
use crate::auth::login_check::Verdict;
use crate::node::Node;
use crate::observability::metrics::{CloseReason, METRICS};
use crate::protocol::{self, Frame, Version};
use crate::transport::outbound::Outbound;

pub(crate) mod command;
mod connect;
pub(crate) mod destination;
pub(crate) mod input;
pub(crate) mod liveness;
mod reply;
mod send;
mod subscribe;
#[cfg(test)]
mod tests;

use command::Command;
pub use connect::HeartBeat;
use connect::{busy_error, PendingConnect};
use send::Transaction;
use subscribe::{ReceiptPlan, Subscription};

/// What the connection must do after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Go on reading.
    Continue,
    /// Flush what is queued (an ERROR or a RECEIPT), then close.
    Close(CloseReason),
}

/// A protocol error: answered with an ERROR frame, then the connection closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    /// Label for `/metrics`.
    pub reason: &'static str,
    /// The whole text: the ERROR's body, and its `message` header cut to one short line.
    pub message: String,
    /// How the close is counted (`connections_closed_total{reason}`).
    pub close: CloseReason,
    /// The version the ERROR is written in when the refused frame agreed one first (a CONNECT
    /// with a good `accept-version` and a bad `heart-beat`); None: the session's.
    pub answer_in: Option<Version>,
}

impl ProtocolError {
    fn new(reason: &'static str, message: impl Into<String>) -> ProtocolError {
        ProtocolError { reason, message: message.into(), close: CloseReason::ProtocolError, answer_in: None }
    }

    /// The same error, answered in `version`.
    fn in_version(mut self, version: Version) -> ProtocolError {
        self.answer_in = Some(version);
        self
    }
}

/// One client's STOMP session, owned by its connection's task (or SockJS session).
pub struct Session {
    /// The connection's number in the node's table.
    pub connection: u64,
    /// The `session` header of CONNECTED, unique across the cluster.
    pub session_id: Rc<str>,
    /// The client's address, for login throttling and logs (None: not known).
    peer: Option<IpAddr>,
    /// Set by a failed CONNECT whose ERROR waits for its throttling delay: frames that arrive
    /// meanwhile are ignored, and the connection closes once the ERROR is queued.
    refused: bool,
    /// Set by a CONNECT whose hashed passcode is being checked: no frame is handled until
    /// [`Session::resume_connect`] answers it (boxed: most sessions never have one).
    pending: Option<Box<PendingConnect>>,
    outbound: Rc<Outbound>,
    /// Set by CONNECT; `None` until then.
    handle: Option<Rc<SessionHandle>>,
    version: Version,
    /// The heart-beats agreed at CONNECT (none before).
    pub heartbeat: HeartBeat,
    subscriptions: Vec<Subscription>,
    // The extra allocation is the point: 8 bytes in every idle connection's task, not 24.
    #[allow(clippy::box_collection)]
    transactions: Option<Box<Vec<Transaction>>>,
    /// What the frame being handled asks of its RECEIPT beyond sending it; boxed, and only
    /// while a SUBSCRIBE sets it: an idle session carries 8 bytes for it, not 48.
    receipt: Option<Box<ReceiptPlan>>,
}

impl Session {
    /// The queue the session's frames go out on (its connection's; the hub holds it too).
    pub fn outbound(&self) -> &Rc<Outbound> {
        &self.outbound
    }

    /// A session before CONNECT, replying on `outbound`.
    pub fn new(connection: u64, session_id: Rc<str>, outbound: Rc<Outbound>) -> Session {
        Session {
            connection,
            session_id,
            peer: None,
            refused: false,
            pending: None,
            outbound,
            handle: None,
            version: Version::V1_2,
            heartbeat: HeartBeat::default(),
            subscriptions: Vec::new(),
            transactions: None,
            receipt: None,
        }
    }

    /// Tells the session which address its client connects from.
    pub fn set_peer(&mut self, peer: Option<IpAddr>) {
        self.peer = peer;
    }

    /// Whether the session holds SENDs in open transactions (bytes on the memory budget that
    /// its COMMIT, ABORT or end give back).
    pub fn holds_transactions(&self) -> bool {
        self.transactions.is_some()
    }

    /// Whether CONNECT was answered with CONNECTED.
    pub fn is_connected(&self) -> bool {
        self.handle.is_some()
    }

    /// Whether the CONNECT waits for its passcode check: the owner must not hand it frames
    /// (they stay buffered, bounded by the before-CONNECT limit) until
    /// [`Session::resume_connect`] has answered it. The check's end wakes the outbound queue's
    /// task.
    pub fn awaiting_login(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether a failed login's ERROR is on its way after its throttling delay: the CONNECT
    /// came in time, and the CONNECT deadline must not answer it instead (the delay is bounded
    /// by `auth.throttle_max_delay_ms`).
    pub fn answering_failed_login(&self) -> bool {
        self.refused
    }

    /// Answers a CONNECT whose passcode check is over: CONNECTED, or the failed-login path
    /// (throttle, WARN, ERROR). None while there is none or it is still running; otherwise
    /// what the connection must do, as after a frame. The outcome is remembered, so the next
    /// CONNECT with the same passcode is a compare.
    pub fn resume_connect(&mut self, node: &Node) -> Option<Outcome> {
        let verdict = self.pending.as_ref()?.job.verdict()?;
        let pending = self.pending.take()?;
        let login = pending.login.as_deref();
        let result = match verdict {
            Verdict::Matched | Verdict::Mismatched => {
                // A reload may have changed the account while it was checked: then it failed.
                let current =
                    node.auth.borrow().remember(pending.job.verification(), verdict == Verdict::Matched);
                if current && verdict == Verdict::Matched {
                    self.accept(login, pending.heartbeat, node)
                } else {
                    self.login_failed(pending.receipt.as_deref(), login, node)
                }
            }
            Verdict::Busy(busy) => Err(busy_error(busy)),
        };
        Some(match result {
            Ok(outcome) => outcome,
            Err(e) => {
                self.send_error(&e.message, pending.receipt.as_deref());
                METRICS.protocol_errors.inc(e.reason);
                Outcome::Close(e.close)
            }
        })
    }

    /// The version frames are parsed with (1.2 rules before CONNECT; CONNECT is never escaped).
    pub fn version(&self) -> Version {
        self.version
    }

    /// Handles one frame from the client.
    pub fn handle(&mut self, frame: &Frame<'_>, node: &Node) -> Outcome {
        METRICS.frames_received.inc();
        if self.refused {
            return Outcome::Continue; // its ERROR is on the way; the connection closes after it
        }
        let receipt = frame.header("receipt").map(|r| r.into_owned());
        let result = self.dispatch(frame, receipt.as_deref(), node);
        // Taken whatever the result, so a failed SUBSCRIBE leaves nothing behind.
        let plan = self.receipt.take().map(|plan| *plan).unwrap_or_default();
        let (wait, extra) = (plan.after, plan.headers);
        let receipt = receipt.filter(|_| !plan.sent_later);
        match result {
            Ok(outcome) => {
                match (receipt, frame.command == protocol::Command::Connect, wait) {
                    (Some(receipt), false, None) => self.send_receipt(&receipt, &extra),
                    (Some(receipt), false, Some(wait)) => self.send_receipt_after(wait, receipt, extra, node),
                    _ => {}
                }
                outcome
            }
            Err(e) => {
                if let Some(version) = e.answer_in {
                    self.version = version;
                }
                self.send_error(&e.message, receipt.as_deref());
                METRICS.protocol_errors.inc(e.reason);
                Outcome::Close(e.close)
            }
        }
    }

    /// Checks the frame against the session's state, makes it a [`Command`] and handles it.
    fn dispatch(
        &mut self,
        frame: &Frame<'_>,
        receipt: Option<&str>,
        node: &Node,
    ) -> Result<Outcome, ProtocolError> {
        let connecting = matches!(frame.command, protocol::Command::Connect | protocol::Command::Stomp);
        if connecting && self.is_connected() {
            return Err(ProtocolError::new("already_connected", "already connected"));
        }
        if !connecting && !self.is_connected() {
            return Err(ProtocolError::new(
                "not_connected",
                format!("{} before CONNECT: send CONNECT first", frame.command.as_str()),
            ));
        }
        match Command::from_frame(frame, self.version)? {
            Command::Connect(connect) => self.connect(connect, receipt, node),
            Command::Send(send) => self.send(send, node),
            Command::Subscribe(subscribe) => self.subscribe(subscribe, receipt, node),
            Command::Unsubscribe { id } => self.unsubscribe(&id, node),
            Command::Ack { transaction } => {
                if let Some(tx) = transaction {
                    self.transaction(&tx)?;
                }
                Ok(Outcome::Continue)
            }
            Command::Begin { transaction } => self.begin(transaction.into_owned(), node),
            Command::Commit { transaction } => self.commit(&transaction, node),
            Command::Abort { transaction } => self.abort(&transaction),
            Command::Disconnect => Ok(Outcome::Close(CloseReason::ClientDisconnect)),
        }
    }

    /// Ends the session: drops its subscriptions and tells the application it left.
    pub fn end(&mut self, node: &Node) {
        // A passcode check nobody waits for any more is skipped (`crate::auth::login_check`).
        self.pending = None;
        for s in std::mem::take(&mut self.subscriptions) {
            self.drop_subscription(s, node);
        }
        for t in self.transactions.take().map(|open| *open).unwrap_or_default() {
            METRICS.messages_dropped.add("transaction_unfinished", t.sends.len() as u64);
        }
        if let Some(handle) = self.handle.take() {
            if let Some(app) = node.app() {
                app.on_session_end(&handle);
            }
            node.broker.session_ended(&self.session_id);
        }
    }
}
