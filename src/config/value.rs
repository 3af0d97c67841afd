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

/// `redis_url`: empty (local-only mode) or a `redis://`, `redis+unix://` or `unix://` URL.
pub fn redis_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    if text.is_empty() {
        return Ok(None);
    }
    if !(text.starts_with("redis://") || text.starts_with("redis+unix://") || text.starts_with("unix://")) {
        return Err(D::Error::custom(format!(
            "must start with redis:// (TLS is not supported), not {text:?}"
        )));
    }
    Ok(Some(text))
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

/// `log_level`: `error`, `warn`, `info`, `debug`, `trace` or `off`.
pub fn level<'de, D: Deserializer<'de>>(d: D) -> Result<log::LevelFilter, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        D::Error::custom(format!("must be one of error, warn, info, debug, trace, off; not {text:?}"))
    })
}

/// `auth.users`: `"login:passcode"` entries, split at the first `:`.
pub fn users<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    Vec::<String>::deserialize(d)?
        .into_iter()
        .map(|entry| match entry.split_once(':') {
            Some((login, pass)) if !login.is_empty() => Ok((login.to_string(), pass.to_string())),
            _ => Err(D::Error::custom(format!("entries must look like \"login:passcode\", not {entry:?}"))),
        })
        .collect()
}
