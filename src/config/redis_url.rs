//! The Redis URL of cluster mode, read once: one Redis server (`redis://`, `redis+unix://`,
//! `unix://`, handed to the `redis` crate as written), or a primary that Redis Sentinel manages,
//! in Lettuce's form (what Spring's Redis clients write):
//! `redis-sentinel://[[user:]password@]host[:port][,host[:port]…][/db][?sentinelMasterId=NAME][#NAME]`.
//! TLS as in Lettuce: `rediss://` for one server, `rediss-sentinel://` when the sentinels and
//! the data nodes all speak TLS; `tls.redis_ca_file` is the CA they are checked against.
//!
//! The user and password of a sentinel URL are those of the data nodes (the primary), as in
//! Lettuce; the sentinels' own password is the config key `cluster.sentinel_password`.

use std::fmt;

/// Port of a sentinel written without one (Redis Sentinel's default).
pub const SENTINEL_PORT: u16 = 26379;
/// Most sentinels one URL may name.
pub const MAX_SENTINELS: usize = 16;
/// Longest master name (`sentinel monitor NAME …`), in bytes.
pub const MAX_MASTER_NAME: usize = 64;

/// Where cluster mode finds Redis.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One Redis server; the URL as written (the `redis` crate reads it).
    Single(String),
    /// A Sentinel-managed primary.
    Sentinel(SentinelTarget),
}

/// A `redis-sentinel://` URL, read.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    /// The sentinels as (host, port), in the order written; asked in that order.
    pub sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the primary under (`sentinel monitor NAME host port q`).
    pub master: String,
    /// Database number on the data nodes (`/db`; 0 when left out).
    pub db: i64,
    /// ACL user for the data nodes (percent-decoded); None: the default user.
    pub username: Option<String>,
    /// Password for the data nodes (percent-decoded); None: no AUTH.
    pub password: Option<String>,
    /// `rediss-sentinel://`: the sentinels and the data nodes are reached over TLS.
    pub tls: bool,
}

impl RedisTarget {
    /// Reads a cluster-mode Redis URL. Errors say what is wrong with it (never echo the
    /// password).
    pub fn parse(url: &str) -> Result<RedisTarget, String> {
        if let Some(rest) = url.strip_prefix("redis-sentinel://") {
            return parse_sentinel(rest, false).map(RedisTarget::Sentinel);
        }
        if let Some(rest) = url.strip_prefix("rediss-sentinel://") {
            return parse_sentinel(rest, true).map(RedisTarget::Sentinel);
        }
        let schemes = ["redis://", "rediss://", "redis+unix://", "unix://"];
        if schemes.iter().any(|s| url.starts_with(s)) {
            return Ok(RedisTarget::Single(url.to_string()));
        }
        Err("must start with redis://, rediss:// (TLS), redis-sentinel:// or rediss-sentinel://".into())
    }
}

fn parse_sentinel(rest: &str, tls: bool) -> Result<SentinelTarget, String> {
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (rest, None),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (rest, None),
    };
    // The last '@' ends the user info (a password may contain '@' only percent-encoded, but
    // be lenient like the URL standard is).
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        // Lettuce: `password@` alone is a password.
        Some(u) => match u.split_once(':') {
            None => (None, Some(decode(u, "password")?)),
            Some((user, pass)) => {
                let user = if user.is_empty() { None } else { Some(decode(user, "user name")?) };
                (user, Some(decode(pass, "password")?))
            }
        },
    };
    let password = password.filter(|p| !p.is_empty());
    let mut sentinels = Vec::new();
    for node in hosts.split(',') {
        sentinels.push(host_port(node)?);
    }
    if sentinels.len() > MAX_SENTINELS {
        return Err(format!("names {} sentinels; at most {MAX_SENTINELS}", sentinels.len()));
    }
    let db = match path {
        None | Some("") => 0,
        Some(p) => p.parse::<i64>().ok().filter(|n| (0..=1_000_000).contains(n)).ok_or_else(|| {
            format!("database must be a number after the hosts (\"/0\"), not {:?}", truncate(p))
        })?,
    };
    let mut master = fragment.map(str::to_string);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sentinelMasterId", name)) => master = Some(decode(name, "sentinelMasterId")?),
            _ => {
                return Err(format!(
                    "unknown query parameter {:?} (only sentinelMasterId is read)",
                    truncate(pair.split('=').next().unwrap_or(""))
                ))
            }
        }
    }
    let master = master.filter(|m| !m.is_empty()).ok_or(
        "needs the master name the sentinels monitor, after '#' (redis-sentinel://h1:26379,h2:26379#mymaster)",
    )?;
    if master.len() > MAX_MASTER_NAME || master.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("master name must be 1-{MAX_MASTER_NAME} bytes without spaces"));
    }
    Ok(SentinelTarget { sentinels, master, db, username, password, tls })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn host_port(node: &str) -> Result<(String, u16), String> {
    let bad = || format!("sentinel address {:?} must be host[:port]", truncate(node));
    let (host, port) = if let Some(v6) = node.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad()),
        };
        if host.is_empty() || !host.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') {
            return Err(bad());
        }
        (host, port)
    } else {
        let (host, port) = match node.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (node, None),
        };
        if host.is_empty()
            || host.len() > 253
            || !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        {
            return Err(bad());
        }
        (host, port)
    };
    let port = match port {
        None => SENTINEL_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
    };
    Ok((host.to_string(), port))
}

fn decode(text: &str, what: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("{what} is not UTF-8 once percent-decoded"))
}

fn truncate(text: &str) -> String {
    text.chars().take(40).collect()
}

impl SentinelTarget {
    /// The sentinels as `host:port` strings, for logs and metrics labels.
    pub fn addresses(&self) -> Vec<String> {
        self.sentinels.iter().map(|(h, p)| address(h, *p)).collect()
    }
}

/// `host:port`, with brackets around an IPv6 host.
pub fn address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

// Debug output goes to logs: never the password.
impl fmt::Debug for SentinelTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelTarget")
            .field("sentinels", &self.addresses())
            .field("master", &self.master)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisTarget::Single(_) => write!(f, "Single(<url>)"),
            RedisTarget::Sentinel(s) => s.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentinel(url: &str) -> SentinelTarget {
        match RedisTarget::parse(url) {
            Ok(RedisTarget::Sentinel(s)) => s,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn lettuce_sentinel_urls() {
        let s = sentinel("redis-sentinel://h1:26379,h2:26380,h3#mymaster");
        assert_eq!(
            s.sentinels,
            vec![("h1".into(), 26379), ("h2".into(), 26380), ("h3".into(), SENTINEL_PORT)]
        );
        assert_eq!((s.master.as_str(), s.db, &s.username, &s.password), ("mymaster", 0, &None, &None));

        let s = sentinel("redis-sentinel://edge:p%40ss@10.0.0.2:26379,[::1]:26379/3#m1");
        assert_eq!(s.sentinels[1], ("::1".into(), 26379));
        assert_eq!(s.addresses(), vec!["10.0.0.2:26379", "[::1]:26379"]);
        assert_eq!((s.username.as_deref(), s.password.as_deref(), s.db), (Some("edge"), Some("p@ss"), 3));

        // `:password@` and Lettuce's bare `password@` are both a password alone.
        for url in ["redis-sentinel://:secret@h#m", "redis-sentinel://secret@h#m"] {
            let s = sentinel(url);
            assert_eq!((s.username, s.password.as_deref()), (None, Some("secret")));
        }
        let s = sentinel("redis-sentinel://h:1/2?sentinelMasterId=other");
        assert_eq!((s.master.as_str(), s.db, s.tls), ("other", 2, false));
        let s = sentinel("rediss-sentinel://h:1#m");
        assert_eq!((s.master.as_str(), s.tls), ("m", true));
        assert!(!format!("{:?}", sentinel("redis-sentinel://u:hunter2@h#m")).contains("hunter2"));
    }

    #[test]
    fn single_urls_pass_through() {
        for url in ["redis://127.0.0.1:6379", "redis://:pw@h/2", "unix:///run/redis.sock", "rediss://h:6380"]
        {
            assert_eq!(RedisTarget::parse(url), Ok(RedisTarget::Single(url.into())));
        }
    }

    #[test]
    fn bad_urls_say_why() {
        let err = |url: &str| RedisTarget::parse(url).unwrap_err();
        assert!(err("http://x").contains("redis-sentinel://"));
        assert!(err("redis-tls://x").contains("rediss://"));
        assert!(err("redis-sentinel://h1:26379").contains("master name"));
        assert!(err("redis-sentinel://h1:26379#").contains("master name"));
        assert!(err("redis-sentinel://h1:0#m").contains("host[:port]"));
        assert!(err("redis-sentinel://h1:x#m").contains("host[:port]"));
        assert!(err("redis-sentinel://,h#m").contains("host[:port]"));
        assert!(err("redis-sentinel://h bad#m").contains("host[:port]"));
        assert!(err("redis-sentinel://[::1#m").contains("host[:port]"));
        assert!(err("redis-sentinel://h/x#m").contains("database"));
        assert!(err("redis-sentinel://h?timeout=5s#m").contains("timeout"));
        assert!(err("redis-sentinel://h#my master").contains("master name"));
        let many = vec!["h"; MAX_SENTINELS + 1].join(",");
        assert!(err(&format!("redis-sentinel://{many}#m")).contains("at most"));
        assert!(!err("redis-sentinel://u:hunter2@h:x#m").contains("hunter2"));
    }
}
