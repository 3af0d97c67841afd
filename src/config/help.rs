//! The text `stomp-edge --help` prints: the flags, the environment variables and the
//! precedence of the configuration sources.

/// The text of `--help`.
pub fn help_text() -> String {
    format!(
        "stomp-edge {version}: a small STOMP-over-WebSocket chat and pub/sub server.

USAGE:
    stomp-edge [--config FILE] [--listen ADDR:PORT] [--server-id ID] [--redis URL] [--log-level LEVEL]

OPTIONS:
    -c, --config FILE      read settings from FILE (see --print-config for every key)
        --listen ADDR:PORT address of the one listener          [default: 0.0.0.0:8080]
        --server-id ID     node name, unique in a cluster        [default: host name]
        --redis URL        redis:// or redis-sentinel://h1,h2,h3#MASTER URL: cluster
                           mode; none: local-only mode
        --log-level LEVEL  error, warn, info, debug or trace     [default: info]
        --print-config     print the documented default config file and exit
    -h, --help             print this help
    -V, --version          print the version

With no config and no flags the server runs local-only on 0.0.0.0:8080 and
serves the chat page at http://localhost:8080/.

Every key of the config file can also be set in the environment:
STOMP_EDGE_<KEY> for a top-level key (STOMP_EDGE_LISTEN, STOMP_EDGE_REDIS_URL, ...) and
STOMP_EDGE_<SECTION>_<KEY> for a key in a section (STOMP_EDGE_LIMITS_MAX_CONNECTIONS=2000).
Precedence: defaults < --config file < environment < flags.

SIGTERM/SIGINT drain and stop; SIGHUP reloads the log level and limits from the config file.
",
        version = env!("CARGO_PKG_VERSION")
    )
}
