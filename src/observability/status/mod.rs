//! What the boards of a cluster tell people and scripts about themselves: `GET /api/nodes`
//! (the live boards, each with its advertised URL) in `nodes`; `GET /api/status` (one board's
//! snapshot) from `snapshot`, `counters` and `history`; the `/status` page's access rule in
//! `basic` and its view of the other boards in `proxy`.
//!
//! The page polls `/api/status` once a second (and each other board's through
//! `/api/status?node=ID`): nothing is computed or sent while nobody looks, except the
//! history's sample every 10 s.

pub mod basic;
pub mod counters;
pub mod history;
pub mod nodes;
pub mod proxy;
pub mod snapshot;

use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::node::Node;
use crate::observability::metrics;
use history::History;
use snapshot::Snapshot;

thread_local! {
    /// The history of this board (one per process: the runtime has one thread).
    static HISTORY: History = History::new();
}

/// Every line of `/metrics`: the process-wide counters plus the engine's and application's.
pub fn metrics_text(node: &Node) -> String {
    let (mut gauges, mut counters) = node.broker.metrics();
    let (stream_gauges, stream_counters) = node.history().metrics();
    gauges.extend(stream_gauges);
    counters.extend(stream_counters);
    if let Some(app) = node.app() {
        let (g, c) = app.metrics();
        gauges.extend(g);
        counters.extend(c);
    }
    gauges.push(("destinations_current", node.hub.destination_count() as u64));
    gauges.push(("uptime_seconds", node.uptime_seconds()));
    gauges.push(("login_throttle_entries", node.login_throttle.entries() as u64));
    let mut text = metrics::render(&metrics::Extra { gauges: &gauges, counters: &counters });
    if let Some(link) = node.broker.link_report() {
        let primary: Vec<(String, u64)> = link.primary.into_iter().map(|p| (p, 1)).collect();
        metrics::labelled_gauge(&mut text, "cluster_redis_primary_info", "address", &primary);
        if let Some((sentinels, _)) = link.sentinels {
            let up: Vec<(String, u64)> = sentinels.into_iter().map(|(a, up)| (a, u64::from(up))).collect();
            metrics::labelled_gauge(&mut text, "cluster_sentinel_up", "sentinel", &up);
        }
    }
    text
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Starts the history's sampler (every 10 s, for as long as the node lives). Must run
/// inside the node's `LocalSet`.
pub fn start(node: &Rc<Node>) {
    let node = Rc::downgrade(node);
    tokio::task::spawn_local(async move {
        let mut tick = tokio::time::interval(history::INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(node) = node.upgrade() else { return };
            let counters = counters::parse(&metrics_text(&node));
            let sample = snapshot::sample(now_ms(), node.connection_count() as u64, &counters);
            HISTORY.with(|h| h.record(sample));
        }
    });
}

/// This board's snapshot now.
pub async fn snapshot(node: &Node) -> Snapshot {
    let inputs = snapshot::gather(node).await;
    HISTORY.with(|h| snapshot::build(inputs, h, Instant::now(), now_ms()))
}
