//! Stacking the configuration sources into one TOML document before it becomes a `Config`:
//! the embedded default file, then the `--config` file, then `STOMP_EDGE_*` variables, then
//! flags. Each later source replaces single keys of the earlier ones. The document keeps where
//! every value came from, so that an error names the key and its file line, variable or flag.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

use super::declare::{KeyError, Settings};
use super::{Config, DEFAULT_FILE};

/// Where a value was set, for error messages.
#[derive(Debug, Clone)]
enum Origin {
    /// A config file and the byte range of the key and value in its text.
    File { name: String, key: std::ops::Range<usize>, value: std::ops::Range<usize> },
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
}

/// The layered document: the default file with the later sources' keys put over it.
pub(super) struct Layers<'a> {
    root: DeTable<'a>,
    /// The file text, for turning byte offsets into line numbers.
    text: &'a str,
    /// `section.key` (or `key`) → where its current value came from, for non-default values.
    origins: HashMap<String, Origin>,
}

impl<'a> Layers<'a> {
    /// The embedded default file alone.
    pub(super) fn embedded() -> Layers<'a> {
        // The embedded file is checked by a unit test; a failure here is a build defect.
        let root = match DeTable::parse(DEFAULT_FILE) {
            Ok(doc) => doc.into_inner(),
            Err(e) => panic!("embedded default config is not TOML: {e}"),
        };
        Layers { root, text: "", origins: HashMap::new() }
    }

    /// Puts every key of a config file over the current values. `name` is used in errors.
    pub(super) fn apply_file(&mut self, name: &str, text: &'a str) -> Result<(), String> {
        let doc = DeTable::parse(text).map_err(|e| at_line(name, text, e.span(), e.message()))?;
        self.text = text;
        for (key, value) in doc.into_inner() {
            let key_span = key.span();
            let key_name = key.get_ref().to_string();
            let current = self.root.get_mut(key_name.as_str());
            match (current.map(|v| v.get_mut()), value.get_ref()) {
                (Some(DeValue::Table(section)), DeValue::Table(_)) => {
                    let DeValue::Table(entries) = value.into_inner() else { continue };
                    for (inner, inner_value) in entries {
                        let path = format!("{key_name}.{}", inner.get_ref());
                        if !section.contains_key(inner.get_ref().as_ref()) {
                            return Err(at_line(
                                name,
                                text,
                                Some(inner.span()),
                                &format!("unknown key `{path}`"),
                            ));
                        }
                        let origin =
                            Origin::File { name: name.into(), key: inner.span(), value: inner_value.span() };
                        self.origins.insert(path, origin);
                        section.insert(inner, inner_value);
                    }
                }
                (Some(_), _) => {
                    let origin = Origin::File { name: name.into(), key: key_span, value: value.span() };
                    self.origins.insert(key_name, origin);
                    self.root.insert(key, value);
                }
                (None, _) => {
                    return Err(at_line(name, text, Some(key_span), &format!("unknown key `{key_name}`")));
                }
            }
        }
        match self.check() {
            Ok(_) => Ok(()),
            Err(Invalid::Serde(e)) => Err(self.file_error(name, &e)),
            Err(Invalid::Range(e)) => Err(self.key_error(&e)),
        }
    }

    /// Sets one key from an environment variable or a flag. `raw` is written as in the file
    /// (`"x"`, `[..]`, `42`) or bare: a bare word for a string key, `a,b` for a list key.
    pub(super) fn apply_raw(&mut self, path: &str, raw: &'a str, source: String) -> Result<(), String> {
        let (section, key) = match path.split_once('.') {
            Some((section, key)) => (Some(section), key),
            None => (None, path),
        };
        let table = match section {
            Some(section) => match self.root.get_mut(section).map(|v| v.get_mut()) {
                Some(DeValue::Table(table)) => table,
                _ => return Err(format!("{source}: unknown key `{path}`")),
            },
            None => &mut self.root,
        };
        let Some(default) = table.get(key) else { return Err(format!("{source}: unknown key `{path}`")) };
        let value = raw_value(default.get_ref(), raw).map_err(|e| format!("{source}: `{path}`: {e}"))?;
        table.insert(Spanned::new(0..0, Cow::Owned(key.to_string())), Spanned::new(0..0, value));
        let origin =
            if source.starts_with("--") { Origin::Flag(source.clone()) } else { Origin::Env(source.clone()) };
        self.origins.insert(path.to_string(), origin);
        match self.check() {
            Ok(_) => Ok(()),
            Err(Invalid::Serde(e)) => Err(format!("{source}: `{path}`: {}", e.message())),
            Err(Invalid::Range(e)) => Err(self.key_error(&e)),
        }
    }

    /// The typed configuration, with every declared range checked.
    pub(super) fn build(&self) -> Result<Config, String> {
        self.check().map_err(|e| match e {
            Invalid::Serde(e) => e.message().to_string(),
            Invalid::Range(e) => self.key_error(&e),
        })
    }

    fn check(&self) -> Result<Config, Invalid> {
        let doc = toml::de::Deserializer::from(Spanned::new(0..0, self.root.clone()));
        let config = Config::deserialize(doc).map_err(Invalid::Serde)?;
        config.validate("").map_err(Invalid::Range)?;
        Ok(config)
    }

    /// A deserialization error of a file: its span is in that file's text (the defaults are
    /// valid), so it names the line and, from the span, the key.
    fn file_error(&self, name: &str, e: &toml::de::Error) -> String {
        let span = e.span();
        let path = span.as_ref().and_then(|span| {
            self.origins.iter().find_map(|(path, origin)| match origin {
                Origin::File { key, value, .. }
                    if (value.start <= span.start && span.end <= value.end) || key.start == span.start =>
                {
                    Some(path)
                }
                _ => None,
            })
        });
        match path {
            Some(path) => at_line(name, self.text, span, &format!("`{path}`: {}", e.message())),
            None => at_line(name, self.text, span, e.message()),
        }
    }

    /// A range error, placed at the key's file line, variable or flag.
    fn key_error(&self, e: &KeyError) -> String {
        let text = format!("`{}` {}", e.path, e.message);
        match self.origins.get(&e.path) {
            Some(Origin::File { name, value, .. }) => at_line(name, self.text, Some(value.clone()), &text),
            Some(Origin::Env(source) | Origin::Flag(source)) => format!("{source}: {text}"),
            None => format!("embedded default: {text}"),
        }
    }
}

/// Why the document is not a valid `Config`.
enum Invalid {
    /// A value of the wrong type or shape (serde).
    Serde(toml::de::Error),
    /// A whole number out of its declared range.
    Range(KeyError),
}

/// `name: line N: message`, the line counted from the byte offset `span.start` in `text`.
fn at_line(name: &str, text: &str, span: Option<std::ops::Range<usize>>, message: &str) -> String {
    match span {
        Some(span) => {
            let end = span.start.min(text.len());
            let line = text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1;
            format!("{name}: line {line}: {message}")
        }
        None => format!("{name}: {message}"),
    }
}

/// Reads an environment or flag value for a key whose default is `default`.
fn raw_value<'a>(default: &DeValue<'_>, raw: &'a str) -> Result<DeValue<'a>, String> {
    let trimmed = raw.trim();
    let as_toml = || {
        DeValue::parse(trimmed)
            .map(Spanned::into_inner)
            .map_err(|_| format!("cannot read {raw:?} (write it as in the config file)"))
    };
    match default {
        DeValue::String(_) if trimmed.starts_with(['"', '\'']) => as_toml(),
        DeValue::String(_) => Ok(DeValue::String(Cow::Borrowed(raw))),
        DeValue::Array(_) if trimmed.starts_with('[') => as_toml(),
        DeValue::Array(_) => {
            let mut items = DeArray::new();
            for item in trimmed.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                items.push(Spanned::new(0..0, DeValue::String(Cow::Borrowed(item))));
            }
            Ok(DeValue::Array(items))
        }
        DeValue::Boolean(_) if trimmed == "1" => Ok(DeValue::Boolean(true)),
        DeValue::Boolean(_) if trimmed == "0" => Ok(DeValue::Boolean(false)),
        _ => as_toml(),
    }
}
