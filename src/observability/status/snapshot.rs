//! One board's status at one moment, as `GET /api/status` answers it and the `/status` page
//! draws it: identity, mode and Redis link, connections by transport, rooms, message rates,
//! the counters that mean trouble with their growth over the last minute, every counter, and
//! the ten-minute history. It carries counts only: no passcode, no session id, no message body.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::counters::{self, Series};
use super::history::{self, History, Sample};
use crate::node::Node;
use crate::observability::metrics::METRICS;

/// Rooms listed at most (the largest first); `roomCount` has them all.
pub const MAX_ROOMS: usize = 50;

/// The JSON of `GET /api/status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub server_id: String,
    /// The advertised URL (`cluster.advertise_url`).
    pub url: String,
    pub version: &'static str,
    /// When it was taken, epoch ms.
    pub at: u64,
    /// `ok`, or `draining` during a graceful shutdown.
    pub status: &'static str,
    /// `local` or `cluster`.
    pub mode: &'static str,
    pub redis: RedisLink,
    pub uptime_seconds: u64,
    pub connections: Connections,
    pub subscriptions: u64,
    /// Destinations with subscribers on this board.
    pub destinations: u64,
    /// Rooms (cluster-wide while Redis is up), the largest first, at most `MAX_ROOMS`.
    pub rooms: Vec<RoomCount>,
    pub room_count: usize,
    pub messages: Messages,
    /// The groups the page singles out, always all of them, in a fixed order.
    pub trouble: Vec<Group>,
    /// Other counters that mean trouble and are not zero.
    pub other_trouble: Vec<SeriesFigure>,
    /// Every counter of `/metrics` by series, for scripts.
    pub counters: BTreeMap<String, u64>,
    pub history: HistoryFigures,
    /// The board's port serves TLS (`[tls]`): its certificate; None: plain HTTP.
    pub tls: Option<TlsFigures>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsFigures {
    /// SHA-256 of the certificate (DER) as `AB:CD:…`, as `openssl x509 -fingerprint -sha256`
    /// prints it.
    pub fingerprint_sha256: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedisLink {
    /// `disabled` (local mode), `up` or `down`.
    pub state: &'static str,
    /// Where the Redis URL points, without credentials (`10.0.0.2:6379/0`); None in local mode.
    pub address: Option<String>,
    pub reconnects: Option<u64>,
    pub command_errors: Option<u64>,
    /// Cluster mode: `host:port` of the Redis primary in use (or last used); None before the
    /// first connect and in local mode.
    pub primary: Option<String>,
    /// Cluster mode: times the primary in use changed (Sentinel failovers followed).
    pub failovers: Option<u64>,
    /// With a `redis-sentinel://` URL: sentinels answering, of those configured.
    pub sentinels_up: Option<usize>,
    pub sentinels_configured: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Connections {
    pub total: u64,
    pub websocket: u64,
    pub sockjs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomCount {
    pub room_id: String,
    pub participant_count: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Messages {
    /// Messages published on this board plus those relayed in from other boards, per second.
    pub in_per_second: f64,
    /// MESSAGE frames queued to this board's subscribers, per second.
    pub out_per_second: f64,
    pub in_total: u64,
    pub out_total: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub key: &'static str,
    pub title: &'static str,
    pub total: u64,
    pub last_minute: u64,
    /// Its series that are not zero.
    pub series: Vec<SeriesFigure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesFigure {
    pub series: String,
    pub total: u64,
    pub last_minute: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryFigures {
    pub interval_seconds: u64,
    /// Connections at each sample, oldest first (up to ten minutes).
    pub connections: Vec<u64>,
    /// Messages in + out per second between samples, oldest first.
    pub messages_per_second: Vec<f64>,
}

/// What a snapshot is made of, gathered from a node (`gather`) or written by a test.
pub struct Inputs {
    pub server_id: String,
    pub url: String,
    pub draining: bool,
    pub mode: &'static str,
    pub redis: RedisLink,
    pub uptime_seconds: u64,
    pub connections: Connections,
    pub subscriptions: u64,
    pub destinations: u64,
    pub rooms: Vec<(String, usize)>,
    /// Every counter series, from `/metrics`.
    pub counters: Vec<Series>,
    /// The running TLS certificate's fingerprint; None: plain HTTP.
    pub tls_fingerprint: Option<String>,
}

/// The sample of the history a set of counters makes.
pub fn sample(at_ms: u64, connections: u64, counters: &[Series]) -> Sample {
    let (messages_in, messages_out) = message_totals(counters);
    Sample {
        at_ms,
        connections,
        messages_in,
        messages_out,
        trouble: counters.iter().filter(|(s, v)| *v > 0 && counters::is_trouble(s)).cloned().collect(),
    }
}

/// (in, out) message totals: published here + received from other boards; delivered.
fn message_totals(counters: &[Series]) -> (u64, u64) {
    let get = |name: &str| counters.iter().find(|(s, _)| s == name).map_or(0, |(_, v)| *v);
    (
        get("stomp_edge_messages_published_total") + get("stomp_edge_cluster_received_total"),
        get("stomp_edge_messages_delivered_total"),
    )
}

/// Builds the snapshot from its inputs and the board's history.
pub fn build(inputs: Inputs, history: &History, now: Instant, now_ms: u64) -> Snapshot {
    let figure = |series: &str, total: u64| SeriesFigure {
        series: series.to_string(),
        total,
        last_minute: if counters::is_trouble(series) {
            history.last_minute(series, total, now_ms)
        } else {
            0
        },
    };
    // Each named group's series (all of them, zero or not), then the group's figures.
    let mut members: Vec<Vec<SeriesFigure>> = counters::NAMED.iter().map(|_| Vec::new()).collect();
    let mut other_trouble = Vec::new();
    for (series, total) in &inputs.counters {
        match counters::group_of(series) {
            Some(i) => members[i].push(figure(series, *total)),
            None if *total > 0 && counters::is_trouble(series) => other_trouble.push(figure(series, *total)),
            None => {}
        }
    }
    let trouble = counters::NAMED
        .iter()
        .zip(members)
        .map(|(named, series)| {
            let of = |pick: fn(&SeriesFigure) -> u64| {
                let figures: Vec<(&str, u64)> = series.iter().map(|f| (f.series.as_str(), pick(f))).collect();
                counters::combine(named.combine, &figures)
            };
            Group {
                key: named.key,
                title: named.title,
                total: of(|f| f.total),
                last_minute: of(|f| f.last_minute),
                series: series.iter().filter(|f| f.total > 0).cloned().collect(),
            }
        })
        .collect();
    let (in_total, out_total) = message_totals(&inputs.counters);
    let (in_per_second, out_per_second) = history.rates(now, now_ms, in_total, out_total);
    let mut rooms = inputs.rooms;
    let room_count = rooms.len();
    rooms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rooms.truncate(MAX_ROOMS);
    Snapshot {
        server_id: inputs.server_id,
        url: inputs.url,
        version: env!("CARGO_PKG_VERSION"),
        at: now_ms,
        status: if inputs.draining { "draining" } else { "ok" },
        mode: inputs.mode,
        redis: inputs.redis,
        uptime_seconds: inputs.uptime_seconds,
        connections: inputs.connections,
        subscriptions: inputs.subscriptions,
        destinations: inputs.destinations,
        rooms: rooms
            .into_iter()
            .map(|(room_id, participant_count)| RoomCount { room_id, participant_count })
            .collect(),
        room_count,
        messages: Messages { in_per_second, out_per_second, in_total, out_total },
        trouble,
        other_trouble,
        counters: inputs.counters.into_iter().collect(),
        history: HistoryFigures {
            interval_seconds: history::INTERVAL.as_secs(),
            connections: history.connections(),
            messages_per_second: history.messages_per_second(),
        },
        tls: inputs.tls_fingerprint.map(|fingerprint_sha256| TlsFigures { fingerprint_sha256 }),
    }
}

/// Gathers a node's inputs (the rooms may ask Redis).
pub async fn gather(node: &Node) -> Inputs {
    let config = node.config();
    let (reconnects, command_errors) = node.broker.redis_counts().unzip();
    let link = node.broker.link_report();
    let sentinels = link.as_ref().and_then(|l| l.sentinels.as_ref());
    let total = node.connection_count() as u64;
    let sockjs = node.sockjs_count() as u64;
    Inputs {
        server_id: node.server_id(),
        url: node.advertise_url().to_string(),
        draining: node.is_draining(),
        mode: node.broker.mode().as_str(),
        redis: RedisLink {
            state: node.broker.redis_state().as_str(),
            address: config.redis_url.as_deref().map(without_credentials),
            reconnects,
            command_errors,
            primary: link.as_ref().and_then(|l| l.primary.clone()),
            failovers: link.as_ref().map(|l| l.failovers),
            sentinels_up: sentinels.map(|(s, _)| s.iter().filter(|(_, up)| *up).count()),
            sentinels_configured: sentinels.map(|(s, _)| s.len()),
        },
        uptime_seconds: node.uptime_seconds(),
        connections: Connections { total, websocket: total.saturating_sub(sockjs), sockjs },
        subscriptions: METRICS.subscriptions_current.get(),
        destinations: node.hub.destination_count() as u64,
        rooms: match node.app().as_ref().and_then(|a| a.rooms()) {
            Some(api) => api.list().await,
            None => Vec::new(),
        },
        counters: counters::parse(&super::metrics_text(node)),
        tls_fingerprint: node.tls.fingerprint(),
    }
}

/// A Redis URL's address part: no scheme, no user, no password.
/// `redis://:pw@10.0.0.2:6379/1` → `10.0.0.2:6379/1`.
pub fn without_credentials(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (authority, tail) = match rest.find(['/', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{host}{tail}")
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::chat::membership::memory::MemoryMembership;
    use crate::chat::ChatApp;
    use crate::config::Config;
    use crate::engine::memory::MemoryBroker;

    fn inputs(counters: Vec<Series>) -> Inputs {
        Inputs {
            server_id: "a".into(),
            url: "http://10.0.0.7:8080".into(),
            draining: false,
            mode: "cluster",
            redis: RedisLink {
                state: "up",
                address: Some("10.0.0.2:6379".into()),
                reconnects: Some(0),
                command_errors: Some(0),
                primary: Some("10.0.0.2:6379".into()),
                failovers: Some(0),
                sentinels_up: None,
                sentinels_configured: None,
            },
            uptime_seconds: 100,
            connections: Connections { total: 3, websocket: 2, sockjs: 1 },
            subscriptions: 4,
            destinations: 2,
            rooms: vec![("small".into(), 1), ("big".into(), 9), ("mid".into(), 4)],
            counters,
            tls_fingerprint: None,
        }
    }

    fn series(s: &str, v: u64) -> Series {
        (s.to_string(), v)
    }

    #[test]
    fn trouble_is_grouped_with_its_growth_over_the_last_minute() {
        let history = History::new();
        let slow = "stomp_edge_closes_total{reason=\"slow_consumer\"}";
        let frame = "stomp_edge_protocol_errors_total{reason=\"frame_too_large\"}";
        let budget = "stomp_edge_some_future_refusals_total";
        // A minute and more ago: 2 slow consumers, nothing else.
        history.record(sample(0, 5, &[series(slow, 2)]));
        let now = [
            series("stomp_edge_messages_published_total", 100),
            series("stomp_edge_messages_delivered_total", 300),
            series(slow, 5),
            series(frame, 1),
            series("stomp_edge_closes_total{reason=\"client_disconnect\"}", 40),
            series(budget, 3),
            // One failed login, counted as a login failure and as its close: one failure.
            series("stomp_edge_login_failures_total", 1),
            series("stomp_edge_closes_total{reason=\"auth_failed\"}", 1),
        ];
        let s = build(inputs(now.to_vec()), &history, Instant::now(), 70_000);
        let group = |key: &str| s.trouble.iter().find(|g| g.key == key).unwrap().clone();
        assert_eq!(group("slow_consumers").total, 5);
        assert_eq!(group("slow_consumers").last_minute, 3);
        assert_eq!(
            group("rejected_frames").series,
            vec![SeriesFigure { series: frame.into(), total: 1, last_minute: 1 }]
        );
        assert_eq!(group("relay_drops").total, 0);
        assert_eq!((group("auth_failures").total, group("auth_failures").last_minute), (1, 1));
        assert_eq!(s.trouble.len(), counters::NAMED.len(), "every named group, zero or not");
        // A counter nobody told the page about, named the usual way, still shows.
        assert_eq!(s.other_trouble, vec![SeriesFigure { series: budget.into(), total: 3, last_minute: 3 }]);
        assert_eq!(s.counters["stomp_edge_closes_total{reason=\"client_disconnect\"}"], 40);
        assert_eq!((s.messages.in_total, s.messages.out_total), (100, 300));
        // Rooms, the largest first.
        let rooms: Vec<_> = s.rooms.iter().map(|r| (r.room_id.as_str(), r.participant_count)).collect();
        assert_eq!(rooms, vec![("big", 9), ("mid", 4), ("small", 1)]);
    }

    #[test]
    fn rooms_are_bounded() {
        let mut i = inputs(Vec::new());
        i.rooms = (0..200).map(|n| (format!("r{n}"), n)).collect();
        let s = build(i, &History::new(), Instant::now(), 0);
        assert_eq!((s.rooms.len(), s.room_count), (MAX_ROOMS, 200));
        assert_eq!(s.rooms[0].participant_count, 199);
    }

    #[test]
    fn redis_addresses_lose_their_credentials() {
        assert_eq!(without_credentials("redis://:secret@10.0.0.2:6379/1"), "10.0.0.2:6379/1");
        assert_eq!(without_credentials("redis://user:p@ss@host:6379"), "host:6379");
        assert_eq!(
            without_credentials("redis-sentinel://u:pw@s1:26379,s2:26379/0#mymaster"),
            "s1:26379,s2:26379/0#mymaster"
        );
        assert_eq!(without_credentials("redis://127.0.0.1:6379"), "127.0.0.1:6379");
    }

    #[test]
    fn a_real_node_snapshot_shows_its_connections_rooms_and_no_secrets() {
        let mut config = Config::embedded();
        config.server_id = "b1".into();
        config.redis_url = None;
        config.auth.users = vec![("alice".into(), "hunter2".into())];
        let node = Rc::new(Node::new(config, Rc::new(MemoryBroker)));
        node.set_app(ChatApp::new(&node, Rc::new(MemoryMembership::new(10, 10))));
        node.set_advertise_url("http://10.0.0.7:8080");
        let ws = node.register_connection().unwrap();
        let sockjs = node.register_connection().unwrap();
        node.mark_sockjs(sockjs.place.id);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let history = History::new();
        let s = rt.block_on(async { build(gather(&node).await, &history, Instant::now(), 1) });
        assert_eq!(s.connections, Connections { total: 2, websocket: 1, sockjs: 1 });
        assert_eq!((s.mode, s.redis.state, s.server_id.as_str()), ("local", "disabled", "b1"));
        assert!(s.counters.contains_key("stomp_edge_closes_total{reason=\"slow_consumer\"}"));
        let json = serde_json::to_string(&s).unwrap();
        for secret in ["hunter2", &*ws.session_id, &*sockjs.session_id] {
            assert!(!json.contains(secret), "{secret} in {json}");
        }
        // Releasing a connection forgets its transport too.
        drop(sockjs);
        drop(ws);
        assert_eq!((node.connection_count(), node.sockjs_count()), (0, 0));
    }
}
