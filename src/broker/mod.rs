//! Local pub/sub: what a published message is (`Publication`) and the `Hub` that holds this
//! node's subscriptions and fans a publication out to them. The hub does no I/O; it queues
//! shared, encoded frames on each subscriber's `Outbound`.

mod hub;

pub use hub::{AckMode, Hub, HubError, Subscriber};

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
}

/// Headers a SEND carries that are about the SEND itself and are not passed on.
pub fn is_transport_header(name: &str) -> bool {
    matches!(
        name,
        "destination" | "receipt" | "transaction" | "content-length" | "message-id" | "subscription" | "ack"
    )
}
