//! Counters and gauges for `/metrics`, rendered in the Prometheus text format with the
//! `stomp_edge_` prefix. Counters are process-wide atomics (relaxed, uncontended on the one
//! runtime thread), so any module can count without holding a handle.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Metric lines a part adds to `/metrics` beside the process-wide ones: (name without the
/// `stomp_edge_` prefix, value). The name must be declared in [`REGISTRY`], which gives its
/// kind and help text.
pub type MetricLines = Vec<(&'static str, u64)>;

/// Whether a metric only grows (`counter`) or goes up and down (`gauge`), as `# TYPE` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One metric of `/metrics`: its name without the `stomp_edge_` prefix, its kind and its help
/// text. Labelled families (`closes_total{reason=…}`) are one declaration each.
#[derive(Debug)]
pub struct Declared {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

/// Every metric of `/metrics`, declared once, in the order `/metrics` shows the process-wide
/// ones: name, kind and help text. The process-wide values live in [`METRICS`]; the parts
/// (engine, streams, chat) report theirs by name as [`MetricLines`]; `render` takes the kind
/// and help from here, and the status page reads the rendered text.
pub const REGISTRY: &[Declared] = &[
    Declared { name: "connections_current", kind: Kind::Gauge, help: "Open STOMP connections." },
    Declared { name: "connections_total", kind: Kind::Counter, help: "STOMP connections accepted." },
    Declared { name: "frames_received_total", kind: Kind::Counter, help: "STOMP frames received." },
    Declared { name: "frames_sent_total", kind: Kind::Counter, help: "STOMP frames sent." },
    Declared { name: "bytes_received_total", kind: Kind::Counter, help: "WebSocket bytes received." },
    Declared { name: "bytes_sent_total", kind: Kind::Counter, help: "WebSocket bytes sent." },
    Declared { name: "socket_writes_total", kind: Kind::Counter, help: "Write system calls; frames_sent / this is the coalescing ratio." },
    Declared { name: "heartbeats_sent_total", kind: Kind::Counter, help: "Heart-beat EOLs sent." },
    Declared { name: "messages_published_total", kind: Kind::Counter, help: "Messages published to a destination." },
    Declared { name: "messages_delivered_total", kind: Kind::Counter, help: "MESSAGE frames queued to subscribers." },
    Declared { name: "messages_unrouted_total", kind: Kind::Counter, help: "Messages published where this node had no subscriber." },
    Declared { name: "message_encodings_total", kind: Kind::Counter, help: "MESSAGE frames encoded (once per distinct subscription id)." },
    Declared { name: "subscriptions_current", kind: Kind::Gauge, help: "Active subscriptions." },
    Declared { name: "receipts_sent_total", kind: Kind::Counter, help: "RECEIPT frames sent." },
    Declared { name: "login_failures_total", kind: Kind::Counter, help: "Failed logins (STOMP CONNECT and HTTP Basic) for bad credentials." },
    Declared { name: "login_failures_delayed_total", kind: Kind::Counter, help: "Failed logins answered after a throttling delay." },
    Declared { name: "login_checks_waiting", kind: Kind::Gauge, help: "Argon2 checks of hashed passcodes waiting for their run." },
    Declared { name: "login_checks_running", kind: Kind::Gauge, help: "Argon2 checks of hashed passcodes running (one at a time)." },
    Declared { name: "sockjs_sessions_reaped_total", kind: Kind::Counter, help: "SockJS HTTP sessions closed because their client stopped polling." },
    Declared { name: "memory_budget_used_bytes", kind: Kind::Gauge, help: "Bytes charged on the memory budget (buffers and queues clients make the server hold)." },
    Declared { name: "memory_budget_bytes", kind: Kind::Gauge, help: "The memory budget (limits.memory_budget_bytes)." },
    Declared { name: "http_idle_evicted_total", kind: Kind::Counter, help: "HTTP sockets with no request yet, closed to make room when every slot was taken." },
    Declared { name: "tls_reload_failures_total", kind: Kind::Counter, help: "SIGHUP reloads whose TLS certificate or key file was bad; the running certificate stayed." },
    Declared { name: "connections_rejected_total", kind: Kind::Counter, help: "WebSocket upgrades refused." },
    Declared { name: "closes_total", kind: Kind::Counter, help: "Connections closed, by reason." },
    Declared { name: "protocol_errors_total", kind: Kind::Counter, help: "STOMP protocol errors answered with ERROR." },
    Declared { name: "messages_dropped_total", kind: Kind::Counter, help: "Accepted messages that were not delivered." },
    Declared { name: "subscriptions_rejected_total", kind: Kind::Counter, help: "SUBSCRIBE frames refused." },
    Declared { name: "login_checks_total", kind: Kind::Counter, help: "Argon2 checks of hashed passcodes, run off the event loop (abandoned: the client left first)." },
    Declared { name: "login_checks_rejected_total", kind: Kind::Counter, help: "CONNECTs needing an Argon2 check refused at once: too many waiting, memory, a throttled address." },
    Declared { name: "app_errors_total", kind: Kind::Counter, help: "Application errors sent on /user/queue/errors." },
    Declared { name: "http_requests_total", kind: Kind::Counter, help: "HTTP requests, by route." },
    Declared { name: "http_rejected_total", kind: Kind::Counter, help: "HTTP requests refused for their Host (missing, malformed, or not this board's: DNS rebinding)." },
    Declared { name: "forwarded_ignored_total", kind: Kind::Counter, help: "X-Forwarded-For/Forwarded headers of trusted proxies not believed (too long, not an address)." },
    Declared { name: "transactions_total", kind: Kind::Counter, help: "STOMP transactions." },
    Declared { name: "sockjs_sessions_total", kind: Kind::Counter, help: "SockJS sessions opened." },
    Declared { name: "sockjs_requests_total", kind: Kind::Counter, help: "Requests to the SockJS endpoints." },
    Declared { name: "sockjs_rejected_total", kind: Kind::Counter, help: "SockJS requests refused (bad JSON, no payload, unknown session, too large, origin, limits)." },
    Declared { name: "memory_refused_total", kind: Kind::Counter, help: "Work refused near the memory budget (503, dropped delivery, socket not read, transaction SEND, gap or recovery held)." },
    Declared { name: "flow_control_pauses_total", kind: Kind::Counter, help: "Times a client's socket was not read: destinations backed up, memory short, or a login check." },
    Declared { name: "tls_handshakes_total", kind: Kind::Counter, help: "TLS handshakes on the board's port: ok, failed, timeout, plain_http (answered 400)." },
    Declared { name: "cluster_redis_primary_info", kind: Kind::Gauge, help: "The Redis primary in use (or last used), as its host:port label." },
    Declared { name: "cluster_sentinel_up", kind: Kind::Gauge, help: "1 while this Redis Sentinel answers and its +switch-master subscription holds." },
    Declared { name: "stream_delivered_total", kind: Kind::Counter, help: "Relayed publications delivered here in offset order." },
    Declared { name: "stream_duplicates_ignored_total", kind: Kind::Counter, help: "Publications seen twice (same offset) and delivered once." },
    Declared { name: "stream_gap_repairs_total", kind: Kind::Counter, help: "Offset gaps read back from the Redis stream." },
    Declared { name: "stream_lost_total", kind: Kind::Counter, help: "Publications missing from an offset gap that the stream no longer had (trimmed or expired)." },
    Declared { name: "stream_epoch_changes_total", kind: Kind::Counter, help: "Times a destination's history was lost (new epoch)." },
    Declared { name: "stream_catch_ups_total", kind: Kind::Counter, help: "Destinations read back after the pub/sub link was made again." },
    Declared { name: "stream_recoveries_total", kind: Kind::Counter, help: "SUBSCRIBEs that read a history (x-stream-offset)." },
    Declared { name: "stream_recoveries_incomplete_total", kind: Kind::Counter, help: "Recoveries answered x-stream-recovered:false (messages gone or epoch changed)." },
    Declared { name: "stream_recoveries_failed_total", kind: Kind::Counter, help: "Recoveries that could not read Redis." },
    Declared { name: "stream_recovered_messages_total", kind: Kind::Counter, help: "Kept messages sent by recoveries." },
    Declared { name: "cluster_redis_up", kind: Kind::Gauge, help: "1 while the Redis command and pub/sub links are up." },
    Declared { name: "cluster_channels_wanted", kind: Kind::Gauge, help: "Redis channels this node listens on." },
    Declared { name: "cluster_relay_buffered", kind: Kind::Gauge, help: "Publications in the outbox, waiting for Redis to append them." },
    Declared { name: "cluster_in_sync", kind: Kind::Gauge, help: "1 while Redis holds all of this node's state (0: down, or catching up)." },
    Declared { name: "cluster_redis_reconnects_total", kind: Kind::Counter, help: "Times the Redis link came back." },
    Declared { name: "cluster_redis_command_errors_total", kind: Kind::Counter, help: "Redis commands that failed." },
    Declared { name: "cluster_redis_command_timeouts_total", kind: Kind::Counter, help: "Redis commands that timed out." },
    Declared { name: "cluster_published_total", kind: Kind::Counter, help: "Publications relayed to Redis (one append script call each, which PUBLISHes)." },
    Declared { name: "cluster_publish_retries_total", kind: Kind::Counter, help: "Relay calls sent again after a failed or timed-out one (nothing is lost by it)." },
    Declared { name: "cluster_publish_deduplicated_total", kind: Kind::Counter, help: "Retried publications Redis had appended already (appended once)." },
    Declared { name: "cluster_local_without_offset_total", kind: Kind::Counter, help: "Own streamed publications delivered here without their offset (Redis away or slower than cluster.offset_wait_ms)." },
    Declared { name: "cluster_publish_errors_total", kind: Kind::Counter, help: "Publications given up because Redis refused their append again and again." },
    Declared { name: "cluster_relay_dropped_total", kind: Kind::Counter, help: "Publications not relayed: the outbox was full, over its age bound or over the memory budget." },
    Declared { name: "cluster_received_total", kind: Kind::Counter, help: "Publications received from other nodes and delivered." },
    Declared { name: "cluster_echoes_ignored_total", kind: Kind::Counter, help: "This node's own publications coming back from Redis (delivered locally already)." },
    Declared { name: "cluster_duplicates_ignored_total", kind: Kind::Counter, help: "Publications received twice (same offset) and delivered once." },
    Declared { name: "cluster_bad_envelopes_total", kind: Kind::Counter, help: "Messages on the channels that could not be read." },
    Declared { name: "cluster_pubsub_reconnects_total", kind: Kind::Counter, help: "Times the pub/sub connection was lost and made again." },
    Declared { name: "cluster_resyncs_total", kind: Kind::Counter, help: "Catch-ups: times this node wrote its sessions and rooms back to Redis." },
    Declared { name: "cluster_dead_nodes_cleaned_total", kind: Kind::Counter, help: "Dead nodes whose sessions this node removed." },
    Declared { name: "cluster_state_write_errors_total", kind: Kind::Counter, help: "Session state writes that failed (repaired by the next catch-up)." },
    Declared { name: "cluster_redis_failovers_total", kind: Kind::Counter, help: "Times the Redis primary in use changed to another server (a failover was followed)." },
    Declared { name: "cluster_redis_replica_refusals_total", kind: Kind::Counter, help: "READONLY answers, and connects refused because ROLE said replica (never written to)." },
    Declared { name: "cluster_sentinel_errors_total", kind: Kind::Counter, help: "Redis Sentinel queries and +switch-master subscriptions that failed." },
    Declared { name: "streams_current", kind: Kind::Gauge, help: "Destinations with a history on this node." },
    Declared { name: "stream_messages_current", kind: Kind::Gauge, help: "Messages kept in the histories of this node." },
    Declared { name: "stream_bytes_current", kind: Kind::Gauge, help: "Bytes of the messages kept on this node." },
    Declared { name: "stream_appended_total", kind: Kind::Counter, help: "Messages appended to a destination's history." },
    Declared { name: "stream_trimmed_total", kind: Kind::Counter, help: "Kept messages dropped by the history bounds (max_messages, max_age_ms)." },
    Declared { name: "stream_evicted_memory_total", kind: Kind::Counter, help: "Kept messages dropped early to stay within streams.max_memory_bytes or the memory budget." },
    Declared { name: "streams_forgotten_total", kind: Kind::Counter, help: "Histories dropped whole to stay within streams.max_streams (their epoch changes)." },
    Declared { name: "chat_rooms_local", kind: Kind::Gauge, help: "Rooms with members of this node." },
    Declared { name: "chat_sessions_unshared", kind: Kind::Gauge, help: "Sessions of this node whose room change Redis has not had yet." },
    Declared { name: "cluster_relay_deferred_total", kind: Kind::Counter, help: "Join/leave events not relayed while Redis was away (the catch-up announces the net change)." },
    Declared { name: "chat_catch_up_events_total", kind: Kind::Counter, help: "Join/leave events announced to the other nodes by a catch-up." },
    Declared { name: "chat_membership_write_errors_total", kind: Kind::Counter, help: "Membership writes to Redis that failed (repaired by the next catch-up)." },
    Declared { name: "chat_participants_local", kind: Kind::Gauge, help: "Sessions of this node that are in a chat room." },
    Declared { name: "chat_stale_leaves_ignored_total", kind: Kind::Counter, help: "Other nodes' LEAVEs of members still in their room here (announced while this node was cut off), not delivered." },
    Declared { name: "destinations_current", kind: Kind::Gauge, help: "Destinations with local subscribers." },
    Declared { name: "uptime_seconds", kind: Kind::Gauge, help: "Seconds since start." },
    Declared { name: "login_throttle_entries", kind: Kind::Gauge, help: "Addresses and logins with recent failed logins remembered." },
];

/// A monotonically increasing counter.
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

/// A value that goes up and down.
pub struct Gauge(AtomicU64);

impl Gauge {
    pub const fn new() -> Self {
        Gauge(AtomicU64::new(0))
    }
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        // Saturating, so an unbalanced decrement can never wrap to a huge value.
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(1)));
    }
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Gauge {
    fn default() -> Self {
        Self::new()
    }
}

/// A labelled counter family: one counter per label value, labels known up front.
pub struct Family<const N: usize> {
    labels: [&'static str; N],
    counters: [Counter; N],
}

impl<const N: usize> Family<N> {
    pub const fn new(labels: [&'static str; N]) -> Self {
        Family { labels, counters: [const { Counter::new() }; N] }
    }
    /// Counts one for `label`; an unknown label counts under the last one ("other").
    pub fn inc(&self, label: &str) {
        self.add(label, 1);
    }
    pub fn add(&self, label: &str, n: u64) {
        let i = self.labels.iter().position(|l| *l == label).unwrap_or(N - 1);
        self.counters[i].add(n);
    }
    #[cfg(test)]
    pub fn get(&self, label: &str) -> u64 {
        self.labels.iter().position(|l| *l == label).map_or(0, |i| self.counters[i].get())
    }
}

/// Why a connection ended; the same names appear in logs, ERROR frames and `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    ClientDisconnect,
    SocketClosed,
    WebSocketClose,
    ProtocolError,
    WebSocketProtocolError,
    HeartbeatTimeout,
    ConnectTimeout,
    SlowConsumer,
    AuthFailed,
    ServerShutdown,
    IoError,
}

impl CloseReason {
    pub const ALL: [&'static str; 11] = [
        "client_disconnect",
        "socket_closed",
        "websocket_close",
        "protocol_error",
        "websocket_protocol_error",
        "heartbeat_timeout",
        "connect_timeout",
        "slow_consumer",
        "auth_failed",
        "server_shutdown",
        "io_error",
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL[self as usize]
    }
}

/// Every metric of the server.
pub struct Metrics {
    pub connections_current: Gauge,
    pub connections_total: Counter,
    pub connections_rejected: Family<6>,
    pub closes: Family<11>,
    pub protocol_errors: Family<17>,
    pub frames_received: Counter,
    pub frames_sent: Counter,
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
    pub socket_writes: Counter,
    pub heartbeats_sent: Counter,
    pub messages_published: Counter,
    pub messages_delivered: Counter,
    pub messages_unrouted: Counter,
    pub messages_dropped: Family<8>,
    pub message_encodings: Counter,
    pub subscriptions_current: Gauge,
    pub subscriptions_rejected: Family<4>,
    pub receipts_sent: Counter,
    pub login_failures: Counter,
    pub login_failures_delayed: Counter,
    /// Argon2 checks of hashed passcodes (`crate::auth::login_check`), by result.
    pub login_checks: Family<4>,
    /// CONNECTs needing an Argon2 check refused without one, by reason.
    pub login_checks_rejected: Family<4>,
    /// Argon2 checks waiting for their run.
    pub login_checks_waiting: Gauge,
    /// Argon2 checks running (0 or 1).
    pub login_checks_running: Gauge,
    pub app_errors: Family<12>,
    pub http_requests: Family<9>,
    pub http_rejected: Family<4>,
    /// Trusted proxies' `X-Forwarded-For`/`Forwarded` headers not believed (`crate::transport::forwarded`).
    pub forwarded_ignored: Family<2>,
    pub transactions: Family<4>,
    pub sockjs_sessions: Family<5>,
    pub sockjs_requests: Family<7>,
    pub sockjs_rejected: Family<11>,
    pub sockjs_reaped: Counter,
    /// Work refused because the memory budget was near its limit, by what was refused.
    pub memory_refused: Family<11>,
    /// Times a socket was not read: its publisher's destinations were backed up, or memory.
    pub flow_paused: Family<4>,
    /// HTTP sockets closed before their first request to make room for new ones.
    pub http_idle_evicted: Counter,
    /// TLS handshakes on the board's port (`crate::tls`), by result.
    pub tls_handshakes: Family<5>,
    /// SIGHUP reloads whose certificate or key file was bad (the running one stayed).
    pub tls_reload_failures: Counter,
}

pub static METRICS: Metrics = Metrics {
    connections_current: Gauge::new(),
    connections_total: Counter::new(),
    connections_rejected: Family::new(["limit", "origin", "bad_upgrade", "shutdown", "memory", "other"]),
    closes: Family::new(CloseReason::ALL),
    protocol_errors: Family::new([
        "unknown_command",
        "frame_too_large",
        "too_many_headers",
        "header_line_too_long",
        "malformed_header",
        "invalid_escape",
        "invalid_utf8",
        "bad_content_length",
        "missing_nul",
        "not_connected",
        "already_connected",
        "unsupported_version",
        "missing_header",
        "bad_header",
        "transaction",
        "websocket",
        "other",
    ]),
    frames_received: Counter::new(),
    frames_sent: Counter::new(),
    bytes_received: Counter::new(),
    bytes_sent: Counter::new(),
    socket_writes: Counter::new(),
    heartbeats_sent: Counter::new(),
    messages_published: Counter::new(),
    messages_delivered: Counter::new(),
    messages_unrouted: Counter::new(),
    messages_dropped: Family::new([
        "slow_consumer",
        "server_owned_destination",
        "transaction_aborted",
        "transaction_unfinished",
        "no_error_subscription",
        "sockjs_binary",
        "memory_budget",
        "other",
    ]),
    message_encodings: Counter::new(),
    subscriptions_current: Gauge::new(),
    subscriptions_rejected: Family::new(["limit", "destination_limit", "bad_destination", "other"]),
    receipts_sent: Counter::new(),
    login_failures: Counter::new(),
    login_failures_delayed: Counter::new(),
    login_checks: Family::new(["matched", "mismatched", "abandoned", "other"]),
    login_checks_rejected: Family::new(["queue_full", "memory", "throttled", "other"]),
    login_checks_waiting: Gauge::new(),
    login_checks_running: Gauge::new(),
    app_errors: Family::new([
        "not_joined",
        "invalid_room_id",
        "invalid_username",
        "invalid_message",
        "invalid_payload",
        "username_taken",
        "room_full",
        "too_many_rooms",
        "forbidden",
        "unknown_destination",
        "unavailable",
        "other",
    ]),
    http_requests: Family::new([
        "page",
        "ws",
        "healthz",
        "metrics",
        "api",
        "not_found",
        "bad_request",
        "unauthorized",
        "other",
    ]),
    http_rejected: Family::new(["missing_host", "bad_host", "host_not_allowed", "other"]),
    forwarded_ignored: Family::new(["too_long", "malformed"]),
    transactions: Family::new(["begun", "committed", "aborted", "other"]),
    sockjs_sessions: Family::new(["websocket", "xhr_streaming", "xhr", "eventsource", "other"]),
    sockjs_requests: Family::new([
        "info",
        "websocket",
        "xhr",
        "xhr_streaming",
        "xhr_send",
        "eventsource",
        "other",
    ]),
    sockjs_rejected: Family::new([
        "broken_json",
        "empty_payload",
        "unknown_session",
        "too_large",
        "origin",
        "limit",
        "shutdown",
        "bad_request",
        "busy",
        "memory",
        "other",
    ]),
    sockjs_reaped: Counter::new(),
    memory_refused: Family::new([
        "connection",
        "http",
        "sockjs_body",
        "delivery",
        "read",
        "transaction",
        "gap",
        "recovery",
        "unfinished_frame",
        "login_check",
        "other",
    ]),
    flow_paused: Family::new(["backed_up", "memory", "login_check", "other"]),
    http_idle_evicted: Counter::new(),
    tls_handshakes: Family::new(["ok", "failed", "timeout", "plain_http", "other"]),
    tls_reload_failures: Counter::new(),
};

/// The declaration of `name` in [`REGISTRY`].
pub fn declared(name: &str) -> Option<&'static Declared> {
    REGISTRY.iter().find(|d| d.name == name)
}

/// `# HELP` and `# TYPE` of a declared metric (a name missing from the registry gets an empty
/// help and its kind from its name; `every_metric_reported_is_declared` keeps that from
/// happening).
fn head(out: &mut String, name: &str) {
    let (kind, help) = match declared(name) {
        Some(d) => (d.kind, d.help),
        None => (if name.ends_with("_total") { Kind::Counter } else { Kind::Gauge }, ""),
    };
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    let _ = writeln!(out, "# HELP stomp_edge_{name} {help}\n# TYPE stomp_edge_{name} {kind}");
}

fn counter(out: &mut String, name: &str, value: u64) {
    head(out, name);
    let _ = writeln!(out, "stomp_edge_{name} {value}");
}

fn gauge(out: &mut String, name: &str, value: u64) {
    counter(out, name, value);
}

fn family<const N: usize>(out: &mut String, name: &str, label: &str, f: &Family<N>) {
    head(out, name);
    for (l, c) in f.labels.iter().zip(f.counters.iter()) {
        let _ = writeln!(out, "stomp_edge_{name}{{{label}=\"{l}\"}} {}", c.get());
    }
}

/// Extra lines from parts that keep their own numbers (the engine, the chat rooms).
/// A gauge with one series per value of `label` (values known only at run time, e.g. one
/// per Redis Sentinel); label values are escaped as the text format asks.
pub fn labelled_gauge(out: &mut String, name: &str, label: &str, series: &[(String, u64)]) {
    head(out, name);
    for (value, n) in series {
        let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let _ = writeln!(out, "stomp_edge_{name}{{{label}=\"{escaped}\"}} {n}");
    }
}

pub struct Extra<'a> {
    pub gauges: &'a [(&'a str, u64)],
    pub counters: &'a [(&'a str, u64)],
}

/// Renders every metric in the Prometheus text exposition format.
pub fn render(extra: &Extra<'_>) -> String {
    let m = &METRICS;
    let mut out = String::with_capacity(8192);
    gauge(&mut out, "connections_current", m.connections_current.get());
    counter(&mut out, "connections_total", m.connections_total.get());
    family(&mut out, "connections_rejected_total", "reason", &m.connections_rejected);
    family(&mut out, "closes_total", "reason", &m.closes);
    family(&mut out, "protocol_errors_total", "reason", &m.protocol_errors);
    counter(&mut out, "frames_received_total", m.frames_received.get());
    counter(&mut out, "frames_sent_total", m.frames_sent.get());
    counter(&mut out, "bytes_received_total", m.bytes_received.get());
    counter(&mut out, "bytes_sent_total", m.bytes_sent.get());
    counter(&mut out, "socket_writes_total", m.socket_writes.get());
    counter(&mut out, "heartbeats_sent_total", m.heartbeats_sent.get());
    counter(&mut out, "messages_published_total", m.messages_published.get());
    counter(&mut out, "messages_delivered_total", m.messages_delivered.get());
    counter(&mut out, "messages_unrouted_total", m.messages_unrouted.get());
    family(&mut out, "messages_dropped_total", "reason", &m.messages_dropped);
    counter(&mut out, "message_encodings_total", m.message_encodings.get());
    gauge(&mut out, "subscriptions_current", m.subscriptions_current.get());
    family(&mut out, "subscriptions_rejected_total", "reason", &m.subscriptions_rejected);
    counter(&mut out, "receipts_sent_total", m.receipts_sent.get());
    counter(&mut out, "login_failures_total", m.login_failures.get());
    counter(&mut out, "login_failures_delayed_total", m.login_failures_delayed.get());
    family(&mut out, "login_checks_total", "result", &m.login_checks);
    family(&mut out, "login_checks_rejected_total", "reason", &m.login_checks_rejected);
    gauge(&mut out, "login_checks_waiting", m.login_checks_waiting.get());
    gauge(&mut out, "login_checks_running", m.login_checks_running.get());
    family(&mut out, "app_errors_total", "code", &m.app_errors);
    family(&mut out, "http_requests_total", "route", &m.http_requests);
    family(&mut out, "http_rejected_total", "reason", &m.http_rejected);
    family(&mut out, "forwarded_ignored_total", "reason", &m.forwarded_ignored);
    family(&mut out, "transactions_total", "outcome", &m.transactions);
    family(&mut out, "sockjs_sessions_total", "transport", &m.sockjs_sessions);
    family(&mut out, "sockjs_requests_total", "transport", &m.sockjs_requests);
    family(&mut out, "sockjs_rejected_total", "reason", &m.sockjs_rejected);
    counter(&mut out, "sockjs_sessions_reaped_total", m.sockjs_reaped.get());
    gauge(&mut out, "memory_budget_used_bytes", crate::board::memory::used() as u64);
    gauge(&mut out, "memory_budget_bytes", crate::board::memory::limit() as u64);
    family(&mut out, "memory_refused_total", "what", &m.memory_refused);
    family(&mut out, "flow_control_pauses_total", "reason", &m.flow_paused);
    counter(&mut out, "http_idle_evicted_total", m.http_idle_evicted.get());
    family(&mut out, "tls_handshakes_total", "result", &m.tls_handshakes);
    counter(&mut out, "tls_reload_failures_total", m.tls_reload_failures.get());
    for (name, v) in extra.gauges.iter().chain(extra.counters) {
        counter(&mut out, name, *v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_count_by_label_and_fold_unknown_into_other() {
        let f: Family<3> = Family::new(["a", "b", "other"]);
        f.inc("a");
        f.add("b", 2);
        f.inc("zzz");
        assert_eq!((f.get("a"), f.get("b"), f.get("other")), (1, 2, 1));
    }

    #[test]
    fn render_is_prometheus_text() {
        let text = render(&Extra { gauges: &[("uptime_seconds", 1)], counters: &[] });
        assert!(text.contains("# TYPE stomp_edge_connections_current gauge"));
        assert!(text.contains("stomp_edge_closes_total{reason=\"slow_consumer\"}"));
        assert!(
            text.contains(
                "# HELP stomp_edge_uptime_seconds Seconds since start.\nstomp_edge_uptime_seconds 1"
            ) || text.contains("stomp_edge_uptime_seconds 1")
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("stomp_edge_"), "{line}");
            value.parse::<u64>().unwrap();
        }
    }

    #[test]
    fn every_metric_rendered_is_declared_once() {
        let text = render(&Extra { gauges: &[], counters: &[] });
        for line in text.lines().filter(|l| l.starts_with("# HELP ")) {
            assert!(line.splitn(4, ' ').nth(3).is_some_and(|help| !help.is_empty()), "{line}");
        }
        let mut names: Vec<&str> = REGISTRY.iter().map(|d| d.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a metric declared twice");
        assert!(REGISTRY
            .iter()
            .all(|d| !d.help.is_empty() && (d.kind == Kind::Gauge) != d.name.ends_with("_total")));
    }

    #[test]
    fn close_reasons_line_up_with_their_names() {
        assert_eq!(CloseReason::SlowConsumer.as_str(), "slow_consumer");
        assert_eq!(CloseReason::IoError.as_str(), "io_error");
        assert_eq!(CloseReason::HeartbeatTimeout.as_str(), "heartbeat_timeout");
    }
}
