//! Cluster mode: the Redis engine. Several boards share rooms through Redis Pub/Sub; each
//! keeps serving its own clients alone while Redis is away and rejoins by itself.
//!
//! The engine is a node's `Broker` in cluster mode, so connection code runs unchanged. Its
//! parts, one file each, each owning its own fields over one shared `Shard`:
//! - `shard`: the shared link, names, server id and catch-up state;
//! - `link`: the command connection with timeouts, up/down state and back-off; it finds the
//!   primary (the one server, or the one `sentinel` names) and never writes to a replica;
//! - `sync`: the catch-up state machine (`Down`, `Stale`, `CatchingUp`, `InSync`);
//! - `relay`: publications out (the `outbox`: store-and-forward, one append script call each,
//!   which also PUBLISHes; pipelined; sent again after a failed call; what this node owes its
//!   own subscribers) and in (interest-based SUBSCRIBE, delivery in offset order);
//! - `outbox`: the bounded queue of publications waiting for Redis;
//! - `stream`: the destinations' streams in Redis (the append and head scripts, the reads);
//! - `order`: per-destination offset order, gaps held and repaired, duplicates dropped;
//! - `history`: gap repair and catch-up (page by page, until Redis answers), and recoveries
//!   for SUBSCRIBE;
//! - `registry`: this node's registry entry with a TTL and its sessions, the catch-up that
//!   writes them back, and the one-survivor clean-up of a dead node's sessions;
//! - `keys`, `envelope`: names and the wire format.
//!
//! Room membership is not here: the chat application keeps it (`chat::membership::redis`),
//! registered with the registry as a `NodeState`, over the same `Shard`.
//!
//! Guarantee (store-and-forward): every publication this node accepted is appended to Redis
//! once, in this node's order (it waits in the outbox, within its bounds, until Redis answered
//! for it), and every publication appended reaches every node with interest in its destination
//! once, in offset order (the same on every node), unless the stream no longer has it when a
//! gap is repaired: then it is counted once (`stomp_edge_stream_lost_total`) and the next
//! MESSAGE there says `x-stream-recovered:false`. What gave way in a full outbox is counted
//! (`stomp_edge_cluster_relay_dropped_total`) and was still delivered on this node.

mod connect;
mod envelope;
mod history;
mod keys;
pub mod link;
mod order;
mod outbox;
mod registry;
mod relay;
mod sentinel;
mod shard;
mod stream;
mod subscriber;
pub mod sync;

use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::config::Config;
use crate::engine::{
    Broker, BrokerEventHandler, LocalBoxFuture, MetricLines, Mode, RedisState, RegistryEntry,
};
use crate::hub::Publication;

pub use keys::Keys;
pub use registry::NodeState;
use registry::Registry;
use relay::Relay;
pub use shard::Shard;
use sync::SyncState;

/// The Redis engine: relay and registry over one shard, and the supervisor that drives the
/// link and the catch-up.
pub struct RedisEngine {
    pub(crate) shard: Rc<Shard>,
    pub(crate) relay: Rc<Relay>,
    registry: Rc<Registry>,
}

impl RedisEngine {
    /// Creates the engine for a cluster-mode config (`redis_url` set). Does not connect.
    pub fn new(config: &Config) -> Result<Rc<RedisEngine>, String> {
        let shard = Rc::new(Shard::new(config)?);
        Ok(Rc::new(RedisEngine {
            relay: Relay::new(shard.clone(), config.streams.clone()),
            registry: Rc::new(Registry::new(shard.clone())),
            shard,
        }))
    }

    /// The shared Redis, for the application's own Redis state (the chat's membership).
    pub fn shard(&self) -> &Rc<Shard> {
        &self.shard
    }

    /// Registers a part that keeps state of this node's sessions in Redis: it is caught up
    /// with the registry and told of dead nodes' sessions.
    pub fn add_state(&self, state: Weak<dyn NodeState>) {
        self.registry.add_state(state);
    }

    /// Relays a publication to the other nodes only (this node's clients have it already).
    pub fn relay(&self, publication: &Publication) {
        self.relay.enqueue(publication, true);
    }

    /// Relays a publication to the other nodes and delivers it to this node's clients once
    /// Redis gave it its stream offset, in offset order (the order every node delivers in).
    pub fn relay_and_deliver(&self, publication: &Publication) {
        self.relay.enqueue(publication, false);
    }

    /// Attaches the node that receives other nodes' publications and starts the engine's
    /// tasks (supervisor, publisher, subscriber). Must run inside the node's `LocalSet`.
    /// Does not wait for Redis.
    pub fn start(self: &Rc<Self>, handler: Weak<dyn BrokerEventHandler>) {
        self.relay.set_handler(handler.clone());
        self.registry.set_handler(handler);
        let me = self.clone();
        tokio::task::spawn_local(async move { me.supervise().await });
        let relay = self.relay.clone();
        tokio::task::spawn_local(async move { relay.run_publisher().await });
        let relay = self.relay.clone();
        tokio::task::spawn_local(async move { relay.run_subscriber().await });
        let relay = self.relay.clone();
        tokio::task::spawn_local(async move { relay.run_lane().await });
    }

    /// Keeps the link up and drives the catch-up state machine: connect with back-off, catch
    /// up whenever Redis misses some of this node's state, heartbeat, dead-node clean-up.
    async fn supervise(self: Rc<Self>) {
        let config = &self.shard.config;
        let min = Duration::from_millis(config.reconnect_min_ms);
        let max = Duration::from_millis(config.reconnect_max_ms);
        let heartbeat = Duration::from_millis(config.heartbeat_ms);
        let (shard, sync) = (&self.shard, &self.shard.sync);
        let mut attempt = 0u32;
        // Whether the loss of the link was reported (it is when it lasts past its grace).
        let mut reported = false;
        loop {
            if !shard.link.is_up() {
                sync.link_lost();
                // The id is claimed on the new connection before anything else uses it, so a
                // process whose id another live node holds never touches the cluster.
                let seen = shard.link.events();
                let registry = &self.registry;
                let admit = |connection| async move { registry.claim_id(connection).await.unwrap_or(false) };
                if shard.link.connect(admit).await {
                    if std::mem::take(&mut reported) || shard.link.stats.reconnects.get() == 0 {
                        log::info!("redis link up");
                    } else {
                        log::debug!("redis link made again");
                    }
                    attempt = 0;
                    sync.link_up();
                    self.relay.link_up();
                } else if shard.claim.is_held() {
                    // Another live node has this id: look again a heartbeat later.
                    attempt = 0;
                    tokio::time::sleep(heartbeat).await;
                    continue;
                } else {
                    if !reported && shard.link.down_for() >= shard.link.grace() {
                        reported = true;
                        log::warn!("redis link lost; serving local clients alone until it is back");
                    }
                    shard.link.pause(seen, connect::backoff(attempt, min, max, connect::jitter_seed())).await;
                    attempt = attempt.saturating_add(1);
                    continue;
                }
            }
            // A change of the link from here on (it went down, a new primary) ends the
            // heartbeat wait below at once.
            let seen = shard.link.events();
            // A change made during a catch-up sends it round again; a few rounds at most
            // before the heartbeat, so a node under a stream of changes still heartbeats.
            for _ in 0..3 {
                if !sync.begin() {
                    break;
                }
                let result = self.registry.catch_up().await;
                if let Err(e) = &result {
                    log::warn!("cluster catch-up failed ({e}); trying again");
                }
                sync.finish(result.is_ok());
                if !shard.link.is_up() {
                    sync.link_lost();
                }
            }
            if shard.link.is_up() && self.registry.heartbeat().await.is_err() {
                sync.mark_stale();
                continue;
            }
            if shard.link.is_up() {
                shard.link.pause(seen, heartbeat).await;
            }
        }
    }

    /// Up as `/healthz` and the mode report it: judged over seconds (`Link::grace`), so a
    /// connection re-made after one slow reply does not flap it.
    fn redis_up(&self) -> bool {
        self.shard.link.healthy() && self.relay.pubsub_healthy() && !self.shard.claim.is_held()
    }

    /// The catch-up state, for `/metrics` and tests.
    pub fn sync_state(&self) -> SyncState {
        if self.shard.link.is_up() {
            self.shard.sync.get()
        } else {
            SyncState::Down
        }
    }
}

impl Broker for RedisEngine {
    fn publish(&self, publication: &Publication, delivered_here: bool) {
        self.relay.enqueue(publication, delivered_here);
    }

    fn interest(&self, destination: &str, interested: bool) {
        self.relay.interest(destination, interested);
    }

    fn ready(&self, destination: &str) -> Option<LocalBoxFuture<'static, ()>> {
        self.relay.ready(destination)
    }

    fn session_started(&self, session_id: &Rc<str>) {
        self.registry.session_started(session_id);
    }

    fn session_ended(&self, session_id: &Rc<str>) {
        self.registry.session_ended(session_id);
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

    fn refusal(&self) -> Option<String> {
        self.registry.refusal()
    }

    fn redis_counts(&self) -> Option<(u64, u64)> {
        let l = &self.shard.link.stats;
        Some((l.reconnects.get(), l.command_errors.get() + l.command_timeouts.get()))
    }

    fn link_report(&self) -> Option<crate::engine::LinkReport> {
        Some(self.shard.link.report())
    }

    fn metrics(&self) -> (MetricLines, MetricLines) {
        let (s, r) = (&self.relay.stats, &self.registry.stats);
        let l = &self.shard.link.stats;
        let gauges = vec![
            ("cluster_redis_up", u64::from(self.redis_up())),
            ("cluster_channels_wanted", self.relay.channels_wanted() as u64),
            ("cluster_relay_buffered", self.relay.buffered() as u64),
            ("cluster_in_sync", u64::from(self.sync_state() == SyncState::InSync)),
        ];
        let mut counters = vec![
            ("cluster_redis_reconnects_total", l.reconnects.get()),
            ("cluster_redis_command_errors_total", l.command_errors.get()),
            ("cluster_redis_command_timeouts_total", l.command_timeouts.get()),
            ("cluster_published_total", s.published.get()),
            ("cluster_publish_retries_total", s.publish_retries.get()),
            ("cluster_publish_deduplicated_total", s.deduplicated.get()),
            ("cluster_local_without_offset_total", s.local_without_offset.get()),
            ("cluster_publish_errors_total", s.publish_errors.get()),
            ("cluster_relay_dropped_total", s.dropped.get()),
            ("cluster_received_total", s.received.get()),
            ("cluster_echoes_ignored_total", s.echoes_ignored.get()),
            (
                "cluster_duplicates_ignored_total",
                s.duplicates_ignored.get() + self.relay.sequencer.borrow().counts.duplicates,
            ),
            ("cluster_bad_envelopes_total", s.bad_envelopes.get()),
            ("cluster_pubsub_reconnects_total", s.pubsub_reconnects.get()),
            ("cluster_resyncs_total", r.catch_ups.get()),
            ("cluster_dead_nodes_cleaned_total", r.dead_nodes_cleaned.get()),
            ("cluster_state_write_errors_total", r.state_write_errors.get()),
        ];
        counters.extend(self.shard.link.counter_lines());
        (gauges, counters)
    }

    fn nodes(&self) -> LocalBoxFuture<'_, Option<Vec<RegistryEntry>>> {
        Box::pin(async move {
            if !self.shard.link.is_up() {
                return None;
            }
            self.registry.registered_nodes().await
        })
    }

    fn shutdown(&self) -> LocalBoxFuture<'_, ()> {
        Box::pin(async move {
            // Let queued relays out, then remove this node's entries from Redis.
            let deadline = tokio::time::Instant::now() + self.shard.link.timeout();
            while self.relay.busy() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let left = self.relay.buffered();
            if left > 0 {
                // This process's outbox dies with it: say so (its own clients had them).
                self.relay.stats.dropped.add(left as u64);
                log::warn!(
                    "stopping with {left} messages not relayed to the other boards (Redis did not take \
                     them in time); those boards will not get them"
                );
            }
            self.registry.deregister().await;
        })
    }

    fn busy(&self) -> bool {
        self.relay.busy()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_of_the_engine_is_declared() {
        let mut config = Config::embedded();
        // Never connected in this test: the URL is only parsed.
        config.redis_url = Some("redis://127.0.0.1:1".into());
        let engine = RedisEngine::new(&config).unwrap();
        let (gauges, counters) = Broker::metrics(&*engine);
        let (_, stream_counters) = crate::engine::stream::History::metrics(&*engine);
        for (name, _) in gauges.iter().chain(&counters).chain(&stream_counters) {
            assert!(
                crate::observability::metrics::declared(name).is_some(),
                "{name} is not in metrics::REGISTRY"
            );
        }
    }
}
