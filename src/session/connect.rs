//! CONNECT (and STOMP): the version and heart-beats agreed, the login checked (at once, or off
//! the event loop for an Argon2 hash: `crate::auth::login_check`), and CONNECTED or the failed-login
//! ERROR, which the throttle may delay (`crate::auth::login_throttle`).

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use crate::app::SessionHandle;
use crate::auth::login_check::{Busy, Job};
use crate::auth::Check;
use crate::node::Node;
use crate::observability::metrics::{CloseReason, METRICS};
use crate::protocol::{self, FrameWriter};
use crate::transport::outbound::OutFrame;

use super::command::Connect;
use super::reply::error_frame;
use super::{Outcome, ProtocolError, Session};

/// The `server` header of CONNECTED.
pub const SERVER_NAME: &str = concat!("stomp-edge/", env!("CARGO_PKG_VERSION"));

/// Heart-beat intervals agreed at CONNECT, in milliseconds, 0 for off. Kept as `u32` (8 bytes
/// in every session, where two `Option<Duration>`s took 32): an interval a client asks for past
/// `u32::MAX` ms (49.7 days) is taken as that, which is the same in practice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeartBeat {
    send_ms: u32,
    receive_ms: u32,
}

impl HeartBeat {
    /// The server sends an EOL when it has written nothing for this long (None: never).
    pub fn send(&self) -> Option<Duration> {
        (self.send_ms != 0).then(|| Duration::from_millis(u64::from(self.send_ms)))
    }

    /// The client must send something at least this often (None: not checked).
    pub fn receive(&self) -> Option<Duration> {
        (self.receive_ms != 0).then(|| Duration::from_millis(u64::from(self.receive_ms)))
    }
}

/// Negotiates heart-beats: each direction is the larger of what the sender can do and what the
/// receiver wants, or off when either says 0 (STOMP 1.1 §Heart-beating).
pub fn negotiate_heartbeat(client: (u64, u64), server_send_ms: u64, server_receive_ms: u64) -> HeartBeat {
    let (client_send, client_receive) = client;
    let agree = |ours: u64, theirs: u64| {
        if ours == 0 || theirs == 0 {
            0
        } else {
            u32::try_from(ours.max(theirs)).unwrap_or(u32::MAX)
        }
    };
    HeartBeat {
        send_ms: agree(server_send_ms, client_receive),
        receive_ms: agree(server_receive_ms, client_send),
    }
}

/// A CONNECT whose passcode waits for its Argon2 check (`crate::auth::login_check`): what is needed
/// to answer it once the verdict is in.
pub(super) struct PendingConnect {
    pub(super) job: Rc<Job>,
    pub(super) login: Option<String>,
    /// The client's `heart-beat` header, parsed.
    pub(super) heartbeat: (u64, u64),
    /// The CONNECT's `receipt`, for the ERROR that may answer it.
    pub(super) receipt: Option<String>,
}

/// The ERROR that refuses a CONNECT whose passcode check the server cannot take now.
pub(super) fn busy_error(busy: Busy) -> ProtocolError {
    let why = match busy {
        Busy::QueueFull => "too many logins are waiting for their passcode check",
        Busy::Memory => "no memory for a passcode check now",
        Busy::Throttled => "a passcode check from this address is already waiting",
    };
    let mut e = ProtocolError::new("other", format!("server busy: {why}; retry later"));
    e.close = CloseReason::AuthFailed;
    e
}

impl Session {
    /// Checks a CONNECT's login: CONNECTED at once, the failed-login path, or a passcode check
    /// off the event loop that [`Session::resume_connect`] answers.
    pub(super) fn connect(
        &mut self,
        connect: Connect<'_>,
        receipt: Option<&str>,
        node: &Node,
    ) -> Result<Outcome, ProtocolError> {
        self.version = connect.version;
        let login = connect.login;
        let check = node.auth.borrow().check(login.as_deref(), connect.passcode.as_deref());
        match check {
            Check::Allowed => self.accept(login.as_deref(), connect.heartbeat, node),
            Check::Refused => self.login_failed(receipt, login.as_deref(), node),
            Check::Verify(verification) => {
                let config = node.config();
                // An address the throttle slows may have one check waiting (`crate::auth::login_check`).
                let policy = config.auth.throttle();
                let throttled =
                    self.peer.filter(|_| node.login_throttle.address_throttled(self.peer, &policy));
                let max = config.auth.max_pending_logins;
                let job = node.login_checks.submit(verification, max, throttled).map_err(busy_error)?;
                job.wake_on_verdict(&self.outbound);
                self.pending = Some(Box::new(PendingConnect {
                    job,
                    login: login.map(|l| l.into_owned()),
                    heartbeat: connect.heartbeat,
                    receipt: receipt.map(str::to_string),
                }));
                Ok(Outcome::Continue)
            }
        }
    }

    /// Completes a CONNECT whose credentials are good: agrees the heart-beats and queues
    /// CONNECTED.
    pub(super) fn accept(
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
        let mut w = FrameWriter::new(&mut out, protocol::Command::Connected, version);
        w.header("version", version.as_str());
        w.header("server", SERVER_NAME);
        w.header("session", &self.session_id);
        w.header("heart-beat", &format!("{},{}", ms(self.heartbeat.send()), ms(self.heartbeat.receive())));
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
    /// gives (`crate::auth::login_throttle`).
    pub(super) fn login_failed(
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
}
