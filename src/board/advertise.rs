//! The URL this board is reached at, as `/api/nodes` lists it: `cluster.advertise_url` when
//! set, else derived from the bound listen address. A wildcard listen address (`0.0.0.0`,
//! `[::]`) is replaced by this host's own LAN address, so other boards and browsers get an
//! address they can actually connect to.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

/// The advertised URL for a board configured with `configured` (may be empty) that is
/// listening on `bound` (the real address after bind, so port 0 is resolved).
pub fn advertise_url(configured: &str, bound: SocketAddr) -> String {
    if !configured.is_empty() {
        return configured.to_string();
    }
    let ip = if bound.ip().is_unspecified() { host_address() } else { Some(bound.ip()) };
    match ip {
        Some(ip) => url_for(SocketAddr::new(ip, bound.port())),
        // No address to find (no network at all): the name is the best guess left.
        None => format!("http://{}:{}", host_name(), bound.port()),
    }
}

/// This host's name (`/proc/sys/kernel/hostname`), or `localhost` when it has none.
pub(crate) fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name.to_string()
    }
}

/// `http://ip:port`, with IPv6 addresses in brackets.
fn url_for(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// This host's LAN address: the source address of its route out, found by connecting a UDP
/// socket (which sends nothing), or else the first non-loopback local address in the
/// kernel's routing table (a board on a LAN without a default route).
fn host_address() -> Option<IpAddr> {
    route_source().or_else(|| first_local_address(&std::fs::read_to_string("/proc/net/fib_trie").ok()?))
}

fn route_source() -> Option<IpAddr> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    // TEST-NET-1 (RFC 5737): never answered; connect() only picks the route, no packet goes out.
    socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// The first `/32 host LOCAL` address of `/proc/net/fib_trie` that is not loopback.
fn first_local_address(fib_trie: &str) -> Option<IpAddr> {
    lan_addresses(fib_trie).into_iter().next()
}

/// Every `/32 host LOCAL` address of `/proc/net/fib_trie` that is not loopback, in its order
/// (an address listed under several tables once).
fn lan_addresses(fib_trie: &str) -> Vec<IpAddr> {
    let mut found = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("|-- ") {
            last = rest.trim().parse().ok();
        } else if line.contains("/32 host LOCAL") {
            if let Some(ip) = last.filter(|ip| !ip.is_loopback() && !ip.is_unspecified()) {
                if !found.contains(&IpAddr::V4(ip)) {
                    found.push(IpAddr::V4(ip));
                }
            }
        }
    }
    found
}

/// This host's own addresses that others may reach it at: its IPv4 addresses, then its global
/// IPv6 addresses (`/proc/net/if_inet6`, link-local left out), loopback left out.
pub(crate) fn local_addresses() -> Vec<IpAddr> {
    let mut found = lan_addresses(&std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default());
    for line in std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default().lines() {
        let Some(hex) = line.split_whitespace().next().filter(|h| h.len() == 32) else { continue };
        let Ok(bits) = u128::from_str_radix(hex, 16) else { continue };
        let ip = std::net::Ipv6Addr::from(bits);
        let link_local = ip.segments()[0] & 0xffc0 == 0xfe80;
        if !ip.is_loopback() && !link_local && !found.contains(&IpAddr::V6(ip)) {
            found.push(IpAddr::V6(ip));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_url_wins() {
        let bound: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(advertise_url("http://board-a.lan:80", bound), "http://board-a.lan:80");
    }

    #[test]
    fn a_specific_listen_address_is_advertised_as_is() {
        assert_eq!(advertise_url("", "127.0.0.1:4321".parse().unwrap()), "http://127.0.0.1:4321");
        assert_eq!(advertise_url("", "[::1]:8080".parse().unwrap()), "http://[::1]:8080");
    }

    #[test]
    fn a_wildcard_listen_address_becomes_an_address_others_can_reach() {
        let url = advertise_url("", "0.0.0.0:8080".parse().unwrap());
        assert!(url.starts_with("http://") && url.ends_with(":8080"), "{url}");
        assert!(!url.contains("0.0.0.0"), "{url}");
    }

    #[test]
    fn fib_trie_gives_the_first_lan_address() {
        let text = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 127.0.0.1\n        /32 host LOCAL\n     \
                    |-- 192.168.1.0\n        /24 link UNICAST\n     |-- 192.168.1.23\n        /32 host LOCAL\n";
        assert_eq!(first_local_address(text), Some("192.168.1.23".parse().unwrap()));
        assert_eq!(first_local_address("Main:\n     |-- 127.0.0.1\n        /32 host LOCAL\n"), None);
    }
}
