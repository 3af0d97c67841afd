//! Counters and gauges for `/metrics`, rendered in the Prometheus text format with the
//! `stomp_edge_` prefix. Counters are process-wide atomics (relaxed, uncontended on the one
//! runtime thread), so any module can count without holding a handle.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Metric lines a part adds to `/metrics` beside the process-wide ones: (name without the
/// `stomp_edge_` prefix, help text, value).
pub type MetricLines = Vec<(&'static str, &'static str, u64)>;

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

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP stomp_edge_{name} {help}\n# TYPE stomp_edge_{name} counter\nstomp_edge_{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP stomp_edge_{name} {help}\n# TYPE stomp_edge_{name} gauge\nstomp_edge_{name} {value}"
    );
}

fn family<const N: usize>(out: &mut String, name: &str, label: &str, help: &str, f: &Family<N>) {
    let _ = writeln!(out, "# HELP stomp_edge_{name} {help}\n# TYPE stomp_edge_{name} counter");
    for (l, c) in f.labels.iter().zip(f.counters.iter()) {
        let _ = writeln!(out, "stomp_edge_{name}{{{label}=\"{l}\"}} {}", c.get());
    }
}

/// Extra lines from parts that keep their own numbers (the engine, the chat rooms).
/// A gauge with one series per value of `label` (values known only at run time, e.g. one
/// per Redis Sentinel); label values are escaped as the text format asks.
pub fn labelled_gauge(out: &mut String, name: &str, label: &str, help: &str, series: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP stomp_edge_{name} {help}\n# TYPE stomp_edge_{name} gauge");
    for (value, n) in series {
        let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let _ = writeln!(out, "stomp_edge_{name}{{{label}=\"{escaped}\"}} {n}");
    }
}

pub struct Extra<'a> {
    pub gauges: &'a [(&'a str, &'a str, u64)],
    pub counters: &'a [(&'a str, &'a str, u64)],
}

/// Renders every metric in the Prometheus text exposition format.
pub fn render(extra: &Extra<'_>) -> String {
    let m = &METRICS;
    let mut out = String::with_capacity(8192);
    gauge(&mut out, "connections_current", "Open STOMP connections.", m.connections_current.get());
    counter(&mut out, "connections_total", "STOMP connections accepted.", m.connections_total.get());
    family(
        &mut out,
        "connections_rejected_total",
        "reason",
        "WebSocket upgrades refused.",
        &m.connections_rejected,
    );
    family(&mut out, "closes_total", "reason", "Connections closed, by reason.", &m.closes);
    family(
        &mut out,
        "protocol_errors_total",
        "reason",
        "STOMP protocol errors answered with ERROR.",
        &m.protocol_errors,
    );
    counter(&mut out, "frames_received_total", "STOMP frames received.", m.frames_received.get());
    counter(&mut out, "frames_sent_total", "STOMP frames sent.", m.frames_sent.get());
    counter(&mut out, "bytes_received_total", "WebSocket bytes received.", m.bytes_received.get());
    counter(&mut out, "bytes_sent_total", "WebSocket bytes sent.", m.bytes_sent.get());
    counter(
        &mut out,
        "socket_writes_total",
        "Write system calls; frames_sent / this is the coalescing ratio.",
        m.socket_writes.get(),
    );
    counter(&mut out, "heartbeats_sent_total", "Heart-beat EOLs sent.", m.heartbeats_sent.get());
    counter(
        &mut out,
        "messages_published_total",
        "Messages published to a destination.",
        m.messages_published.get(),
    );
    counter(
        &mut out,
        "messages_delivered_total",
        "MESSAGE frames queued to subscribers.",
        m.messages_delivered.get(),
    );
    counter(
        &mut out,
        "messages_unrouted_total",
        "Messages published where this node had no subscriber.",
        m.messages_unrouted.get(),
    );
    family(
        &mut out,
        "messages_dropped_total",
        "reason",
        "Accepted messages that were not delivered.",
        &m.messages_dropped,
    );
    counter(
        &mut out,
        "message_encodings_total",
        "MESSAGE frames encoded (once per distinct subscription id).",
        m.message_encodings.get(),
    );
    gauge(&mut out, "subscriptions_current", "Active subscriptions.", m.subscriptions_current.get());
    family(
        &mut out,
        "subscriptions_rejected_total",
        "reason",
        "SUBSCRIBE frames refused.",
        &m.subscriptions_rejected,
    );
    counter(&mut out, "receipts_sent_total", "RECEIPT frames sent.", m.receipts_sent.get());
    counter(
        &mut out,
        "login_failures_total",
        "Failed logins (STOMP CONNECT and HTTP Basic) for bad credentials.",
        m.login_failures.get(),
    );
    counter(
        &mut out,
        "login_failures_delayed_total",
        "Failed logins answered after a throttling delay.",
        m.login_failures_delayed.get(),
    );
    family(
        &mut out,
        "login_checks_total",
        "result",
        "Argon2 checks of hashed passcodes, run off the event loop (abandoned: the client left first).",
        &m.login_checks,
    );
    family(
        &mut out,
        "login_checks_rejected_total",
        "reason",
        "CONNECTs needing an Argon2 check refused at once: too many waiting, memory, a throttled address.",
        &m.login_checks_rejected,
    );
    gauge(
        &mut out,
        "login_checks_waiting",
        "Argon2 checks of hashed passcodes waiting for their run.",
        m.login_checks_waiting.get(),
    );
    gauge(
        &mut out,
        "login_checks_running",
        "Argon2 checks of hashed passcodes running (one at a time).",
        m.login_checks_running.get(),
    );
    family(
        &mut out,
        "app_errors_total",
        "code",
        "Application errors sent on /user/queue/errors.",
        &m.app_errors,
    );
    family(&mut out, "http_requests_total", "route", "HTTP requests, by route.", &m.http_requests);
    family(
        &mut out,
        "http_rejected_total",
        "reason",
        "HTTP requests refused for their Host (missing, malformed, or not this board's: DNS rebinding).",
        &m.http_rejected,
    );
    family(
        &mut out,
        "forwarded_ignored_total",
        "reason",
        "X-Forwarded-For/Forwarded headers of trusted proxies not believed (too long, not an address).",
        &m.forwarded_ignored,
    );
    family(&mut out, "transactions_total", "outcome", "STOMP transactions.", &m.transactions);
    family(&mut out, "sockjs_sessions_total", "transport", "SockJS sessions opened.", &m.sockjs_sessions);
    family(
        &mut out,
        "sockjs_requests_total",
        "transport",
        "Requests to the SockJS endpoints.",
        &m.sockjs_requests,
    );
    family(
        &mut out,
        "sockjs_rejected_total",
        "reason",
        "SockJS requests refused (bad JSON, no payload, unknown session, too large, origin, limits).",
        &m.sockjs_rejected,
    );
    counter(
        &mut out,
        "sockjs_sessions_reaped_total",
        "SockJS HTTP sessions closed because their client stopped polling.",
        m.sockjs_reaped.get(),
    );
    gauge(
        &mut out,
        "memory_budget_used_bytes",
        "Bytes charged on the memory budget (buffers and queues clients make the server hold).",
        crate::board::memory::used() as u64,
    );
    gauge(
        &mut out,
        "memory_budget_bytes",
        "The memory budget (limits.memory_budget_bytes).",
        crate::board::memory::limit() as u64,
    );
    family(
        &mut out,
        "memory_refused_total",
        "what",
        "Work refused near the memory budget (503, dropped delivery, socket not read, transaction SEND, gap or recovery held).",
        &m.memory_refused,
    );
    family(
        &mut out,
        "flow_control_pauses_total",
        "reason",
        "Times a client's socket was not read: destinations backed up, memory short, or a login check.",
        &m.flow_paused,
    );
    counter(
        &mut out,
        "http_idle_evicted_total",
        "HTTP sockets with no request yet, closed to make room when every slot was taken.",
        m.http_idle_evicted.get(),
    );
    family(
        &mut out,
        "tls_handshakes_total",
        "result",
        "TLS handshakes on the board's port: ok, failed, timeout, plain_http (answered 400).",
        &m.tls_handshakes,
    );
    counter(
        &mut out,
        "tls_reload_failures_total",
        "SIGHUP reloads whose TLS certificate or key file was bad; the running certificate stayed.",
        m.tls_reload_failures.get(),
    );
    for (name, help, v) in extra.gauges {
        gauge(&mut out, name, help, *v);
    }
    for (name, help, v) in extra.counters {
        counter(&mut out, name, help, *v);
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
        let text = render(&Extra { gauges: &[("engine_up", "Up.", 1)], counters: &[] });
        assert!(text.contains("# TYPE stomp_edge_connections_current gauge"));
        assert!(text.contains("stomp_edge_closes_total{reason=\"slow_consumer\"}"));
        assert!(text.contains("stomp_edge_engine_up 1"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("stomp_edge_"), "{line}");
            value.parse::<u64>().unwrap();
        }
    }

    #[test]
    fn close_reasons_line_up_with_their_names() {
        assert_eq!(CloseReason::SlowConsumer.as_str(), "slow_consumer");
        assert_eq!(CloseReason::IoError.as_str(), "io_error");
        assert_eq!(CloseReason::HeartbeatTimeout.as_str(), "heartbeat_timeout");
    }
}
