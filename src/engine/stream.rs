//! Streams: the bounded history a streamed destination keeps (centrifuge's broker history,
//! RabbitMQ's stream queues as STOMP sees them). Each message of a streamed destination gets the
//! next offset of that destination (1, 2, 3, …) and the stream's epoch; a SUBSCRIBE with
//! `x-stream-offset` reads the kept messages from a position, then goes live.
//!
//! The memory implementation (`stream_memory`) serves a node alone; in cluster mode the stream
//! lives in Redis and the Redis engine keeps the same rules. The rules every implementation
//! keeps:
//! - offsets of one destination grow by exactly one per message and never repeat within one
//!   epoch; when offsets start again (the history was lost: a restart of a node alone, a
//!   flushed Redis, a forgotten stream) the epoch changes;
//! - a stream keeps at most `max_messages` messages, none older than `max_age_ms`;
//! - a recovery returns only kept messages, in offset order, and says whether they are all
//!   the client asked for (`recovered`).

use crate::engine::{LocalBoxFuture, MetricLines};
use crate::hub::{Publication, StreamPosition};

/// The `x-stream-offset` header of SUBSCRIBE.
pub const OFFSET_HEADER: &str = crate::hub::OFFSET_HEADER;
/// The `x-stream-epoch` header of SUBSCRIBE (with `offset=N`).
pub const EPOCH_HEADER: &str = crate::hub::EPOCH_HEADER;
/// The `x-stream-recovered` header of the SUBSCRIBE's RECEIPT.
pub const RECOVERED_HEADER: &str = "x-stream-recovered";

/// Where a subscription starts reading (RabbitMQ's `x-stream-offset` values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Since {
    /// Live messages only (the default).
    Next,
    /// Every kept message, then live.
    First,
    /// The last kept message, then live.
    Last,
    /// From `offset` inclusive, then live; `epoch` is the epoch the client saw that offset in.
    Offset { offset: u64, epoch: Option<String> },
}

impl Since {
    /// Reads the SUBSCRIBE headers: `x-stream-offset` (`next`, `first`, `last`, `offset=N`)
    /// and `x-stream-epoch`. Errors say what is accepted.
    pub fn parse(offset: Option<&str>, epoch: Option<&str>) -> Result<Since, String> {
        let since = match offset.map(str::trim) {
            None | Some("next") => Since::Next,
            Some("first") => Since::First,
            Some("last") => Since::Last,
            Some(other) => match other.strip_prefix("offset=").map(|n| n.trim().parse::<u64>()) {
                Some(Ok(offset)) => Since::Offset {
                    offset,
                    epoch: epoch.map(str::trim).filter(|e| !e.is_empty()).map(str::to_string),
                },
                _ => {
                    return Err(format!(
                    "{OFFSET_HEADER} must be next, first, last or offset=N (N a whole number), not {other:?}"
                ))
                }
            },
        };
        Ok(since)
    }
}

/// What a recovery read from a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The kept messages from the asked position on, in offset order (each with its position).
    pub publications: Vec<Publication>,
    /// True when these are every message from the asked position on (nothing was trimmed in
    /// between and the epoch matched); false tells the client some are gone.
    pub recovered: bool,
    /// The stream's epoch and its next offset (the offset the next message will get).
    pub next: StreamPosition,
}

/// What the node does with a publication it appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Append {
    /// Deliver it here now (with its position, or without one while the stream is away).
    DeliverNow,
    /// The engine delivers it here once the stream gave it its position (cluster mode).
    DeliveredByEngine,
}

/// A recovery's answer: at once (the memory streams), or once the stream is read (Redis).
pub enum Recovering {
    Now(Recovery),
    /// Resolves once read; the subscription holds live publications meanwhile (a `Cursor`).
    Later(LocalBoxFuture<'static, Recovery>),
}

impl Recovery {
    /// What a recovery that could not read the stream says: nothing, and not recovered.
    pub fn unavailable(epoch: std::rc::Rc<str>, next: u64) -> Recovery {
        Recovery { publications: Vec::new(), recovered: false, next: StreamPosition { offset: next, epoch } }
    }
}

/// Decides which of a stream's kept messages a `since` asks for, given the kept range
/// `[first, next)` and the stream's epoch. Returns (the first offset to send, recovered).
/// `Next` and an offset at or past `next` send nothing. Shared by every implementation so they
/// answer alike.
pub fn plan(since: &Since, first: u64, next: u64, epoch: &str) -> (u64, bool) {
    match since {
        Since::Next => (next, true),
        Since::First => (first, true),
        Since::Last => (if next > first { next - 1 } else { next }, true),
        Since::Offset { offset, epoch: asked } => {
            let same_epoch = asked.as_deref().is_none_or(|a| a == epoch);
            if !same_epoch {
                // The history the client knew is gone: give what there is, and say so.
                (first, false)
            } else if *offset >= next {
                // Nothing missed (offset == next), or an offset from the future: live from
                // here; a future offset means the client's view does not match this stream.
                (next, *offset == next)
            } else if *offset < first {
                // Some of what the client asked for was trimmed (or is 0, never an offset).
                (first, false)
            } else {
                (*offset, true)
            }
        }
    }
}

/// A destination's history, kept by the node alone or shared through Redis.
pub trait History {
    /// Whether `destination` keeps a history (the `[streams]` prefixes).
    fn is_streamed(&self, destination: &str) -> bool;

    /// Appends a publication of a streamed destination and sets its `stream` position, or
    /// says the engine will deliver it here once it has one.
    fn append(&self, publication: &mut Publication) -> Append;

    /// Reads the kept messages `since` asks for (bounded by the stream's own bounds).
    fn recover(&self, destination: &str, since: &Since) -> Recovering;

    /// `/metrics` lines: gauges, then counters.
    fn metrics(&self) -> (MetricLines, MetricLines);

    /// Drops messages past their age from every stream (called now and then by the node).
    fn sweep(&self) {}

    /// Gives back at least `bytes` of the memory budget by dropping the oldest kept messages
    /// (fewer when it keeps less, or keeps nothing on this process); returns the bytes freed.
    /// A client's work (a transaction's SEND) comes before history.
    fn reclaim(&self, _bytes: usize) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_headers_parse_as_rabbitmq_writes_them() {
        assert_eq!(Since::parse(None, None), Ok(Since::Next));
        assert_eq!(Since::parse(Some("first"), None), Ok(Since::First));
        assert_eq!(Since::parse(Some("last"), Some("x")), Ok(Since::Last));
        assert_eq!(
            Since::parse(Some("offset=42"), Some("e1")),
            Ok(Since::Offset { offset: 42, epoch: Some("e1".into()) })
        );
        assert_eq!(Since::parse(Some("offset=0"), None), Ok(Since::Offset { offset: 0, epoch: None }));
        for bad in ["offset=", "offset=-1", "42", "timestamp=1", ""] {
            assert!(Since::parse(Some(bad), None).is_err(), "{bad}");
        }
    }

    #[test]
    fn plan_says_recovered_only_when_nothing_is_missing() {
        // Kept: offsets 5..=9, next 10, epoch "e".
        let at = |offset, epoch: Option<&str>| Since::Offset { offset, epoch: epoch.map(Into::into) };
        assert_eq!(plan(&Since::Next, 5, 10, "e"), (10, true));
        assert_eq!(plan(&Since::First, 5, 10, "e"), (5, true));
        assert_eq!(plan(&Since::Last, 5, 10, "e"), (9, true));
        assert_eq!(plan(&Since::Last, 10, 10, "e"), (10, true));
        assert_eq!(plan(&at(7, Some("e")), 5, 10, "e"), (7, true));
        assert_eq!(plan(&at(7, None), 5, 10, "e"), (7, true));
        assert_eq!(plan(&at(10, Some("e")), 5, 10, "e"), (10, true));
        assert_eq!(plan(&at(4, Some("e")), 5, 10, "e"), (5, false));
        assert_eq!(plan(&at(7, Some("old")), 5, 10, "e"), (5, false));
        assert_eq!(plan(&at(12, Some("e")), 5, 10, "e"), (10, false));
    }
}
