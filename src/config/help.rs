//! The text `stomp-edge --help` prints: the flags, the precedence of the configuration
//! sources, and every config key with its environment variable and SIGHUP behaviour (listed
//! from the keys' declaration, so it cannot drift from it).

use std::fmt::Write;

use super::Config;

/// The text of `--help`.
pub fn help_text() -> String {
    format!(
        "stomp-edge {version}: a small STOMP-over-WebSocket chat and pub/sub server.

USAGE:
    stomp-edge [--config FILE] [--listen ADDR:PORT] [--server-id ID] [--redis URL] [--log-level LEVEL]
    stomp-edge --hash-passcode PASSCODE
    stomp-edge --generate-cert DIR

OPTIONS:
    -c, --config FILE      read settings from FILE (see --print-config for every key)
        --listen ADDR:PORT address of the one listener          [default: 0.0.0.0:8080]
        --server-id ID     node name, unique in a cluster        [default: host name]
        --redis URL        redis://, rediss:// (TLS) or redis-sentinel://h1,h2,h3#MASTER
                           URL: cluster mode; none: local-only mode
        --log-level LEVEL  error, warn, info, debug or trace     [default: info]
        --print-config     print the documented default config file and exit
        --hash-passcode P  print the Argon2 hash of passcode P for auth.users (\"login:HASH\");
                           P = - reads it from standard input (keeps it out of the shell history)
        --generate-cert DIR write DIR/cert.pem and DIR/key.pem, self-signed for this board's
                           names and addresses, for [tls] (HTTPS and wss://), and exit
    -h, --help             print this help
    -V, --version          print the version

With no config and no flags the server runs local-only on 0.0.0.0:8080 and
serves the chat page at http://localhost:8080/.

Every key of the config file can also be set in the environment:
STOMP_EDGE_<KEY> for a top-level key (STOMP_EDGE_LISTEN, STOMP_EDGE_REDIS_URL, ...) and
STOMP_EDGE_<SECTION>_<KEY> for a key in a section (STOMP_EDGE_LIMITS_MAX_CONNECTIONS=2000).
Precedence: defaults < --config file < environment < flags.

SIGTERM/SIGINT drain and stop. SIGHUP re-reads the config file and environment: a key marked
live below takes its new value (connections opened later use it where it is read per
connection); a key marked restart keeps its running value and the log says a restart is needed.

KEYS (config file key, environment variable, on SIGHUP, range):
{keys}",
        version = env!("CARGO_PKG_VERSION"),
        keys = key_table()
    )
}

/// One line per key: `limits.max_connections  STOMP_EDGE_LIMITS_MAX_CONNECTIONS  live  1..=1000000`.
fn key_table() -> String {
    let keys = Config::keys();
    let width = keys.iter().map(|k| k.path.len()).max().unwrap_or(0);
    let env_width = keys.iter().map(|k| k.env_var().len()).max().unwrap_or(0);
    let mut out = String::new();
    for key in keys {
        let range = key.range.map(|(min, max)| format!("  {min}..={max}")).unwrap_or_default();
        let line = format!(
            "    {:width$}  {:env_width$}  {:7}{range}",
            key.path,
            key.env_var(),
            key.reload.as_str()
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}
