//! Every counter of `/metrics`, read generically from its Prometheus text, and the rule that
//! sorts out the ones that mean trouble. Counters other parts add later (in `metrics` or an
//! engine's or application's own lines) show up on the status page without more work here,
//! as long as their names follow the usual words (`dropped`, `rejected`, `failures`, …).

/// One counter series: `stomp_edge_closes_total{reason="slow_consumer"}` and its value.
pub type Series = (String, u64);

/// The counter series of a Prometheus text exposition (lines of `# TYPE … counter` metrics),
/// in the order they appear.
pub fn parse(text: &str) -> Vec<Series> {
    let mut out = Vec::with_capacity(256);
    let mut counter_name: Option<&str> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next();
            counter_name = if parts.next() == Some("counter") { name } else { None };
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some(name) = counter_name else { continue };
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let base = series.split('{').next().unwrap_or(series);
        if base != name {
            continue;
        }
        if let Ok(v) = value.trim().parse::<u64>() {
            out.push((series.to_string(), v));
        }
    }
    out
}

/// The metric name of a series (before any `{labels}`), without the `stomp_edge_` prefix.
pub fn metric_name(series: &str) -> &str {
    let base = series.split('{').next().unwrap_or(series);
    base.strip_prefix("stomp_edge_").unwrap_or(base)
}

/// The label part of a series (`reason="slow_consumer"`), or "".
pub fn labels(series: &str) -> &str {
    series.split_once('{').map_or("", |(_, l)| l.trim_end_matches('}'))
}

/// Close reasons that are not trouble of their own: a normal end of a session, or the close
/// that follows a protocol error (counted, by reason, in `protocol_errors_total` already).
const NOT_TROUBLE_CLOSES: [&str; 6] = [
    "client_disconnect",
    "socket_closed",
    "websocket_close",
    "server_shutdown",
    "protocol_error",
    "websocket_protocol_error",
];

/// Words in a counter's name that mean something went wrong or was refused.
const TROUBLE_WORDS: [&str; 14] = [
    "dropped", "rejected", "refused", "refusals", "errors", "gaps", "fail", "timeouts", "bad_", "slow",
    "lost", "recover", "evicted", "pauses",
];

/// Whether a counter series means trouble (or, for recoveries, that trouble was repaired),
/// so the status page shows it with its rate over the last minute.
pub fn is_trouble(series: &str) -> bool {
    let name = metric_name(series);
    if name == "closes_total" {
        return !NOT_TROUBLE_CLOSES.iter().any(|r| labels(series) == format!("reason=\"{r}\""));
    }
    TROUBLE_WORDS.iter().any(|w| name.contains(w))
}

/// How a named group adds up its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// Its counters count different events: the group is their sum.
    Sum,
    /// Its metrics count the same events in different places (a failed login is counted as
    /// such and as an `auth_failed` close): the group is the largest metric's sum.
    Max,
}

/// A group of counters the status page singles out.
pub struct Named {
    /// Its key in `/api/status`.
    pub key: &'static str,
    /// What the page calls it.
    pub title: &'static str,
    /// The series that count towards it: a metric name, or a metric name with its labels.
    pub patterns: &'static [&'static str],
    pub combine: Combine,
}

const fn named(
    key: &'static str,
    title: &'static str,
    patterns: &'static [&'static str],
    combine: Combine,
) -> Named {
    Named { key, title, patterns, combine }
}

/// The groups the status page singles out, in the order it shows them. Counters that are
/// not there yet (another part of the server adds them later) simply count zero.
pub const NAMED: &[Named] = &[
    named(
        "slow_consumers",
        "Slow consumers cut off",
        &["closes_total{reason=\"slow_consumer\"}"],
        Combine::Sum,
    ),
    named("rejected_frames", "Frames rejected (protocol errors)", &["protocol_errors_total"], Combine::Sum),
    named(
        "auth_failures",
        "Authentication failures",
        &["login_failures_total", "auth_failures_total", "closes_total{reason=\"auth_failed\"}"],
        Combine::Max,
    ),
    named(
        "refused_connections",
        "Connections refused",
        &["connections_rejected_total", "sockjs_rejected_total"],
        Combine::Sum,
    ),
    named("memory_refusals", "Refused near the memory budget", &["memory_refused_total"], Combine::Sum),
    named(
        "flow_pauses",
        "Flow-control pauses (publishers slowed)",
        &["flow_control_pauses_total"],
        Combine::Sum,
    ),
    named("dropped_messages", "Messages dropped", &["messages_dropped_total"], Combine::Sum),
    named(
        "relay_drops",
        "Relay drops between boards",
        &["cluster_relay_dropped_total", "cluster_publish_errors_total"],
        Combine::Sum,
    ),
    named("stream_lost", "Messages lost between boards", &["stream_lost_total"], Combine::Sum),
    named("redis_failovers", "Redis failovers followed", &["cluster_redis_failovers_total"], Combine::Sum),
    named("recoveries", "Stream recoveries", &["recoveries_total"], Combine::Sum),
];

/// Whether `series` belongs to a named group's pattern: the same metric name and, when the
/// pattern has labels, the same labels. A pattern without labels also matches any metric
/// whose name ends with `_` and it (`recoveries_total` matches `stream_recoveries_total`).
pub fn matches(series: &str, pattern: &str) -> bool {
    let name = metric_name(series);
    match pattern.split_once('{') {
        Some((p_name, p_labels)) => name == p_name && labels(series) == p_labels.trim_end_matches('}'),
        None => name == pattern || name.ends_with(&format!("_{pattern}")),
    }
}

/// The named group a series belongs to, if any.
pub fn group_of(series: &str) -> Option<usize> {
    NAMED.iter().position(|g| g.patterns.iter().any(|p| matches(series, p)))
}

/// A group's figure from its series' figures: by `combine`, over the sums per metric name.
pub fn combine(how: Combine, figures: &[(&str, u64)]) -> u64 {
    let mut per_metric: Vec<(&str, u64)> = Vec::new();
    for (series, v) in figures {
        let name = metric_name(series);
        match per_metric.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += v,
            None => per_metric.push((name, *v)),
        }
    }
    let values = per_metric.iter().map(|(_, v)| *v);
    match how {
        Combine::Sum => values.sum(),
        Combine::Max => values.max().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP stomp_edge_connections_current Open.\n# TYPE stomp_edge_connections_current gauge\nstomp_edge_connections_current 3\n# HELP stomp_edge_closes_total Closes.\n# TYPE stomp_edge_closes_total counter\nstomp_edge_closes_total{reason=\"client_disconnect\"} 5\nstomp_edge_closes_total{reason=\"slow_consumer\"} 2\n# TYPE stomp_edge_stream_lost_total counter\nstomp_edge_stream_lost_total 7\n";

    #[test]
    fn parses_counters_only() {
        assert_eq!(
            parse(TEXT),
            vec![
                ("stomp_edge_closes_total{reason=\"client_disconnect\"}".to_string(), 5),
                ("stomp_edge_closes_total{reason=\"slow_consumer\"}".to_string(), 2),
                ("stomp_edge_stream_lost_total".to_string(), 7),
            ]
        );
    }

    #[test]
    fn the_real_metrics_page_parses_and_every_family_is_there() {
        let text = crate::observability::metrics::render(&crate::observability::metrics::Extra {
            gauges: &[],
            counters: &[],
        });
        let series = parse(&text);
        assert!(series.len() > 50, "{}", series.len());
        assert!(series
            .iter()
            .any(|(s, _)| s == "stomp_edge_protocol_errors_total{reason=\"frame_too_large\"}"));
    }

    #[test]
    fn trouble_is_sorted_out_by_name_and_close_reason() {
        assert!(is_trouble("stomp_edge_closes_total{reason=\"slow_consumer\"}"));
        assert!(is_trouble("stomp_edge_closes_total{reason=\"heartbeat_timeout\"}"));
        assert!(!is_trouble("stomp_edge_closes_total{reason=\"client_disconnect\"}"));
        assert!(!is_trouble("stomp_edge_closes_total{reason=\"protocol_error\"}"));
        assert!(is_trouble("stomp_edge_cluster_relay_dropped_total"));
        assert!(is_trouble("stomp_edge_memory_budget_refusals_total"));
        assert!(is_trouble("stomp_edge_auth_failures_total{reason=\"bad_passcode\"}"));
        assert!(!is_trouble("stomp_edge_messages_delivered_total"));
        assert!(!is_trouble("stomp_edge_frames_received_total"));
    }

    #[test]
    fn a_group_counts_the_same_events_once() {
        let auth =
            [("stomp_edge_login_failures_total", 3), ("stomp_edge_closes_total{reason=\"auth_failed\"}", 3)];
        assert_eq!(combine(Combine::Max, &auth), 3);
        let frames = [
            ("stomp_edge_protocol_errors_total{reason=\"a\"}", 2),
            ("stomp_edge_protocol_errors_total{reason=\"b\"}", 5),
        ];
        assert_eq!(combine(Combine::Max, &frames), 7, "labels of one metric always add up");
        assert_eq!(combine(Combine::Sum, &auth), 6);
    }

    #[test]
    fn named_groups_match_their_series() {
        assert_eq!(group_of("stomp_edge_closes_total{reason=\"slow_consumer\"}"), Some(0));
        assert_eq!(group_of("stomp_edge_protocol_errors_total{reason=\"frame_too_large\"}"), Some(1));
        assert_eq!(group_of("stomp_edge_auth_failures_total{reason=\"x\"}"), Some(2));
        assert_eq!(group_of("stomp_edge_login_failures_total"), Some(2));
        assert_eq!(group_of("stomp_edge_memory_refused_total{what=\"delivery\"}"), Some(4));
        assert_eq!(group_of("stomp_edge_stream_lost_total"), Some(8));
        assert_eq!(group_of("stomp_edge_stream_recoveries_total"), Some(10));
        // Related counters that are not the group's own stay out of it (they show as other trouble).
        assert_eq!(group_of("stomp_edge_stream_recoveries_failed_total"), None);
        assert_eq!(group_of("stomp_edge_login_failures_delayed_total"), None);
        assert_eq!(group_of("stomp_edge_closes_total{reason=\"heartbeat_timeout\"}"), None);
    }
}
