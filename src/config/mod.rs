//! Server configuration: the typed `Config`, built from the compiled-in default file, an
//! optional `--config` file, `STOMP_EDGE_*` environment variables and command-line flags, in
//! that order. Every key is validated where it is set, and errors name the key.

mod file;
mod help;
mod setting;

use std::net::SocketAddr;
use std::time::Duration;

pub use file::Value;
pub use help::help_text;
use setting::Setting;

/// The documented default configuration; it is also the source of every default value.
pub const DEFAULT_FILE: &str = include_str!("../../config/stomp-edge.toml");

/// Compile-time ceilings for limits stored in fixed-capacity (`heapless`) tables.
pub const MAX_HEADERS_CEILING: usize = crate::protocol::MAX_HEADERS_CAP;
pub const ROOM_ID_CEILING: usize = 64;
pub const USERNAME_CEILING: usize = 32;
/// Bytes a user name of `USERNAME_CEILING` characters can take in UTF-8.
pub const USERNAME_BYTES: usize = USERNAME_CEILING * 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    /// Empty until `finish` fills it from the host name.
    pub server_id: String,
    pub redis_url: Option<String>,
    pub log_level: log::LevelFilter,
    pub shutdown_timeout_ms: u64,
    pub stomp: StompConfig,
    pub limits: Limits,
    pub websocket: WebSocketConfig,
    pub auth: AuthConfig,
    pub chat: ChatConfig,
    pub cluster: ClusterConfig,
    pub sockjs: SockJsConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SockJsConfig {
    pub enabled: bool,
    pub heartbeat_ms: u64,
    pub disconnect_delay_ms: u64,
    pub streaming_bytes: usize,
    pub max_message_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StompConfig {
    pub heartbeat_send_ms: u64,
    pub heartbeat_receive_ms: u64,
    pub allow_client_topic_send: bool,
    pub connect_timeout_ms: u64,
    pub max_transactions: usize,
    pub max_transaction_frames: usize,
    pub max_transaction_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_frame_bytes: usize,
    pub max_headers: usize,
    pub max_header_line_bytes: usize,
    pub max_subscriptions: usize,
    pub max_destinations: usize,
    pub max_outbound_bytes: usize,
    /// The board's memory budget for what clients make the server hold (`crate::memory`).
    pub memory_budget_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocketConfig {
    /// Empty: same host only (plus no-Origin clients); `["*"]`: everyone.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// `(login, passcode)` pairs; empty means anonymous clients are allowed.
    pub users: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatConfig {
    pub max_rooms: usize,
    pub max_participants_per_room: usize,
    pub max_room_id_chars: usize,
    pub max_username_chars: usize,
    pub max_message_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub key_prefix: String,
    /// The URL other boards and browsers reach this board at (`/api/nodes`); empty: derived
    /// from the listen address when the server starts (`crate::advertise`).
    pub advertise_url: String,
    pub heartbeat_ms: u64,
    pub registry_ttl_ms: u64,
    pub command_timeout_ms: u64,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    pub relay_buffer_messages: usize,
    pub relay_buffer_ms: u64,
}

/// What the command line asked for besides configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Run(Box<Config>),
    PrintHelp,
    PrintConfig,
    PrintVersion,
}

impl StompConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

impl Config {
    /// The compiled-in defaults.
    pub fn embedded() -> Config {
        let mut config = Config::blank();
        // The embedded file is checked by a unit test; a failure here is a build defect.
        if let Err(e) = config.apply_text(DEFAULT_FILE, "embedded default") {
            panic!("embedded default config is invalid: {e}");
        }
        config
    }

    fn blank() -> Config {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            server_id: String::new(),
            redis_url: None,
            log_level: log::LevelFilter::Info,
            shutdown_timeout_ms: 0,
            stomp: StompConfig {
                heartbeat_send_ms: 0,
                heartbeat_receive_ms: 0,
                allow_client_topic_send: true,
                connect_timeout_ms: 0,
                max_transactions: 0,
                max_transaction_frames: 0,
                max_transaction_bytes: 0,
            },
            limits: Limits {
                max_connections: 0,
                max_frame_bytes: 0,
                max_headers: 0,
                max_header_line_bytes: 0,
                max_subscriptions: 0,
                max_destinations: 0,
                max_outbound_bytes: 0,
                memory_budget_bytes: 0,
            },
            websocket: WebSocketConfig { allowed_origins: Vec::new() },
            auth: AuthConfig { users: Vec::new() },
            chat: ChatConfig {
                max_rooms: 0,
                max_participants_per_room: 0,
                max_room_id_chars: 0,
                max_username_chars: 0,
                max_message_bytes: 0,
            },
            cluster: ClusterConfig {
                key_prefix: String::new(),
                advertise_url: String::new(),
                heartbeat_ms: 0,
                registry_ttl_ms: 0,
                command_timeout_ms: 0,
                reconnect_min_ms: 0,
                reconnect_max_ms: 0,
                relay_buffer_messages: 0,
                relay_buffer_ms: 0,
            },
            sockjs: SockJsConfig {
                enabled: true,
                heartbeat_ms: 0,
                disconnect_delay_ms: 0,
                streaming_bytes: 0,
                max_message_bytes: 0,
            },
        }
    }

    /// Applies a config file's text on top of the current values.
    pub fn apply_text(&mut self, text: &str, origin: &str) -> Result<(), String> {
        let entries = file::parse(text).map_err(|e| format!("{origin}: {e}"))?;
        for entry in entries {
            self.set(&entry.key, entry.value).map_err(|e| format!("{origin}: line {}: {}", entry.line, e))?;
        }
        Ok(())
    }

    /// Sets one key. Values from the environment and flags arrive as strings and are converted.
    pub fn set(&mut self, key: &str, value: Value) -> Result<(), String> {
        let v = Setting { key, value };
        match key {
            "listen" => self.listen = v.addr()?,
            "server_id" => self.server_id = v.server_id()?,
            "redis_url" => self.redis_url = v.redis_url()?,
            "log_level" => self.log_level = v.level()?,
            "shutdown_timeout_ms" => self.shutdown_timeout_ms = v.int(0, 600_000)?,
            "stomp.heartbeat_send_ms" => self.stomp.heartbeat_send_ms = v.int(0, 3_600_000)?,
            "stomp.heartbeat_receive_ms" => self.stomp.heartbeat_receive_ms = v.int(0, 3_600_000)?,
            "stomp.allow_client_topic_send" => self.stomp.allow_client_topic_send = v.bool()?,
            "stomp.connect_timeout_ms" => self.stomp.connect_timeout_ms = v.int(100, 600_000)?,
            "stomp.max_transactions" => self.stomp.max_transactions = v.int(0, 1024)? as usize,
            "stomp.max_transaction_frames" => self.stomp.max_transaction_frames = v.int(1, 100_000)? as usize,
            "stomp.max_transaction_bytes" => self.stomp.max_transaction_bytes = v.int(1, 1 << 30)? as usize,
            "limits.max_connections" => self.limits.max_connections = v.int(1, 1_000_000)? as usize,
            "limits.max_frame_bytes" => self.limits.max_frame_bytes = v.int(256, 64 << 20)? as usize,
            "limits.max_headers" => self.limits.max_headers = v.int(1, MAX_HEADERS_CEILING as u64)? as usize,
            "limits.max_header_line_bytes" => {
                self.limits.max_header_line_bytes = v.int(64, 1 << 20)? as usize
            }
            "limits.max_subscriptions" => self.limits.max_subscriptions = v.int(1, 100_000)? as usize,
            "limits.max_destinations" => self.limits.max_destinations = v.int(1, 10_000_000)? as usize,
            "limits.max_outbound_bytes" => self.limits.max_outbound_bytes = v.int(4096, 1 << 30)? as usize,
            "limits.memory_budget_bytes" => {
                self.limits.memory_budget_bytes = v.int(1 << 20, 1 << 40)? as usize
            }
            "websocket.allowed_origins" => self.websocket.allowed_origins = v.list()?,
            "auth.users" => self.auth.users = v.users()?,
            "chat.max_rooms" => self.chat.max_rooms = v.int(1, 1_000_000)? as usize,
            "chat.max_participants_per_room" => {
                self.chat.max_participants_per_room = v.int(1, 100_000)? as usize
            }
            "chat.max_room_id_chars" => {
                self.chat.max_room_id_chars = v.int(1, ROOM_ID_CEILING as u64)? as usize
            }
            "chat.max_username_chars" => {
                self.chat.max_username_chars = v.int(1, USERNAME_CEILING as u64)? as usize
            }
            "chat.max_message_bytes" => self.chat.max_message_bytes = v.int(1, 1 << 20)? as usize,
            "cluster.key_prefix" => self.cluster.key_prefix = v.prefix()?,
            "cluster.advertise_url" => self.cluster.advertise_url = v.http_url()?,
            "cluster.heartbeat_ms" => self.cluster.heartbeat_ms = v.int(100, 600_000)?,
            "cluster.registry_ttl_ms" => self.cluster.registry_ttl_ms = v.int(300, 3_600_000)?,
            "cluster.command_timeout_ms" => self.cluster.command_timeout_ms = v.int(10, 600_000)?,
            "cluster.reconnect_min_ms" => self.cluster.reconnect_min_ms = v.int(10, 600_000)?,
            "cluster.reconnect_max_ms" => self.cluster.reconnect_max_ms = v.int(10, 600_000)?,
            "cluster.relay_buffer_messages" => {
                self.cluster.relay_buffer_messages = v.int(0, 1_000_000)? as usize
            }
            "cluster.relay_buffer_ms" => self.cluster.relay_buffer_ms = v.int(0, 3_600_000)?,
            "sockjs.enabled" => self.sockjs.enabled = v.bool()?,
            "sockjs.heartbeat_ms" => self.sockjs.heartbeat_ms = v.int(100, 3_600_000)?,
            "sockjs.disconnect_delay_ms" => self.sockjs.disconnect_delay_ms = v.int(100, 600_000)?,
            "sockjs.streaming_bytes" => self.sockjs.streaming_bytes = v.int(4096, 1 << 30)? as usize,
            "sockjs.max_message_bytes" => self.sockjs.max_message_bytes = v.int(1024, 64 << 20)? as usize,
            _ => return Err(format!("unknown key `{key}`")),
        }
        Ok(())
    }

    /// Cross-key checks and derived values, run once after every source is applied.
    pub fn finish(mut self) -> Result<Config, String> {
        if self.server_id.is_empty() {
            self.server_id = default_server_id();
        }
        if self.limits.max_header_line_bytes > self.limits.max_frame_bytes {
            return Err("limits.max_header_line_bytes must not exceed limits.max_frame_bytes".into());
        }
        if self.cluster.registry_ttl_ms < 2 * self.cluster.heartbeat_ms {
            return Err("cluster.registry_ttl_ms must be at least twice cluster.heartbeat_ms".into());
        }
        if self.cluster.reconnect_min_ms > self.cluster.reconnect_max_ms {
            return Err("cluster.reconnect_min_ms must not exceed cluster.reconnect_max_ms".into());
        }
        if self.chat.max_message_bytes + 1024 > self.limits.max_frame_bytes {
            return Err("chat.max_message_bytes must be at least 1 KiB below limits.max_frame_bytes".into());
        }
        Ok(self)
    }

    /// Builds the configuration from the process's arguments and environment.
    pub fn from_args_and_env<I>(args: I, env: &[(String, String)]) -> Result<Action, String>
    where
        I: IntoIterator<Item = String>,
    {
        let mut config = Config::embedded();
        let mut flags: Vec<(&'static str, String)> = Vec::new();
        let mut config_path: Option<String> = None;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let mut value = |flag: &str| {
                inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{flag} needs a value"))
            };
            match name.as_str() {
                "-h" | "--help" => return Ok(Action::PrintHelp),
                "-V" | "--version" => return Ok(Action::PrintVersion),
                "--print-config" => return Ok(Action::PrintConfig),
                "-c" | "--config" => config_path = Some(value("--config")?),
                "--listen" => flags.push(("listen", value("--listen")?)),
                "--server-id" => flags.push(("server_id", value("--server-id")?)),
                "--redis" => flags.push(("redis_url", value("--redis")?)),
                "--log-level" => flags.push(("log_level", value("--log-level")?)),
                other => return Err(format!("unknown argument `{other}` (see --help)")),
            }
        }
        if let Some(path) = &config_path {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read config {path}: {e}"))?;
            config.apply_text(&text, path)?;
        }
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix("STOMP_EDGE_") else { continue };
            let key = env_key(rest).ok_or_else(|| format!("environment {name}: unknown key"))?;
            let value = env_value(raw);
            config.set(&key, value).map_err(|e| format!("environment {name}: {e}"))?;
        }
        for (key, raw) in flags {
            config.set(key, Value::Str(raw)).map_err(|e| format!("flag for {key}: {e}"))?;
        }
        config.finish().map(|c| Action::Run(Box::new(c)))
    }
}

/// The config keys an environment variable can name, e.g. `LIMITS_MAX_CONNECTIONS`.
fn env_key(rest: &str) -> Option<String> {
    let lower = rest.to_ascii_lowercase();
    const SECTIONS: [&str; 7] = ["stomp", "limits", "websocket", "auth", "chat", "cluster", "sockjs"];
    for section in SECTIONS {
        if let Some(key) = lower.strip_prefix(section).and_then(|k| k.strip_prefix('_')) {
            return Some(format!("{section}.{key}"));
        }
    }
    Some(lower)
}

/// Environment values may be written as in the file (`"x"`, `[..]`, `42`) or bare.
fn env_value(raw: &str) -> Value {
    file::parse_value(raw.trim()).unwrap_or_else(|_| Value::Str(raw.to_string()))
}

fn default_server_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let id: String =
        host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
    if id.is_empty() {
        "stomp-edge".to_string()
    } else {
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, String> {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        match Config::from_args_and_env(args.iter().map(|s| s.to_string()), &env)? {
            Action::Run(c) => Ok(*c),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn embedded_file_sets_every_default() {
        let c = Config::embedded();
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.redis_url, None);
        assert_eq!(c.stomp.heartbeat_send_ms, 10_000);
        assert_eq!(c.limits.max_frame_bytes, 131_072);
        assert_eq!(c.limits.max_headers, 32);
        assert!(c.auth.users.is_empty());
        assert!(c.websocket.allowed_origins.is_empty());
        assert_eq!(c.chat.max_room_id_chars, 64);
        // Every field was set by the file, none left at the blank zero.
        assert!(
            c.limits.max_outbound_bytes > 0
                && c.limits.memory_budget_bytes == crate::memory::DEFAULT_BUDGET
                && c.stomp.max_transaction_frames > 0
                && c.chat.max_rooms > 0
        );
    }

    #[test]
    fn precedence_file_env_flags() {
        let dir = std::env::temp_dir().join(format!("stomp-edge-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1000\"\n[limits]\nmax_connections = 5\n[auth]\nusers = [\"alice:secret\"]\n").unwrap();
        let p = path.to_str().unwrap();
        let c = run(&["--config", p], &[]).unwrap();
        assert_eq!(c.listen.port(), 1000);
        assert_eq!(c.limits.max_connections, 5);
        assert_eq!(c.auth.users, vec![("alice".to_string(), "secret".to_string())]);
        let c = run(
            &["--config", p],
            &[("STOMP_EDGE_LISTEN", "127.0.0.1:2000"), ("STOMP_EDGE_LIMITS_MAX_CONNECTIONS", "7")],
        )
        .unwrap();
        assert_eq!((c.listen.port(), c.limits.max_connections), (2000, 7));
        let c = run(&["--config", p, "--listen=127.0.0.1:3000"], &[("STOMP_EDGE_LISTEN", "127.0.0.1:2000")])
            .unwrap();
        assert_eq!(c.listen.port(), 3000);
        let c = run(&["--redis", "redis://127.0.0.1:6379", "--server-id", "n1"], &[]).unwrap();
        assert_eq!((c.redis_url.as_deref(), c.server_id.as_str()), (Some("redis://127.0.0.1:6379"), "n1"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn errors_name_the_key() {
        let err = |text: &str| {
            let mut c = Config::embedded();
            c.apply_text(text, "f").unwrap_err()
        };
        assert!(err("[limits]\nmax_frame_bytes = 1\n").contains("limits.max_frame_bytes"));
        assert!(err("nonsense = 1\n").contains("unknown key `nonsense`"));
        assert!(err("[limits]\nmax_headers = 1000\n").contains("between 1 and 64"));
        assert!(err("log_level = \"loud\"\n").contains("log_level"));
        assert!(err("listen = \"nowhere\"\n").contains("listen"));
        assert!(err("[auth]\nusers = [\"nopass\"]\n").contains("login:passcode"));
        assert!(err("redis_url = \"http://x\"\n").contains("redis://"));
        assert!(err("[cluster]\nadvertise_url = \"board:8080\"\n").contains("cluster.advertise_url"));
        let mut c = Config::embedded();
        c.apply_text("[cluster]\nadvertise_url = \"http://10.0.0.7:8080/\"\n", "f").unwrap();
        assert_eq!(c.cluster.advertise_url, "http://10.0.0.7:8080");
        assert!(run(&["--bogus"], &[]).unwrap_err().contains("--bogus"));
        assert!(run(&[], &[("STOMP_EDGE_LIMITS_NOPE", "1")]).unwrap_err().contains("STOMP_EDGE_LIMITS_NOPE"));
        assert!(run(&["--listen"], &[]).unwrap_err().contains("needs a value"));
    }

    #[test]
    fn help_and_print_config() {
        let r = Config::from_args_and_env(["--help".to_string()], &[]).unwrap();
        assert_eq!(r, Action::PrintHelp);
        assert!(help_text().contains("--redis URL"));
        let r = Config::from_args_and_env(["--print-config".to_string()], &[]).unwrap();
        assert_eq!(r, Action::PrintConfig);
    }
}
