//! The engine interface: how a node talks to the other nodes of a cluster. Like centrifuge's
//! Broker, an engine relays publications and tracks interest; the memory engine does it for a
//! node alone, the Redis engine (cluster mode) through Redis Pub/Sub. Connection and chat code
//! only ever see `dyn Broker`, so local-only and cluster mode are one code path.
//!
//! The seam carries types: a `Publication` says what it is (`Kind`) and which room it belongs
//! to, and an engine routes by that, never by reading a body. Engines know nothing of chat
//! rooms or user names; room membership is the chat application's (`chat::membership`).
//!
//! Delivery order and guarantee. A node's own subscribers get its publications first, never
//! waiting on the engine for long (local-first): local chat keeps working and stays
//! lowest-latency while Redis is away. Order is kept per publisher, not globally across nodes:
//! two publishers on two nodes may be seen in different orders on each node. Streams (`stream`)
//! narrow that: in cluster mode a publication to a streamed destination reaches its own node's
//! subscribers with its offset when Redis gives it within `cluster.offset_wait_ms`, so every
//! node delivers those in the same offset order (otherwise without a position, at once). Between
//! nodes the Redis engine stores and forwards: what a node accepted waits in its outbox until
//! Redis has it, and every node delivers each destination in offset order, once each, reading
//! gaps back from the stream; only what the stream no longer has is lost, counted once and told
//! to the subscribers.

pub mod memory;
pub mod redis;
pub mod stream;
pub mod stream_memory;

use crate::hub::Publication;
pub use crate::observability::metrics::MetricLines;

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

/// A board as the cluster registry lists it (`GET /api/nodes`): its id, the URL it
/// advertises (`cluster.advertise_url`) and its connection count as of its last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEntry {
    pub server_id: String,
    pub url: String,
    pub connections: u64,
}

/// The Redis link as `/healthz` and `/metrics` show it (cluster mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkReport {
    /// `host:port` of the primary in use, or last used while down; None before the first
    /// connect.
    pub primary: Option<String>,
    /// Times the primary in use changed to another server (a failover was followed).
    pub failovers: u64,
    /// With a `redis-sentinel://` URL: each sentinel as (`host:port`, up), and the errors met
    /// asking or listening to them.
    pub sentinels: Option<(Vec<(String, bool)>, u64)>,
}

/// Relays publications between nodes.
pub trait Broker {
    /// Hands a publication to the other nodes. `delivered_here`: this node's subscribers have
    /// it already; false (a streamed destination whose `History::append` said
    /// `DeliveredByEngine`): the engine delivers it here too, once, in order.
    /// Never waits: an engine that cannot send now buffers (bounded) or drops and counts.
    fn publish(&self, publication: &Publication, delivered_here: bool);

    /// Called when this node gains its first subscriber of `destination` (`true`) or loses
    /// its last one (`false`), so the engine only listens for what someone here wants.
    fn interest(&self, destination: &str, interested: bool);

    /// Resolves once publications of other nodes to `destination` reach this node (its
    /// cluster subscription is active); None when there is nothing to wait for. A SUBSCRIBE's
    /// RECEIPT waits for it, so a client that waits for its receipt misses nothing after it.
    fn ready(&self, _destination: &str) -> Option<LocalBoxFuture<'static, ()>> {
        None
    }

    /// Local-only, or cluster (and then `Up`/`Down` follows the Redis link).
    fn mode(&self) -> Mode;

    fn redis_state(&self) -> RedisState;

    /// Why this node stays out of the cluster although Redis answers (its server id is held
    /// by another live node), for `/healthz`; None when it does not.
    fn refusal(&self) -> Option<String> {
        None
    }

    /// In cluster mode: (times the Redis link came back, Redis commands that failed or timed
    /// out), for `/healthz`.
    fn redis_counts(&self) -> Option<(u64, u64)> {
        None
    }

    /// In cluster mode: the primary in use, failovers seen and the sentinels' state.
    fn link_report(&self) -> Option<LinkReport> {
        None
    }

    /// Extra `/metrics` lines as (name, help, value): gauges then counters.
    fn metrics(&self) -> (MetricLines, MetricLines) {
        (Vec::new(), Vec::new())
    }

    /// The live boards of the cluster from the registry, this one included; None when there
    /// is no registry to ask (local mode) or it cannot be read now (Redis away).
    fn nodes(&self) -> LocalBoxFuture<'_, Option<Vec<RegistryEntry>>> {
        Box::pin(std::future::ready(None))
    }

    /// Whether relays are still in flight (a graceful shutdown waits for them).
    fn busy(&self) -> bool {
        false
    }

    /// A STOMP session began on this node (CONNECTED sent): the cluster registers it.
    fn session_started(&self, _session_id: &std::rc::Rc<str>) {}

    /// A STOMP session of this node ended (after its application was told).
    fn session_ended(&self, _session_id: &std::rc::Rc<str>) {}

    /// Graceful shutdown: flush what is queued and leave the cluster.
    fn shutdown(&self) -> LocalBoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// A boxed future that stays on this thread.
pub type LocalBoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>;

/// What an engine hands back to its node (centrifuge's `BrokerEventHandler`): the node
/// registers itself when it starts the engine, so the engine never names the node's type.
pub trait BrokerEventHandler {
    /// A publication of another node arrived; deliver it to this node's subscribers.
    fn handle_publication(&self, publication: &Publication);

    /// The URL other boards and browsers reach this node at (its registry entry says it).
    fn advertise_url(&self) -> std::rc::Rc<str>;

    /// Open STOMP connections now (its registry entry says it).
    fn connection_count(&self) -> usize;
}
