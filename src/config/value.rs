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
pub fn users<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    Vec::<String>::deserialize(d)?
        .into_iter()
        .map(|entry| match entry.split_once(':') {
            Some((login, pass)) if !login.is_empty() => {
                if pass.starts_with(crate::auth::HASH_PREFIX) {
                    crate::auth::check_hash(pass)
                        .map_err(|e| D::Error::custom(format!("the passcode of {login:?} is {e}")))?;
                }
                Ok((login.to_string(), pass.to_string()))
            }
            _ => Err(D::Error::custom(format!("entries must look like \"login:passcode\", not {entry:?}"))),
        })
        .collect()
}

/// `http.allowed_hosts`: host names, `".domain"` suffixes or `"*"` (`crate::access`).
pub fn hosts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    crate::access::validate_hosts(&list).map_err(D::Error::custom)?;
    Ok(list)
}

/// `websocket.allowed_origins`: origins (`scheme://host[:port]`) or `"*"` (`crate::access`).
pub fn origins<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    crate::access::validate_origins(&list).map_err(D::Error::custom)?;
    Ok(list)
}

/// `http.trusted_proxies`, `http.metrics_open_to`: addresses or CIDR networks
/// (`crate::forwarded::Network`).
pub fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<crate::forwarded::Network>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    crate::forwarded::parse_list(&list).map_err(D::Error::custom)
}
