//! Converting one configuration value to its typed form, with the range and shape checks of
//! its key; every error names the key. Values from the environment and flags arrive as
//! strings and are converted here too.

use std::net::SocketAddr;

use super::Value;

/// A value being set, with the key for error messages.
pub(super) struct Setting<'a> {
    pub(super) key: &'a str,
    pub(super) value: Value,
}

impl Setting<'_> {
    pub(super) fn text(&self) -> Result<&str, String> {
        match &self.value {
            Value::Str(s) => Ok(s),
            other => Err(format!("`{}` must be a string, not {other}", self.key)),
        }
    }

    pub(super) fn int(&self, min: u64, max: u64) -> Result<u64, String> {
        let n = match &self.value {
            Value::Int(n) => *n,
            Value::Str(s) => s
                .replace('_', "")
                .parse::<i64>()
                .map_err(|_| format!("`{}` must be a whole number, not {s:?}", self.key))?,
            other => return Err(format!("`{}` must be a whole number, not {other}", self.key)),
        };
        if n < min as i64 || n as u64 > max {
            return Err(format!("`{}` must be between {min} and {max}, not {n}", self.key));
        }
        Ok(n as u64)
    }

    pub(super) fn bool(&self) -> Result<bool, String> {
        match &self.value {
            Value::Bool(b) => Ok(*b),
            Value::Str(s) if s == "true" || s == "1" => Ok(true),
            Value::Str(s) if s == "false" || s == "0" => Ok(false),
            other => Err(format!("`{}` must be true or false, not {other}", self.key)),
        }
    }

    pub(super) fn list(&self) -> Result<Vec<String>, String> {
        match &self.value {
            Value::List(items) => Ok(items.clone()),
            Value::Str(s) if s.is_empty() => Ok(Vec::new()),
            Value::Str(s) => {
                Ok(s.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect())
            }
            other => Err(format!("`{}` must be a list of strings, not {other}", self.key)),
        }
    }

    pub(super) fn addr(&self) -> Result<SocketAddr, String> {
        let text = self.text()?;
        text.parse().map_err(|_| format!("`{}` must be an address like 0.0.0.0:8080, not {text:?}", self.key))
    }

    pub(super) fn server_id(&self) -> Result<String, String> {
        let text = self.text()?;
        if text.len() > 64 || !text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!(
                "`{}` must be at most 64 characters of [A-Za-z0-9_-], not {text:?}",
                self.key
            ));
        }
        Ok(text.to_string())
    }

    pub(super) fn redis_url(&self) -> Result<Option<String>, String> {
        let text = self.text()?;
        if text.is_empty() {
            return Ok(None);
        }
        super::RedisTarget::parse(text).map_err(|e| format!("`{}` {e}", self.key))?;
        Ok(Some(text.to_string()))
    }

    /// A user name or password: at most 256 bytes, no control characters (never echoed).
    pub(super) fn secret(&self) -> Result<String, String> {
        let text = self.text()?;
        if text.len() > 256 || text.chars().any(char::is_control) {
            return Err(format!("`{}` must be at most 256 bytes without control characters", self.key));
        }
        Ok(text.to_string())
    }

    /// An `http://` or `https://` URL without a path (a trailing `/` is dropped), or empty.
    pub(super) fn http_url(&self) -> Result<String, String> {
        let text = self.text()?.trim_end_matches('/');
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
            return Err(format!(
                "`{}` must be empty or a URL like http://10.0.0.7:8080 (scheme, host, port; no path), not {text:?}",
                self.key
            ));
        }
        Ok(text.to_string())
    }

    pub(super) fn prefix(&self) -> Result<String, String> {
        let text = self.text()?;
        if text.len() > 32 || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("`{}` must be at most 32 characters without spaces, not {text:?}", self.key));
        }
        Ok(text.to_string())
    }

    pub(super) fn level(&self) -> Result<log::LevelFilter, String> {
        let text = self.text()?;
        text.parse().map_err(|_| {
            format!("`{}` must be one of error, warn, info, debug, trace, off; not {text:?}", self.key)
        })
    }

    pub(super) fn users(&self) -> Result<Vec<(String, String)>, String> {
        self.list()?
            .into_iter()
            .map(|entry| match entry.split_once(':') {
                Some((login, pass)) if !login.is_empty() => Ok((login.to_string(), pass.to_string())),
                _ => Err(format!("`{}` entries must look like \"login:passcode\", not {entry:?}", self.key)),
            })
            .collect()
    }
}
