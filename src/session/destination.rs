//! What a destination string means, decided once: the typed [`Destination`] a SEND or SUBSCRIBE
//! names, and every rule about destinations the session applies (where a SEND goes, what may be
//! subscribed to, which subscriptions keep a history). STOMP 1.2 leaves destinations to the
//! server; these prefixes are Spring's simple broker conventions, which the original design
//! follows: `/topic/**` broadcast, `/app/**` the application, `/user/**` one session alone.
//!
//! The configurable parts are read from `stomp.server_owned_prefixes`,
//! `stomp.allow_client_topic_send` and `streams.prefixes` (through the node's history), and the
//! chat's own room prefixes are in `chat` (`/app/room/`, `/topic/room/`).

use std::borrow::Cow;

use crate::config::StompConfig;
use crate::engine::stream::History;

/// Broadcast destinations: every subscriber on every board.
pub const TOPIC_PREFIX: &str = "/topic/";
/// Application destinations: SENDs go to the `/app` hook (`crate::app`), never to subscribers.
pub const APP_PREFIX: &str = "/app/";
/// Per-session destinations (`/user/queue/errors`): subscribed to, written only by the server.
pub const USER_PREFIX: &str = "/user/";
/// Where application errors go, as in Spring: the sender alone (`crate::app::AppError`).
pub const ERRORS_DESTINATION: &str = "/user/queue/errors";
/// Longest destination a SUBSCRIBE may name, in bytes (it is kept for the subscription's life).
pub const MAX_SUBSCRIBE_BYTES: usize = 512;

/// The family of a destination, from its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `/topic/**`.
    Topic,
    /// `/app/**`.
    App,
    /// `/user/**`.
    User,
    /// Anything else: refused by SEND (an application error) and SUBSCRIBE (a protocol error).
    Other,
}

/// A destination header, classified once by its prefix. Borrows the frame's text when it can.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination<'a> {
    name: Cow<'a, str>,
    kind: Kind,
}

/// Where a SEND to a destination goes ([`Destination::send_route`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendRoute<'c> {
    /// Under a `stomp.server_owned_prefixes` entry (the prefix): only the server writes there.
    ServerOwned(&'c str),
    /// `/topic/**`: published to every subscriber, when `stomp.allow_client_topic_send`.
    Topic,
    /// `/app/**`: handed to the application.
    App,
    /// Nowhere: answered with an `unknown_destination` application error.
    Unknown,
}

/// What a SUBSCRIBE to a destination makes ([`Destination::subscription`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscribable {
    /// A `/topic/**` subscription in the hub, shared with the engine.
    Topic,
    /// A `/user/**` subscription: the session's alone, not in the hub.
    User,
}

impl<'a> Destination<'a> {
    /// Classifies `name` by its prefix.
    pub fn new(name: Cow<'a, str>) -> Destination<'a> {
        let kind = if name.starts_with(TOPIC_PREFIX) {
            Kind::Topic
        } else if name.starts_with(APP_PREFIX) {
            Kind::App
        } else if name.starts_with(USER_PREFIX) {
            Kind::User
        } else {
            Kind::Other
        };
        Destination { name, kind }
    }

    /// The destination as the client wrote it (unescaped).
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// An owned copy, for a SEND held in a transaction.
    pub fn into_owned(self) -> Destination<'static> {
        Destination { name: Cow::Owned(self.name.into_owned()), kind: self.kind }
    }

    /// Where a client's SEND here goes. Server-owned prefixes come first, whatever their family
    /// (the chat's room events: a client's SEND would let it forge events or speak as someone
    /// else; Spring: `simpDestMatchers(..).denyAll()`).
    pub fn send_route<'c>(&self, stomp: &'c StompConfig) -> SendRoute<'c> {
        if let Some(prefix) = stomp.server_owned(&self.name) {
            return SendRoute::ServerOwned(prefix);
        }
        match self.kind {
            Kind::Topic => SendRoute::Topic,
            Kind::App => SendRoute::App,
            Kind::User | Kind::Other => SendRoute::Unknown,
        }
    }

    /// What a SUBSCRIBE here makes; None when it may not be subscribed to (not `/topic/**` or
    /// `/user/**`, or longer than [`MAX_SUBSCRIBE_BYTES`]).
    pub fn subscription(&self) -> Option<Subscribable> {
        if self.name.len() > MAX_SUBSCRIBE_BYTES {
            return None;
        }
        match self.kind {
            Kind::Topic => Some(Subscribable::Topic),
            Kind::User => Some(Subscribable::User),
            Kind::App | Kind::Other => None,
        }
    }

    /// Whether a subscription here keeps a history a subscriber can recover from: a topic under
    /// `streams.prefixes`, as the node's history (memory ring or Redis streams) says.
    pub fn is_streamed(&self, history: &dyn History) -> bool {
        self.kind == Kind::Topic && history.is_streamed(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn dest(name: &str) -> Destination<'_> {
        Destination::new(Cow::Borrowed(name))
    }

    #[test]
    fn prefixes_give_the_family_and_the_send_route() {
        let config = Config::embedded();
        let stomp = &config.stomp;
        assert_eq!(dest("/topic/room/lobby").send_route(stomp), SendRoute::ServerOwned("/topic/room/"));
        assert_eq!(dest("/topic/roomy").send_route(stomp), SendRoute::Topic);
        assert_eq!(dest("/app/room/lobby/send").send_route(stomp), SendRoute::App);
        assert_eq!(dest("/user/queue/errors").send_route(stomp), SendRoute::Unknown);
        assert_eq!(dest("/queue/x").send_route(stomp), SendRoute::Unknown);
        assert_eq!(dest("/topicx").kind, Kind::Other);
    }

    #[test]
    fn only_topics_and_user_queues_of_bounded_length_are_subscribed_to() {
        assert_eq!(dest("/topic/a").subscription(), Some(Subscribable::Topic));
        assert_eq!(dest("/user/queue/errors").subscription(), Some(Subscribable::User));
        assert_eq!(dest("/app/a").subscription(), None);
        assert_eq!(dest("/queue/a").subscription(), None);
        let long = format!("/topic/{}", "x".repeat(MAX_SUBSCRIBE_BYTES));
        assert_eq!(dest(&long).subscription(), None);
        let most = format!("/topic/{}", "x".repeat(MAX_SUBSCRIBE_BYTES - "/topic/".len()));
        assert_eq!(dest(&most).subscription(), Some(Subscribable::Topic));
    }
}
