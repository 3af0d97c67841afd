//! One client's STOMP session: the protocol state machine from CONNECT to DISCONNECT. It turns
//! parsed frames into effects on the node (subscribe, publish, the `/app` application) and
//! queues its replies (CONNECTED, RECEIPT, ERROR) on its own outbound queue. No I/O here:
//! the socket task (`driver.rs`) owns the socket and the timers.

use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use crate::app::{AppError, SessionHandle};
use crate::auth::Check;
use crate::broker::{
    encode_message, finish_recovery, is_transport_header, AckMode, Cursor, Publication, Subscriber,
};
use crate::engine::stream::{Recovering, Recovery, Since, EPOCH_HEADER, OFFSET_HEADER, RECOVERED_HEADER};
use crate::engine::LocalBoxFuture;
use crate::login_check::{Busy, Job, Verdict};
use crate::memory::{self, Charge};
use crate::metrics::{CloseReason, METRICS};
use crate::node::Node;
use crate::outbound::{OutFrame, Outbound};
use crate::protocol::{Command, Frame, FrameWriter, Version};

/// The `server` header of CONNECTED.
pub const SERVER_NAME: &str = concat!("stomp-edge/", env!("CARGO_PKG_VERSION"));

/// What the connection must do after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// Flush what is queued (an ERROR or a RECEIPT), then close.
    Close(CloseReason),
}

/// A protocol error: answered with an ERROR frame, then the connection closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    /// Label for `/metrics`.
    pub reason: &'static str,
    pub message: String,
    pub close: CloseReason,
}

impl ProtocolError {
    fn new(reason: &'static str, message: impl Into<String>) -> ProtocolError {
        ProtocolError { reason, message: message.into(), close: CloseReason::ProtocolError }
    }
}

/// A subscription of this session.
struct Subscription {
    id: Rc<str>,
    destination: Rc<str>,
    /// `/user/**` subscriptions are this session's alone and are not in the hub.
    user: bool,
}

/// A SEND held in an open transaction until COMMIT.
struct HeldSend {
    destination: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// Bytes charged per held SEND on top of its own: the entry, its share of the transaction's
/// vector, the body's shared handle and allocator slack.
const HELD_SEND_OVERHEAD: usize = 128;
/// Bytes charged per header of a held SEND on top of its name and value (two `String`s).
const HELD_HEADER_OVERHEAD: usize = 48;

impl HeldSend {
    /// What holding it costs the process, in bytes (body, destination, headers, overheads).
    fn cost(&self) -> usize {
        HELD_SEND_OVERHEAD
            + self.destination.len()
            + self.body.len()
            + self.headers.iter().map(|(n, v)| n.len() + v.len() + HELD_HEADER_OVERHEAD).sum::<usize>()
    }
}

/// An open transaction (STOMP 1.2 BEGIN): its SENDs wait for COMMIT.
struct Transaction {
    id: String,
    sends: Vec<HeldSend>,
    /// Body bytes held (bounded by `stomp.max_transaction_bytes`).
    bytes: usize,
    /// Everything held, at its real cost, on the memory budget: given back when the
    /// transaction is dropped (COMMIT, ABORT, or the session's end).
    charge: Charge,
}

/// Heart-beat intervals agreed at CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeartBeat {
    /// The server sends an EOL when it has written nothing for this long (None: never).
    pub send: Option<Duration>,
    /// The client must send something at least this often (None: not checked).
    pub receive: Option<Duration>,
}

/// Negotiates heart-beats: each direction is the larger of what the sender can do and what the
/// receiver wants, or off when either says 0 (STOMP 1.1 §Heart-beating).
pub fn negotiate_heartbeat(client: (u64, u64), server_send_ms: u64, server_receive_ms: u64) -> HeartBeat {
    let (client_send, client_receive) = client;
    let send = (server_send_ms != 0 && client_receive != 0).then(|| server_send_ms.max(client_receive));
    let receive = (server_receive_ms != 0 && client_send != 0).then(|| server_receive_ms.max(client_send));
    HeartBeat { send: send.map(Duration::from_millis), receive: receive.map(Duration::from_millis) }
}

/// Extra headers of a RECEIPT (a streamed SUBSCRIBE's `x-stream-*`).
type ReceiptHeaders = Vec<(&'static str, String)>;

fn receipt_frame(receipt: &str, version: Version, extra: &ReceiptHeaders) -> Bytes {
    let mut out = Vec::with_capacity(32 + receipt.len());
    let mut w = FrameWriter::new(&mut out, Command::Receipt, version);
    w.header("receipt-id", receipt);
    for (name, value) in extra {
        w.header(name, value);
    }
    w.body(b"");
    Bytes::from(out)
}

/// An ERROR frame: `message` header (one short line) and the whole text as the body, with the
/// refused frame's `receipt-id` when it asked for one.
fn error_frame(message: &str, receipt: Option<&str>, version: Version) -> Bytes {
    let mut out = Vec::with_capacity(64 + message.len() * 2);
    let mut w = FrameWriter::new(&mut out, Command::Error, version);
    // The `message` header is one line: keep it short, the body has the whole text.
    let short: String = message.chars().take(200).map(|c| if c.is_control() { ' ' } else { c }).collect();
    w.header("message", &short);
    if let Some(r) = receipt {
        w.header("receipt-id", r);
    }
    w.header("content-type", "text/plain");
    w.body(message.as_bytes());
    Bytes::from(out)
}

/// Whether a recovery read at once fits in half the client's queue (then it is queued in one
/// step; a larger one is paced by the reader, `broker::finish_recovery`).
fn fits(recovery: &Recovery, outbound: &Outbound) -> bool {
    let bytes: usize = recovery.publications.iter().map(|p| p.kept_cost()).sum();
    outbound.queued_bytes() + bytes <= outbound.limit() / 2
}

/// The RECEIPT headers of a streamed SUBSCRIBE. A recovery that could not read the stream
/// (Redis away) knows no epoch: it says `x-stream-recovered:false` and leaves the epoch and
/// offset out rather than send an empty one.
fn recovery_headers(recovery: &Recovery) -> ReceiptHeaders {
    let mut headers = vec![(RECOVERED_HEADER, recovery.recovered.to_string())];
    if !recovery.next.epoch.is_empty() {
        headers.push((EPOCH_HEADER, recovery.next.epoch.to_string()));
        headers.push((OFFSET_HEADER, recovery.next.offset.to_string()));
    }
    headers
}

fn parse_heartbeat(text: &str) -> Option<(u64, u64)> {
    let (a, b) = text.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// A CONNECT whose passcode waits for its Argon2 check (`crate::login_check`): what is needed
/// to answer it once the verdict is in.
struct PendingConnect {
    job: Rc<Job>,
    login: Option<String>,
    /// The client's `heart-beat` header, parsed.
    heartbeat: (u64, u64),
    /// The CONNECT's `receipt`, for the ERROR that may answer it.
    receipt: Option<String>,
}

/// The ERROR that refuses a CONNECT whose passcode check the server cannot take now.
fn busy_error(busy: Busy) -> ProtocolError {
    let why = match busy {
        Busy::QueueFull => "too many logins are waiting for their passcode check",
        Busy::Memory => "no memory for a passcode check now",
        Busy::Throttled => "a passcode check from this address is already waiting",
    };
    let mut e = ProtocolError::new("other", format!("server busy: {why}; retry later"));
    e.close = CloseReason::AuthFailed;
    e
}

pub struct Session {
    pub connection: u64,
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
    pub heartbeat: HeartBeat,
    subscriptions: Vec<Subscription>,
    transactions: Vec<Transaction>,
    /// What the frame being handled asks of its RECEIPT beyond sending it; boxed, and only
    /// while a SUBSCRIBE sets it: an idle session carries 8 bytes for it, not 48.
    receipt: Option<Box<ReceiptPlan>>,
}

/// How a SUBSCRIBE's RECEIPT goes out when not at once and plain.
#[derive(Default)]
struct ReceiptPlan {
    /// Set by a SUBSCRIBE whose cluster subscription is not active yet: its RECEIPT waits.
    after: Option<LocalBoxFuture<'static, ()>>,
    /// Set by a streamed SUBSCRIBE: what its RECEIPT says about the recovery.
    headers: ReceiptHeaders,
    /// Set by a SUBSCRIBE whose recovery sends the RECEIPT itself, after the kept messages.
    sent_later: bool,
}

impl Session {
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
            transactions: Vec::new(),
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
        !self.transactions.is_empty()
    }

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
        let result = self.dispatch(frame, node);
        // Taken whatever the result, so a failed SUBSCRIBE leaves nothing behind.
        let plan = self.receipt.take().map(|plan| *plan).unwrap_or_default();
        let (wait, extra) = (plan.after, plan.headers);
        let receipt = receipt.filter(|_| !plan.sent_later);
        match result {
            Ok(outcome) => {
                match (receipt, frame.command == Command::Connect, wait) {
                    (Some(receipt), false, None) => self.send_receipt(&receipt, &extra),
                    (Some(receipt), false, Some(wait)) => self.send_receipt_after(wait, receipt, extra, node),
                    _ => {}
                }
                outcome
            }
            Err(e) => {
                self.send_error(&e.message, receipt.as_deref());
                METRICS.protocol_errors.inc(e.reason);
                Outcome::Close(e.close)
            }
        }
    }

    fn dispatch(&mut self, frame: &Frame<'_>, node: &Node) -> Result<Outcome, ProtocolError> {
        match frame.command {
            Command::Connect | Command::Stomp => self.connect(frame, node),
            _ if !self.is_connected() => Err(ProtocolError::new(
                "not_connected",
                format!("{} before CONNECT: send CONNECT first", frame.command.as_str()),
            )),
            Command::Send => self.send(frame, node),
            Command::Subscribe => self.subscribe(frame, node),
            Command::Unsubscribe => self.unsubscribe(frame, node),
            Command::Ack | Command::Nack => self.ack(frame),
            Command::Begin => self.begin(frame, node),
            Command::Commit => self.commit(frame, node),
            Command::Abort => self.abort(frame),
            Command::Disconnect => Ok(Outcome::Close(CloseReason::ClientDisconnect)),
            other => {
                Err(ProtocolError::new("unknown_command", format!("{} is a server frame", other.as_str())))
            }
        }
    }

    fn connect(&mut self, frame: &Frame<'_>, node: &Node) -> Result<Outcome, ProtocolError> {
        if self.is_connected() {
            return Err(ProtocolError::new("already_connected", "already connected"));
        }
        let version = match frame.header("accept-version") {
            None => Version::V1_0,
            Some(list) => Version::parse_list(&list).ok_or_else(|| {
                ProtocolError::new(
                    "unsupported_version",
                    format!("no supported version in accept-version:{list}; this server speaks 1.0,1.1,1.2"),
                )
            })?,
        };
        self.version = version;
        let login = frame.header("login");
        let client_heartbeat = match frame.header("heart-beat") {
            None => (0, 0),
            Some(text) => parse_heartbeat(&text).ok_or_else(|| {
                ProtocolError::new(
                    "bad_header",
                    format!("heart-beat must be two numbers like 10000,10000, not {text:?}"),
                )
            })?,
        };
        let check = node.auth.borrow().check(login.as_deref(), frame.header("passcode").as_deref());
        match check {
            Check::Allowed => self.accept(login.as_deref(), client_heartbeat, node),
            Check::Refused => self.login_failed(frame.header("receipt").as_deref(), login.as_deref(), node),
            Check::Verify(verification) => {
                let config = node.config();
                // An address the throttle slows may have one check waiting (`crate::login_check`).
                let policy = config.auth.throttle();
                let throttled =
                    self.peer.filter(|_| node.login_throttle.address_throttled(self.peer, &policy));
                let max = config.auth.max_pending_logins;
                let job = node.login_checks.submit(verification, max, throttled).map_err(busy_error)?;
                job.wake_on_verdict(&self.outbound);
                self.pending = Some(Box::new(PendingConnect {
                    job,
                    login: login.map(|l| l.into_owned()),
                    heartbeat: client_heartbeat,
                    receipt: frame.header("receipt").map(|r| r.into_owned()),
                }));
                Ok(Outcome::Continue)
            }
        }
    }

    /// Completes a CONNECT whose credentials are good: agrees the heart-beats and queues
    /// CONNECTED.
    fn accept(
        &mut self,
        login: Option<&str>,
        client_heartbeat: (u64, u64),
        node: &Node,
    ) -> Result<Outcome, ProtocolError> {
        node.login_throttle.succeeded(self.peer, login);
        let version = self.version;
        let config = node.config();
        self.heartbeat = negotiate_heartbeat(
            client_heartbeat,
            config.stomp.heartbeat_send_ms,
            config.stomp.heartbeat_receive_ms,
        );
        let ms = |d: Option<Duration>| d.map_or(0, |d| d.as_millis() as u64);
        let mut out = Vec::with_capacity(160);
        let mut w = FrameWriter::new(&mut out, Command::Connected, version);
        w.header("version", version.as_str());
        w.header("server", SERVER_NAME);
        w.header("session", &self.session_id);
        w.header("heart-beat", &format!("{},{}", ms(self.heartbeat.send), ms(self.heartbeat.receive)));
        if let Some(login) = login {
            w.header("user-name", login);
        }
        w.body(b"");
        self.outbound.push_unbounded(OutFrame::stomp(Bytes::from(out)));
        self.handle = Some(Rc::new(SessionHandle::new(
            self.session_id.clone(),
            self.connection,
            version,
            login.map(Rc::from),
            self.outbound.clone(),
        )));
        node.broker.session_started(&self.session_id);
        Ok(Outcome::Continue)
    }

    /// Answers a failed login: logged once at WARN (address and login, never the passcode),
    /// counted, and refused with ERROR and close, at once or after the delay the throttle
    /// gives (`crate::login_throttle`).
    fn login_failed(
        &mut self,
        receipt: Option<&str>,
        login: Option<&str>,
        node: &Node,
    ) -> Result<Outcome, ProtocolError> {
        let policy = node.config().auth.throttle();
        let delay = node.login_throttle.record_failure(
            self.peer,
            login,
            &policy,
            format_args!("session {}", self.session_id),
        );
        let mut e = ProtocolError::new("other", "bad credentials: wrong or missing login/passcode");
        e.close = CloseReason::AuthFailed;
        if delay.is_zero() {
            return Err(e);
        }
        METRICS.protocol_errors.inc(e.reason);
        self.refused = true;
        let error = error_frame(&e.message, receipt, self.version);
        let outbound = self.outbound.clone();
        tokio::task::spawn_local(async move {
            tokio::time::sleep(delay).await;
            outbound.push_unbounded(OutFrame::stomp(error));
            outbound.close(CloseReason::AuthFailed);
        });
        Ok(Outcome::Continue)
    }

    fn required<'f>(frame: &'f Frame<'_>, name: &str) -> Result<std::borrow::Cow<'f, str>, ProtocolError> {
        match frame.header(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ProtocolError::new(
                "missing_header",
                format!("{} needs a `{name}` header", frame.command.as_str()),
            )),
        }
    }

    fn send(&mut self, frame: &Frame<'_>, node: &Node) -> Result<Outcome, ProtocolError> {
        let destination = Self::required(frame, "destination")?;
        let headers: Vec<(String, String)> = frame
            .headers()
            .filter(|(name, _)| !is_transport_header(name))
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect();
        let body = Bytes::copy_from_slice(frame.body);
        if let Some(tx) = frame.header("transaction") {
            let limits = node.config();
            let t = self.transaction(&tx)?;
            if t.sends.len() >= limits.stomp.max_transaction_frames
                || t.bytes + body.len() > limits.stomp.max_transaction_bytes
            {
                return Err(ProtocolError::new(
                    "transaction",
                    format!(
                        "transaction {tx} holds more than {} frames or {} bytes",
                        limits.stomp.max_transaction_frames, limits.stomp.max_transaction_bytes
                    ),
                ));
            }
            let held = HeldSend { destination: destination.into_owned(), headers, body };
            let cost = held.cost();
            let shortfall = memory::held_shortfall(cost);
            if shortfall > 0 {
                // Kept history gives way to a client's work before the work is refused.
                node.history().reclaim(shortfall);
            }
            if !memory::admit_held(cost) {
                METRICS.memory_refused.inc("transaction");
                return Err(ProtocolError::new(
                    "transaction",
                    format!(
                        "transaction {tx} refused: the server's memory budget is nearly used up \
                         (this SEND would hold {cost} more bytes); COMMIT smaller transactions"
                    ),
                ));
            }
            let t = self.transaction(&tx)?;
            t.bytes += held.body.len();
            t.charge.set(t.charge.bytes() + cost);
            t.sends.push(held);
            return Ok(Outcome::Continue);
        }
        self.route_send(&destination, headers, body, node);
        Ok(Outcome::Continue)
    }

    /// Sends a SEND where its destination leads: `/topic/**` to the broker, `/app/**` to the
    /// application. Problems here are application errors: the session stays open. Checked
    /// here, on every path a SEND takes (alone or at COMMIT, any version, any transport).
    fn route_send(&mut self, destination: &str, headers: Vec<(String, String)>, body: Bytes, node: &Node) {
        let Some(handle) = self.handle.clone() else { return };
        let config = node.config();
        let result = if let Some(prefix) = config.stomp.server_owned(destination) {
            // Only the server writes here (the chat's room events): a client's SEND would let
            // it forge events or speak as someone else (Spring: `simpDestMatchers(..).denyAll()`).
            METRICS.messages_dropped.inc("server_owned_destination");
            Err(AppError::new(
                "forbidden",
                format!("only the server sends to {prefix}**; use the /app destinations"),
                destination,
            ))
        } else if destination.starts_with("/topic/") {
            if config.stomp.allow_client_topic_send {
                node.publish(Publication::message(
                    Rc::from(destination),
                    node.next_message_id(),
                    headers,
                    body,
                ));
                Ok(())
            } else {
                Err(AppError::new(
                    "forbidden",
                    "clients may not send to /topic/** on this server",
                    destination,
                ))
            }
        } else if destination.starts_with("/app/") {
            match node.app() {
                Some(app) => app.on_send(&handle, destination, &body),
                None => Err(AppError::new(
                    "unknown_destination",
                    "no application is mounted at /app",
                    destination,
                )),
            }
        } else {
            Err(AppError::new(
                "unknown_destination",
                "destinations start with /topic/ (broadcast) or /app/ (application)",
                destination,
            ))
        };
        if let Err(e) = result {
            handle.send_error(&e);
        }
    }

    fn subscribe(&mut self, frame: &Frame<'_>, node: &Node) -> Result<Outcome, ProtocolError> {
        let destination = Self::required(frame, "destination")?;
        let id: Rc<str> = match frame.header("id") {
            Some(id) if !id.is_empty() => Rc::from(&*id),
            _ if self.version == Version::V1_0 => Rc::from(&*destination),
            _ => return Err(ProtocolError::new("missing_header", "SUBSCRIBE needs an `id` header")),
        };
        let ack = AckMode::parse(frame.header("ack").as_deref()).ok_or_else(|| {
            ProtocolError::new("bad_header", "ack must be auto, client or client-individual")
        })?;
        if self.subscriptions.iter().any(|s| s.id == id) {
            return Err(ProtocolError::new("bad_header", format!("subscription id {id} is already in use")));
        }
        let limit = node.config().limits.max_subscriptions;
        if self.subscriptions.len() >= limit {
            METRICS.subscriptions_rejected.inc("limit");
            return Err(ProtocolError::new(
                "other",
                format!("too many subscriptions: at most {limit} per connection"),
            ));
        }
        let user = destination.starts_with("/user/");
        if !(user || destination.starts_with("/topic/")) || destination.len() > 512 {
            METRICS.subscriptions_rejected.inc("bad_destination");
            return Err(ProtocolError::new(
                "bad_header",
                format!("cannot subscribe to {destination}: use /topic/... or /user/queue/..."),
            ));
        }
        let history = node.history();
        let streamed = !user && history.is_streamed(&destination);
        let since = if streamed {
            Since::parse(frame.header(OFFSET_HEADER).as_deref(), frame.header(EPOCH_HEADER).as_deref())
                .map_err(|e| ProtocolError::new("bad_header", e))?
        } else {
            Since::Next
        };
        if frame.header("receipt").is_some() {
            let after = node.broker.ready(&destination);
            if after.is_some() || self.receipt.is_some() {
                self.receipt.get_or_insert_with(Box::default).after = after;
            }
        }
        let key = if user {
            let key: Rc<str> = Rc::from(&*destination);
            if let Some(handle) = &self.handle {
                handle.add_user_subscription(key.clone(), id.clone());
            }
            key
        } else {
            let mut subscriber = Subscriber {
                connection: self.connection,
                subscription_id: id.clone(),
                version: self.version,
                ack,
                outbound: self.outbound.clone(),
                cursor: None,
            };
            if streamed && node.hub.subscriber_count(&destination) == 0 && !node.hub.has_room() {
                METRICS.subscriptions_rejected.inc("destination_limit");
                return Err(ProtocolError::new("other", node.hub.full_error().to_string()));
            }
            let mut later = None;
            if streamed {
                let read: Option<crate::engine::LocalBoxFuture<'static, Recovery>> = match history
                    .recover(&destination, &since)
                {
                    Recovering::Now(recovery) if fits(&recovery, &self.outbound) => {
                        // Kept messages first, then live: the read and the subscription
                        // happen in one step of this thread, so no publication can fall
                        // between them.
                        for p in &recovery.publications {
                            self.outbound.push(OutFrame::stomp(encode_message(p, &id, self.version, ack)));
                        }
                        METRICS.messages_delivered.add(recovery.publications.len() as u64);
                        self.receipt.get_or_insert_with(Box::default).headers = recovery_headers(&recovery);
                        None
                    }
                    // Larger than half the client's queue: paced by the reader, below.
                    Recovering::Now(recovery) => Some(Box::pin(std::future::ready(recovery))),
                    Recovering::Later(read) => Some(read),
                };
                if let Some(read) = read {
                    // The subscription holds live publications until the kept ones are sent;
                    // the cursor drops those sent twice at the seam.
                    subscriber.cursor = Some(Cursor::recovering());
                    later = Some((read, subscriber.clone()));
                }
            }
            let key = node.subscribe(&destination, subscriber).map_err(|e| {
                METRICS.subscriptions_rejected.inc("destination_limit");
                ProtocolError::new("other", e.to_string())
            })?;
            if let Some((read, subscriber)) = later {
                let receipt = frame.header("receipt").map(|r| r.into_owned());
                let plan = self.receipt.get_or_insert_with(Box::default);
                plan.sent_later = receipt.is_some();
                plan.after = None;
                let limit = Duration::from_millis(node.config().cluster.command_timeout_ms * 2);
                let version = self.version;
                tokio::task::spawn_local(async move {
                    let recovery = match tokio::time::timeout(limit, read).await {
                        Ok(recovery) => recovery,
                        Err(_) => Recovery::unavailable(Rc::from(""), 0),
                    };
                    finish_recovery(&subscriber, &recovery.publications, &recovery.next).await;
                    if let Some(receipt) = receipt {
                        let frame = receipt_frame(&receipt, version, &recovery_headers(&recovery));
                        subscriber.outbound.push_unbounded(OutFrame::stomp(frame));
                        METRICS.receipts_sent.inc();
                    }
                });
            }
            key
        };
        if self.subscriptions.capacity() == 0 {
            // Most sessions hold one subscription: room for one, not the four a push makes.
            self.subscriptions.reserve_exact(1);
        }
        self.subscriptions.push(Subscription { id, destination: key, user });
        Ok(Outcome::Continue)
    }

    fn unsubscribe(&mut self, frame: &Frame<'_>, node: &Node) -> Result<Outcome, ProtocolError> {
        let id = match frame.header("id") {
            Some(id) => id,
            None if self.version == Version::V1_0 => Self::required(frame, "destination")?,
            None => return Err(ProtocolError::new("missing_header", "UNSUBSCRIBE needs an `id` header")),
        };
        if let Some(i) = self.subscriptions.iter().position(|s| *s.id == *id) {
            let s = self.subscriptions.swap_remove(i);
            self.drop_subscription(s, node);
        }
        Ok(Outcome::Continue)
    }

    fn drop_subscription(&self, s: Subscription, node: &Node) {
        if s.user {
            if let Some(handle) = &self.handle {
                handle.remove_user_subscription(&s.id);
            }
        } else {
            node.unsubscribe(&s.destination, self.connection, &s.id);
        }
    }

    fn ack(&mut self, frame: &Frame<'_>) -> Result<Outcome, ProtocolError> {
        // Topics have no redelivery: ACK and NACK are checked and accepted.
        let name = if self.version == Version::V1_2 { "id" } else { "message-id" };
        Self::required(frame, name)?;
        if let Some(tx) = frame.header("transaction") {
            self.transaction(&tx)?;
        }
        Ok(Outcome::Continue)
    }

    fn transaction(&mut self, id: &str) -> Result<&mut Transaction, ProtocolError> {
        self.transactions
            .iter_mut()
            .find(|t| t.id == id)
            .ok_or_else(|| ProtocolError::new("transaction", format!("unknown transaction {id}")))
    }

    fn begin(&mut self, frame: &Frame<'_>, node: &Node) -> Result<Outcome, ProtocolError> {
        let id = Self::required(frame, "transaction")?;
        if self.transactions.iter().any(|t| *t.id == *id) {
            return Err(ProtocolError::new("transaction", format!("transaction {id} is already open")));
        }
        let limit = node.config().stomp.max_transactions;
        if self.transactions.len() >= limit {
            return Err(ProtocolError::new(
                "transaction",
                format!("too many open transactions: at most {limit}"),
            ));
        }
        METRICS.transactions.inc("begun");
        self.transactions.push(Transaction {
            id: id.into_owned(),
            sends: Vec::new(),
            bytes: 0,
            charge: Charge::new(),
        });
        Ok(Outcome::Continue)
    }

    fn take_transaction(&mut self, frame: &Frame<'_>) -> Result<Transaction, ProtocolError> {
        let id = Self::required(frame, "transaction")?;
        let i = self
            .transactions
            .iter()
            .position(|t| *t.id == *id)
            .ok_or_else(|| ProtocolError::new("transaction", format!("unknown transaction {id}")))?;
        Ok(self.transactions.swap_remove(i))
    }

    fn commit(&mut self, frame: &Frame<'_>, node: &Node) -> Result<Outcome, ProtocolError> {
        let t = self.take_transaction(frame)?;
        METRICS.transactions.inc("committed");
        for send in t.sends {
            self.route_send(&send.destination, send.headers, send.body, node);
        }
        Ok(Outcome::Continue)
    }

    fn abort(&mut self, frame: &Frame<'_>) -> Result<Outcome, ProtocolError> {
        let t = self.take_transaction(frame)?;
        METRICS.transactions.inc("aborted");
        METRICS.messages_dropped.add("transaction_aborted", t.sends.len() as u64);
        Ok(Outcome::Continue)
    }

    /// Sends a RECEIPT once `wait` resolves (bounded by the cluster command timeout).
    fn send_receipt_after(
        &self,
        wait: LocalBoxFuture<'static, ()>,
        receipt: String,
        extra: ReceiptHeaders,
        node: &Node,
    ) {
        let limit = Duration::from_millis(node.config().cluster.command_timeout_ms);
        let (outbound, version) = (self.outbound.clone(), self.version);
        tokio::task::spawn_local(async move {
            let _ = tokio::time::timeout(limit, wait).await;
            outbound.push_unbounded(OutFrame::stomp(receipt_frame(&receipt, version, &extra)));
            METRICS.receipts_sent.inc();
        });
    }

    fn send_receipt(&self, receipt: &str, extra: &ReceiptHeaders) {
        self.outbound.push_unbounded(OutFrame::stomp(receipt_frame(receipt, self.version, extra)));
        METRICS.receipts_sent.inc();
    }

    /// Queues an ERROR frame (the connection closes after it is flushed).
    pub fn send_error(&self, message: &str, receipt: Option<&str>) {
        self.outbound.push_unbounded(OutFrame::stomp(error_frame(message, receipt, self.version)));
    }

    /// Tells the client why the server closes it, as an ERROR frame, when it is a reason the
    /// client should hear about. A slow consumer's queue is dropped first (all but a front
    /// frame that is partly written, when `keep_front`), and the drop is counted.
    pub fn send_goodbye(&self, reason: CloseReason, connect_timeout: Duration, keep_front: bool) {
        let message = match reason {
            CloseReason::SlowConsumer => {
                let dropped = self.outbound.clear_after_front(keep_front);
                METRICS.messages_dropped.add("slow_consumer", dropped as u64);
                "slow consumer: too many bytes queued for this client, closing".to_string()
            }
            CloseReason::ServerShutdown => "server shutting down".to_string(),
            CloseReason::HeartbeatTimeout => format!(
                "no heart-beat or frame from the client in {} ms",
                self.heartbeat.receive.map_or(0, |d| d.as_millis() * 2)
            ),
            CloseReason::ConnectTimeout => format!("no CONNECT within {} ms", connect_timeout.as_millis()),
            _ => return,
        };
        self.send_error(&message, None);
    }

    /// Ends the session: drops its subscriptions and tells the application it left.
    pub fn end(&mut self, node: &Node) {
        // A passcode check nobody waits for any more is skipped (`crate::login_check`).
        self.pending = None;
        for s in std::mem::take(&mut self.subscriptions) {
            self.drop_subscription(s, node);
        }
        for t in std::mem::take(&mut self.transactions) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::memory::MemoryBroker;
    use crate::protocol::Limits;
    use crate::stomp_input::feed;

    fn node() -> Node {
        Node::new(Config::embedded(), Rc::new(MemoryBroker))
    }

    fn session(id: u64) -> (Session, Rc<Outbound>) {
        let out = Rc::new(Outbound::new(1 << 20));
        (Session::new(id, Rc::from(format!("s{id}")), out.clone()), out)
    }

    /// Feeds frames; returns the close reason, if the session must close.
    fn frames(s: &mut Session, node: &Node, data: &str) -> Option<CloseReason> {
        feed(s, node, &Limits::default(), data.as_bytes(), false).result.err()
    }

    /// Every frame queued for the client, as text, and empties the queue.
    fn sent(out: &Outbound) -> Vec<String> {
        let frames =
            out.with_queue(|q| q.iter().map(|f| String::from_utf8_lossy(&f.bytes).to_string()).collect());
        out.pop_written(out.with_queue(|q| q.len()));
        frames
    }

    const CONNECT: &str = "CONNECT\naccept-version:1.2\nhost:h\n\n\0";

    #[test]
    fn server_owned_destinations_are_refused_alone_and_at_commit() {
        let node = node();
        let (mut member, member_out) = session(1);
        assert_eq!(frames(&mut member, &node, CONNECT), None);
        assert_eq!(frames(&mut member, &node, "SUBSCRIBE\nid:r\ndestination:/topic/room/lobby\n\n\0"), None);
        let (mut mallory, out) = session(2);
        assert_eq!(frames(&mut mallory, &node, CONNECT), None);
        assert_eq!(
            frames(&mut mallory, &node, "SUBSCRIBE\nid:e\ndestination:/user/queue/errors\n\n\0"),
            None
        );
        sent(&out);
        sent(&member_out);
        let forged = r#"{"type":"JOIN","sender":"admin","participantCount":999}"#;
        assert_eq!(
            frames(&mut mallory, &node, &format!("SEND\ndestination:/topic/room/lobby\n\n{forged}\0")),
            None
        );
        let tx = format!(
            "BEGIN\ntransaction:t\n\n\0SEND\ndestination:/topic/room/lobby\ntransaction:t\n\n{forged}\0"
        );
        assert_eq!(frames(&mut mallory, &node, &tx), None);
        assert_eq!(sent(&out).len(), 1, "a SEND held in a transaction is only checked at COMMIT");
        assert_eq!(frames(&mut mallory, &node, "COMMIT\ntransaction:t\nreceipt:c\n\n\0"), None);
        let replies = sent(&out);
        assert_eq!(replies.len(), 2, "{replies:?}");
        assert!(replies[0].contains("\"code\":\"forbidden\"") && replies[0].contains("/user/queue/errors"));
        assert!(replies[1].starts_with("RECEIPT\n"), "the session stays open: {replies:?}");
        assert!(sent(&member_out).is_empty(), "nothing reached the room's subscriber");
        // Other topics stay open to clients.
        assert_eq!(frames(&mut mallory, &node, "SEND\ndestination:/topic/roomy\n\nhi\0"), None);
        assert!(sent(&out).is_empty());
    }

    #[test]
    fn frames_before_connect_and_a_second_connect_close_the_session() {
        let node = node();
        let (mut s, out) = session(1);
        assert_eq!(
            frames(&mut s, &node, "SEND\ndestination:/topic/a\nreceipt:x\n\nhi\0"),
            Some(CloseReason::ProtocolError)
        );
        let replies = sent(&out);
        assert!(replies[0].starts_with("ERROR\n") && replies[0].contains("receipt-id:x"), "{replies:?}");
        let (mut s, out) = session(2);
        assert_eq!(frames(&mut s, &node, CONNECT), None);
        assert!(s.is_connected() && sent(&out)[0].starts_with("CONNECTED\n"));
        assert_eq!(frames(&mut s, &node, CONNECT), Some(CloseReason::ProtocolError));
        assert_eq!(frames(&mut s, &node, "DISCONNECT\n\n\0"), Some(CloseReason::ClientDisconnect));
    }

    #[test]
    fn subscriptions_are_released_when_the_session_ends() {
        let node = node();
        let (mut s, out) = session(1);
        assert_eq!(frames(&mut s, &node, CONNECT), None);
        for (id, dest) in [("a", "/topic/a"), ("b", "/topic/b"), ("e", "/user/queue/errors")] {
            assert_eq!(frames(&mut s, &node, &format!("SUBSCRIBE\nid:{id}\ndestination:{dest}\n\n\0")), None);
        }
        assert_eq!(
            frames(&mut s, &node, "SUBSCRIBE\nid:a\ndestination:/topic/c\n\n\0"),
            Some(CloseReason::ProtocolError)
        );
        assert_eq!(node.hub.destination_count(), 2);
        assert_eq!(frames(&mut s, &node, "UNSUBSCRIBE\nid:a\n\n\0"), None);
        assert_eq!(node.hub.destination_count(), 1);
        s.end(&node);
        assert_eq!(node.hub.destination_count(), 0);
        assert!(!s.is_connected());
        drop(sent(&out));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_hashed_passcode_holds_the_frames_behind_its_connect_until_checked() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let node = node();
                let hash = crate::auth::hash_passcode("right").unwrap();
                node.auth.replace(crate::auth::Authenticator::new(vec![("alice".into(), hash)]));
                let (mut s, out) = session(1);
                let connect = "CONNECT\naccept-version:1.2\nlogin:alice\npasscode:right\n\n\0";
                let subscribe = "SUBSCRIBE\nid:1\ndestination:/topic/a\nreceipt:r\n\n\0";
                let input = format!("{connect}{subscribe}");
                let fed = feed(&mut s, &node, &Limits::default(), input.as_bytes(), false);
                assert_eq!((fed.consumed, fed.result), (connect.len(), Ok(())), "the SUBSCRIBE waits");
                assert!(s.awaiting_login() && !s.is_connected() && sent(&out).is_empty());
                assert_eq!(s.resume_connect(&node), None, "still being checked");
                while s.resume_connect(&node).is_none() {
                    out.notified().await; // the check's end wakes the connection's task
                }
                assert!(s.is_connected() && !s.awaiting_login());
                assert_eq!(frames(&mut s, &node, subscribe), None);
                let replies = sent(&out);
                assert!(replies[0].starts_with("CONNECTED\n") && replies[1].starts_with("RECEIPT\n"));
                // Remembered: the next CONNECT with it is answered at once.
                let (mut again, out) = session(2);
                assert_eq!(frames(&mut again, &node, connect), None);
                assert!(again.is_connected() && sent(&out)[0].starts_with("CONNECTED\n"));
            })
            .await;
    }

    /// Bytes the session's open transactions hold on the memory budget.
    fn held(s: &Session) -> usize {
        s.transactions.iter().map(|t| t.charge.bytes()).sum()
    }

    #[test]
    fn held_sends_are_charged_at_their_cost_and_given_back_by_commit_abort_and_end() {
        let node = node();
        let (mut s, out) = session(1);
        assert_eq!(frames(&mut s, &node, CONNECT), None);
        let body = "x".repeat(1000);
        let send = |tx: &str| format!("SEND\ndestination:/topic/t\ntransaction:{tx}\nx-k:v\n\n{body}\0");
        assert_eq!(
            frames(&mut s, &node, &format!("BEGIN\ntransaction:a\n\n\0{}{}", send("a"), send("a"))),
            None
        );
        let one =
            HELD_SEND_OVERHEAD + "/topic/t".len() + 1000 + "x-k".len() + "v".len() + HELD_HEADER_OVERHEAD;
        assert_eq!(held(&s), 2 * one, "body, destination, headers and overheads");
        assert_eq!(frames(&mut s, &node, &format!("BEGIN\ntransaction:b\n\n\0{}", send("b"))), None);
        assert_eq!(held(&s), 3 * one);
        assert_eq!(frames(&mut s, &node, "ABORT\ntransaction:a\n\n\0"), None);
        assert_eq!(held(&s), one);
        assert_eq!(frames(&mut s, &node, "COMMIT\ntransaction:b\n\n\0"), None);
        assert_eq!(held(&s), 0);
        assert_eq!(frames(&mut s, &node, &format!("BEGIN\ntransaction:c\n\n\0{}", send("c"))), None);
        assert_eq!(held(&s), one);
        let c = s.transactions[0].charge.bytes();
        s.end(&node);
        assert!(s.transactions.is_empty() && c == one, "the session's end drops its transactions");
        drop(sent(&out));
    }

    #[test]
    fn heartbeats_take_the_larger_interval_or_none() {
        let hb = negotiate_heartbeat((1000, 1000), 10_000, 10_000);
        assert_eq!(hb.send, Some(Duration::from_secs(10)));
        assert_eq!(hb.receive, Some(Duration::from_secs(10)));
        let hb = negotiate_heartbeat((20_000, 0), 10_000, 10_000);
        assert_eq!((hb.send, hb.receive), (None, Some(Duration::from_secs(20))));
        let hb = negotiate_heartbeat((0, 5000), 0, 10_000);
        assert_eq!((hb.send, hb.receive), (None, None));
        assert_eq!(parse_heartbeat("10000, 5000"), Some((10000, 5000)));
        assert_eq!(parse_heartbeat("x,1"), None);
        assert_eq!(parse_heartbeat("-1,1"), None);
    }
}
