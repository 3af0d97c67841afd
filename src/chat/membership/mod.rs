//! Room membership: who is in which chat room, under which name, and how many are there. The
//! chat application owns it (in centrifuge terms, its `PresenceManager`); engines know nothing
//! of rooms or names. One interface, two stores:
//! - `memory`: a bounded table on this node (local mode; in cluster mode, this node's truth);
//! - `redis`: the cluster's view in Redis, changed by atomic scripts, with this node's own
//!   members kept locally so joins and leaves go on while Redis is away, and written back
//!   (each change announced once) when it returns.
//!
//! Rules every store keeps: a session is in at most one room; a name is unique in a room; a
//! join of a session that is already in a room moves it (a rename when it is the same room),
//! atomically: the name is checked first, and on refusal nothing changes.

pub mod memory;
pub mod redis;
mod scripts;

use std::rc::Rc;

use super::room::{RoomId, Username};
use crate::engine::LocalBoxFuture;
use crate::hub::Publication;
use crate::observability::metrics::MetricLines;

/// A participant of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub session_id: Rc<str>,
    pub username: Username,
}

/// What a session left: its room, its name there, and how many remain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    pub room: RoomId,
    pub username: Username,
    pub count: usize,
}

/// The result of a join: the room's new member count, and what the session left to make it
/// (its previous room or name), if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub count: usize,
    pub left: Option<Left>,
}

/// Why a join was refused; each maps to an application error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinError {
    RoomFull { limit: usize },
    TooManyRooms { limit: usize },
    UsernameTaken,
}

impl JoinError {
    pub fn code(&self) -> &'static str {
        match self {
            JoinError::RoomFull { .. } => "room_full",
            JoinError::TooManyRooms { .. } => "too_many_rooms",
            JoinError::UsernameTaken => "username_taken",
        }
    }

    pub fn message(&self) -> String {
        match self {
            JoinError::RoomFull { limit } => format!("the room is full ({limit} participants)"),
            JoinError::TooManyRooms { limit } => format!("the server has its maximum of {limit} rooms"),
            JoinError::UsernameTaken => "that username is already in this room".into(),
        }
    }
}

/// Room membership. The memory store answers at once; the Redis one may ask Redis, so the
/// calls are futures.
/// Who delivers a join or leave event to this node's own clients (see `Membership::announce`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalDelivery {
    /// The caller, at once: a node alone, or a change Redis does not have yet (delivered
    /// without a stream position; the catch-up announces it to the others later).
    Caller,
    /// The engine, once Redis gave the event its stream offset, in offset order: the same
    /// position and order on every node, like a CHAT (docs/CONTRACT.md, "Streams").
    Engine,
}

pub trait Membership {
    /// Puts a session in a room under a name, leaving its current room (or name) first.
    /// Fails, changing nothing, when the name is taken there, the room is full or the node
    /// has too many rooms.
    fn join<'a>(&'a self, room: &'a RoomId, member: Member) -> LocalBoxFuture<'a, Result<Joined, JoinError>>;

    /// Takes a session out of its room, if it is in `room`.
    fn leave<'a>(&'a self, room: &'a RoomId, session_id: &'a str) -> LocalBoxFuture<'a, Option<Left>>;

    /// Member count of a room, as last known (no round trip: used for every chat message).
    fn count(&self, room: &RoomId) -> usize;

    /// Every room with its member count, sorted by room id.
    fn rooms(&self) -> LocalBoxFuture<'_, Vec<(String, usize)>>;

    /// The member names of a room in join order, or None when there is no such room.
    fn members<'a>(&'a self, room: &'a RoomId) -> LocalBoxFuture<'a, Option<Vec<String>>>;

    /// Tells the other nodes of a join or leave event of `session_id` that this node made,
    /// and says who delivers it to this node's own clients. A store with no other nodes does
    /// nothing and leaves the delivery to the caller.
    fn announce(&self, _session_id: &str, _event: &Publication) -> LocalDelivery {
        LocalDelivery::Caller
    }

    /// A join or leave event of another node arrived for `room` (counts may have changed).
    fn changed_elsewhere(&self, _room: &RoomId) {}

    /// A SIGHUP reload changed the limits (`chat.max_rooms`, `chat.max_participants_per_room`):
    /// later joins are checked against the new ones; rooms already over them keep their
    /// members.
    fn set_limits(&self, max_rooms: usize, max_participants: usize);

    /// Gauges and counters for `/metrics`.
    fn metrics(&self) -> (MetricLines, MetricLines) {
        (Vec::new(), Vec::new())
    }
}
