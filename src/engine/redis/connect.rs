//! Making connections to Redis servers: the client for an address (plain or TLS, checked
//! against `tls.redis_ca_file`), and the reconnect back-off with jitter. Shared by the command
//! link (`link`) and the sentinels (`sentinel`), so neither imports the other for it.

use redis::{Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisResult, TlsCertificates};
use std::time::Duration;

/// A client for `info`; a TLS address (`rediss`) with `ca` (PEM) checks the server's
/// certificate against that CA instead of the system's.
pub(crate) fn client(info: ConnectionInfo, ca: Option<&[u8]>) -> RedisResult<Client> {
    match ca {
        Some(ca) if matches!(info.addr(), ConnectionAddr::TcpTls { .. }) => {
            Client::build_with_tls(info, TlsCertificates { client_tls: None, root_cert: Some(ca.to_vec()) })
        }
        _ => Client::open(info),
    }
}

/// The connection info of `host:port`, over TLS with `tls` (the host name is what the
/// certificate is checked for).
pub(crate) fn tcp_info(host: &str, port: u16, tls: bool) -> RedisResult<ConnectionInfo> {
    let scheme = if tls { "rediss" } else { "redis" };
    format!("{scheme}://{}", crate::config::redis_url::address(host, port)).into_connection_info()
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
