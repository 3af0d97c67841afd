//! Slows password guessing: failed logins (STOMP CONNECT on every transport and HTTP Basic on every
//! route that takes it, through [`LoginThrottle::record_failure`]) are remembered per client
//! address and per login, and after `auth.throttle_after_failures` of them the ERROR that answers
//! the next failure waits a delay that doubles with each further failure, from
//! `auth.throttle_delay_ms` up to `auth.throttle_max_delay_ms` (Dovecot's auth penalty, in spirit).
//! A guesser on one connection at a time is held to about one try per maximum delay. Successful
//! logins are never delayed, so a stranger guessing at alice's login cannot lock alice out. The
//! bookkeeping is bounded: at most [`MAX_ENTRIES`] addresses and as many logins, forgotten
//! [`FORGET_AFTER`] after their last failure (the oldest go first when full).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use std::time::Instant;

use crate::observability::metrics::METRICS;

/// Most addresses, and most logins, remembered at once.
pub const MAX_ENTRIES: usize = 1024;
/// A record is forgotten this long after its last failure.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Longest login kept as a key (longer ones are cut; they still count).
const MAX_LOGIN_BYTES: usize = 64;

/// The throttling settings (`[auth]` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures answered at once before delays start.
    pub free_failures: u32,
    /// The first delay; each further failure doubles it.
    pub delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
}

impl Policy {
    /// The delay before the answer to a client's `failures`-th failure (counting this one).
    pub fn delay_for(&self, failures: u32) -> Duration {
        if failures <= self.free_failures || self.delay.is_zero() {
            return Duration::ZERO;
        }
        let doublings = (failures - self.free_failures - 1).min(20);
        self.delay.saturating_mul(1 << doublings).min(self.max_delay)
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last: Instant,
}

/// One bounded table of failure records.
#[derive(Debug)]
struct Table<K> {
    records: HashMap<K, Record>,
}

impl<K: std::hash::Hash + Eq + Clone> Table<K> {
    fn new() -> Self {
        Table { records: HashMap::new() }
    }

    /// Counts a failure of `key`; returns its failures within the memory window.
    fn fail(&mut self, key: &K, now: Instant) -> u32 {
        if !self.records.contains_key(key) && self.records.len() >= MAX_ENTRIES {
            self.records.retain(|_, r| now.duration_since(r.last) < FORGET_AFTER);
            if self.records.len() >= MAX_ENTRIES {
                let oldest = self.records.iter().min_by_key(|(_, r)| r.last).map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    self.records.remove(&oldest);
                }
            }
        }
        let record = self.records.entry(key.clone()).or_insert(Record { failures: 0, last: now });
        if now.duration_since(record.last) >= FORGET_AFTER {
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        record.last = now;
        record.failures
    }

    fn forget(&mut self, key: &K) {
        self.records.remove(key);
    }
}

/// The failure records of one node.
#[derive(Debug)]
pub struct LoginThrottle {
    by_address: RefCell<Table<IpAddr>>,
    by_login: RefCell<Table<Box<str>>>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle { by_address: RefCell::new(Table::new()), by_login: RefCell::new(Table::new()) }
    }
}

fn login_key(login: &str) -> Box<str> {
    let mut end = login.len().min(MAX_LOGIN_BYTES);
    while !login.is_char_boundary(end) {
        end -= 1;
    }
    Box::from(&login[..end])
}

impl LoginThrottle {
    /// Records a failed login of `login` (None: none given) from `address` (None: unknown) and
    /// returns how long to wait before answering it: the delay of the worse of the two counts.
    pub fn failed(&self, address: Option<IpAddr>, login: Option<&str>, policy: &Policy) -> Duration {
        self.failed_at(address, login, policy, Instant::now())
    }

    fn failed_at(
        &self,
        address: Option<IpAddr>,
        login: Option<&str>,
        policy: &Policy,
        now: Instant,
    ) -> Duration {
        let by_address = address.map_or(0, |a| self.by_address.borrow_mut().fail(&a, now));
        let by_login = login.map_or(0, |l| self.by_login.borrow_mut().fail(&login_key(l), now));
        policy.delay_for(by_address.max(by_login))
    }

    /// The one failed-login path of every way to log in (STOMP CONNECT on any transport, HTTP
    /// Basic on any route): counts it in `login_failures_total`, records it per address and
    /// login, logs it once at WARN with the address and login (never the passcode) and `via`
    /// (which session or route), and returns the delay to answer it after (also counted in
    /// `login_failures_delayed_total` when not zero). The caller waits that long, off the event
    /// loop's critical path (a timer in its own task), then refuses.
    pub fn record_failure(
        &self,
        address: Option<IpAddr>,
        login: Option<&str>,
        policy: &Policy,
        via: std::fmt::Arguments<'_>,
    ) -> Duration {
        METRICS.login_failures.inc();
        let delay = self.failed(address, login, policy);
        let from = address.map_or_else(|| "an unknown address".to_string(), |p| p.to_string());
        let login_text = login.map_or_else(|| "no login".to_string(), |l| format!("login {l:?}"));
        let after = if delay.is_zero() {
            String::new()
        } else {
            METRICS.login_failures_delayed.inc();
            format!(", answered after {} ms", delay.as_millis())
        };
        log::warn!("failed login: {login_text} from {from} ({via}){after}");
        delay
    }

    /// Whether failures from `address` are being slowed now: its next failure would be
    /// answered after a delay (the policy's free failures used up within the memory window).
    /// `crate::auth::login_check` lets such an address have one passcode check waiting at a time.
    pub fn address_throttled(&self, address: Option<IpAddr>, policy: &Policy) -> bool {
        let Some(address) = address else { return false };
        let now = Instant::now();
        self.by_address.borrow().records.get(&address).is_some_and(|r| {
            now.duration_since(r.last) < FORGET_AFTER
                && !policy.delay_for(r.failures.saturating_add(1)).is_zero()
        })
    }

    /// A successful login clears the record of its login and of its address.
    pub fn succeeded(&self, address: Option<IpAddr>, login: Option<&str>) {
        if let Some(a) = address {
            self.by_address.borrow_mut().forget(&a);
        }
        if let Some(l) = login {
            self.by_login.borrow_mut().forget(&login_key(l));
        }
    }

    /// Addresses and logins remembered now (for `/metrics`).
    pub fn entries(&self) -> usize {
        self.by_address.borrow().records.len() + self.by_login.borrow().records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy =
        Policy { free_failures: 3, delay: Duration::from_millis(500), max_delay: Duration::from_secs(8) };

    #[test]
    fn delays_start_after_the_free_failures_and_double_to_the_cap() {
        let ms = |n| POLICY.delay_for(n).as_millis();
        assert_eq!([ms(1), ms(2), ms(3)], [0, 0, 0]);
        assert_eq!([ms(4), ms(5), ms(6), ms(7), ms(8), ms(9)], [500, 1000, 2000, 4000, 8000, 8000]);
        assert_eq!(ms(u32::MAX), 8000);
        assert_eq!(Policy { delay: Duration::ZERO, ..POLICY }.delay_for(100), Duration::ZERO);
    }

    #[test]
    fn per_address_and_per_login_and_cleared_by_success() {
        let t = LoginThrottle::default();
        let a: IpAddr = "10.0.0.9".parse().unwrap();
        let b: IpAddr = "10.0.0.10".parse().unwrap();
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(t.failed_at(Some(a), Some("alice"), &POLICY, now), Duration::ZERO);
        }
        // The fourth failure of the address is slowed whatever the login...
        assert_eq!(t.failed_at(Some(a), Some("bob"), &POLICY, now), Duration::from_millis(500));
        // ...and of the login whatever the address.
        assert_eq!(t.failed_at(Some(b), Some("alice"), &POLICY, now), Duration::from_millis(500));
        assert!(t.address_throttled(Some(a), &POLICY));
        assert!(!t.address_throttled(Some(b), &POLICY), "b failed once");
        assert!(!t.address_throttled(None, &POLICY));
        t.succeeded(Some(a), Some("alice"));
        assert!(!t.address_throttled(Some(a), &POLICY));
        assert_eq!(t.failed_at(Some(a), None, &POLICY, now), Duration::ZERO);
        // Forgotten after the window.
        assert_eq!(t.failed_at(Some(b), Some("bob"), &POLICY, now + FORGET_AFTER), Duration::ZERO);
    }

    #[test]
    fn bounded_memory() {
        let t = LoginThrottle::default();
        let start = Instant::now();
        let total = MAX_ENTRIES as u32 * 3;
        for i in 0..total {
            let ip = IpAddr::from(i.to_be_bytes());
            let at = start + Duration::from_millis(u64::from(i));
            t.failed_at(Some(ip), Some(&format!("user{i}{}", "x".repeat(100))), &POLICY, at);
        }
        assert_eq!(t.entries(), 2 * MAX_ENTRIES);
        assert!(t.by_login.borrow().records.keys().all(|k| k.len() <= MAX_LOGIN_BYTES));
        // The newest are the ones kept.
        let newest = IpAddr::from((total - 1).to_be_bytes());
        assert!(t.by_address.borrow().records.contains_key(&newest));
        assert!(!t.by_address.borrow().records.contains_key(&IpAddr::from(0u32.to_be_bytes())));
        assert_eq!(login_key("ééé"), Box::from("ééé"));
        assert_eq!(login_key(&"é".repeat(40)).len(), 64);
    }
}
