//! The node glues the parts of one server together: configuration, the local `Hub`, the
//! engine (`dyn Broker`), the application under `/app`, and the table of live connections.
//! Publishing goes through here: local fan-out first, then the engine for the other nodes.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::{Rc, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::app::Application;
use crate::auth::login_check::LoginChecks;
use crate::auth::login_throttle::LoginThrottle;
use crate::auth::Authenticator;
use crate::config::{Config, Reload};
use crate::engine::stream::{Append, History};
use crate::engine::stream_memory::MemoryStreams;
use crate::engine::{Broker, BrokerEventHandler};
use crate::hub::{Hub, HubError, Publication, Subscriber};
use crate::observability::metrics::{CloseReason, METRICS};
use crate::transport::outbound::Outbound;

pub struct Node {
    /// Replaced as a whole on SIGHUP; sessions read it when they need a limit.
    config: RefCell<Rc<Config>>,
    pub hub: Hub,
    pub broker: Rc<dyn Broker>,
    /// The histories of streamed destinations: this node's rings, or (cluster mode) the
    /// engine's streams in Redis.
    history: RefCell<Rc<dyn History>>,
    pub auth: RefCell<Authenticator>,
    /// Failed logins per address and login, to slow guessing (`crate::auth::login_throttle`).
    pub login_throttle: LoginThrottle,
    /// The Argon2 checks of hashed passcodes, run off the event loop (`crate::auth::login_check`).
    pub login_checks: Rc<LoginChecks>,
    /// The application mounted under `/app` (the chat rooms), if any.
    app: RefCell<Option<Rc<dyn Application>>>,
    /// Every live STOMP connection's outbound queue, so shutdown can reach them all.
    connections: RefCell<HashMap<u64, Rc<Outbound>>>,
    /// The connections among them that are SockJS sessions (the rest are raw WebSocket), for
    /// the status page's connections by transport; forgotten with the connection.
    sockjs: RefCell<HashSet<u64>>,
    next_connection: Cell<u64>,
    next_message: Cell<u64>,
    /// `{server_id}-{start time}`: session ids stay unique across restarts and nodes.
    session_prefix: String,
    started: Instant,
    draining: Cell<bool>,
    /// When stalled consumers were last looked for (at most every 100 ms, under memory pressure).
    last_shed: Cell<Instant>,
    /// The URL other boards and browsers reach this one at (`crate::board::advertise`), known once
    /// the listener is bound; `/api/nodes` and the registry entry carry it.
    advertise_url: RefCell<Rc<str>>,
    /// The certificate of the board's port when `[tls]` is on (`crate::tls`).
    pub tls: crate::tls::Tls,
}

/// A registered connection, as [`Node::register_connection`] hands it out: its place in the
/// node's table, its session id and its outbound queue. The session takes the id and the
/// queue; the socket's task keeps only the [`Place`] (16 bytes of every idle connection, not 40).
pub struct Registration {
    pub place: Place,
    /// `{server_id}-{start}-{id}`: unique across the cluster and restarts.
    pub session_id: Rc<str>,
    pub outbound: Rc<Outbound>,
}

/// A connection's place in the node's table, like mini-redis's connection permit. Dropping it
/// frees the place (and the limit's slot), whichever way the connection ends, so no path can
/// forget to.
pub struct Place {
    pub id: u64,
    node: Weak<Node>,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(node) = self.node.upgrade() {
            node.unregister_connection(self.id);
        }
    }
}

/// Why a connection could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Limit,
    Draining,
    /// The memory budget is near its limit.
    Memory,
}

impl Refusal {
    /// The `connections_rejected_total` label and the text of the 503.
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            Refusal::Limit => ("limit", "connection limit reached, try again later\n"),
            Refusal::Draining => ("shutdown", "server shutting down\n"),
            Refusal::Memory => ("memory", "server memory budget reached, try again later\n"),
        }
    }
}

/// Memory a new connection may come to hold before its CONNECT; it must fit under the budget's
/// high-water mark to be accepted.
const CONNECTION_ADMISSION_BYTES: usize = 32 * 1024;

impl Node {
    pub fn new(config: Config, broker: Rc<dyn Broker>) -> Node {
        let start_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        crate::board::memory::set_limit(config.limits.memory_budget_bytes);
        Node {
            hub: Hub::new(config.limits.max_destinations),
            auth: RefCell::new(Authenticator::new(config.auth.users.clone())),
            login_throttle: LoginThrottle::default(),
            login_checks: Rc::default(),
            session_prefix: format!("{}-{}", config.server_id, base36(start_ms)),
            history: RefCell::new(Rc::new(MemoryStreams::new(config.streams.clone()))),
            config: RefCell::new(Rc::new(config)),
            broker,
            app: RefCell::new(None),
            connections: RefCell::new(HashMap::new()),
            sockjs: RefCell::new(HashSet::new()),
            next_connection: Cell::new(0),
            next_message: Cell::new(0),
            started: Instant::now(),
            draining: Cell::new(false),
            last_shed: Cell::new(Instant::now()),
            advertise_url: RefCell::new(Rc::from("")),
            tls: crate::tls::Tls::default(),
        }
    }

    pub fn config(&self) -> Rc<Config> {
        self.config.borrow().clone()
    }

    /// Applies a reloaded configuration: every `Live` key takes its new value, every `Restart`
    /// key keeps the running one (see `config::Reload`); each changed key is logged with which
    /// of the two happened.
    pub fn reload(&self, new: Config) {
        let (config, changed) = self.config().reloaded(new);
        for key in &changed {
            match key.reload {
                Reload::Live => log::info!("reload: `{}` changed, applied", key.path),
                Reload::Restart => {
                    log::warn!("reload: `{}` changed, needs a restart; the running value stays", key.path)
                }
            }
        }
        log::set_max_level(config.log_level);
        self.hub.set_max_destinations(config.limits.max_destinations);
        *self.auth.borrow_mut() = Authenticator::new(config.auth.users.clone());
        crate::board::memory::set_limit(config.limits.memory_budget_bytes);
        for out in self.connections.borrow().values() {
            out.set_limit(config.limits.max_outbound_bytes);
        }
        if let Some(app) = self.app() {
            app.reload(&config);
        }
        *self.config.borrow_mut() = Rc::new(config);
    }

    pub fn server_id(&self) -> String {
        self.config.borrow().server_id.clone()
    }

    /// The histories of streamed destinations.
    pub fn history(&self) -> Rc<dyn History> {
        self.history.borrow().clone()
    }

    /// Replaces the memory streams (cluster mode keeps them in Redis).
    pub fn set_history(&self, history: Rc<dyn History>) {
        *self.history.borrow_mut() = history;
    }

    /// Sets the advertised URL (once the listener is bound).
    pub fn set_advertise_url(&self, url: &str) {
        *self.advertise_url.borrow_mut() = Rc::from(url);
    }

    /// The URL other boards and browsers reach this board at, e.g. `http://10.0.0.7:8080`.
    pub fn advertise_url(&self) -> Rc<str> {
        self.advertise_url.borrow().clone()
    }

    pub fn set_app(&self, app: Rc<dyn Application>) {
        *self.app.borrow_mut() = Some(app);
    }

    pub fn app(&self) -> Option<Rc<dyn Application>> {
        self.app.borrow().clone()
    }

    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Publishes: this node's subscribers first, then the other nodes through the engine.
    /// A publication to a streamed destination is first appended to its history, which gives
    /// it its offset.
    pub fn publish(&self, mut publication: Publication) {
        METRICS.messages_published.inc();
        let history = self.history();
        // Cluster mode: the engine delivers a streamed publication here (with its offset when
        // Redis answers in time); otherwise it is delivered here first.
        let by_engine = history.is_streamed(&publication.destination)
            && history.append(&mut publication) == Append::DeliveredByEngine;
        if !by_engine {
            self.hub.deliver(&publication);
        }
        self.broker.publish(&publication, !by_engine);
    }

    /// Delivers to this node's subscribers only (the caller tells the other nodes its own way).
    /// On a node alone a streamed destination's history gets it (and its offset); in cluster
    /// mode it is delivered here at once without a position, and gets its offset when the
    /// caller relays it (the chat's joins and leaves made while Redis is away, which its
    /// membership store announces after the catch-up).
    pub fn publish_local(&self, publication: &Publication) {
        METRICS.messages_published.inc();
        let history = self.history();
        if history.is_streamed(&publication.destination) {
            let mut positioned = publication.clone();
            if history.append(&mut positioned) == Append::DeliverNow {
                self.hub.deliver(&positioned);
                return;
            }
        }
        self.hub.deliver(publication);
    }

    /// A message id unique across the cluster.
    pub fn next_message_id(&self) -> Rc<str> {
        let n = self.next_message.get() + 1;
        self.next_message.set(n);
        Rc::from(format!("{}-{}", self.session_prefix, n))
    }

    pub fn subscribe(&self, destination: &str, subscriber: Subscriber) -> Result<Rc<str>, HubError> {
        let (key, first) = self.hub.subscribe(destination, subscriber)?;
        METRICS.subscriptions_current.inc();
        if first {
            self.broker.interest(&key, true);
        }
        Ok(key)
    }

    pub fn unsubscribe(&self, destination: &str, connection: u64, subscription_id: &str) {
        METRICS.subscriptions_current.dec();
        if self.hub.unsubscribe(destination, connection, subscription_id) {
            self.broker.interest(destination, false);
        }
    }

    /// Registers a new connection, or refuses it at the limit or while draining. The
    /// connection holds its place while it holds the `Registration`.
    pub fn register_connection(self: &Rc<Self>) -> Result<Registration, Refusal> {
        if self.draining.get() {
            return Err(Refusal::Draining);
        }
        let config = self.config();
        if self.connections.borrow().len() >= config.limits.max_connections {
            return Err(Refusal::Limit);
        }
        if !crate::board::memory::admit(CONNECTION_ADMISSION_BYTES) {
            METRICS.memory_refused.inc("connection");
            return Err(Refusal::Memory);
        }
        let id = self.next_connection.get() + 1;
        self.next_connection.set(id);
        let outbound = Rc::new(Outbound::new(config.limits.max_outbound_bytes));
        self.connections.borrow_mut().insert(id, outbound.clone());
        METRICS.connections_current.set(self.connections.borrow().len() as u64);
        METRICS.connections_total.inc();
        let session_id = Rc::from(format!("{}-{}", self.session_prefix, base36(id)));
        Ok(Registration { place: Place { id, node: Rc::downgrade(self) }, session_id, outbound })
    }

    /// Marks a registered connection as a SockJS session.
    pub fn mark_sockjs(&self, id: u64) {
        if self.connections.borrow().contains_key(&id) {
            self.sockjs.borrow_mut().insert(id);
        }
    }

    /// Open connections that are SockJS sessions.
    pub fn sockjs_count(&self) -> usize {
        self.sockjs.borrow().len()
    }

    fn unregister_connection(&self, id: u64) {
        self.sockjs.borrow_mut().remove(&id);
        let mut connections = self.connections.borrow_mut();
        connections.remove(&id);
        METRICS.connections_current.set(connections.len() as u64);
        // After a crowd leaves, give the table's memory back (a large table allocated last
        // sits at the top of the heap and keeps the allocator from returning what is below).
        if let Some(keep) = crate::board::reclaim::shrunk_capacity(connections.len(), connections.capacity())
        {
            connections.shrink_to(keep);
        }
    }

    pub fn connection_count(&self) -> usize {
        self.connections.borrow().len()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Under memory pressure: drops kept history down to the budget's held mark and closes
    /// the clients whose queues have been backed up for longer than their grace (they stopped
    /// reading or are far slower than everyone else), so the budget is not held by them while
    /// every socket waits. At most every 100 ms.
    pub fn shed_stalled_consumers(&self) {
        let now = Instant::now();
        if now.duration_since(self.last_shed.get()) < std::time::Duration::from_millis(100) {
            return;
        }
        self.last_shed.set(now);
        self.history().reclaim(crate::board::memory::held_shortfall(0));
        for out in self.connections.borrow().values() {
            if out.backed_up_for().is_some_and(|d| d >= crate::transport::outbound::SLOW_CONSUMER_GRACE) {
                log::info!("memory budget short: closing a consumer backed up for {:?}", out.backed_up_for());
                out.close(CloseReason::SlowConsumer);
            }
        }
    }

    /// Starts a graceful shutdown: refuse new connections and ask every open one to close.
    pub fn drain(&self) {
        self.draining.set(true);
        for out in self.connections.borrow().values() {
            out.close(CloseReason::ServerShutdown);
        }
    }
}

impl BrokerEventHandler for Node {
    /// A publication that another node relayed here: to this node's subscribers, then to the
    /// application (which follows other nodes' room changes by kind and room).
    fn handle_publication(&self, publication: &Publication) {
        let app = self.app();
        if app.as_ref().is_some_and(|app| !app.admits_remote(publication)) {
            return;
        }
        self.hub.deliver(publication);
        if let Some(app) = app {
            app.on_remote(publication);
        }
    }

    fn advertise_url(&self) -> Rc<str> {
        Node::advertise_url(self)
    }

    fn connection_count(&self) -> usize {
        Node::connection_count(self)
    }
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::memory::MemoryBroker;

    #[test]
    fn ids_are_unique_and_carry_the_server_id() {
        let mut config = Config::embedded();
        config.server_id = "n1".into();
        config.limits.max_connections = 2;
        let node = Rc::new(Node::new(config, Rc::new(MemoryBroker)));
        let a = node.register_connection().unwrap();
        let b = node.register_connection().unwrap();
        assert_ne!((a.place.id, &a.session_id), (b.place.id, &b.session_id));
        assert!(a.session_id.starts_with("n1-"));
        assert_eq!(node.register_connection().err(), Some(Refusal::Limit));
        // Dropping a registration frees its place.
        drop(a);
        assert_eq!(node.connection_count(), 1);
        let c = node.register_connection().unwrap();
        assert_eq!(node.connection_count(), 2);
        drop((b, c));
        assert_eq!(node.connection_count(), 0);
        node.drain();
        assert_eq!(node.register_connection().err(), Some(Refusal::Draining));
        assert_ne!(node.next_message_id(), node.next_message_id());
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
    }
}
