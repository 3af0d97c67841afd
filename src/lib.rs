//! stomp-edge: a small STOMP-over-WebSocket chat and pub/sub server for Raspberry-Pi-class
//! boards. Browsers speak STOMP over WebSocket to it; several boards share rooms through Redis
//! Pub/Sub; without Redis each board serves its own clients alone.
//!
//! The library's API is what the binary, the benchmarks, the fuzz targets and the tests use:
//! [`run`], `config`, `transport::server` (its `Hooks`), `board::edge`, `auth`, `protocol`,
//! `transport::ws`, `tls`, and for the fuzz targets `auth::access` and `transport::sockjs` (its
//! `frame` codec). Every other module is `pub(crate)`, so the compiler reports what nothing
//! uses.
//!
//! # Layout
//!
//! - `config`: the typed configuration from the documented default file, `--config`, the
//!   environment and flags.
//! - `transport`: the board's one port, from socket to session and back:
//!   - `server`: the listener, accept loop and signals (drain, reload);
//!   - `http`: the routes (`/`, `/ws`, `/ws/**` SockJS, `/healthz`, `/metrics`, `/api`);
//!   - `upgrade`: the WebSocket upgrade of `/ws` and SockJS (`Upgraded`), and the response
//!     `Body` of every route; `socket`: the `Socket` an upgraded connection reads and writes;
//!   - `ws`: WebSocket: the upgrade handshake and the in-place data-path frame codec;
//!   - `driver`: the socket task of an upgraded WebSocket (read, de-frame, write, timers,
//!     goodbye), shared by `/ws` (`connection`: one STOMP frame per message) and SockJS;
//!   - `sockjs`: the SockJS transports under `/ws/**`, each session a STOMP connection too;
//!   - `outbound`: the bounded per-client queue between the hub and the socket task, woken
//!     through `signal`;
//!   - `forwarded`: the real client's address behind a trusted reverse proxy.
//! - `tls`: HTTPS and `wss://` on the board's port (rustls with ring): certificates, their
//!   SIGHUP reload, `--generate-cert`, and the TLS `Socket`.
//! - `protocol`: STOMP frames: the zero-copy parser and the encoder.
//! - `session`: one client's STOMP state machine (CONNECT … DISCONNECT), no I/O: `input`
//!   (received bytes → frames → `Session`, for every transport), `command` (a frame becomes a
//!   typed command once), `destination` (every destination rule), one file per command family,
//!   and `liveness` (the CONNECT deadline and heart-beats).
//! - `app`: the `/app` application hook and `/user/queue/errors` replies.
//! - `node`: glues config, hub, engine, application and the connection table together.
//! - `hub`: `Publication` and the `Hub` of local subscriptions with encode-once fan-out (no I/O).
//! - `engine`: the `Broker` interface and `BrokerEventHandler`; `engine::memory` for a node
//!   alone. Publications are typed (kind, room): engines never read bodies.
//!   `engine::stream` is the history interface (offsets, epochs, recovery), `engine::stream_memory`
//!   its ring for a node alone; the cluster keeps streams in Redis (`engine::redis::stream`).
//! - `engine::redis`: the Redis engine behind the same interface: store-and-forward relay
//!   (outbox), offset order, registry, catch-up, over one link that follows a
//!   Sentinel-managed primary through failovers.
//! - `chat`: the chat rooms of the original design under `/app/room/{roomId}/…`, with their
//!   membership (`chat::membership`: a memory and a Redis store behind one interface).
//! - `auth`: who may come in: CONNECT and HTTP Basic login checks, `login_check` (Argon2 off
//!   the event loop), `login_throttle` (failed logins and the delay they earn), `access` (the
//!   `Host` allow-list against DNS rebinding, `Origin`).
//! - `observability`: `metrics` (counters and the Prometheus text for `/metrics`) and `status`
//!   (`/api/nodes`, the `/status` page's snapshot `/api/status`).
//! - `board`: life on the board: `edge` (systemd readiness, watchdog and reload
//!   notifications), `memory` (the memory budget, charged with every buffer a client can make
//!   us hold), `clock` (epoch milliseconds), `advertise` (the URL this board is reached at).
//!
//! # The data path
//!
//! A client's `SEND /topic/x` arrives in `transport::driver` (bytes → WebSocket de-framing in
//! place), goes through `session::input` (`protocol::parse`) to `Session::handle`, becomes a
//! `session::command::Command`, is routed by `session::send` (`route_send`, by
//! `Destination::send_route`), and reaches `Node::publish`, which delivers it to this node's
//! subscribers through `Hub::deliver` (one MESSAGE encoding per distinct subscription id, the
//! bytes shared by every recipient's `Outbound`) and then hands it to the engine for the other
//! nodes. Each recipient's socket task (`transport::driver`) wakes and writes its whole queue
//! in one vectored write. docs/ARCHITECTURE.md walks it file by file.

pub(crate) mod app;
pub mod auth;
pub mod board;
pub(crate) mod chat;
pub mod config;
pub(crate) mod engine;
pub(crate) mod hub;
pub(crate) mod node;
pub(crate) mod observability;
pub mod protocol;
pub(crate) mod session;
pub mod tls;
pub mod transport;

use std::rc::Rc;

use chat::membership::{memory::MemoryMembership, redis::RedisMembership};
use config::Config;
use engine::memory::MemoryBroker;
use engine::BrokerEventHandler;
use node::Node;

/// Builds the node for `config` and serves until a stop signal. Runs its own single-threaded
/// runtime: all state lives on this one thread, without locks.
pub fn run(
    config: Config,
    hooks: Rc<dyn transport::server::Hooks>,
    reload: Box<dyn Fn() -> Result<Config, String>>,
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    // rustls's process-wide provider (the `redis` crate's TLS builds on it): ring with the
    // board's cipher order, as for its port. Fails only if one is installed already (kept).
    let _ = tls::provider(!tls::aes_in_hardware()).install_default();
    // A bad certificate or key stops start-up here, naming the file.
    let certificate = if config.tls.cert_file.is_empty() {
        None
    } else {
        Some(tls::load(&config.tls.cert_file, &config.tls.key_file)?)
    };
    local.block_on(&runtime, async move {
        let listener = transport::server::bind(config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let bound = listener.local_addr().map_err(|e| format!("cannot read the listen address: {e}"))?;
        let mut advertise_url = board::advertise::advertise_url(&config.cluster.advertise_url, bound);
        if certificate.is_some() && config.cluster.advertise_url.is_empty() {
            advertise_url = advertise_url.replacen("http://", "https://", 1);
        }
        let node = if config.redis_url.is_some() {
            // Cluster mode: the Redis engine is the broker, and the chat keeps its rooms in
            // Redis over the same link. The engine connects in the background; the node
            // serves its own clients from the first moment.
            let engine = engine::redis::RedisEngine::new(&config)?;
            let node = Rc::new(Node::new(config, engine.clone()));
            // The streams of a cluster live in Redis, shared by every node.
            node.set_history(engine.clone());
            node.set_advertise_url(&advertise_url);
            let membership = RedisMembership::new(&node, engine.clone());
            node.set_app(chat::ChatApp::new(&node, membership));
            let handler: std::rc::Weak<dyn BrokerEventHandler> = Rc::downgrade(&node) as std::rc::Weak<Node>;
            engine.start(handler);
            node
        } else {
            let membership =
                Rc::new(MemoryMembership::new(config.chat.max_rooms, config.chat.max_participants_per_room));
            let node = Rc::new(Node::new(config, Rc::new(MemoryBroker)));
            node.set_advertise_url(&advertise_url);
            node.set_app(chat::ChatApp::new(&node, membership));
            node
        };
        // Histories drop messages past their age even on destinations nobody writes to.
        let sweeper = Rc::downgrade(&node);
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                match sweeper.upgrade() {
                    Some(node) => node.history().sweep(),
                    None => return,
                }
            }
        });
        if let Some(certificate) = certificate {
            log::info!(
                "TLS on: https:// and wss:// only, certificate {} (SHA-256 {}); {}",
                node.config().tls.cert_file,
                certificate.fingerprint,
                tls::cipher_preference()
            );
            node.tls.set(certificate);
        }
        observability::status::start(&node);
        transport::server::serve(listener, node, hooks, reload)
            .await
            .map_err(|e| format!("server failed: {e}"))
    })
}
