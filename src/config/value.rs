//! Typed readers for the keys whose value is more than a number, a boolean or a list of
//! strings: addresses, names, URLs, the log level and `login:passcode` accounts. Each is a
//! serde `deserialize_with` function named in the key's declaration; its error says what the
//! value must look like (the loader adds the key and the line).

use std::net::SocketAddr;

use serde::de::Error;
use serde::{Deserialize, Deserializer};

/// `listen`: an `ADDR:PORT` socket address.
pub fn addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| D::Error::custom(format!("must be an address like 0.0.0.0:8080, not {text:?}")))
}

/// `stomp.server_owned_prefixes`: at most 16 destination prefixes, each starting and ending
/// with `/`.
pub fn prefixes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    if list.len() > 16 {
        return Err(D::Error::custom("may hold at most 16 prefixes"));
    }
    if let Some(bad) = list.iter().find(|p| !p.starts_with('/') || !p.ends_with('/') || p.len() < 2) {
        return Err(D::Error::custom(format!("{bad:?} must start and end with '/', like \"/topic/room/\"")));
    }
    Ok(list)
}

/// `server_id`: at most 64 characters of `[A-Za-z0-9_-]`; empty means "from the host name".
pub fn server_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    if text.len() > 64 || !text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(D::Error::custom(format!(
            "must be at most 64 characters of [A-Za-z0-9_-], not {text:?}"
        )));
    }
    Ok(text)
}

/// `redis_url`: empty (local-only mode), a `redis://`, `rediss://`, `redis+unix://` or `unix://`
/// URL, or a `redis-sentinel://…#MASTER` (`rediss-sentinel://`) URL (read by `RedisTarget::parse`).
pub fn redis_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    if text.is_empty() {
        return Ok(None);
    }
    super::RedisTarget::parse(&text).map_err(D::Error::custom)?;
    Ok(Some(text))
}

/// `tls.cert_file` and friends: empty, or a path of at most 4096 bytes without control
/// characters (whether the file is there and good is checked when it is read).
pub fn file_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    if text.len() > 4096 || text.chars().any(char::is_control) {
        return Err(D::Error::custom("must be a path of at most 4096 bytes without control characters"));
    }
    Ok(text)
}

/// `cluster.sentinel_username`/`sentinel_password`: at most 256 bytes, no control characters
/// (the value is never echoed).
pub fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    if text.len() > 256 || text.chars().any(char::is_control) {
        return Err(D::Error::custom("must be at most 256 bytes without control characters"));
    }
    Ok(text)
}

/// `cluster.advertise_url`: empty, or an `http://` or `https://` URL without a path (a trailing
/// `/` is dropped).
pub fn http_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    let text = text.trim_end_matches('/');
    let rest = text.strip_prefix("http://").or_else(|| text.strip_prefix("https://"));
    let ok = match rest {
        None => text.is_empty(),
        Some(host) => {
            !host.is_empty()
                && text.len() <= 256
                && !host.contains('/')
                && host.chars().all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '<' | '>' | '\\'))
        }
    };
    if !ok {
        return Err(D::Error::custom(format!(
            "must be empty or a URL like http://10.0.0.7:8080 (scheme, host, port; no path), not {text:?}"
        )));
    }
    Ok(text.to_string())
}

/// `cluster.key_prefix`: at most 32 characters, no spaces or control characters.
pub fn prefix<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    if text.len() > 32 || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(D::Error::custom(format!("must be at most 32 characters without spaces, not {text:?}")));
    }
    Ok(text)
}

/// `streams.prefixes`: a list of `/topic/...` destination prefixes.
pub fn topic_prefixes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    match list.iter().find(|p| !p.starts_with("/topic/")) {
        Some(bad) => Err(D::Error::custom(format!("entries must start with /topic/, not {bad:?}"))),
        None => Ok(list),
    }
}

/// `log_level`: `error`, `warn`, `info`, `debug`, `trace` or `off`.
pub fn level<'de, D: Deserializer<'de>>(d: D) -> Result<log::LevelFilter, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        D::Error::custom(format!("must be one of error, warn, info, debug, trace, off; not {text:?}"))
    })
}

/// `auth.users`: `"login:passcode"` entries, split at the first `:`; a passcode starting with
/// `$argon2` must be an Argon2 hash the server can verify (`stomp-edge --hash-passcode`).
/// Refused, naming the login: an empty passcode (anyone could log in with nothing), a hash of
/// another kind (`$2b$…`, `$6$…`: it would be taken as a plain passcode, letter for letter),
/// and a login listed twice (both passcodes would let it in).
pub fn users<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    let mut users: Vec<(String, String)> = Vec::new();
    for entry in Vec::<String>::deserialize(d)? {
        let Some((login, pass)) = entry.split_once(':').filter(|(login, _)| !login.is_empty()) else {
            return Err(D::Error::custom(format!(
                "entries must look like \"login:passcode\", not {entry:?}"
            )));
        };
        if pass.is_empty() {
            return Err(D::Error::custom(format!("the passcode of {login:?} is empty")));
        }
        if pass.starts_with(crate::auth::HASH_PREFIX) {
            crate::auth::check_hash(pass)
                .map_err(|e| D::Error::custom(format!("the passcode of {login:?} is {e}")))?;
        } else if let Some(scheme) = other_hash_scheme(pass) {
            return Err(D::Error::custom(format!(
                "the passcode of {login:?} looks like a {scheme:?} password hash, which this server cannot \
                 check (it would be taken as a plain passcode); hash it with stomp-edge --hash-passcode"
            )));
        }
        if users.iter().any(|(known, _)| known == login) {
            return Err(D::Error::custom(format!("the login {login:?} is listed twice")));
        }
        users.push((login.to_string(), pass.to_string()));
    }
    Ok(users)
}

/// The scheme of a PHC / crypt(3)-style hash (`$2b$12$…` → `2b`), for a passcode that is one.
fn other_hash_scheme(pass: &str) -> Option<&str> {
    let (scheme, rest) = pass.strip_prefix('$')?.split_once('$')?;
    let looks_like_scheme = !scheme.is_empty()
        && scheme.len() <= 16
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    (looks_like_scheme && !rest.is_empty()).then_some(scheme)
}

/// `http.allowed_hosts`: host names, `".domain"` suffixes or `"*"` (`crate::auth::access`).
pub fn hosts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    crate::auth::access::validate_hosts(&list).map_err(D::Error::custom)?;
    Ok(list)
}

/// `websocket.allowed_origins`: origins (`scheme://host[:port]`) or `"*"` (`crate::auth::access`).
pub fn origins<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    crate::auth::access::validate_origins(&list).map_err(D::Error::custom)?;
    Ok(list)
}

/// `http.trusted_proxies`, `http.metrics_open_to`: addresses or CIDR networks
/// (`crate::transport::forwarded::Network`).
pub fn networks<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<crate::transport::forwarded::Network>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    crate::transport::forwarded::parse_list(&list).map_err(D::Error::custom)
}
