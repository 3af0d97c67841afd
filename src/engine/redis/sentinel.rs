//! Redis Sentinel: which server is the primary now, and word when that changes. A small client
//! on the `redis` crate that follows Redis's guidelines for Sentinel clients: ask the sentinels
//! in turn `SENTINEL GET-MASTER-ADDR-BY-NAME`, the first that answers wins and is asked first
//! next time (the link then checks with `ROLE` that the answer really is a primary); and listen
//! on every sentinel for `+switch-master`, so a failover is followed at once, not on the next
//! failed command.
//!
//! Why not the crate's `sentinel` module: it asks `SENTINEL MASTERS` and then connects to the
//! primary to check it on every lookup, keeps no per-sentinel state for `/metrics`, has no
//! timeout per sentinel (one black-holed sentinel stalls the lookup) and has no `+switch-master`
//! subscription; this is the part we need in ~250 lines over the crate's own connections.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisConnectionInfo};

use crate::config::SentinelTarget;
use crate::observability::metrics::Counter;

/// The sentinel channel that announces a new primary:
/// `<master-name> <old-ip> <old-port> <new-ip> <new-port>`.
const SWITCH_MASTER: &str = "+switch-master";

/// The sentinels of one monitored primary.
pub struct Sentinels {
    /// The name the sentinels monitor the primary under.
    master: String,
    nodes: Vec<Node>,
    /// The sentinel that answered last; asked first next time.
    preferred: Cell<usize>,
    /// Bounds every connect and query to one sentinel.
    timeout: Duration,
    /// Sentinel queries and subscriptions that failed (timeouts, refusals, unknown master).
    pub errors: Counter,
}

/// One sentinel.
struct Node {
    /// `host:port`, for logs and the `sentinel` label in `/metrics`.
    address: String,
    client: Client,
    /// Kept between lookups (a lookup is then one round trip); dropped on any failure.
    connection: RefCell<Option<MultiplexedConnection>>,
    /// Whether its last query or its `+switch-master` subscription worked.
    up: Cell<bool>,
}

/// What a sentinel said about the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Primary {
    pub host: String,
    pub port: u16,
}

impl Primary {
    /// `host:port` (brackets around IPv6).
    pub fn address(&self) -> String {
        crate::config::redis_url::address(&self.host, self.port)
    }
}

impl Sentinels {
    /// The sentinels of `target`, logging in with `username`/`password` when not empty (the
    /// sentinels' own credentials, not the data nodes').
    pub fn new(
        target: &SentinelTarget,
        username: &str,
        password: &str,
        timeout: Duration,
        ca: Option<std::rc::Rc<[u8]>>,
    ) -> Result<Sentinels, String> {
        let mut auth = RedisConnectionInfo::default().set_skip_set_lib_name();
        if !username.is_empty() {
            auth = auth.set_username(username);
        }
        if !password.is_empty() {
            auth = auth.set_password(password);
        }
        let mut nodes = Vec::with_capacity(target.sentinels.len());
        for (host, port) in &target.sentinels {
            let info = super::connect::tcp_info(host, *port, target.tls)
                .map_err(|e| format!("bad sentinel address {host}:{port}: {e}"))?
                .set_redis_settings(auth.clone());
            let client = super::connect::client(info, ca.as_deref())
                .map_err(|e| format!("bad sentinel address {host}:{port}: {e}"))?;
            nodes.push(Node {
                address: crate::config::redis_url::address(host, *port),
                client,
                connection: RefCell::new(None),
                up: Cell::new(false),
            });
        }
        Ok(Sentinels {
            master: target.master.clone(),
            nodes,
            preferred: Cell::new(0),
            timeout,
            errors: Counter::new(),
        })
    }

    /// The master name the sentinels are asked about.
    pub fn master(&self) -> &str {
        &self.master
    }

    /// Each sentinel as (`host:port`, up).
    pub fn status(&self) -> Vec<(String, bool)> {
        self.nodes.iter().map(|n| (n.address.clone(), n.up.get())).collect()
    }

    /// Asks the sentinels in turn, the last one that answered first, for the primary's address.
    /// Each sentinel gets the timeout once; the error names the last sentinel's failure.
    pub async fn primary(&self) -> Result<Primary, String> {
        let n = self.nodes.len();
        let first = self.preferred.get() % n.max(1);
        let mut last_error = String::from("no sentinels");
        for i in (0..n).map(|k| (first + k) % n) {
            let node = &self.nodes[i];
            match tokio::time::timeout(self.timeout, self.ask(node)).await {
                Ok(Ok(Some(primary))) => {
                    node.up.set(true);
                    self.preferred.set(i);
                    return Ok(primary);
                }
                Ok(Ok(None)) => {
                    // Up, but it does not monitor this master (a typo, or a sentinel still
                    // being set up): ask the next.
                    node.up.set(true);
                    last_error = format!("sentinel {} does not know master {:?}", node.address, self.master);
                }
                Ok(Err(e)) => {
                    node.up.set(false);
                    node.connection.borrow_mut().take();
                    last_error = format!("sentinel {}: {e}", node.address);
                }
                Err(_) => {
                    node.up.set(false);
                    node.connection.borrow_mut().take();
                    last_error = format!("sentinel {} timed out", node.address);
                }
            }
            self.errors.inc();
            log::debug!("{last_error}");
        }
        Err(last_error)
    }

    /// One `SENTINEL GET-MASTER-ADDR-BY-NAME` on one sentinel.
    async fn ask(&self, node: &Node) -> redis::RedisResult<Option<Primary>> {
        let cached = node.connection.borrow().clone();
        let mut connection = match cached {
            Some(c) => c,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout));
                let c = node.client.get_multiplexed_async_connection_with_config(&config).await?;
                *node.connection.borrow_mut() = Some(c.clone());
                c
            }
        };
        let answer: Option<(String, String)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.master)
            .query_async(&mut connection)
            .await?;
        Ok(answer.and_then(|(host, port)| Some(Primary { host, port: port.parse().ok()? })))
    }

    /// Starts one task per sentinel that subscribes to `+switch-master` and calls `on_switch`
    /// with the new primary of this master; each re-subscribes after a failure, with back-off.
    /// `ping_every` finds a silently dead sentinel. Must run inside the node's `LocalSet`.
    pub fn watch(self: &Rc<Self>, ping_every: Duration, on_switch: Rc<dyn Fn(Primary)>) {
        for i in 0..self.nodes.len() {
            let me = self.clone();
            let on_switch = on_switch.clone();
            tokio::task::spawn_local(async move { me.watch_one(i, ping_every, on_switch).await });
        }
    }

    async fn watch_one(self: Rc<Self>, i: usize, ping_every: Duration, on_switch: Rc<dyn Fn(Primary)>) {
        let node = &self.nodes[i];
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        let mut attempt = 0u32;
        loop {
            if attempt > 0 {
                let pause = super::connect::backoff(attempt - 1, min, max, super::connect::jitter_seed());
                tokio::time::sleep(pause).await;
            }
            attempt = attempt.saturating_add(1);
            let pubsub = match tokio::time::timeout(self.timeout, node.client.get_async_pubsub()).await {
                Ok(Ok(p)) => p,
                _ => {
                    self.lost(node, "cannot connect");
                    continue;
                }
            };
            let (mut sink, mut stream) = pubsub.split();
            if !matches!(tokio::time::timeout(self.timeout, sink.subscribe(SWITCH_MASTER)).await, Ok(Ok(())))
            {
                self.lost(node, "cannot subscribe to +switch-master");
                continue;
            }
            if !node.up.replace(true) {
                log::info!("sentinel {} up", node.address);
            }
            attempt = 0;
            let mut next_ping = tokio::time::Instant::now() + ping_every;
            loop {
                tokio::select! {
                    message = stream.next() => match message {
                        Some(m) => {
                            let payload = String::from_utf8_lossy(m.get_payload_bytes());
                            if let Some(primary) = parse_switch(&payload, &self.master) {
                                log::warn!(
                                    "sentinel {}: master {} switched to {}",
                                    node.address, self.master, primary.address()
                                );
                                on_switch(primary);
                            }
                        }
                        None => break,
                    },
                    () = tokio::time::sleep_until(next_ping) => {
                        next_ping = tokio::time::Instant::now() + ping_every;
                        if !matches!(tokio::time::timeout(self.timeout, sink.ping::<redis::Value>()).await, Ok(Ok(_))) {
                            break;
                        }
                    }
                }
            }
            self.lost(node, "connection lost");
        }
    }

    fn lost(&self, node: &Node, what: &str) {
        self.errors.inc();
        if node.up.replace(false) {
            log::warn!("sentinel {}: {what}", node.address);
        } else {
            log::debug!("sentinel {}: {what}", node.address);
        }
    }
}

/// Reads a `+switch-master` message; Some(new primary) when it is about `master`.
pub fn parse_switch(payload: &str, master: &str) -> Option<Primary> {
    let mut words = payload.split_ascii_whitespace();
    if words.next()? != master {
        return None;
    }
    let (_old_host, _old_port) = (words.next()?, words.next()?);
    let host = words.next()?.to_string();
    let port = words.next()?.parse().ok()?;
    Some(Primary { host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_master_messages() {
        let p = parse_switch("mymaster 10.0.0.2 6379 10.0.0.3 6380", "mymaster");
        assert_eq!(p, Some(Primary { host: "10.0.0.3".into(), port: 6380 }));
        assert_eq!(p.unwrap().address(), "10.0.0.3:6380");
        assert_eq!(parse_switch("other 10.0.0.2 6379 10.0.0.3 6380", "mymaster"), None);
        assert_eq!(parse_switch("mymaster 10.0.0.2 6379 10.0.0.3", "mymaster"), None);
        assert_eq!(parse_switch("mymaster 10.0.0.2 6379 10.0.0.3 x", "mymaster"), None);
        assert_eq!(parse_switch("", "mymaster"), None);
        let v6 = parse_switch("m ::1 6379 ::2 6380", "m").unwrap();
        assert_eq!(v6.address(), "[::2]:6380");
    }
}
