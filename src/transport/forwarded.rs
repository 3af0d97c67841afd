//! The real client's address behind a reverse proxy. A request that comes from a peer listed
//! in `http.trusted_proxies` (addresses or CIDR networks, IPv4 and IPv6) may say whom it is
//! for in `X-Forwarded-For` (the de-facto list, `client, proxy1, proxy2`) or, when there is no
//! `X-Forwarded-For`, in `Forwarded` (RFC 7239 §4, `for=` of each element). The address taken
//! is the right-most one that is not itself a trusted proxy (nginx's `real_ip_recursive on`):
//! every hop appends what it saw, so only the entries written by trusted hops can be believed,
//! and a client's own `X-Forwarded-For: 1.2.3.4` stays to the left of them, unread. From any
//! other peer the headers are ignored and the peer's address is the client's.
//!
//! `crate::transport::http` works the address out once per request ([`Client`] in the request's
//! extensions); the login throttle and its WARN lines (`crate::auth::login_throttle`), HTTP Basic
//! (`crate::observability::status::basic`), the WebSocket and SockJS sessions and the `/metrics` network rule
//! (`http.metrics_open_to`) all use it.
//!
//! Bounded: at most [`MAX_HEADER_BYTES`] of the headers together and [`MAX_HOPS`] entries are
//! read; past that, or when the entry to take is not an address (`unknown`, an obfuscated
//! `_name`, garbage), the nearest trusted hop's address is used and the request is counted in
//! `forwarded_ignored_total{reason}`.

use std::net::IpAddr;

use hyper::header::{GetAll, HeaderMap, HeaderName, HeaderValue};

/// Reads the address out of one entry of a forwarding header.
type EntryParser = fn(&str) -> Option<IpAddr>;

/// Longest `X-Forwarded-For` (or `Forwarded`) read, all its lines together, in bytes.
pub const MAX_HEADER_BYTES: usize = 2048;
/// Most entries of the list read.
pub const MAX_HOPS: usize = 32;

/// The client's address a request was worked out to come from, in its extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client(pub IpAddr);

/// Why a trusted proxy's forwarding header was not believed (the `/metrics` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Longer than [`MAX_HEADER_BYTES`] or more than [`MAX_HOPS`] entries.
    TooLong,
    /// The entry to take is not an IP address.
    Malformed,
}

impl Ignored {
    /// The `forwarded_ignored_total` label.
    pub fn label(self) -> &'static str {
        match self {
            Ignored::TooLong => "too_long",
            Ignored::Malformed => "malformed",
        }
    }
}

/// An address or a network from the config: `10.0.0.7`, `10.0.0.0/8`, `::1`, `fd00::/8`. An
/// IPv4 network also holds the IPv4-mapped IPv6 forms of its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    base: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `address` or `address/prefix` (the prefix at most 32 for IPv4, 128 for IPv6;
    /// host bits set are allowed and ignored, like nginx's `set_real_ip_from`).
    pub fn parse(text: &str) -> Result<Network, String> {
        let text = text.trim();
        let bad = || format!("{text:?} is not an address or network like \"10.0.0.0/8\" or \"::1\"");
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let base: IpAddr = addr.parse().map_err(|_| bad())?;
        let base = base.to_canonical();
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?
            }
            Some(_) => return Err(bad()),
        };
        Ok(Network { base, prefix })
    }

    /// Whether `addr` is in this network.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.base, addr.to_canonical()) {
            (IpAddr::V4(b), IpAddr::V4(a)) => {
                masked(u128::from(u32::from(b)) << 96, self.prefix)
                    == masked(u128::from(u32::from(a)) << 96, self.prefix)
            }
            (IpAddr::V6(b), IpAddr::V6(a)) => {
                masked(u128::from(b), self.prefix) == masked(u128::from(a), self.prefix)
            }
            _ => false,
        }
    }
}

/// `bits` with all but the first `prefix` bits cleared.
fn masked(bits: u128, prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => bits & (u128::MAX << (128 - u32::from(p.min(128)))),
    }
}

/// Whether any of `networks` holds `addr`.
pub fn listed(networks: &[Network], addr: IpAddr) -> bool {
    networks.iter().any(|n| n.contains(addr))
}

/// Parses a config list; the error names the first bad entry.
pub fn parse_list(list: &[String]) -> Result<Vec<Network>, String> {
    list.iter().map(|s| Network::parse(s)).collect()
}

/// The client's address for a request from `peer` with these `headers` (see the module doc),
/// and why the forwarding header was not believed, if it was not.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[Network]) -> (IpAddr, Option<Ignored>) {
    let peer = peer.to_canonical();
    if !listed(trusted, peer) {
        return (peer, None);
    }
    static XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    let xff = headers.get_all(&XFF);
    let (values, entry): (GetAll<'_, HeaderValue>, EntryParser) = if xff.iter().next().is_some() {
        (xff, node_address)
    } else {
        (headers.get_all(hyper::header::FORWARDED), forwarded_for)
    };
    if values.iter().next().is_none() {
        return (peer, None);
    }
    if values.iter().map(|v| v.len() + 1).sum::<usize>() > MAX_HEADER_BYTES {
        return (peer, Some(Ignored::TooLong));
    }
    let mut hops = Vec::new();
    for value in values.iter() {
        // Header values are visible ASCII by hyper's rules, but do not rely on it.
        let Ok(text) = std::str::from_utf8(value.as_bytes()) else { return (peer, Some(Ignored::Malformed)) };
        hops.extend(text.split(',').map(str::trim).filter(|e| !e.is_empty()));
        if hops.len() > MAX_HOPS {
            return (peer, Some(Ignored::TooLong));
        }
    }
    let mut nearest = peer;
    for hop in hops.iter().rev() {
        match entry(hop) {
            Some(addr) if listed(trusted, addr) => nearest = addr,
            Some(addr) => return (addr, None),
            None => return (nearest, Some(Ignored::Malformed)),
        }
    }
    // Every hop is a trusted proxy: the left-most is the closest to the client we know.
    (nearest, None)
}

/// One `X-Forwarded-For` entry, or a `Forwarded` node (RFC 7239 §6): `192.0.2.1`,
/// `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:4711`. None for `unknown`,
/// obfuscated names and anything else.
fn node_address(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let addr = if let Some(rest) = text.strip_prefix('[') {
        let (v6, port) = rest.split_once(']')?;
        if !(port.is_empty() || port.strip_prefix(':').is_some_and(valid_port)) {
            return None;
        }
        v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)?
    } else if let Ok(addr) = text.parse::<IpAddr>() {
        addr
    } else {
        let (v4, port) = text.split_once(':')?;
        if !valid_port(port) {
            return None;
        }
        v4.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)?
    };
    Some(addr.to_canonical())
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// The address in the `for=` parameter of one `Forwarded` element (`for=192.0.2.60;proto=http`,
/// `for="[2001:db8::1]:4711"`); None without one or when it is not an address.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        let value = value.trim();
        let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
        node_address(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn nets(list: &[&str]) -> Vec<Network> {
        parse_list(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn networks_parse_and_match() {
        let n = nets(&["10.0.0.0/8", "192.168.1.7", "fd00::/8", "::1", "0.0.0.0/0"]);
        assert!(n[0].contains(ip("10.255.1.2")));
        assert!(!n[0].contains(ip("11.0.0.1")));
        assert!(n[0].contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
        assert!(n[1].contains(ip("192.168.1.7")) && !n[1].contains(ip("192.168.1.8")));
        assert!(n[2].contains(ip("fd12::1")) && !n[2].contains(ip("fe80::1")));
        assert!(n[3].contains(ip("::1")) && !n[3].contains(ip("::2")));
        assert!(n[4].contains(ip("1.2.3.4")) && !n[4].contains(ip("::2")));
        assert!(Network::parse("10.0.0.1/8").unwrap().contains(ip("10.9.9.9")), "host bits ignored");
        for bad in
            ["", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0/8", "host.lan", "10.0.0.0/+8", "1.2.3.4/0008"]
        {
            assert!(Network::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_trusted_peers_are_believed_right_most_untrusted_wins() {
        let trusted = nets(&["127.0.0.1", "10.0.0.0/8"]);
        let from =
            |peer: &str, pairs: &[(&'static str, &str)]| client_address(ip(peer), &headers(pairs), &trusted);
        // An untrusted peer's header is not read.
        assert_eq!(from("192.0.2.9", &[("x-forwarded-for", "1.2.3.4")]), (ip("192.0.2.9"), None));
        // Trusted: the right-most entry that is not a trusted proxy.
        assert_eq!(from("127.0.0.1", &[("x-forwarded-for", "1.2.3.4")]), (ip("1.2.3.4"), None));
        assert_eq!(
            from("127.0.0.1", &[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.3")]),
            (ip("1.2.3.4"), None)
        );
        assert_eq!(
            from("127.0.0.1", &[("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "1.2.3.4:5678")]),
            (ip("1.2.3.4"), None),
            "lines join in order"
        );
        assert_eq!(
            from("::ffff:127.0.0.1", &[("x-forwarded-for", "[2001:db8::1]:80")]),
            (ip("2001:db8::1"), None)
        );
        assert_eq!(from("127.0.0.1", &[("x-forwarded-for", "2001:db8::2")]), (ip("2001:db8::2"), None));
        // All trusted: the left-most.
        assert_eq!(from("127.0.0.1", &[("x-forwarded-for", "10.0.0.2, 10.0.0.3")]), (ip("10.0.0.2"), None));
        // None: the peer itself.
        assert_eq!(from("127.0.0.1", &[]), (ip("127.0.0.1"), None));
        // Forwarded, only without X-Forwarded-For.
        assert_eq!(
            from("127.0.0.1", &[("forwarded", "for=6.6.6.6, for=\"[2001:db8::7]:4711\";proto=https")]),
            (ip("2001:db8::7"), None)
        );
        assert_eq!(
            from("127.0.0.1", &[("forwarded", "For=192.0.2.60;by=10.0.0.1")]),
            (ip("192.0.2.60"), None)
        );
        assert_eq!(
            from("127.0.0.1", &[("forwarded", "for=6.6.6.6"), ("x-forwarded-for", "1.2.3.4")]),
            (ip("1.2.3.4"), None)
        );
    }

    #[test]
    fn bounded_and_malformed_fall_back_to_the_nearest_trusted_hop() {
        let trusted = nets(&["127.0.0.1", "10.0.0.0/8"]);
        let from =
            |pairs: &[(&'static str, &str)]| client_address(ip("127.0.0.1"), &headers(pairs), &trusted);
        assert_eq!(
            from(&[("x-forwarded-for", "unknown, 10.0.0.3")]),
            (ip("10.0.0.3"), Some(Ignored::Malformed))
        );
        assert_eq!(
            from(&[("x-forwarded-for", "1.2.3.4, garbage")]),
            (ip("127.0.0.1"), Some(Ignored::Malformed))
        );
        assert_eq!(from(&[("forwarded", "for=_hidden")]), (ip("127.0.0.1"), Some(Ignored::Malformed)));
        assert_eq!(from(&[("forwarded", "proto=https")]), (ip("127.0.0.1"), Some(Ignored::Malformed)));
        for bad in ["1.2.3.4:", "1.2.3.4:123456", "[::1", "[::1]x", "[1.2.3.4]", "1.2.3.4.5", "::1:80:x"] {
            assert_eq!(from(&[("x-forwarded-for", bad)]).1, Some(Ignored::Malformed), "{bad:?}");
        }
        let long = vec!["1.2.3.4"; 300].join(",");
        assert_eq!(from(&[("x-forwarded-for", long.as_str())]), (ip("127.0.0.1"), Some(Ignored::TooLong)));
        let many = vec!["1.2.3.4"; MAX_HOPS + 1].join(",");
        assert_eq!(from(&[("x-forwarded-for", many.as_str())]).1, Some(Ignored::TooLong));
        let empty = from(&[("x-forwarded-for", " , ,")]);
        assert_eq!(empty, (ip("127.0.0.1"), None));
    }
}
