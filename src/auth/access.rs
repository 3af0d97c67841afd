//! Who may talk to the board over HTTP: the `Host` allow-list checked on every request (the
//! defence against DNS rebinding) and the `Origin` check of the WebSocket and SockJS endpoints.
//!
//! DNS rebinding: a web page at `http://evil.example:8080` that a visitor on the LAN opens can
//! have its name re-pointed at the board's address; the visitor's browser then treats the board
//! as `evil.example` (same origin as the page: no CORS, no Origin refusal) and the page can chat
//! and read rooms in the visitor's name. The browser still sends `Host: evil.example:8080`, so a
//! board that answers only to its own names and addresses is out of reach. By default those are
//! any IP literal (a page can never rebind an address), `localhost`, this host's name and its
//! mDNS `.local` name, and the host of `cluster.advertise_url`; `http.allowed_hosts` adds names
//! (`".example.lan"` for a whole domain) or allows every name (`"*"`).

use std::net::{IpAddr, SocketAddr};

use hyper::header::{HeaderMap, HOST, ORIGIN};
use hyper::{Uri, Version};

/// The TCP connection a request came in on; the listener puts it in every request's
/// extensions, so routes can see the client's address (login throttling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub remote: SocketAddr,
    pub local: SocketAddr,
}

/// Why a request's `Host` was refused, with the status RFC 9112 §3.2 asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRefusal {
    /// An HTTP/1.1 request without `Host`, or with more than one: `400`.
    Missing,
    /// A `Host` that is not `host[:port]`: `400`.
    Malformed,
    /// A name this board does not answer to (DNS rebinding): `403`.
    NotAllowed,
}

impl HostRefusal {
    /// The `/metrics` label.
    pub fn reason(self) -> &'static str {
        match self {
            HostRefusal::Missing => "missing_host",
            HostRefusal::Malformed => "bad_host",
            HostRefusal::NotAllowed => "host_not_allowed",
        }
    }
}

/// A host and port as written in `Host` or an origin: host lower-case, IPv6 without brackets,
/// without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPort {
    host: String,
    port: Option<u16>,
}

/// Parses `host[:port]` (`[v6]:port` for IPv6). None for anything else (user info, paths,
/// spaces, bytes outside a host name's alphabet).
fn parse_host_port(text: &str) -> Option<HostPort> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (v6, port)
    } else {
        match text.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let name_ok = |h: &str| {
        !h.is_empty()
            && h.len() <= 253
            && h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'))
    };
    name_ok(host).then(|| HostPort { host: host.to_ascii_lowercase(), port })
}

/// This host's name (from the kernel), read once.
fn host_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase())
            .unwrap_or_default()
    })
}

/// Whether the board answers to `host` (lower-case, no brackets): see the module doc.
fn host_allowed(host: &str, allowed: &[String], advertise_url: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() || host == "localhost" {
        return true;
    }
    let own = host_name();
    if !own.is_empty() && (host == own || host.strip_suffix(".local") == Some(own)) {
        return true;
    }
    if origin_parts(advertise_url).is_some_and(|(_, h)| h.host == host) {
        return true;
    }
    allowed.iter().any(|a| {
        let a = a.trim().trim_end_matches('.').to_ascii_lowercase();
        a == "*"
            || a == host
            || a.strip_prefix('.')
                .is_some_and(|domain| host.strip_suffix(domain).is_some_and(|s| s.ends_with('.')))
    })
}

/// Checks the request's `Host` (and an absolute-form request target, whose authority wins):
/// present once in HTTP/1.1, well formed, and a name this board answers to.
pub fn check_host(
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
    allowed: &[String],
    advertise_url: &str,
) -> Result<(), HostRefusal> {
    let mut values = headers.get_all(HOST).iter();
    let value = values.next();
    if values.next().is_some() {
        return Err(HostRefusal::Missing);
    }
    let text = match (uri.authority(), value) {
        (Some(authority), _) => authority.as_str(),
        (None, Some(v)) => v.to_str().map_err(|_| HostRefusal::Malformed)?,
        // HTTP/1.0 may leave Host out; no browser does, so rebinding cannot.
        (None, None) if version < Version::HTTP_11 => return Ok(()),
        (None, None) => return Err(HostRefusal::Missing),
    };
    let parsed = parse_host_port(text.trim()).ok_or(HostRefusal::Malformed)?;
    if host_allowed(&parsed.host, allowed, advertise_url) {
        Ok(())
    } else {
        Err(HostRefusal::NotAllowed)
    }
}

/// `scheme://host[:port]` split into the scheme and the host with its port made explicit
/// (80 for http/ws, 443 for https/wss). None for anything else (paths, user info, `null`).
fn origin_parts(text: &str) -> Option<(String, HostPort)> {
    let (scheme, rest) = text.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" | "ws" => 80,
        "https" | "wss" => 443,
        _ => return None,
    };
    let mut hp = parse_host_port(rest.strip_suffix('/').unwrap_or(rest))?;
    hp.port = Some(hp.port.unwrap_or(default_port));
    Some((scheme, hp))
}

/// Whether a browser page of the request's `Origin` may use `/ws` and the SockJS endpoints.
///
/// `allowed` as `websocket.allowed_origins`: `["*"]` lets every origin in; a list names origins
/// (`scheme://host[:port]`), compared by scheme, host and port (default ports filled in);
/// empty means the board's own pages: scheme `http`, and the host and port the request was
/// sent to (its `Host`). No `Origin` header (a client that is not a browser) is let in; an
/// `Origin` that is not a well-formed origin (`null`, bytes outside ASCII, a path) is not.
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    origin_allowed_on(headers, allowed, "http")
}

/// [`origin_allowed`] for a board whose own pages are served with `own_scheme`: `https` when
/// `[tls]` is on (then a `Host` without a port means 443), `http` otherwise.
pub fn origin_allowed_on(headers: &HeaderMap, allowed: &[String], own_scheme: &str) -> bool {
    if allowed.iter().any(|a| a.trim() == "*") {
        return true;
    }
    let mut values = headers.get_all(ORIGIN).iter();
    let Some(value) = values.next() else { return true };
    if values.next().is_some() {
        return false;
    }
    let Some(origin) = value.to_str().ok().and_then(|o| origin_parts(o.trim())) else { return false };
    if !allowed.is_empty() {
        return allowed.iter().any(|a| origin_parts(a.trim()).as_ref() == Some(&origin));
    }
    let Some(mut host) =
        headers.get(HOST).and_then(|h| h.to_str().ok()).and_then(|h| parse_host_port(h.trim()))
    else {
        return false;
    };
    host.port = Some(host.port.unwrap_or(if own_scheme == "https" { 443 } else { 80 }));
    origin.0 == own_scheme && origin.1 == host
}

/// Checks a config list of origins; the error names the first bad entry.
pub fn validate_origins(list: &[String]) -> Result<(), String> {
    match list.iter().find(|a| a.trim() != "*" && origin_parts(a.trim()).is_none()) {
        Some(bad) => Err(format!("{bad:?} is not an origin like \"http://board.local:8080\" or \"*\"")),
        None => Ok(()),
    }
}

/// Checks a config list of host names; the error names the first bad entry.
pub fn validate_hosts(list: &[String]) -> Result<(), String> {
    let ok = |a: &str| {
        a == "*" || parse_host_port(a.strip_prefix('.').unwrap_or(a)).is_some_and(|h| h.port.is_none())
    };
    match list.iter().find(|a| !ok(a.trim())) {
        Some(bad) => {
            Err(format!("{bad:?} is not a host name like \"board.lan\", a domain like \".lan\", or \"*\""))
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    fn host(value: &'static str, allowed: &[&str]) -> Result<(), HostRefusal> {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        let uri = Uri::from_static("/");
        check_host(
            Version::HTTP_11,
            &uri,
            &headers(&[("host", value.as_bytes())]),
            &allowed,
            "http://board-a.lan:8080",
        )
    }

    #[test]
    fn own_names_and_addresses_pass_others_do_not() {
        for ok in [
            "127.0.0.1:8080",
            "10.0.0.5",
            "[::1]:8080",
            "[fe80::1]",
            "localhost:8080",
            "LOCALHOST",
            "board-a.lan",
        ] {
            assert_eq!(host(ok, &[]), Ok(()), "{ok}");
        }
        let own = host_name().to_string();
        if !own.is_empty() {
            let leaked: &'static str = Box::leak(format!("{own}.local:8080").into_boxed_str());
            assert_eq!(host(leaked, &[]), Ok(()));
            let leaked: &'static str = Box::leak(format!("{own}.evil.example").into_boxed_str());
            assert_eq!(host(leaked, &[]), Err(HostRefusal::NotAllowed));
        }
        assert_eq!(host("evil.example:8080", &[]), Err(HostRefusal::NotAllowed));
        assert_eq!(host("localhost.evil.example", &[]), Err(HostRefusal::NotAllowed));
        assert_eq!(host("evil.example:8080", &["*"]), Ok(()));
        assert_eq!(host("chat.example.lan", &[".example.lan"]), Ok(()));
        assert_eq!(host("example.lan", &[".example.lan"]), Err(HostRefusal::NotAllowed));
        assert_eq!(host("xexample.lan", &[".example.lan"]), Err(HostRefusal::NotAllowed));
        assert_eq!(host("Board.Example.:80", &["board.example"]), Ok(()));
    }

    #[test]
    fn missing_duplicate_and_malformed_hosts() {
        let uri = Uri::from_static("/");
        let none = HeaderMap::new();
        assert_eq!(check_host(Version::HTTP_11, &uri, &none, &[], ""), Err(HostRefusal::Missing));
        assert_eq!(check_host(Version::HTTP_10, &uri, &none, &[], ""), Ok(()));
        let two = headers(&[("host", b"localhost"), ("host", b"localhost")]);
        assert_eq!(check_host(Version::HTTP_11, &uri, &two, &[], ""), Err(HostRefusal::Missing));
        for bad in ["", "a b", "user@localhost", "localhost:x", "localhost:99999", "[::1", "[zz]:1", "a/b"] {
            assert_eq!(host(bad, &["*"]), Err(HostRefusal::Malformed), "{bad:?}");
        }
        let raw = headers(&[("host", b"caf\xc3\xa9")]);
        assert_eq!(check_host(Version::HTTP_11, &uri, &raw, &[], ""), Err(HostRefusal::Malformed));
        // An absolute-form target's authority is what counts.
        let abs = Uri::from_static("http://evil.example/ws");
        let local = headers(&[("host", b"localhost")]);
        assert_eq!(check_host(Version::HTTP_11, &abs, &local, &[], ""), Err(HostRefusal::NotAllowed));
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let req = |origin: &'static [u8]| headers(&[("host", b"board.local:8080"), ("origin", origin)]);
        // Default: the board's own pages only.
        assert!(origin_allowed(&req(b"http://board.local:8080"), &[]));
        assert!(origin_allowed(&req(b"HTTP://Board.Local:8080/"), &[]));
        assert!(!origin_allowed(&req(b"https://board.local:8080"), &[]), "scheme");
        assert!(!origin_allowed(&req(b"http://board.local:8081"), &[]), "port");
        assert!(!origin_allowed(&req(b"http://board.local"), &[]), "default port 80");
        assert!(!origin_allowed(&req(b"http://evil.example"), &[]));
        for bad in [
            &b"null"[..],
            b"",
            b"board.local:8080",
            b"http://board.local:8080/x",
            b"http://u@board.local:8080",
            b"http://caf\xc3\xa9",
        ] {
            assert!(
                !origin_allowed(&headers(&[("host", b"board.local:8080"), ("origin", bad)]), &[]),
                "{bad:?}"
            );
        }
        let two = headers(&[
            ("host", b"board.local:8080"),
            ("origin", b"http://board.local:8080"),
            ("origin", b"http://board.local:8080"),
        ]);
        assert!(!origin_allowed(&two, &[]));
        assert!(origin_allowed(&headers(&[("host", b"board.local:8080")]), &[]), "no Origin: not a browser");
        let port80 = headers(&[("host", b"board.local"), ("origin", b"http://board.local:80")]);
        assert!(origin_allowed(&port80, &[]));
        // A board with [tls] on: its own pages are https, a Host without a port means 443.
        let tls = |host: &'static [u8], origin: &'static [u8]| headers(&[("host", host), ("origin", origin)]);
        assert!(origin_allowed_on(&tls(b"board.local:8443", b"https://board.local:8443"), &[], "https"));
        assert!(origin_allowed_on(&tls(b"board.local", b"https://board.local"), &[], "https"));
        assert!(
            !origin_allowed_on(&tls(b"board.local:8443", b"http://board.local:8443"), &[], "https"),
            "scheme"
        );
        assert!(!origin_allowed_on(&tls(b"board.local", b"https://board.local:80"), &[], "https"), "port");
        // A list: exact origins, default ports filled in; `*`: everyone.
        let list = vec!["https://chat.example".to_string(), "http://10.0.0.5:8080".to_string()];
        assert!(origin_allowed(&req(b"https://chat.example:443"), &list));
        assert!(!origin_allowed(&req(b"http://chat.example"), &list), "scheme");
        assert!(origin_allowed(&req(b"http://10.0.0.5:8080"), &list));
        assert!(!origin_allowed(&req(b"http://board.local:8080"), &list), "a list replaces the default");
        assert!(origin_allowed(&req(b"http://any.example"), &["*".to_string()]));
        assert!(origin_allowed(&req(b"null"), &["*".to_string()]));
    }

    #[test]
    fn config_lists_are_validated() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(validate_origins(&s(&["*", "http://a.b:1", "https://c"])).is_ok());
        assert!(validate_origins(&s(&["a.b"])).unwrap_err().contains("a.b"));
        assert!(validate_hosts(&s(&["*", "board.lan", ".lan", "10.0.0.5"])).is_ok());
        assert!(validate_hosts(&s(&["board.lan:8080"])).is_err());
        assert!(validate_hosts(&s(&["http://board"])).is_err());
    }
}
