//! Load generator for any STOMP-over-WebSocket server (stomp-edge, RabbitMQ Web-STOMP, ...): N
//! subscribers and P publishers on one destination; prints published/s, deliveries/s, latency,
//! loss, reordering, connect time, and the server's RSS and CPU read from /proc/PID. Without
//! `--url` it starts the stomp-edge binary itself and prints the default suite beside the targets.
//!
//! `cargo bench --bench loadgen` (suite, about a minute), `-- --quick` (CI), or a single run:
//! `cargo bench --bench loadgen -- --url ws://127.0.0.1:8080/ws --subscribers 100 --rate 0
//! --server-pid PID`. With `--publish-url` the publishers connect to another node than the
//! subscribers (cluster mode: the cross-node path through Redis); when `redis-server` is on
//! PATH the default suite also starts Redis and two nodes and prints the cluster figures. Client and server share this machine's cores, so the figures include the
//! client's own CPU; the client's CPU is printed beside the server's for that reason.
//!
//! # Layout
//! - this file: options, the shared clock, `main`
//! - `loadgen/stomp.rs`: client-side STOMP frame parser and one connection (`Conn`)
//! - `loadgen/clients.rs`: subscriber and publisher tasks
//! - `loadgen/run.rs`: one measured run, /proc and /metrics readings, the printout
//! - `loadgen/suite.rs`: the default suite against a stomp-edge it starts itself
//! - `loadgen/cluster.rs`: the suite's cluster part (Redis and two nodes it starts itself)
//! - `loadgen/status.rs`: the suite's status-page part (its cost on a board with 1000 clients)
//! - `loadgen/streams.rs`: the streams figures (off vs on, recovery time, Redis per room)

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;
type Res<T> = Result<T, String>;

/// Hard caps that keep every run bounded whatever the arguments say.
const MAX_CONNECTIONS: usize = 20_000;
const MAX_DURATION_SECS: f64 = 600.0;
/// Connections opened at once, so the server's accept backlog is never the thing measured.
const CONNECT_CONCURRENCY: usize = 64;
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_DESTINATION: &str = "/topic/loadgen-idle";
const ERRORS_QUEUE: &str = "/user/queue/errors";

/// One monotonic clock for the whole process: publishers stamp `x-ts-ns` with it and
/// subscribers in the same process subtract, so latency needs no clock sync.
static EPOCH: OnceLock<Instant> = OnceLock::new();
fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[path = "loadgen/clients.rs"]
mod clients;
#[path = "loadgen/cluster.rs"]
mod cluster;
#[path = "loadgen/run.rs"]
mod run;
#[path = "loadgen/status.rs"]
mod status;
#[path = "loadgen/stomp.rs"]
mod stomp;
#[path = "loadgen/streams.rs"]
mod streams;
#[path = "loadgen/suite.rs"]
mod suite;

use clients::*;
use cluster::*;
use run::*;
use status::*;
use stomp::*;
use streams::*;
use suite::*;

// ---------------------------------------------------------------------------------------------
// Options

#[derive(Clone, Debug)]
struct Opts {
    url: Option<String>,
    /// Where the publishers connect (default: `url`); another node measures the cross-node path.
    publish_url: Option<String>,
    /// How many of the subscribers connect to `publish_url` instead of `url`.
    publish_node_subscribers: usize,
    login: Option<String>,
    passcode: Option<String>,
    vhost: Option<String>,
    subscribers: usize,
    publishers: usize,
    rate: u64,
    duration: f64,
    size: usize,
    destination: String,
    idle: usize,
    server_pid: Option<u32>,
    publish_server_pid: Option<u32>,
    /// Total messages over all publishers, then stop (0: until `duration` ends).
    count: u64,
    /// A Redis on 127.0.0.1:PORT whose `INFO commandstats` is reset and read around the window.
    redis_port: Option<u16>,
    chat: bool,
    room: String,
    window: u64,
    allow_remote: bool,
    quick: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            url: None,
            publish_url: None,
            publish_node_subscribers: 0,
            login: None,
            passcode: None,
            vhost: None,
            subscribers: 10,
            publishers: 1,
            rate: 0,
            duration: 5.0,
            size: 64,
            destination: "/topic/bench".into(),
            idle: 0,
            server_pid: None,
            publish_server_pid: None,
            count: 0,
            redis_port: None,
            chat: false,
            room: "bench".into(),
            window: 256,
            allow_remote: false,
            quick: false,
        }
    }
}

impl Opts {
    /// Where the publishers (and the first `publish_node_subscribers` subscribers) connect.
    fn publish_url(&self) -> &str {
        self.publish_url.as_deref().or(self.url.as_deref()).unwrap_or_default()
    }
    /// Publishers and (some) subscribers on different nodes.
    fn cross_node(&self) -> bool {
        self.publish_url.is_some() && self.publish_url != self.url
    }
}

const HELP: &str =
    "loadgen: STOMP-over-WebSocket load generator (args after `cargo bench --bench loadgen --`)
  (no --url)            start the stomp-edge binary ($STOMP_EDGE_BIN, else the one cargo built)
                        and run the default suite; --quick: ~2 s scenarios, 1000 idle only
  --url ws://H:P/PATH   target server (loopback only unless --allow-remote)
  --publish-url URL     publishers connect there instead (another cluster node: the
                        cross-node path through Redis; latency uses this process's clock)
  --publish-node-subscribers K   K of the subscribers connect to --publish-url too
  --login L --passcode P --vhost V   CONNECT credentials / host header (RabbitMQ: vhost)
  --subscribers N       subscribers on --destination (default 10)
  --publishers P        publishers (default 1)
  --rate R              total messages/s over all publishers; 0 = as fast as possible with
                        at most --window messages in flight per publisher (default 0, window 256)
  --duration SECS       publishing time (default 5, max 600)
  --size BYTES          body size (default 64, min 32)
  --destination D       default /topic/bench
  --idle N              open N idle subscribed connections first (RSS per connection)
  --server-pid PID      read RSS and CPU of the server from /proc/PID (the --url node)
  --publish-server-pid PID   CPU of the --publish-url node too
  --count N             stop after N messages in all (--duration stays the cap)
  --redis-stats PORT    CONFIG RESETSTAT before the window and INFO commandstats after it on
                        the Redis at 127.0.0.1:PORT: commands per published message
  --chat                publish via /app/room/ROOM/message after joining; subscribers join ROOM
                        and listen on /topic/room/ROOM (--room, default bench)
";

fn parse_args(args: impl Iterator<Item = String>) -> Res<Opts> {
    let mut o = Opts::default();
    let mut it = args.peekable();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut val = || -> Res<String> {
            inline.clone().or_else(|| it.next()).ok_or_else(|| format!("{name} needs a value"))
        };
        fn num<T: std::str::FromStr>(name: &str, v: String) -> Res<T> {
            v.parse().map_err(|_| format!("{name}: bad number {v:?}"))
        }
        match name.as_str() {
            "--bench" => {} // added by `cargo bench`
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            "--url" => o.url = Some(val()?),
            "--publish-url" => o.publish_url = Some(val()?),
            "--publish-node-subscribers" => o.publish_node_subscribers = num(&name, val()?)?,
            "--publish-server-pid" => o.publish_server_pid = Some(num(&name, val()?)?),
            "--count" => o.count = num(&name, val()?)?,
            "--redis-stats" => o.redis_port = Some(num(&name, val()?)?),
            "--login" => o.login = Some(val()?),
            "--passcode" => o.passcode = Some(val()?),
            "--vhost" => o.vhost = Some(val()?),
            "--subscribers" => o.subscribers = num(&name, val()?)?,
            "--publishers" => o.publishers = num(&name, val()?)?,
            "--rate" => o.rate = num(&name, val()?)?,
            "--duration" => o.duration = num(&name, val()?)?,
            "--size" => o.size = num(&name, val()?)?,
            "--destination" => o.destination = val()?,
            "--idle" => o.idle = num(&name, val()?)?,
            "--server-pid" => o.server_pid = Some(num(&name, val()?)?),
            "--room" => o.room = val()?,
            "--window" => o.window = num(&name, val()?)?,
            "--chat" => o.chat = true,
            "--allow-remote" => o.allow_remote = true,
            "--quick" => o.quick = true,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    let total = o.subscribers + o.publishers + o.idle;
    if total > MAX_CONNECTIONS {
        return Err(format!("{total} connections asked for; the cap is {MAX_CONNECTIONS}"));
    }
    if !(o.duration > 0.0 && o.duration <= MAX_DURATION_SECS) {
        return Err(format!("--duration must be in (0, {MAX_DURATION_SECS}]"));
    }
    if !(32..=1 << 20).contains(&o.size) {
        return Err("--size must be 32..=1048576".into());
    }
    o.window = o.window.max(1);
    if o.publish_url.is_some() && o.url.is_none() {
        return Err("--publish-url needs --url (where the subscribers connect)".into());
    }
    if o.publish_node_subscribers > o.subscribers {
        return Err("--publish-node-subscribers must be at most --subscribers".into());
    }
    for url in o.url.iter().chain(&o.publish_url) {
        let host = url_host_port(url)?.0;
        if !o.allow_remote && !is_loopback(&host) {
            return Err(format!("{host} is not a loopback address; pass --allow-remote to target it"));
        }
    }
    Ok(o)
}

/// `ws://HOST[:PORT]/...` → (HOST without brackets, PORT).
fn url_host_port(url: &str) -> Res<(String, u16)> {
    let rest = url.strip_prefix("ws://").ok_or("only ws:// URLs are supported")?;
    let authority = rest.split('/').next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, tail) = v6.split_once(']').ok_or("bad IPv6 host")?;
        (h.to_string(), tail.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = port.map_or(Ok(80), |p| p.parse().map_err(|_| format!("bad port in {url}")))?;
    Ok((host, port))
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn main() {
    now_ns(); // start the shared clock
    let o = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if o.url.is_some() {
        if o.idle + o.subscribers + o.publishers > 900 {
            raise_nofile((o.idle + o.subscribers + o.publishers + 200) as u64);
        }
        let r = rt.block_on(run(o.clone()));
        print_report(&o, &r);
        if r.chat_unavailable.is_none() && r.connect_failures > 0 && r.connect_ms.is_empty() {
            std::process::exit(1);
        }
    } else if let Err(e) = suite(&rt, o.quick) {
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    }
}
