//! The engine interface: how a node talks to the other nodes of a cluster. Like centrifuge's
//! Broker, an engine relays publications and tracks interest; the memory engine does it for a
//! node alone, the Redis engine (cluster mode) through Redis Pub/Sub. Connection and chat code
//! only ever see `dyn Broker`, so local-only and cluster mode are one code path.
//!
//! Delivery order and guarantee. The node delivers a publication to its own subscribers
//! first and then hands it to the engine (local-first): local chat keeps working and stays
//! lowest-latency while Redis is away. The price is that order is kept per publisher, not
//! globally across nodes: two publishers on two nodes may be seen in different orders on each
//! node. Every engine is at-most-once between nodes; the memory engine has no other nodes.

pub mod memory;

use crate::broker::Publication;

/// Which kind of deployment the engine serves, as `/healthz` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Local,
    Cluster,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Local => "local",
            Mode::Cluster => "cluster",
        }
    }
}

/// The state of the link to Redis, as `/healthz` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisState {
    Disabled,
    Up,
    Down,
}

impl RedisState {
    pub fn as_str(self) -> &'static str {
        match self {
            RedisState::Disabled => "disabled",
            RedisState::Up => "up",
            RedisState::Down => "down",
        }
    }
}

/// Metric lines an engine adds to `/metrics`: (name, help, value).
pub type MetricLines = Vec<(&'static str, &'static str, u64)>;

/// Relays publications between nodes.
pub trait Broker {
    /// Hands a publication that was already delivered locally to the other nodes.
    /// Never waits: an engine that cannot send now buffers (bounded) or drops and counts.
    fn publish(&self, publication: &Publication);

    /// Called when this node gains its first subscriber of `destination` (`true`) or loses
    /// its last one (`false`), so the engine only listens for what someone here wants.
    fn interest(&self, destination: &str, interested: bool);

    /// Local-only, or cluster (and then `Up`/`Down` follows the Redis link).
    fn mode(&self) -> Mode;

    fn redis_state(&self) -> RedisState;

    /// Extra `/metrics` lines as (name, help, value): gauges then counters.
    fn metrics(&self) -> (MetricLines, MetricLines) {
        (Vec::new(), Vec::new())
    }
}
