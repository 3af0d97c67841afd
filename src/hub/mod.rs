//! Local pub/sub: what a published message is (`Publication`) and the `Hub` that holds this
//! node's subscriptions and fans a publication out to them. The hub does no I/O; it queues
//! shared, encoded frames on each subscriber's `Outbound`.

mod fanout;

pub use fanout::{encode_message, finish_recovery, AckMode, Cursor, Hub, HubError, Subscriber};

use std::rc::Rc;

use bytes::Bytes;

/// What a publication is, set by whoever made it; engines route by it and never read bodies.
/// (centrifuge keeps publications apart from join and leave events the same way.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An ordinary message: a client's SEND, or a chat message.
    #[default]
    Message,
    /// Someone joined the publication's `room`.
    Join,
    /// Someone left the publication's `room`.
    Leave,
    /// A notice the server itself makes.
    System,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Join => "join",
            Kind::Leave => "leave",
            Kind::System => "system",
        }
    }

    /// The kind named by `as_str`.
    pub fn parse(text: &str) -> Option<Kind> {
        Some(match text {
            "message" => Kind::Message,
            "join" => Kind::Join,
            "leave" => Kind::Leave,
            "system" => Kind::System,
            _ => return None,
        })
    }

    /// Whether it tells of a membership change.
    pub fn is_membership(self) -> bool {
        matches!(self, Kind::Join | Kind::Leave)
    }
}

/// A message published to a destination, on this node or relayed from another one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    pub destination: Rc<str>,
    /// Unique across the cluster: `{server_id}-{sequence}`.
    pub message_id: Rc<str>,
    /// Headers passed through to every MESSAGE (`content-type` and the sender's own headers).
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Where the publication sits in its destination's stream, for a streamed destination
    /// (every MESSAGE then carries `x-stream-offset` and `x-stream-epoch`); None otherwise.
    pub stream: Option<StreamPosition>,
    /// What it is: a message, or a join or leave event of `room`. Set by the publisher.
    pub kind: Kind,
    /// The room (a server-owned group of subscribers, e.g. a chat room) it belongs to, set only
    /// by the application that owns the room; the relay sends a room's publications on the
    /// room's channels. None for everything clients publish.
    pub room: Option<Rc<str>>,
}

/// Bytes counted per kept publication on top of its own (its entry, shared handles, allocator
/// slack).
const KEPT_OVERHEAD: usize = 96;

impl Publication {
    /// What keeping it costs the process, in bytes: destination, message id, body, headers
    /// (48 bytes of overhead each) and 96 bytes for its entry. How history rings and held
    /// arrivals charge it to the memory budget (`crate::board::memory`).
    pub fn kept_cost(&self) -> usize {
        KEPT_OVERHEAD
            + self.destination.len()
            + self.message_id.len()
            + self.body.len()
            + self.headers.iter().map(|(n, v)| n.len() + v.len() + 48).sum::<usize>()
    }

    /// An ordinary message to `destination`, in no room.
    pub fn message(
        destination: Rc<str>,
        message_id: Rc<str>,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> Publication {
        Publication { destination, message_id, headers, body, kind: Kind::Message, room: None, stream: None }
    }
}

/// A position in a destination's stream (centrifuge's `StreamPosition`, RabbitMQ's offset).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamPosition {
    /// Grows by one per message of the destination, from 1; the same on every node.
    pub offset: u64,
    /// Changes only when the destination's history was lost and offsets began again.
    pub epoch: Rc<str>,
}

/// The MESSAGE header carrying `StreamPosition::offset` (RabbitMQ's stream header name).
pub const OFFSET_HEADER: &str = "x-stream-offset";
/// The MESSAGE header carrying `StreamPosition::epoch`.
pub const EPOCH_HEADER: &str = "x-stream-epoch";

/// Headers a SEND carries that are about the SEND itself and are not passed on.
pub fn is_transport_header(name: &str) -> bool {
    matches!(
        name,
        "destination"
            | "receipt"
            | "transaction"
            | "content-length"
            | "message-id"
            | "subscription"
            | "ack"
            | OFFSET_HEADER
            | EPOCH_HEADER
    )
}
