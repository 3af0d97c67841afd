//! Server configuration: the typed `Config`, read with the `toml` crate from the compiled-in
//! default file (`config/stomp-edge.toml`, the one source of every default), an optional
//! `--config` file, `STOMP_EDGE_*` environment variables and command-line flags, in that order.
//! Each key is declared once, below, with its type, reload behaviour and range; unknown keys
//! and bad values stop start-up with an error naming the key and its line, variable or flag.
//!
//! # How to add a key
//!
//! 1. Declare it in its section's struct below, with a `///` line saying what it is and its
//!    unit (the name carries it: `_ms`, `_bytes`, `_chars`):
//!    `pub max_widgets: usize = Live [1, 10_000];`
//!    `Live` if the code reads it through `Node::config()` when it needs it (so a SIGHUP reload
//!    applies it); `Restart` if it is read once at start-up (a reload then keeps the running
//!    value and logs that a restart is needed). The `[min, max]` range is for whole numbers;
//!    other types take a serde attribute, e.g. `#[serde(deserialize_with = "value::addr")]`
//!    (readers in `value.rs`).
//! 2. Write it, commented and with its default value, in `config/stomp-edge.toml`. That file
//!    is compiled in and is the default: a key missing from it fails the unit tests.
//! 3. Nothing else: its environment variable (`STOMP_EDGE_<SECTION>_<KEY>`), its range check,
//!    its line in `--help` and its reload behaviour all follow from the declaration.
//!
//! A new `[section]`: declare a struct in the `settings!` block below, add it to `Config` as
//! `pub name: NameConfig = Section;`, and add the `[name]` table to the default file.
//! A cross-key rule (one key bounded by another) goes in `Config::finish`.

mod declare;
mod help;
mod layers;
pub mod redis_url;
mod value;

use std::net::SocketAddr;
use std::time::Duration;

use declare::{settings, Settings};
pub use declare::{KeyInfo, Reload};
pub use help::help_text;
use layers::Layers;
pub use redis_url::{RedisTarget, SentinelTarget};

/// The documented default configuration; it is also the source of every default value.
pub const DEFAULT_FILE: &str = include_str!("../../config/stomp-edge.toml");

/// Compile-time ceilings for limits stored in fixed-capacity (`heapless`) tables.
pub const MAX_HEADERS_CEILING: usize = crate::protocol::MAX_HEADERS_CAP;
pub const ROOM_ID_CEILING: usize = 64;
pub const USERNAME_CEILING: usize = 32;
/// Bytes a user name of `USERNAME_CEILING` characters can take in UTF-8.
pub const USERNAME_BYTES: usize = USERNAME_CEILING * 4;

settings! {
    /// The whole configuration: the top-level keys and one field per `[section]`.
    pub struct Config {
        /// Address and port of the one listener.
        #[serde(deserialize_with = "value::addr")]
        pub listen: SocketAddr = Restart;
        /// Node name, unique in a cluster; empty in the file until `finish` fills it from the
        /// host name.
        #[serde(deserialize_with = "value::server_id")]
        pub server_id: String = Restart;
        /// Redis URL of cluster mode; `None` (empty in the file): local-only mode.
        #[serde(deserialize_with = "value::redis_url")]
        pub redis_url: Option<String> = Restart;
        #[serde(deserialize_with = "value::level")]
        pub log_level: log::LevelFilter = Live;
        /// Longest wait for clients to leave on SIGTERM/SIGINT, in ms.
        pub shutdown_timeout_ms: u64 = Live [0, 600_000];
        pub stomp: StompConfig = Section;
        pub limits: Limits = Section;
        pub http: HttpConfig = Section;
        pub websocket: WebSocketConfig = Section;
        pub auth: AuthConfig = Section;
        pub chat: ChatConfig = Section;
        pub cluster: ClusterConfig = Section;
        pub sockjs: SockJsConfig = Section;
        pub streams: StreamsConfig = Section;
        pub status: StatusConfig = Section;
        pub tls: TlsConfig = Section;
    }

    /// `[stomp]`: heart-beats, the CONNECT deadline, client topic sends and transactions.
    pub struct StompConfig {
        /// Heart-beat interval the server offers to send, in ms (0: never).
        pub heartbeat_send_ms: u64 = Live [0, 3_600_000];
        /// Heart-beat interval the server wants from clients, in ms (0: not checked).
        pub heartbeat_receive_ms: u64 = Live [0, 3_600_000];
        /// Whether clients may SEND to `/topic/**` (outside `/topic/room/`).
        pub allow_client_topic_send: bool = Live;
        /// Destination prefixes only the server publishes to (`/topic/room/`: the chat's
        /// rooms); a client SEND there is refused with `forbidden`.
        #[serde(deserialize_with = "value::prefixes")]
        pub server_owned_prefixes: Vec<String> = Live;
        /// Time a client has to send CONNECT after opening, in ms.
        pub connect_timeout_ms: u64 = Live [100, 600_000];
        pub max_transactions: usize = Live [0, 1024];
        pub max_transaction_frames: usize = Live [1, 100_000];
        pub max_transaction_bytes: usize = Live [1, 1 << 30];
    }

    /// `[limits]`: what one client or this node may hold.
    pub struct Limits {
        pub max_connections: usize = Live [1, 1_000_000];
        pub max_frame_bytes: usize = Live [256, 64 << 20];
        pub max_headers: usize = Live [1, MAX_HEADERS_CEILING];
        pub max_header_line_bytes: usize = Live [64, 1 << 20];
        pub max_subscriptions: usize = Live [1, 100_000];
        /// Distinct destinations with subscribers on this node (bounds the hub's table).
        pub max_destinations: usize = Live [1, 10_000_000];
        pub max_outbound_bytes: usize = Live [4096, 1 << 30];
        /// The board's memory budget for what clients make the server hold (`crate::memory`).
        pub memory_budget_bytes: usize = Live [1 << 20, usize::MAX];
    }

    /// `[http]`: which host names the board answers to (`crate::access`), which reverse proxies
    /// it believes about the client's address (`crate::forwarded`), and who may read `/metrics`
    /// without credentials.
    pub struct HttpConfig {
        /// Names besides the board's own (IP literals, `localhost`, its host name and `.local`
        /// name, the advertise URL's host); `".domain"` for a whole domain; `["*"]`: any.
        #[serde(deserialize_with = "value::hosts")]
        pub allowed_hosts: Vec<String> = Live;
        /// Peers (addresses or CIDR networks) whose `X-Forwarded-For` / `Forwarded` name the
        /// real client; empty: nobody's (the headers are ignored).
        #[serde(deserialize_with = "value::networks")]
        pub trusted_proxies: Vec<crate::forwarded::Network> = Live;
        /// Clients (addresses or networks) that may read `/metrics` without credentials when
        /// accounts ask for them; empty: none.
        #[serde(deserialize_with = "value::networks")]
        pub metrics_open_to: Vec<crate::forwarded::Network> = Live;
    }

    /// `[websocket]`: who may open a WebSocket.
    pub struct WebSocketConfig {
        /// Origins (`scheme://host[:port]`) allowed besides the board's own pages (compared by
        /// scheme, host and port); `["*"]`: everyone. Empty: same host only (plus no-Origin
        /// clients).
        #[serde(deserialize_with = "value::origins")]
        pub allowed_origins: Vec<String> = Live;
    }

    /// `[auth]`: the accounts CONNECT is checked against, and the slowing of failed logins.
    pub struct AuthConfig {
        /// `(login, passcode)` pairs; empty means anonymous clients are allowed.
        #[serde(deserialize_with = "value::users")]
        pub users: Vec<(String, String)> = Live;
        /// Failed logins per address or login answered at once (`crate::login_throttle`).
        pub throttle_after_failures: u32 = Live [0, 1000];
        /// The first delay after those, in ms, doubling per further failure (0: no delays).
        pub throttle_delay_ms: u64 = Live [0, 60_000];
        /// The longest delay, in ms.
        pub throttle_max_delay_ms: u64 = Live [0, 600_000];
        /// CONNECTs that may wait for an Argon2 check of a hashed passcode (checks run one at a
        /// time, off the event loop); past that a CONNECT needing one is refused at once
        /// (`crate::login_check`).
        pub max_pending_logins: usize = Live [1, 100_000];
    }

    /// `[chat]`: the chat rooms' sizes.
    pub struct ChatConfig {
        pub max_rooms: usize = Live [1, 1_000_000];
        pub max_participants_per_room: usize = Live [1, 100_000];
        pub max_room_id_chars: usize = Live [1, ROOM_ID_CEILING];
        pub max_username_chars: usize = Live [1, USERNAME_CEILING];
        pub max_message_bytes: usize = Live [1, 1 << 20];
        /// With `auth.users` set: false makes each chat name the session's login; true lets
        /// users pick any name, as in anonymous mode.
        pub free_usernames: bool = Live;
    }

    /// `[cluster]`: the Redis engine (cluster mode only).
    pub struct ClusterConfig {
        #[serde(deserialize_with = "value::prefix")]
        pub key_prefix: String = Restart;
        /// The URL other boards and browsers reach this board at (`/api/nodes`); empty:
        /// derived from the listen address when the server starts (`crate::advertise`).
        #[serde(deserialize_with = "value::http_url")]
        pub advertise_url: String = Restart;
        pub heartbeat_ms: u64 = Restart [100, 600_000];
        pub registry_ttl_ms: u64 = Restart [300, 3_600_000];
        pub command_timeout_ms: u64 = Restart [10, 600_000];
        pub reconnect_min_ms: u64 = Restart [10, 600_000];
        pub reconnect_max_ms: u64 = Restart [10, 600_000];
        pub relay_buffer_messages: usize = Restart [0, 1_000_000];
        pub relay_buffer_ms: u64 = Restart [0, 3_600_000];
        /// How long this board's own subscribers may wait for a streamed message's offset from
        /// Redis before they get it without one, in ms (0: never wait).
        pub offset_wait_ms: u64 = Restart [0, 10_000];
        /// ACL user the node gives the sentinels with a `redis-sentinel://` URL (empty: the
        /// default user); the URL's user is the data nodes'.
        #[serde(deserialize_with = "value::secret")]
        pub sentinel_username: String = Restart;
        /// Password the node gives the sentinels (empty: none); the URL's is the data nodes'.
        #[serde(deserialize_with = "value::secret")]
        pub sentinel_password: String = Restart;
    }

    /// `[sockjs]`: the SockJS endpoints under `/ws/`.
    pub struct SockJsConfig {
        pub enabled: bool = Live;
        pub heartbeat_ms: u64 = Live [100, 3_600_000];
        pub disconnect_delay_ms: u64 = Live [100, 600_000];
        pub streaming_bytes: usize = Live [4096, 1 << 30];
        pub max_message_bytes: usize = Live [1024, 64 << 20];
    }

    /// `[status]`: the `/status` page and `/api/status`.
    pub struct StatusConfig {
        /// false: `/status` and `/api/status` answer 404.
        pub enabled: bool = Live;
        /// With accounts in `auth.users`: ask for one of them by HTTP Basic.
        pub require_auth: bool = Live;
    }

    /// `[tls]`: HTTPS and `wss://` on the board's port, and the CA of a `rediss://` Redis
    /// (`crate::tls`). The paths need a restart; the files behind them are read again on
    /// every SIGHUP (a bad file then keeps the running certificate).
    pub struct TlsConfig {
        /// PEM certificate chain, the board's own certificate first; empty: plain HTTP.
        #[serde(deserialize_with = "value::file_path")]
        pub cert_file: String = Restart;
        /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
        #[serde(deserialize_with = "value::file_path")]
        pub key_file: String = Restart;
        /// PEM CA certificates a `rediss://` Redis (and its sentinels) is checked against;
        /// empty: the system's CAs.
        #[serde(deserialize_with = "value::file_path")]
        pub redis_ca_file: String = Restart;
    }

    /// `[streams]`: which destinations keep a history, and its bounds (`engine::stream`).
    pub struct StreamsConfig {
        /// Prefixes of the streamed `/topic/` destinations, e.g. `/topic/room/`.
        #[serde(deserialize_with = "value::topic_prefixes")]
        pub prefixes: Vec<String> = Restart;
        /// Messages kept per destination.
        pub max_messages: usize = Restart [1, 1_000_000];
        /// Age after which a kept message is dropped, in ms.
        pub max_age_ms: u64 = Restart [1000, 31_536_000_000];
        /// Bytes all kept messages of this node may take together (local mode).
        pub max_memory_bytes: usize = Restart [4096, 1 << 30];
        /// Destinations whose history this node keeps at once (local mode).
        pub max_streams: usize = Restart [1, 10_000_000];
        /// Cluster mode: how long other topics' short streams are kept for repair, in ms.
        pub repair_window_ms: u64 = Restart [1000, 86_400_000];
    }
}

impl StreamsConfig {
    /// Whether `destination` keeps a history.
    pub fn is_streamed(&self, destination: &str) -> bool {
        self.prefixes.iter().any(|p| destination.starts_with(p.as_str()))
    }
}

/// What the command line asked for besides configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Run(Box<Config>),
    PrintHelp,
    PrintConfig,
    PrintVersion,
    /// `--hash-passcode PASSCODE`: print the Argon2 hash to configure instead of it.
    HashPasscode(String),
    /// `--generate-cert DIR`: write a self-signed certificate and key for this board there
    /// (`crate::tls::generate`).
    GenerateCert(String),
}

/// The flags that set a key, and the key each sets.
const FLAGS: [(&str, &str); 4] = [
    ("--listen", "listen"),
    ("--server-id", "server_id"),
    ("--redis", "redis_url"),
    ("--log-level", "log_level"),
];

impl AuthConfig {
    /// The login throttling policy these settings make.
    pub fn throttle(&self) -> crate::login_throttle::Policy {
        crate::login_throttle::Policy {
            free_failures: self.throttle_after_failures,
            delay: Duration::from_millis(self.throttle_delay_ms),
            max_delay: Duration::from_millis(self.throttle_max_delay_ms.max(self.throttle_delay_ms)),
        }
    }
}

impl TlsConfig {
    /// The scheme of the board's own pages: `https` with a certificate configured.
    pub fn own_scheme(&self) -> &'static str {
        if self.cert_file.is_empty() {
            "http"
        } else {
            "https"
        }
    }
}

impl StompConfig {
    /// The server-owned prefix `destination` falls under, if any.
    pub fn server_owned(&self, destination: &str) -> Option<&str> {
        self.server_owned_prefixes.iter().map(String::as_str).find(|p| destination.starts_with(p))
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

impl Config {
    /// The compiled-in defaults.
    pub fn embedded() -> Config {
        // The embedded file is checked by a unit test; a failure here is a build defect.
        match Layers::embedded().build() {
            Ok(config) => config,
            Err(e) => panic!("embedded default config is invalid: {e}"),
        }
    }

    /// Every key, in declaration order, with its reload behaviour and range.
    pub fn keys() -> Vec<KeyInfo> {
        let mut keys = Vec::new();
        <Config as Settings>::keys("", &mut keys);
        keys
    }

    /// Reads a config file's text over the defaults (no environment, no flags); `origin` names
    /// the file in errors.
    pub fn from_file_text(text: &str, origin: &str) -> Result<Config, String> {
        let mut layers = Layers::embedded();
        layers.apply_file(origin, text)?;
        layers.build()?.finish()
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
        if self.tls.cert_file.is_empty() != self.tls.key_file.is_empty() {
            return Err("tls.cert_file and tls.key_file must be set together (or both left empty)".into());
        }
        if let Some((login, bytes)) = self
            .auth
            .users
            .iter()
            .filter(|(_, pass)| pass.starts_with(crate::auth::HASH_PREFIX))
            .map(|(login, pass)| (login, crate::auth::hash_memory_bytes(pass)))
            .max_by_key(|(_, bytes)| *bytes)
        {
            // An Argon2 run must fit under the budget's high-water mark (`memory::admit`), or
            // the account can never log in.
            let budget = self.limits.memory_budget_bytes;
            if bytes >= budget - budget / 8 {
                return Err(format!(
                    "limits.memory_budget_bytes = {budget} is too small for the Argon2 hash of {login:?} \
                     in auth.users: checking it takes {bytes} bytes (its m parameter), which must stay \
                     under 7/8 of the budget; raise limits.memory_budget_bytes above {} or hash the \
                     passcode with a smaller m",
                    bytes / 7 * 8 + 8
                ));
            }
        }
        if self.chat.max_message_bytes + 1024 > self.limits.max_frame_bytes {
            return Err("chat.max_message_bytes must be at least 1 KiB below limits.max_frame_bytes".into());
        }
        Ok(self)
    }

    /// The configuration a SIGHUP reload runs with, from this running one and the newly read
    /// one: `Live` keys take their new value, `Restart` keys keep the running one. Also returns
    /// the keys whose value changed (both kinds), for the reload log.
    pub fn reloaded(&self, new: Config) -> (Config, Vec<KeyInfo>) {
        let mut changed = Vec::new();
        self.changes(&new, "", &mut changed);
        let mut applied = new;
        applied.keep_restart_keys(self);
        (applied, changed)
    }

    /// Builds the configuration from the process's arguments and environment.
    pub fn from_args_and_env<I>(args: I, env: &[(String, String)]) -> Result<Action, String>
    where
        I: IntoIterator<Item = String>,
    {
        let mut flags: Vec<(&'static str, &'static str, String)> = Vec::new();
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
                "--hash-passcode" => return Ok(Action::HashPasscode(value("--hash-passcode")?)),
                "--generate-cert" => return Ok(Action::GenerateCert(value("--generate-cert")?)),
                other => match FLAGS.iter().find(|(flag, _)| *flag == other) {
                    Some((flag, key)) => {
                        let v = value(flag)?;
                        flags.push((flag, key, v));
                    }
                    None => return Err(format!("unknown argument `{other}` (see --help)")),
                },
            }
        }
        let text = match &config_path {
            Some(path) => {
                Some(std::fs::read_to_string(path).map_err(|e| format!("cannot read config {path}: {e}"))?)
            }
            None => None,
        };
        let keys = Config::keys();
        let mut layers = Layers::embedded();
        if let (Some(path), Some(text)) = (&config_path, &text) {
            layers.apply_file(path, text)?;
        }
        for (name, raw) in env {
            if !name.starts_with("STOMP_EDGE_") {
                continue;
            }
            let key = keys
                .iter()
                .find(|k| k.env_var() == *name)
                .ok_or_else(|| format!("environment {name}: unknown key (see --help)"))?;
            layers.apply_raw(&key.path, raw, format!("environment {name}"))?;
        }
        for (flag, key, raw) in &flags {
            layers.apply_raw(key, raw, flag.to_string())?;
        }
        layers.build()?.finish().map(|c| Action::Run(Box::new(c)))
    }
}

impl Config {
    #[cfg(test)]
    fn with_server_id(mut self, id: &str) -> Config {
        self.server_id = id.to_string();
        self
    }
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
        assert_eq!(c.stomp.server_owned_prefixes, vec!["/topic/room/".to_string()]);
        assert_eq!(c.stomp.server_owned("/topic/room/lobby"), Some("/topic/room/"));
        assert_eq!(c.stomp.server_owned("/topic/roomy"), None);
        assert!(!c.chat.free_usernames);
        // Every field was set by the file, none left at the blank zero.
        assert!(
            c.limits.max_outbound_bytes > 0 && c.stomp.max_transaction_frames > 0 && c.chat.max_rooms > 0
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
    fn sentinel_urls_and_credentials_from_file_environment_and_flag() {
        let url = "redis-sentinel://:pw@10.0.0.2:26379,10.0.0.3:26379/0#mymaster";
        let text = format!("redis_url = \"{url}\"\n[cluster]\nsentinel_username = \"watcher\"\n");
        let c = Config::from_file_text(&text, "f").unwrap();
        assert_eq!((c.redis_url.as_deref(), c.cluster.sentinel_username.as_str()), (Some(url), "watcher"));
        let c =
            run(&[], &[("STOMP_EDGE_REDIS_URL", url), ("STOMP_EDGE_CLUSTER_SENTINEL_PASSWORD", "s3cret")])
                .unwrap();
        assert_eq!((c.redis_url.as_deref(), c.cluster.sentinel_password.as_str()), (Some(url), "s3cret"));
        let c = run(&["--redis", url], &[]).unwrap();
        assert_eq!(c.redis_url.as_deref(), Some(url));
        assert!(run(&["--redis", "redis-sentinel://h:1"], &[]).unwrap_err().contains("master name"));
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let err = |text: &str| Config::from_file_text(text, "f").unwrap_err();
        assert_eq!(
            err("[limits]\nmax_frame_bytes = 1\n"),
            "f: line 2: `limits.max_frame_bytes` must be between 256 and 67108864, not 1"
        );
        assert_eq!(err("\nnonsense = 1\n"), "f: line 2: unknown key `nonsense`");
        assert_eq!(err("[limits]\n\nnope = 1\n"), "f: line 3: unknown key `limits.nope`");
        assert_eq!(err("[limit]\nmax_connections = 1\n"), "f: line 1: unknown key `limit`");
        assert!(err("[limits]\nmax_headers = 1000\n").contains("between 1 and 64"));
        assert_eq!(
            err("[limits]\nmax_connections = \"many\"\n"),
            "f: line 2: `limits.max_connections`: invalid type: string \"many\", expected usize"
        );
        assert!(err("log_level = \"loud\"\n").starts_with("f: line 1: `log_level`"));
        assert!(err("listen = \"nowhere\"\n").starts_with("f: line 1: `listen`"));
        assert!(err("[auth]\nusers = [\n\"a:b\",\n\"nopass\"]\n").contains("login:passcode"));
        // Accounts that would let in what their owner did not mean to.
        assert!(err("[auth]\nusers = [\"dave:\"]\n").contains("passcode of \"dave\" is empty"));
        assert!(err("[auth]\nusers = [\"guest:a\", \"guest:b\"]\n").contains("\"guest\" is listed twice"));
        let bcrypt =
            err("[auth]\nusers = ['x:$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW']\n");
        assert!(bcrypt.contains("\"2b\" password hash"), "{bcrypt}");
        assert!(err("redis_url = \"http://x\"\n").contains("redis://"));
        assert!(err("redis_url = \"redis-sentinel://h1,h2\"\n").contains("master name"));
        assert!(err("[cluster]\nsentinel_password = \"a\\nb\"\n").contains("cluster.sentinel_password"));
        assert!(err("[stomp]\nserver_owned_prefixes = [\"topic\"]\n").contains("stomp.server_owned_prefixes"));
        assert!(err("[cluster]\nadvertise_url = \"board:8080\"\n").contains("cluster.advertise_url"));
        assert!(err("[http]\ntrusted_proxies = [\"10.0.0.0/33\"]\n")
            .starts_with("f: line 2: `http.trusted_proxies`"));
        assert!(err("[http]\nmetrics_open_to = [\"lan\"]\n").contains("`http.metrics_open_to`"));
        let hash =
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let small = err(&format!("[limits]\nmemory_budget_bytes = 16777216\n[auth]\nusers = ['a:{hash}']\n"));
        assert!(small.contains("limits.memory_budget_bytes") && small.contains("auth.users"), "{small}");
        let fits = format!("[limits]\nmemory_budget_bytes = 33554432\n[auth]\nusers = ['a:{hash}']\n");
        assert!(Config::from_file_text(&fits, "f").is_ok());
        let c =
            Config::from_file_text("[cluster]\nadvertise_url = \"http://10.0.0.7:8080/\"\n", "f").unwrap();
        assert_eq!(c.cluster.advertise_url, "http://10.0.0.7:8080");
        assert!(err("[limits]\nmax_connections = -1\n").starts_with("f: line 2: `limits.max_connections`"));
        assert!(err("[sockjs]\nenabled = 1\n").starts_with("f: line 2: `sockjs.enabled`"));
        assert!(err("limits = 5\n").starts_with("f: line 1: `limits`"));
        // A TOML syntax error names the line too.
        assert!(err("a = 1\nb =\n").starts_with("f: line 2:"));
        assert!(err("[limits]\nmax_connections = 1\n[limits]\n").starts_with("f: line 3:"));
        assert!(run(&["--bogus"], &[]).unwrap_err().contains("--bogus"));
        assert!(run(&[], &[("STOMP_EDGE_LIMITS_NOPE", "1")]).unwrap_err().contains("STOMP_EDGE_LIMITS_NOPE"));
        assert!(run(&["--listen"], &[]).unwrap_err().contains("needs a value"));
        assert_eq!(
            run(&[], &[("STOMP_EDGE_LIMITS_MAX_HEADERS", "65")]).unwrap_err(),
            "environment STOMP_EDGE_LIMITS_MAX_HEADERS: `limits.max_headers` must be between 1 and 64, not 65"
        );
        assert!(run(&[], &[("STOMP_EDGE_SOCKJS_ENABLED", "maybe")])
            .unwrap_err()
            .starts_with("environment STOMP_EDGE_SOCKJS_ENABLED: `sockjs.enabled`"));
        assert!(run(&["--log-level", "loud"], &[]).unwrap_err().starts_with("--log-level: `log_level`"));
    }

    #[test]
    fn any_toml_spelling_is_read() {
        // Each of these stopped start-up with the hand-written reader.
        let text = "listen = '127.0.0.1:9000'\n\
                    chat = { max_rooms = 7, max_message_bytes = 0x400 }\n\
                    limits.max_connections = 1_000\n\
                    [auth]\n\
                    users = [\n  'guest:guest', # the LAN default\n  \"\"\"al:ice\"\"\",\n]\n\
                    [websocket]\n\
                    allowed_origins = [ 'http://a:8080',\n 'http://b' ]\n";
        let c = Config::from_file_text(text, "f").unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!((c.chat.max_rooms, c.chat.max_message_bytes), (7, 1024));
        assert_eq!(c.chat.max_participants_per_room, Config::embedded().chat.max_participants_per_room);
        assert_eq!(c.limits.max_connections, 1000);
        assert_eq!(
            c.auth.users,
            vec![("guest".to_string(), "guest".to_string()), ("al".to_string(), "ice".to_string())]
        );
        assert_eq!(c.websocket.allowed_origins, vec!["http://a:8080", "http://b"]);
        // A `[section]` header for a section is the same as the inline table.
        let c = Config::from_file_text("[chat]\nmax_rooms = 7\n", "f").unwrap();
        assert_eq!(c.chat.max_rooms, 7);
    }

    #[test]
    fn environment_values_as_bare_words_or_toml() {
        let c = run(
            &[],
            &[
                ("STOMP_EDGE_WEBSOCKET_ALLOWED_ORIGINS", "http://a, http://b"),
                ("STOMP_EDGE_AUTH_USERS", "['x:y']"),
                ("STOMP_EDGE_SOCKJS_ENABLED", "0"),
                ("STOMP_EDGE_CLUSTER_KEY_PREFIX", "'edge:'"),
                ("STOMP_EDGE_LOG_LEVEL", "debug"),
            ],
        )
        .unwrap();
        assert_eq!(c.websocket.allowed_origins, vec!["http://a", "http://b"]);
        assert_eq!(c.auth.users, vec![("x".to_string(), "y".to_string())]);
        assert!(!c.sockjs.enabled);
        assert_eq!(c.cluster.key_prefix, "edge:");
        assert_eq!(c.log_level, log::LevelFilter::Debug);
    }

    #[test]
    fn every_key_is_in_the_default_file_with_its_environment_variable() {
        // `Config::embedded` deserializes the file without serde defaults: a declared key
        // missing from the file, or a key of the file that is not declared, fails it.
        let c = Config::embedded();
        let keys = Config::keys();
        assert_eq!(
            keys.len(),
            DEFAULT_FILE.lines().filter(|l| !l.starts_with('#') && l.contains(" = ")).count()
        );
        for key in &keys {
            let name = key.path.rsplit('.').next().unwrap();
            assert!(DEFAULT_FILE.contains(&format!("\n{name} = ")), "{} not in the default file", key.path);
        }
        assert!(keys.iter().any(|k| k.env_var() == "STOMP_EDGE_LIMITS_MAX_CONNECTIONS"));
        assert!(keys.iter().any(|k| k.env_var() == "STOMP_EDGE_REDIS_URL"));
        assert_eq!(c, Config::from_file_text("", "empty").unwrap().with_server_id(""));
    }

    #[test]
    fn reload_applies_live_keys_and_keeps_restart_keys() {
        let running = Config::embedded();
        let new = Config::from_file_text(
            "listen = '127.0.0.1:1'\nlog_level = 'debug'\n[limits]\nmax_connections = 3\nmax_destinations = 5\n\
             [chat]\nmax_rooms = 2\nmax_message_bytes = 10\n[cluster]\nheartbeat_ms = 1000\n",
            "f",
        )
        .unwrap()
        .with_server_id(&running.server_id);
        let (applied, changed) = running.reloaded(new);
        let names: Vec<(&str, Reload)> = changed.iter().map(|k| (k.path.as_str(), k.reload)).collect();
        assert_eq!(
            names,
            vec![
                ("listen", Reload::Restart),
                ("log_level", Reload::Live),
                ("limits.max_connections", Reload::Live),
                ("limits.max_destinations", Reload::Live),
                ("chat.max_rooms", Reload::Live),
                ("chat.max_message_bytes", Reload::Live),
                ("cluster.heartbeat_ms", Reload::Restart),
            ]
        );
        assert_eq!(applied.listen, running.listen);
        assert_eq!(applied.log_level, log::LevelFilter::Debug);
        assert_eq!(applied.limits.max_connections, 3);
        assert_eq!(applied.limits.max_destinations, 5);
        assert_eq!((applied.chat.max_rooms, applied.chat.max_message_bytes), (2, 10));
        assert_eq!(applied.cluster, running.cluster);
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
