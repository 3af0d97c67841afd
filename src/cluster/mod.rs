//! Cluster mode: the Redis engine. Several boards share rooms through Redis Pub/Sub; each
//! keeps serving its own clients alone while Redis is away and rejoins by itself.
//!
//! The engine is both the `Broker` and the `Presence` of a node in cluster mode, so connection
//! and chat code run unchanged. Its parts, one file each:
//! - `link`: the command connection with timeouts, up/down state and back-off; it finds the
//!   primary (the one server, or the one `sentinel` names) and never writes to a replica;
//! - `relay`: publications out (one PUBLISH each, pipelined, bounded replay buffer while Redis
//!   is away) and in (interest-based SUBSCRIBE, echo and duplicate filtering, gap counting);
//! - `presence`: room membership in Redis with atomic Lua scripts, a local mirror of this
//!   node's own members that keeps joins and leaves working without Redis, and the resync
//!   that writes it back;
//! - `registry`: this node's registry entry with a TTL, and the one-survivor clean-up of a
//!   dead node's sessions (their LEAVE announced once);
//! - `keys`, `envelope`: names and the wire format.
//!
//! Guarantee: at most once between nodes, in order per publisher; every message lost between
//! nodes while Redis was up shows as a sequence gap in `/metrics`.

mod envelope;
mod keys;
mod link;
mod presence;
mod registry;
mod relay;
mod sentinel;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::broker::Publication;
use crate::chat::room::RoomId;
use crate::config::Config;
use crate::engine::memory::MemoryPresence;
use crate::engine::{Broker, LocalBoxFuture, MetricLines, Mode, RedisState, RegistryEntry};
use crate::metrics::Counter;
use crate::node::Node;

pub use keys::Keys;
use link::Link;
use relay::Outgoing;

/// Counters of the engine, for `/metrics`.
#[derive(Default)]
struct Stats {
    published: Counter,
    publish_errors: Counter,
    relay_dropped: Counter,
    relay_deferred: Counter,
    received: Counter,
    echoes_ignored: Counter,
    duplicates_ignored: Counter,
    sequence_gaps: Counter,
    bad_envelopes: Counter,
    resyncs: Counter,
    pubsub_reconnects: Counter,
    dead_nodes_cleaned: Counter,
    state_write_errors: Counter,
}

pub struct RedisEngine {
    me: Weak<RedisEngine>,
    node: RefCell<Weak<Node>>,
    server_id: String,
    keys: Keys,
    config: crate::config::ClusterConfig,
    link: Link,
    /// Whether the pub/sub connection is subscribed and reading.
    pubsub_up: Cell<bool>,
    /// Channels this node wants, from the hub's interest (destination → its channels).
    wanted: RefCell<HashMap<String, Vec<String>>>,
    /// Wakes the pub/sub task when `wanted` changed.
    interest_changed: tokio::sync::Notify,
    /// Channels the pub/sub connection has confirmed subscriptions to.
    active: RefCell<HashSet<String>>,
    /// Wakes whoever waits for a channel to become active.
    active_changed: tokio::sync::Notify,
    /// Publications waiting for the publisher task, bounded by the relay buffer settings.
    outbox: RefCell<VecDeque<Outgoing>>,
    outbox_ready: tokio::sync::Notify,
    /// Next sequence number per channel this node publishes on (bounded; reset when full).
    sequences: RefCell<HashMap<String, u64>>,
    /// Last (epoch, sequence) seen per (origin, channel) (bounded; reset when full).
    seen: RefCell<HashMap<(String, String), (u64, u64)>>,
    /// This process's start (ms), sent as the envelope epoch.
    epoch: u64,
    /// This node's own room members: the truth for its sessions, and the whole view while
    /// Redis is away.
    local: MemoryPresence,
    /// Cluster-wide member counts as last learned (joins, leaves, events of other nodes).
    counts: RefCell<HashMap<RoomId, usize>>,
    /// This node's STOMP sessions.
    sessions: RefCell<HashSet<Rc<str>>>,
    /// Set when Redis missed a change of ours; cleared by the next resync.
    needs_resync: Cell<bool>,
    /// Set while Redis was unreachable; the resync then announces what changed meanwhile.
    was_down: Cell<bool>,
    scripts: presence::Scripts,
    stats: Stats,
}

impl RedisEngine {
    /// Creates the engine for a cluster-mode config (`redis_url` set).
    pub fn new(config: &Config) -> Result<Rc<RedisEngine>, String> {
        let url = config.redis_url.as_deref().ok_or("cluster mode needs redis_url")?;
        let cluster = config.cluster.clone();
        let link = Link::new(url, Duration::from_millis(cluster.command_timeout_ms))?
            .sentinel_auth(&cluster.sentinel_username, &cluster.sentinel_password)?;
        Ok(Rc::new_cyclic(|me| RedisEngine {
            me: me.clone(),
            node: RefCell::new(Weak::new()),
            server_id: config.server_id.clone(),
            keys: Keys::new(&cluster.key_prefix),
            config: cluster,
            link,
            pubsub_up: Cell::new(false),
            wanted: RefCell::new(HashMap::new()),
            interest_changed: tokio::sync::Notify::new(),
            active: RefCell::new(HashSet::new()),
            active_changed: tokio::sync::Notify::new(),
            outbox: RefCell::new(VecDeque::new()),
            outbox_ready: tokio::sync::Notify::new(),
            sequences: RefCell::new(HashMap::new()),
            seen: RefCell::new(HashMap::new()),
            epoch: crate::chat::room::now_ms(),
            local: MemoryPresence::new(config.chat.max_rooms, config.chat.max_participants_per_room),
            counts: RefCell::new(HashMap::new()),
            sessions: RefCell::new(HashSet::new()),
            needs_resync: Cell::new(true),
            was_down: Cell::new(true),
            scripts: presence::Scripts::new(),
            stats: Stats::default(),
        }))
    }

    /// Attaches the node and starts the engine's tasks (supervisor, publisher, subscriber).
    /// Must run inside the node's `LocalSet`. Does not wait for Redis.
    pub fn start(self: &Rc<Self>, node: &Rc<Node>) {
        *self.node.borrow_mut() = Rc::downgrade(node);
        let me = self.clone();
        tokio::task::spawn_local(async move { me.supervise().await });
        let me = self.clone();
        tokio::task::spawn_local(async move { me.run_publisher().await });
        let me = self.clone();
        tokio::task::spawn_local(async move { me.run_subscriber().await });
    }

    fn node(&self) -> Option<Rc<Node>> {
        self.node.borrow().upgrade()
    }

    /// Keeps the link up and does the periodic work: connect with back-off, resync after a
    /// reconnect or a lost registry entry, heartbeat, and dead-node clean-up.
    async fn supervise(self: Rc<Self>) {
        let min = Duration::from_millis(self.config.reconnect_min_ms);
        let max = Duration::from_millis(self.config.reconnect_max_ms);
        let heartbeat = Duration::from_millis(self.config.heartbeat_ms);
        let mut attempt = 0u32;
        loop {
            if !self.link.is_up() {
                self.was_down.set(true);
                if self.link.connect().await {
                    log::info!("redis link up");
                    attempt = 0;
                    self.outbox_ready.notify_one();
                    self.interest_changed.notify_one();
                } else {
                    self.link.pause(link::backoff(attempt, min, max, link::jitter_seed())).await;
                    attempt = attempt.saturating_add(1);
                    continue;
                }
            }
            if self.needs_resync.get() || self.was_down.get() {
                self.resync().await;
            }
            if self.link.is_up() {
                self.heartbeat().await;
            }
            if self.link.is_up() {
                self.link.pause(heartbeat).await;
            }
        }
    }

    /// Whether there is still relay or state work in flight (graceful shutdown waits).
    fn busy(&self) -> bool {
        self.link.is_up() && !self.outbox.borrow().is_empty()
    }

    fn redis_up(&self) -> bool {
        self.link.is_up() && self.pubsub_up.get()
    }
}

impl Broker for RedisEngine {
    fn publish(&self, publication: &Publication) {
        self.enqueue(publication);
    }

    fn interest(&self, destination: &str, interested: bool) {
        let mut wanted = self.wanted.borrow_mut();
        if interested {
            let channels = self.keys.channels(destination);
            if channels.is_empty() {
                return;
            }
            wanted.insert(destination.to_string(), channels);
        } else if wanted.remove(destination).is_none() {
            return;
        }
        drop(wanted);
        self.interest_changed.notify_one();
    }

    fn ready(&self, destination: &str) -> Option<LocalBoxFuture<'static, ()>> {
        let channels = self.keys.channels(destination);
        let active = move |me: &RedisEngine| {
            let active = me.active.borrow();
            channels.iter().all(|c| active.contains(c))
        };
        if !self.redis_up() || active(self) {
            return None;
        }
        let me = self.me.upgrade()?;
        Some(Box::pin(async move {
            loop {
                let changed = me.active_changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if !me.redis_up() || active(&me) {
                    return;
                }
                changed.await;
            }
        }))
    }

    fn mode(&self) -> Mode {
        if self.redis_up() {
            Mode::Cluster
        } else {
            Mode::Local
        }
    }

    fn redis_state(&self) -> RedisState {
        if self.redis_up() {
            RedisState::Up
        } else {
            RedisState::Down
        }
    }

    fn redis_counts(&self) -> Option<(u64, u64)> {
        let l = &self.link.stats;
        Some((l.reconnects.get(), l.command_errors.get() + l.command_timeouts.get()))
    }

    fn link_report(&self) -> Option<crate::engine::LinkReport> {
        Some(self.link.report())
    }

    fn metrics(&self) -> (MetricLines, MetricLines) {
        let s = &self.stats;
        let l = &self.link.stats;
        let gauges = vec![
            (
                "cluster_redis_up",
                "1 while the Redis command and pub/sub links are up.",
                u64::from(self.redis_up()),
            ),
            (
                "cluster_channels_wanted",
                "Redis channels this node listens on.",
                self.wanted.borrow().values().map(Vec::len).sum::<usize>() as u64,
            ),
            (
                "cluster_relay_buffered",
                "Publications waiting to be relayed.",
                self.outbox.borrow().len() as u64,
            ),
        ];
        let mut counters = vec![
            ("cluster_redis_reconnects_total", "Times the Redis link came back.", l.reconnects.get()),
            ("cluster_redis_command_errors_total", "Redis commands that failed.", l.command_errors.get()),
            (
                "cluster_redis_command_timeouts_total",
                "Redis commands that timed out.",
                l.command_timeouts.get(),
            ),
            (
                "cluster_published_total",
                "Publications relayed to Redis (one PUBLISH each).",
                s.published.get(),
            ),
            (
                "cluster_publish_errors_total",
                "Publications lost because their PUBLISH failed.",
                s.publish_errors.get(),
            ),
            (
                "cluster_relay_dropped_total",
                "Publications not relayed: buffer full or too old while Redis was away.",
                s.relay_dropped.get(),
            ),
            (
                "cluster_relay_deferred_total",
                "Join/leave events not relayed while Redis was away (the resync announces the net change).",
                s.relay_deferred.get(),
            ),
            (
                "cluster_received_total",
                "Publications received from other nodes and delivered.",
                s.received.get(),
            ),
            (
                "cluster_echoes_ignored_total",
                "This node's own publications coming back from Redis (delivered locally already).",
                s.echoes_ignored.get(),
            ),
            (
                "cluster_duplicates_ignored_total",
                "Publications received twice and delivered once.",
                s.duplicates_ignored.get(),
            ),
            (
                "cluster_sequence_gaps_total",
                "Publications of other nodes missing between sequence numbers (lost between nodes).",
                s.sequence_gaps.get(),
            ),
            (
                "cluster_bad_envelopes_total",
                "Messages on the channels that could not be read.",
                s.bad_envelopes.get(),
            ),
            (
                "cluster_pubsub_reconnects_total",
                "Times the pub/sub connection was lost and made again.",
                s.pubsub_reconnects.get(),
            ),
            (
                "cluster_resyncs_total",
                "Times this node wrote its sessions and rooms back to Redis.",
                s.resyncs.get(),
            ),
            (
                "cluster_dead_nodes_cleaned_total",
                "Dead nodes whose sessions this node removed.",
                s.dead_nodes_cleaned.get(),
            ),
            (
                "cluster_state_write_errors_total",
                "Session state writes that failed (repaired by the next resync).",
                s.state_write_errors.get(),
            ),
        ];
        counters.extend(self.link.counter_lines());
        (gauges, counters)
    }

    fn nodes(&self) -> LocalBoxFuture<'_, Option<Vec<RegistryEntry>>> {
        Box::pin(async move {
            if !self.link.is_up() {
                return None;
            }
            self.registered_nodes().await
        })
    }

    fn shutdown(&self) -> LocalBoxFuture<'_, ()> {
        Box::pin(async move {
            // Let queued relays out, then remove this node's entries from Redis.
            let deadline = tokio::time::Instant::now() + self.link.timeout();
            while self.busy() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            self.deregister().await;
        })
    }

    fn busy(&self) -> bool {
        RedisEngine::busy(self)
    }
}
