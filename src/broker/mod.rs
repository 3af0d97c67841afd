//! Local pub/sub: what a published message is (`Publication`) and the `Hub` that holds this
//! node's subscriptions and fans a publication out to them. The hub does no I/O; it queues
//! shared, encoded frames on each subscriber's `Outbound`.

mod hub;

pub use hub::{encode_message, finish_recovery, AckMode, Cursor, Hub, HubError, Subscriber};

use std::rc::Rc;

use bytes::Bytes;

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
