//! The command link to Redis: one multiplexed connection shared by every command, a timeout on
//! each command, and the up/down state that `/healthz` shows. A failed or timed-out command
//! marks the link down; the engine's supervisor reconnects it with back-off and jitter.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisResult};

use crate::metrics::Counter;

/// Counters of the link, for `/metrics`.
#[derive(Default)]
pub struct LinkStats {
    pub reconnects: Counter,
    pub command_errors: Counter,
    pub command_timeouts: Counter,
}

pub struct Link {
    client: Client,
    /// The live connection; `None` while down. Cloning it is cheap (a handle to one socket).
    connection: RefCell<Option<MultiplexedConnection>>,
    /// Bounds every command and every connect.
    timeout: Duration,
    /// Set once the first connect succeeded (later connects count as reconnects).
    ever_up: Cell<bool>,
    pub stats: LinkStats,
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
    pub fn new(url: &str, timeout: Duration) -> Result<Link, String> {
        let client = Client::open(url).map_err(|e| format!("bad redis_url: {e}"))?;
        Ok(Link {
            client,
            connection: RefCell::new(None),
            timeout,
            ever_up: Cell::new(false),
            stats: LinkStats::default(),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn is_up(&self) -> bool {
        self.connection.borrow().is_some()
    }

    /// Takes a connection from [`Link::open`] into use: the link is up.
    pub fn install(&self, connection: MultiplexedConnection) {
        if self.ever_up.replace(true) {
            self.stats.reconnects.inc();
        }
        *self.connection.borrow_mut() = Some(connection);
    }

    /// Drops the connection without calling it a loss (the engine chose to stay out).
    pub fn disconnect(&self) {
        self.connection.borrow_mut().take();
    }

    /// Tries once to open a connection, without taking it into use (the engine may check
    /// something on it first).
    pub async fn open(&self) -> Option<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let attempt = tokio::time::timeout(
            self.timeout,
            self.client.get_multiplexed_async_connection_with_config(&config),
        );
        match attempt.await {
            Ok(Ok(connection)) => Some(connection),
            Ok(Err(e)) => {
                log::debug!("redis connect failed: {e}");
                None
            }
            Err(_) => {
                log::debug!("redis connect timed out");
                None
            }
        }
    }

    pub fn mark_down(&self) {
        if self.connection.borrow_mut().take().is_some() {
            log::warn!("redis link lost; serving local clients alone until it is back");
        }
    }

    /// Runs one command (or pipeline, or script) with the link's timeout. Connection-level
    /// failures and timeouts mark the link down; the supervisor brings it back.
    pub async fn call<T, F, Fut>(&self, command: F) -> Result<T, LinkError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let Some(connection) = self.connection.borrow().clone() else { return Err(LinkError::Down) };
        match tokio::time::timeout(self.timeout, command(connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                self.stats.command_errors.inc();
                if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
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

/// Back-off before reconnect attempt `attempt` (0-based): doubling from `min` up to `max`,
/// with up to 50 % jitter so nodes that lost Redis together do not return in lock-step.
pub fn backoff(attempt: u32, min: Duration, max: Duration, jitter_seed: u64) -> Duration {
    let base = min.saturating_mul(1u32 << attempt.min(16)).min(max);
    let jitter = (jitter_seed % 1000) as u32; // 0..1000 per mille
    let reduced = base.saturating_sub(base.mul_f64(f64::from(jitter) / 2000.0));
    reduced.max(min.min(max))
}

/// A cheap source of jitter without a random-number crate.
pub fn jitter_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_bounded_jitter() {
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(3000));
        assert_eq!(backoff(0, min, max, 0), min);
        assert_eq!(backoff(1, min, max, 0), Duration::from_millis(200));
        assert_eq!(backoff(10, min, max, 0), max);
        assert_eq!(backoff(40, min, max, 0), max);
        for seed in [1u64, 499, 999, 123_456_789] {
            let d = backoff(10, min, max, seed);
            assert!(d <= max && d >= max / 2, "{d:?}");
        }
    }
}
