//! The application hook: what handles SENDs to `/app/**` (Spring's `@MessageMapping` with the
//! `/app` prefix), and the handle through which an application answers one session alone on
//! its `/user/queue/**` subscriptions.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::Bytes;
use serde::Serialize;

use crate::engine::LocalBoxFuture;
use crate::hub::Publication;
use crate::observability::metrics::{MetricLines, METRICS};
use crate::protocol::{Command, FrameWriter, Version};
use crate::transport::outbound::{OutFrame, Outbound};

pub use crate::session::destination::ERRORS_DESTINATION;

/// An application error: sent as JSON on `/user/queue/errors`; the session stays open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppError {
    pub code: &'static str,
    pub message: String,
    pub destination: String,
}

impl AppError {
    pub fn new(code: &'static str, message: impl Into<String>, destination: &str) -> AppError {
        AppError { code, message: message.into(), destination: destination.to_string() }
    }
}

/// The part of a session an application may hold on to: who it is and how to reach it.
pub struct SessionHandle {
    pub session_id: Rc<str>,
    pub connection: u64,
    pub version: Version,
    /// The login the session connected with (checked against `auth.users` when set).
    pub login: Option<Rc<str>>,
    pub outbound: Rc<Outbound>,
    /// The session's `/user/**` subscriptions as (destination, subscription id).
    user_subscriptions: RefCell<Vec<(Rc<str>, Rc<str>)>>,
    /// Numbers the messages sent to this session alone, for their message-id.
    user_sequence: Cell<u64>,
}

impl SessionHandle {
    pub fn new(
        session_id: Rc<str>,
        connection: u64,
        version: Version,
        login: Option<Rc<str>>,
        outbound: Rc<Outbound>,
    ) -> SessionHandle {
        SessionHandle {
            session_id,
            connection,
            version,
            login,
            outbound,
            user_subscriptions: RefCell::new(Vec::new()),
            user_sequence: Cell::new(0),
        }
    }

    pub fn add_user_subscription(&self, destination: Rc<str>, id: Rc<str>) {
        self.user_subscriptions.borrow_mut().push((destination, id));
    }

    /// Removes the subscription with `id`; true if it was a `/user/**` one.
    pub fn remove_user_subscription(&self, id: &str) -> bool {
        let mut subs = self.user_subscriptions.borrow_mut();
        let before = subs.len();
        subs.retain(|(_, sid)| &**sid != id);
        subs.len() != before
    }

    /// Sends a JSON message to this session's subscriptions of `destination` (a `/user/**`
    /// destination). Returns false, and counts a drop, when the session has none.
    pub fn send_to_user(&self, destination: &str, json: &[u8]) -> bool {
        let subs = self.user_subscriptions.borrow();
        let mut sent = false;
        for (dest, id) in subs.iter().filter(|(d, _)| &**d == destination) {
            let mut out = Vec::with_capacity(128 + json.len());
            let mut w = FrameWriter::new(&mut out, Command::Message, self.version);
            w.header("destination", dest);
            self.user_sequence.set(self.user_sequence.get() + 1);
            w.header("message-id", &format!("{}-u{}", self.session_id, self.user_sequence.get()));
            w.header("subscription", id);
            w.header("content-type", "application/json");
            w.body(json);
            self.outbound.push_unbounded(OutFrame::stomp(Bytes::from(out)));
            sent = true;
        }
        sent
    }

    /// Sends an application error to this session alone.
    pub fn send_error(&self, error: &AppError) {
        METRICS.app_errors.inc(error.code);
        let json = serde_json::to_vec(error).unwrap_or_default();
        if !self.send_to_user(ERRORS_DESTINATION, &json) {
            METRICS.messages_dropped.inc("no_error_subscription");
            log::debug!(
                "session {}: {} ({}), not subscribed to {ERRORS_DESTINATION}",
                self.session_id,
                error.code,
                error.message
            );
        }
    }
}

/// An application mounted under `/app`.
pub trait Application {
    /// Handles a SEND to `destination` (the full destination, starting with `/app/`).
    /// Errors are answered to the sender on `/user/queue/errors`.
    fn on_send(&self, session: &Rc<SessionHandle>, destination: &str, body: &[u8]) -> Result<(), AppError>;

    /// The session ended (DISCONNECT, socket closed, heart-beat timeout, shutdown).
    fn on_session_end(&self, session: &Rc<SessionHandle>);

    /// A SIGHUP reload applied a new configuration.
    fn reload(&self, _config: &crate::config::Config) {}

    /// Whether work is still queued (a graceful shutdown waits for it).
    fn busy(&self) -> bool {
        false
    }

    /// Gauges and counters for `/metrics`.
    fn metrics(&self) -> (MetricLines, MetricLines) {
        (Vec::new(), Vec::new())
    }

    /// A publication of another node was delivered here (after this node's subscribers got
    /// it), so the application can follow what other nodes did by its typed kind and room.
    fn on_remote(&self, _publication: &Publication) {}

    /// Whether this node's subscribers get another node's publication at all: false for one
    /// the application knows to be stale here, e.g. a LEAVE another node announced for a
    /// member of this node that is still in its room (announced while this node was cut off
    /// from Redis, read back after; its own clients are never told that they left).
    fn admits_remote(&self, _publication: &Publication) -> bool {
        true
    }

    /// The read API of the application's rooms (`/api/rooms`), if it has rooms.
    fn rooms(&self) -> Option<&dyn RoomApi> {
        None
    }
}

/// What `/api/rooms` and `/api/rooms/{roomId}` read.
pub trait RoomApi {
    /// Every room with its participant count, sorted by room id (cluster-wide when the
    /// application's store is).
    fn list(&self) -> LocalBoxFuture<'_, Vec<(String, usize)>>;

    /// A room's participant names in join order: Ok(None) when there is no such room,
    /// Err(message) when `room_id` is not a valid room id.
    fn members<'a>(&'a self, room_id: &'a str) -> LocalBoxFuture<'a, Result<Option<Vec<String>>, String>>;
}
