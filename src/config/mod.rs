//! Server configuration: the typed `Config`: the defaults declared below, then an optional
//! `--config` file (read with the `toml` crate), `STOMP_EDGE_*` environment variables and
//! command-line flags, in that order. Each key is declared once, below, with its type, default,
//! reload behaviour and range; `config/stomp-edge.toml` documents every key with that default
//! (a unit test holds the two equal). Unknown keys and bad values stop start-up with an error
//! naming the key and its line, variable or flag.
//!
//! # How to add a key
//!
//! 1. Declare it in its section's struct below, with a `///` line saying what it is and its
//!    unit (the name carries it: `_ms`, `_bytes`, `_chars`):
//!    `pub max_widgets: usize = 100, Live [1, 10_000];`
//!    `Live` if the code reads it through `Node::config()` when it needs it (so a SIGHUP reload
//!    applies it); `Restart` if it is read once at start-up (a reload then keeps the running
//!    value and logs that a restart is needed). The `[min, max]` range is for whole numbers;
//!    other types take a serde attribute, e.g. `#[serde(deserialize_with = "value::addr")]`
//!    (readers in `value.rs`).
//! 2. Write it, commented and with its default value, in `config/stomp-edge.toml`. That file
//!    is compiled in (`--print-config`) and is what the packages install: a key missing from
//!    it, or a value there other than the declared default, fails the unit tests.
//! 3. Nothing else: its environment variable (`STOMP_EDGE_<SECTION>_<KEY>`), its range check,
//!    its line in `--help` and its reload behaviour all follow from the declaration.
//!
//! A new `[section]`: declare a struct in the `settings!` block below, add it to `Config` as
//! `pub name: NameConfig = Default::default(), Section;`, and add the `[name]` table to the default file.
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
#[cfg(test)]
use layers::Shipped;
pub use redis_url::{RedisTarget, SentinelTarget};

/// The documented default configuration: every key with its declared default (a unit test
/// holds them equal).
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
        pub listen: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 8080)), Restart;
        /// Node name, unique in a cluster; empty in the file until `finish` fills it from the
        /// host name.
        #[serde(deserialize_with = "value::server_id")]
        pub server_id: String = String::new(), Restart;
        /// Redis URL of cluster mode; `None` (empty in the file): local-only mode.
        #[serde(deserialize_with = "value::redis_url")]
        pub redis_url: Option<String> = None, Restart;
        #[serde(deserialize_with = "value::level")]
        pub log_level: log::LevelFilter = log::LevelFilter::Info, Live;
        /// Longest wait for clients to leave on SIGTERM/SIGINT, in ms.
        pub shutdown_timeout_ms: u64 = 5000, Live [0, 600_000];
        pub stomp: StompConfig = Default::default(), Section;
        pub limits: Limits = Default::default(), Section;
        pub http: HttpConfig = Default::default(), Section;
        pub websocket: WebSocketConfig = Default::default(), Section;
        pub auth: AuthConfig = Default::default(), Section;
        pub chat: ChatConfig = Default::default(), Section;
        pub cluster: ClusterConfig = Default::default(), Section;
        pub sockjs: SockJsConfig = Default::default(), Section;
        pub streams: StreamsConfig = Default::default(), Section;
        pub status: StatusConfig = Default::default(), Section;
        pub tls: TlsConfig = Default::default(), Section;
    }

    /// `[stomp]`: heart-beats, the CONNECT deadline, client topic sends and transactions.
    pub struct StompConfig {
        /// Heart-beat interval the server offers to send, in ms (0: never).
        pub heartbeat_send_ms: u64 = 10_000, Live [0, 3_600_000];
        /// Heart-beat interval the server wants from clients, in ms (0: not checked).
        pub heartbeat_receive_ms: u64 = 10_000, Live [0, 3_600_000];
        /// Whether clients may SEND to `/topic/**` (outside `/topic/room/`).
        pub allow_client_topic_send: bool = true, Live;
        /// Destination prefixes only the server publishes to (`/topic/room/`: the chat's
        /// rooms); a client SEND there is refused with `forbidden`.
        #[serde(deserialize_with = "value::prefixes")]
        pub server_owned_prefixes: Vec<String> = vec!["/topic/room/".into()], Live;
        /// Time a client has to send CONNECT after opening, in ms.
        pub connect_timeout_ms: u64 = 10_000, Live [100, 600_000];
        pub max_transactions: usize = 4, Live [0, 1024];
        pub max_transaction_frames: usize = 64, Live [1, 100_000];
        pub max_transaction_bytes: usize = 256 << 10, Live [1, 1 << 30];
    }

    /// `[limits]`: what one client or this node may hold.
    pub struct Limits {
        pub max_connections: usize = 10_000, Live [1, 1_000_000];
        pub max_frame_bytes: usize = 128 << 10, Live [256, 64 << 20];
        pub max_headers: usize = 32, Live [1, MAX_HEADERS_CEILING];
        pub max_header_line_bytes: usize = 8 << 10, Live [64, 1 << 20];
        pub max_subscriptions: usize = 64, Live [1, 100_000];
        /// Distinct destinations with subscribers on this node (bounds the hub's table).
        pub max_destinations: usize = 10_000, Live [1, 10_000_000];
        pub max_outbound_bytes: usize = 1 << 20, Live [4096, 1 << 30];
        /// The board's memory budget for what clients make the server hold (`crate::board::memory`).
        pub memory_budget_bytes: usize = 64 << 20, Live [1 << 20, usize::MAX];
    }

    /// `[http]`: which host names the board answers to (`crate::auth::access`), which reverse proxies
    /// it believes about the client's address (`crate::transport::forwarded`), and who may read `/metrics`
    /// without credentials.
    pub struct HttpConfig {
        /// Names besides the board's own (IP literals, `localhost`, its host name and `.local`
        /// name, the advertise URL's host); `".domain"` for a whole domain; `["*"]`: any.
        #[serde(deserialize_with = "value::hosts")]
        pub allowed_hosts: Vec<String> = Vec::new(), Live;
        /// Peers (addresses or CIDR networks) whose `X-Forwarded-For` / `Forwarded` name the
        /// real client; empty: nobody's (the headers are ignored).
        #[serde(deserialize_with = "value::networks")]
        pub trusted_proxies: Vec<crate::transport::forwarded::Network> = Vec::new(), Live;
        /// Clients (addresses or networks) that may read `/metrics` without credentials when
        /// accounts ask for them; empty: none.
        #[serde(deserialize_with = "value::networks")]
        pub metrics_open_to: Vec<crate::transport::forwarded::Network> = Vec::new(), Live;
    }

    /// `[websocket]`: who may open a WebSocket.
    pub struct WebSocketConfig {
        /// Origins (`scheme://host[:port]`) allowed besides the board's own pages (compared by
        /// scheme, host and port); `["*"]`: everyone. Empty: same host only (plus no-Origin
        /// clients).
        #[serde(deserialize_with = "value::origins")]
        pub allowed_origins: Vec<String> = Vec::new(), Live;
    }

    /// `[auth]`: the accounts CONNECT is checked against, and the slowing of failed logins.
    pub struct AuthConfig {
        /// `(login, passcode)` pairs; empty means anonymous clients are allowed.
        #[serde(deserialize_with = "value::users")]
        pub users: Vec<(String, String)> = Vec::new(), Live;
        /// Failed logins per address or login answered at once (`crate::auth::login_throttle`).
        pub throttle_after_failures: u32 = 3, Live [0, 1000];
        /// The first delay after those, in ms, doubling per further failure (0: no delays).
        pub throttle_delay_ms: u64 = 500, Live [0, 60_000];
        /// The longest delay, in ms.
        pub throttle_max_delay_ms: u64 = 10_000, Live [0, 600_000];
        /// CONNECTs that may wait for an Argon2 check of a hashed passcode (checks run one at a
        /// time, off the event loop); past that a CONNECT needing one is refused at once
        /// (`crate::auth::login_check`).
        pub max_pending_logins: usize = 64, Live [1, 100_000];
    }

    /// `[chat]`: the chat rooms' sizes.
    pub struct ChatConfig {
        pub max_rooms: usize = 1024, Live [1, 1_000_000];
        pub max_participants_per_room: usize = 256, Live [1, 100_000];
        pub max_room_id_chars: usize = 64, Live [1, ROOM_ID_CEILING];
        pub max_username_chars: usize = 32, Live [1, USERNAME_CEILING];
        pub max_message_bytes: usize = 4096, Live [1, 1 << 20];
        /// With `auth.users` set: false makes each chat name the session's login; true lets
        /// users pick any name, as in anonymous mode.
        pub free_usernames: bool = false, Live;
    }

    /// `[cluster]`: the Redis engine (cluster mode only).
    pub struct ClusterConfig {
        #[serde(deserialize_with = "value::prefix")]
        pub key_prefix: String = "stomp:".into(), Restart;
        /// The URL other boards and browsers reach this board at (`/api/nodes`); empty:
        /// derived from the listen address when the server starts (`crate::board::advertise`).
        #[serde(deserialize_with = "value::http_url")]
        pub advertise_url: String = String::new(), Restart;
        pub heartbeat_ms: u64 = 3000, Restart [100, 600_000];
        pub registry_ttl_ms: u64 = 10_000, Restart [300, 3_600_000];
        pub command_timeout_ms: u64 = 2000, Restart [10, 600_000];
        pub reconnect_min_ms: u64 = 100, Restart [10, 600_000];
        pub reconnect_max_ms: u64 = 3000, Restart [10, 600_000];
        pub relay_buffer_messages: usize = 10_000, Restart [0, 1_000_000];
        pub relay_buffer_ms: u64 = 300_000, Restart [0, 3_600_000];
        /// How long this board's own subscribers may wait for a streamed message's offset from
        /// Redis before they get it without one, in ms (0: never wait).
        pub offset_wait_ms: u64 = 50, Restart [0, 10_000];
        /// ACL user the node gives the sentinels with a `redis-sentinel://` URL (empty: the
        /// default user); the URL's user is the data nodes'.
        #[serde(deserialize_with = "value::secret")]
        pub sentinel_username: String = String::new(), Restart;
        /// Password the node gives the sentinels (empty: none); the URL's is the data nodes'.
        #[serde(deserialize_with = "value::secret")]
        pub sentinel_password: String = String::new(), Restart;
    }

    /// `[sockjs]`: the SockJS endpoints under `/ws/`.
    pub struct SockJsConfig {
        pub enabled: bool = true, Live;
        pub heartbeat_ms: u64 = 25_000, Live [100, 3_600_000];
        pub disconnect_delay_ms: u64 = 5000, Live [100, 600_000];
        pub streaming_bytes: usize = 128 << 10, Live [4096, 1 << 30];
        pub max_message_bytes: usize = 256 << 10, Live [1024, 64 << 20];
    }

    /// `[status]`: the `/status` page and `/api/status`.
    pub struct StatusConfig {
        /// false: `/status` and `/api/status` answer 404.
        pub enabled: bool = true, Live;
        /// With accounts in `auth.users`: ask for one of them by HTTP Basic.
        pub require_auth: bool = true, Live;
    }

    /// `[tls]`: HTTPS and `wss://` on the board's port, and the CA of a `rediss://` Redis
    /// (`crate::tls`). The paths need a restart; the files behind them are read again on
    /// every SIGHUP (a bad file then keeps the running certificate).
    pub struct TlsConfig {
        /// PEM certificate chain, the board's own certificate first; empty: plain HTTP.
        #[serde(deserialize_with = "value::file_path")]
        pub cert_file: String = String::new(), Restart;
        /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
        #[serde(deserialize_with = "value::file_path")]
        pub key_file: String = String::new(), Restart;
        /// PEM CA certificates a `rediss://` Redis (and its sentinels) is checked against;
        /// empty: the system's CAs.
        #[serde(deserialize_with = "value::file_path")]
        pub redis_ca_file: String = String::new(), Restart;
    }

    /// `[streams]`: which destinations keep a history, and its bounds (`engine::stream`).
    pub struct StreamsConfig {
        /// Prefixes of the streamed `/topic/` destinations, e.g. `/topic/room/`.
        #[serde(deserialize_with = "value::topic_prefixes")]
        pub prefixes: Vec<String> = vec!["/topic/room/".into()], Restart;
        /// Messages kept per destination.
        pub max_messages: usize = 100, Restart [1, 1_000_000];
        /// Age after which a kept message is dropped, in ms.
        pub max_age_ms: u64 = 86_400_000, Restart [1000, 31_536_000_000];
        /// Bytes all kept messages of this node may take together (local mode).
        pub max_memory_bytes: usize = 16 << 20, Restart [4096, 1 << 30];
        /// Destinations whose history this node keeps at once (local mode).
        pub max_streams: usize = 10_000, Restart [1, 10_000_000];
        /// Cluster mode: how long other topics' short streams are kept for repair, in ms.
        pub repair_window_ms: u64 = 60_000, Restart [1000, 86_400_000];
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
    pub fn throttle(&self) -> crate::auth::login_throttle::Policy {
        crate::auth::login_throttle::Policy {
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
    /// The compiled-in defaults (what `DEFAULT_FILE` documents).
    pub fn embedded() -> Config {
        Config::default()
    }

    /// The declared key at dotted `path` (`limits.max_connections`), if any.
    pub fn find(path: &str) -> Option<KeyInfo> {
        <Config as Settings>::find(path, "")
    }

    /// Whether `name` is a `[section]` of the file.
    pub fn is_section(name: &str) -> bool {
        <Config as Settings>::is_section(name)
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
        let mut layers = Layers::new();
        layers.apply_file(origin, text)?;
        layers.build()?.finish()
    }

    /// `from_file_text` reading every key, also those written as in the default file.
    #[cfg(test)]
    fn from_file_text_in_full(text: &str, origin: &str) -> Result<Config, String> {
        let mut layers = Layers::new();
        layers.apply_file_keys(origin, text, Shipped::Read)?;
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
            // A value is the rest after `=`, or the next argument unless that is a flag itself
            // (`--server-id --log-level debug` is a missing value, not a server id).
            let mut value = |flag: &str| match inline.clone() {
                Some(v) => Ok(v),
                None => match args.next() {
                    Some(v) if !v.starts_with("--") => Ok(v),
                    _ => Err(format!(
                        "{flag} needs a value (a value starting with -- is written {flag}=VALUE)"
                    )),
                },
            };
            if inline.is_some() && matches!(name.as_str(), "--help" | "--version" | "--print-config") {
                return Err(format!("{name} takes no value"));
            }
            match name.as_str() {
                "-h" | "--help" => return Ok(Action::PrintHelp),
                "-V" | "--version" => return Ok(Action::PrintVersion),
                "--print-config" => return Ok(Action::PrintConfig),
                "-c" | "--config" => config_path = Some(value(&name)?),
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
        let mut keys = Vec::new(); // every key, listed at the first STOMP_EDGE_* variable
        let mut layers = Layers::new();
        if let (Some(path), Some(text)) = (&config_path, &text) {
            layers.apply_file(path, text)?;
        }
        for (name, raw) in env {
            if !name.starts_with("STOMP_EDGE_") {
                continue;
            }
            if keys.is_empty() {
                keys = Config::keys();
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
mod tests;
