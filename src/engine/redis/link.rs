//! The command link to Redis: one multiplexed connection shared by every command, a timeout on
//! each command, and the up/down state that `/healthz` shows. A failed or timed-out command
//! marks the link down; the engine's supervisor reconnects it with back-off and jitter.
//!
//! The link also knows which server is the primary. With a `redis://` URL that is the one
//! server; with `redis-sentinel://` the sentinels are asked on every connect, and a
//! `+switch-master` they announce marks the link down at once. Either way a replica is never
//! written to: a connect checks `ROLE`, and a `READONLY` answer marks the link down. A failover
//! therefore looks to the engine like a reconnect to a (possibly empty) Redis, and the usual
//! resync writes this node's state back onto the new primary.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use redis::aio::{MultiplexedConnection, PubSub};
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, RedisConnectionInfo, RedisResult};

use super::connect::{client, tcp_info};
use super::sentinel::{Primary, Sentinels};
use crate::config::{RedisTarget, SentinelTarget};
use crate::observability::metrics::Counter;

/// Counters of the link, for `/metrics`.
#[derive(Default)]
pub struct LinkStats {
    pub reconnects: Counter,
    pub command_errors: Counter,
    pub command_timeouts: Counter,
    /// Times the primary in use changed to another server (a failover followed).
    pub failovers: Counter,
    /// `READONLY` answers, and connects refused because `ROLE` said replica.
    pub replica_refusals: Counter,
}

pub struct Link {
    target: Target,
    /// The live connection; `None` while down. Cloning it is cheap (a handle to one socket).
    connection: RefCell<Option<MultiplexedConnection>>,
    /// The client of the primary the connection goes to; pub/sub connections use it too.
    current: RefCell<Option<Client>>,
    /// State the sentinel watchers change from their own tasks.
    shared: Rc<Shared>,
    /// Bounds every command and every connect.
    timeout: Duration,
    /// Set once the first connect succeeded (later connects count as reconnects).
    ever_up: Cell<bool>,
    /// Set once the `+switch-master` watchers run.
    watching: Cell<bool>,
    /// Since when the link has had no connection (None while up; set at start).
    down_since: Cell<Option<std::time::Instant>>,
    pub stats: LinkStats,
}

/// Where the primary is found.
enum Target {
    /// One server, as the URL says.
    Single(Client),
    /// Asked of the sentinels; `data` is how to log in to the data nodes (db, user, password).
    Sentinel {
        sentinels: Rc<Sentinels>,
        data: RedisConnectionInfo,
        url: SentinelTarget,
        ca: Option<Rc<[u8]>>,
    },
}

/// What the link and its sentinel watchers share.
#[derive(Default)]
struct Shared {
    /// `host:port` of the primary in use (kept while down: the one last used).
    primary: RefCell<Option<String>>,
    /// The last primary a sentinel announced; the same announcement from the other sentinels
    /// is not acted on twice.
    announced: RefCell<Option<String>>,
    /// Set when a sentinel announced another primary: the connection is to a former primary.
    stale: Cell<bool>,
    /// Announcements acted on; a connect that raced with one stays stale.
    switches: Cell<u64>,
    /// Changes whenever the primary in use changes or turns out to be a replica: a pub/sub
    /// connection made in an older generation listens in the wrong place.
    generation: Cell<u64>,
    /// Counts the changes of state (down, up, a new primary announced or used), so a wait
    /// that begins after a change it did not see ends at once (`Link::pause`).
    epoch: Cell<u64>,
    /// Wakes `pause` and `moved_from` on every change of state.
    events: tokio::sync::Notify,
}

impl Shared {
    /// A change of state: wakes every waiter, and later waits that have not seen it.
    fn changed(&self) {
        self.epoch.set(self.epoch.get().wrapping_add(1));
        self.events.notify_waiters();
    }

    fn bump(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        self.changed();
    }

    /// Resolves once a sentinel has announced a new primary since `switches` was read.
    async fn switched_since(&self, switches: u64) {
        loop {
            let changed = self.events.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.switches.get() != switches {
                return;
            }
            changed.await;
        }
    }

    /// A sentinel announced `primary` for our master.
    fn on_switch(&self, primary: &Primary) {
        let address = primary.address();
        if self.announced.borrow().as_deref() == Some(address.as_str()) {
            return;
        }
        *self.announced.borrow_mut() = Some(address.clone());
        if self.primary.borrow().as_deref() == Some(address.as_str()) {
            return; // Already there (the link followed a failed connection first).
        }
        self.switches.set(self.switches.get() + 1);
        self.stale.set(true);
        self.bump();
    }
}

/// Why a command did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    Down,
    Timeout,
    Redis(String),
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Down => write!(f, "redis is down"),
            LinkError::Timeout => write!(f, "redis command timed out"),
            LinkError::Redis(e) => write!(f, "redis: {e}"),
        }
    }
}

impl Link {
    /// A link for a cluster-mode URL (`redis://…` or `redis-sentinel://…#MASTER`). The URL's
    /// user and password log in to the data nodes; the sentinels' own are `sentinel_auth`.
    /// `ca` (PEM, `tls.redis_ca_file`) is what a TLS Redis's certificate is checked against;
    /// None: the system's CAs.
    pub fn new(url: &str, timeout: Duration, ca: Option<Rc<[u8]>>) -> Result<Link, String> {
        let target = match RedisTarget::parse(url).map_err(|e| format!("bad redis_url: {e}"))? {
            RedisTarget::Single(url) => {
                let info = url.as_str().into_connection_info().map_err(|e| format!("bad redis_url: {e}"))?;
                Target::Single(client(info, ca.as_deref()).map_err(|e| format!("bad redis_url: {e}"))?)
            }
            RedisTarget::Sentinel(t) => {
                let mut data = RedisConnectionInfo::default().set_db(t.db);
                if let Some(user) = &t.username {
                    data = data.set_username(user);
                }
                if let Some(password) = &t.password {
                    data = data.set_password(password);
                }
                let sentinels = Sentinels::new(&t, "", "", timeout, ca.clone())?;
                Target::Sentinel { sentinels: Rc::new(sentinels), data, url: t, ca }
            }
        };
        let current = match &target {
            Target::Single(client) => Some(client.clone()),
            Target::Sentinel { .. } => None,
        };
        Ok(Link {
            target,
            connection: RefCell::new(None),
            current: RefCell::new(current),
            shared: Rc::new(Shared::default()),
            timeout,
            ever_up: Cell::new(false),
            watching: Cell::new(false),
            down_since: Cell::new(Some(std::time::Instant::now())),
            stats: LinkStats::default(),
        })
    }

    /// The ACL user and password (empty: none) the link gives the sentinels, when they differ
    /// from the data nodes'. No effect with a `redis://` URL.
    pub fn sentinel_auth(mut self, username: &str, password: &str) -> Result<Link, String> {
        if let Target::Sentinel { sentinels, url, ca, .. } = &mut self.target {
            *sentinels = Rc::new(Sentinels::new(url, username, password, self.timeout, ca.clone())?);
        }
        Ok(self)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn is_up(&self) -> bool {
        if self.shared.stale.get() {
            self.mark_down();
        }
        self.connection.borrow().is_some()
    }

    /// How long the link has been without a connection (zero while up).
    pub fn down_for(&self) -> Duration {
        if self.is_up() {
            return Duration::ZERO;
        }
        self.down_since.get().map_or(Duration::ZERO, |since| since.elapsed())
    }

    /// How long a link may be without a connection and still count as up for `/healthz`:
    /// a timed-out command drops its connection at once and a new one is made, which on a
    /// slow or lossy link takes a few round trips; the link is judged over seconds, not by
    /// one slow reply. Twice the command timeout.
    pub fn grace(&self) -> Duration {
        self.timeout * 2
    }

    /// Up, or down for less than `grace` (being re-made).
    pub fn healthy(&self) -> bool {
        self.ever_up.get() && self.down_for() < self.grace()
    }

    /// `host:port` of the primary in use, or last used while down; None before the first
    /// connect.
    pub fn primary(&self) -> Option<String> {
        self.shared.primary.borrow().clone()
    }

    /// The sentinels, with a `redis-sentinel://` URL.
    pub fn sentinels(&self) -> Option<&Sentinels> {
        match &self.target {
            Target::Sentinel { sentinels, .. } => Some(sentinels),
            Target::Single(_) => None,
        }
    }

    /// The primary in use, failovers seen and the sentinels' state, for `/healthz` and
    /// `/metrics`.
    pub fn report(&self) -> crate::engine::LinkReport {
        crate::engine::LinkReport {
            primary: self.primary(),
            failovers: self.stats.failovers.get(),
            sentinels: self.sentinels().map(|s| (s.status(), s.errors.get())),
        }
    }

    /// The link's own `/metrics` counters as (name, help, value).
    pub fn counter_lines(&self) -> crate::engine::MetricLines {
        vec![
            ("cluster_redis_failovers_total", self.stats.failovers.get()),
            ("cluster_redis_replica_refusals_total", self.stats.replica_refusals.get()),
            ("cluster_sentinel_errors_total", self.sentinels().map_or(0, |s| s.errors.get())),
        ]
    }

    /// Tries once to connect (asking the sentinels first, with a sentinel URL); true when the
    /// link is up afterwards. A server whose `ROLE` is not primary is refused, and so is a
    /// connection `admit` says no to (the engine checks its claim on its server id on it before
    /// anything else may use it). A sentinel's announcement of a new primary while this waits
    /// on the old one (a powered-off primary does not refuse, it times out) cuts the wait short
    /// and asks the sentinels again.
    pub async fn connect<F, Fut>(&self, admit: F) -> bool
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = bool>,
    {
        self.watch_sentinels();
        for _ in 0..2 {
            let switches = self.shared.switches.get();
            tokio::select! {
                up = self.connect_once(switches, &admit) => return up,
                () = self.shared.switched_since(switches) => {
                    log::info!("redis: a sentinel announced a new primary; asking again");
                }
            }
        }
        false
    }

    async fn connect_once<F, Fut>(&self, switches: u64, admit: &F) -> bool
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = bool>,
    {
        let (client, address) = match &self.target {
            Target::Single(client) => (client.clone(), client.get_connection_info().addr().to_string()),
            Target::Sentinel { sentinels, data, url, ca } => match sentinels.primary().await {
                Ok(primary) => {
                    let info = tcp_info(&primary.host, primary.port, url.tls)
                        .map(|i| i.set_redis_settings(data.clone()));
                    match info.and_then(|info| client(info, ca.as_deref())) {
                        Ok(client) => (client, primary.address()),
                        Err(e) => {
                            log::warn!("sentinels name primary {}: {e}", primary.address());
                            return false;
                        }
                    }
                }
                Err(e) => {
                    log::warn!("no primary for {:?} from the sentinels: {e}", sentinels.master());
                    return false;
                }
            },
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let attempt =
            tokio::time::timeout(self.timeout, client.get_multiplexed_async_connection_with_config(&config));
        let mut connection = match attempt.await {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => {
                log::debug!("redis connect to {address} failed: {e}");
                return false;
            }
            Err(_) => {
                log::debug!("redis connect to {address} timed out");
                return false;
            }
        };
        if !self.is_primary(&mut connection, &address).await {
            return false;
        }
        if !admit(connection.clone()).await {
            return false;
        }
        if self.shared.primary.borrow().as_deref() != Some(address.as_str()) {
            // The first primary moves nobody; a later one moves the pub/sub connection.
            if let Some(old) = self.shared.primary.replace(Some(address.clone())) {
                log::warn!("redis primary is now {address} (was {old})");
                self.stats.failovers.inc();
                self.shared.bump();
            }
        }
        // Stale only if a sentinel announced another primary while this connect ran.
        if self.shared.switches.get() == switches
            || self.shared.announced.borrow().as_deref() == Some(address.as_str())
        {
            self.shared.stale.set(false);
        }
        if self.ever_up.replace(true) {
            self.stats.reconnects.inc();
        }
        *self.current.borrow_mut() = Some(client);
        *self.connection.borrow_mut() = Some(connection);
        self.down_since.set(None);
        self.shared.changed();
        true
    }

    /// `ROLE` says primary. A user whose ACL forbids `ROLE` is trusted (a `READONLY` answer
    /// still catches a replica later).
    async fn is_primary(&self, connection: &mut MultiplexedConnection, address: &str) -> bool {
        let command = redis::cmd("ROLE");
        let role = command.query_async::<redis::Role>(connection);
        match tokio::time::timeout(self.timeout, role).await {
            Ok(Ok(redis::Role::Primary { .. })) => true,
            Ok(Ok(_)) => {
                self.stats.replica_refusals.inc();
                log::warn!("redis {address} is not a primary (ROLE); not writing to it");
                false
            }
            Ok(Err(e)) if e.code() == Some("NOPERM") => {
                log::debug!("redis {address}: ROLE not allowed for this user; trusting it is the primary");
                true
            }
            Ok(Err(e)) => {
                log::debug!("redis {address}: ROLE failed: {e}");
                false
            }
            Err(_) => false,
        }
    }

    /// Starts the `+switch-master` watchers once (sentinel URLs only).
    fn watch_sentinels(&self) {
        let Target::Sentinel { sentinels, .. } = &self.target else { return };
        if self.watching.replace(true) {
            return;
        }
        let shared = self.shared.clone();
        let ping_every = (self.timeout * 2).max(Duration::from_secs(1));
        sentinels.watch(ping_every, Rc::new(move |primary: Primary| shared.on_switch(&primary)));
    }

    /// Drops the connection without calling it a loss (the engine chose to stay out).
    pub fn disconnect(&self) {
        if self.connection.borrow_mut().take().is_some() {
            self.down_since.set(Some(std::time::Instant::now()));
            self.shared.changed();
        }
    }

    /// Drops the connection for good (a timed-out or failed one is never used again; what
    /// it still carried is refused or deduplicated by Redis, see `stream::APPEND_LUA`); the
    /// supervisor makes a new one at once. The engine warns only when that does not work
    /// within `grace`.
    pub fn mark_down(&self) {
        if self.connection.borrow_mut().take().is_some() {
            log::debug!("redis connection dropped; making a new one");
            self.down_since.set(Some(std::time::Instant::now()));
            self.shared.changed();
        }
    }

    /// A new pub/sub connection to the primary in use, and the generation it belongs to (see
    /// `moved_from`). Bounded by the link's timeout.
    pub async fn pubsub(&self) -> Result<(PubSub, u64), LinkError> {
        let generation = self.shared.generation.get();
        let Some(client) = self.current.borrow().clone() else { return Err(LinkError::Down) };
        match tokio::time::timeout(self.timeout, client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => Ok((pubsub, generation)),
            Ok(Err(e)) => Err(LinkError::Redis(e.to_string())),
            Err(_) => Err(LinkError::Timeout),
        }
    }

    /// Resolves once the primary is no longer the one of `generation` (a failover was
    /// followed, or the server turned out to be a replica): a pub/sub connection made then
    /// must be made again.
    pub async fn moved_from(&self, generation: u64) {
        loop {
            let changed = self.shared.events.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.shared.generation.get() != generation {
                return;
            }
            changed.await;
        }
    }

    /// Counts the link's changes of state; read it before an attempt, and hand it to `pause`.
    pub fn events(&self) -> u64 {
        self.shared.epoch.get()
    }

    /// Sleeps for `duration`, or less when the link's state changes (it went down, came up,
    /// or a sentinel announced a new primary), also when it changed since `seen` was read from
    /// `events`: back-off and heartbeat waits use it, so a failover is followed at once.
    pub async fn pause(&self, seen: u64, duration: Duration) {
        let changed = self.shared.events.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if self.shared.epoch.get() != seen {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(duration) => {}
            () = changed => {}
        }
    }

    /// Runs one command (or pipeline, or script) with the link's timeout. Connection-level
    /// failures and timeouts mark the link down; the supervisor brings it back. A `READONLY`
    /// answer (the server became a replica) marks it down too, so the primary is looked up
    /// again.
    pub async fn call<T, F, Fut>(&self, command: F) -> Result<T, LinkError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.is_up() {
            return Err(LinkError::Down);
        }
        let Some(connection) = self.connection.borrow().clone() else { return Err(LinkError::Down) };
        match tokio::time::timeout(self.timeout, command(connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                self.stats.command_errors.inc();
                if is_readonly(&e) {
                    self.stats.replica_refusals.inc();
                    log::warn!("redis answered READONLY: the primary became a replica; looking it up again");
                    self.mark_down();
                    self.shared.bump();
                } else if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                {
                    self.mark_down();
                }
                Err(LinkError::Redis(e.to_string()))
            }
            Err(_) => {
                self.stats.command_timeouts.inc();
                self.mark_down();
                Err(LinkError::Timeout)
            }
        }
    }
}

/// A write refused by a replica: `-READONLY …`, also when a script's write was refused.
fn is_readonly(e: &redis::RedisError) -> bool {
    e.code() == Some("READONLY") || e.to_string().contains("READONLY")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_is_acted_on_once_and_not_when_already_there() {
        let shared = Shared::default();
        *shared.primary.borrow_mut() = Some("10.0.0.2:6379".into());
        let b = Primary { host: "10.0.0.3".into(), port: 6379 };
        shared.on_switch(&b);
        assert!(shared.stale.get());
        assert_eq!((shared.switches.get(), shared.generation.get()), (1, 1));
        // The same announcement from the other sentinels changes nothing more.
        shared.on_switch(&b);
        assert_eq!((shared.switches.get(), shared.generation.get()), (1, 1));
        // The link already followed (a failed command came first): nothing to do.
        let shared = Shared::default();
        *shared.primary.borrow_mut() = Some("10.0.0.3:6379".into());
        shared.on_switch(&b);
        assert!(!shared.stale.get());
        assert_eq!(shared.generation.get(), 0);
    }

    #[tokio::test]
    async fn a_pause_ends_at_once_after_a_change_it_did_not_see() {
        let link = Link::new("redis://127.0.0.1:1", Duration::from_secs(1), None).unwrap();
        let seen = link.events();
        link.shared.changed();
        let quick = tokio::time::timeout(Duration::from_secs(5), link.pause(seen, Duration::from_secs(60)));
        assert!(quick.await.is_ok(), "a change before the pause began was missed");
        let seen = link.events();
        let slow = tokio::time::timeout(Duration::from_millis(50), link.pause(seen, Duration::from_secs(60)));
        assert!(slow.await.is_err(), "nothing changed: the pause runs its time");
        // A sentinel's announcement during the wait ends it too.
        let b = Primary { host: "10.0.0.3".into(), port: 6379 };
        let seen = link.events();
        let (woke, ()) = tokio::join!(
            tokio::time::timeout(Duration::from_secs(5), link.pause(seen, Duration::from_secs(60))),
            async { link.shared.on_switch(&b) }
        );
        assert!(woke.is_ok());
    }

    #[test]
    fn readonly_answers_are_recognised() {
        let plain = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
            "You can't write against a read only replica.",
        ));
        assert!(is_readonly(&plain));
        let other = redis::RedisError::from((redis::ErrorKind::Io, "broken pipe"));
        assert!(!is_readonly(&other));
    }
}
