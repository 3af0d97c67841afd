//! Stacking the configuration sources into one TOML document before it becomes a `Config`:
//! the `--config` file, then `STOMP_EDGE_*` variables, then flags. Each later source replaces
//! single keys of the earlier ones. The document holds only the keys these sources set; every
//! other key takes its declared default when it is deserialized (`#[serde(default)]`), so a
//! start reads and checks only what was set (under qemu, where the first run of any code costs
//! its translation, reading all 65 keys of the default file cost a third of the start). The
//! document keeps where every value came from, so that an error names the key and its file
//! line, variable or flag.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

use super::declare::{KeyError, RawKind, Settings};
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

/// The layered document: the keys the sources set, later ones over earlier ones.
pub(super) struct Layers<'a> {
    root: DeTable<'a>,
    /// The file text, for turning byte offsets into line numbers.
    text: &'a str,
    /// `section.key` (or `key`) → where its current value came from, for non-default values.
    origins: HashMap<String, Origin>,
}

impl<'a> Layers<'a> {
    /// No key set: every key at its default.
    pub(super) fn new() -> Layers<'a> {
        Layers { root: DeTable::new(), text: "", origins: HashMap::new() }
    }

    /// The table of `[section]` in the document, made empty if no source set a key of it yet
    /// (None: a source set the section's name to something else than a table).
    fn section(&mut self, name: &str) -> Option<&mut DeTable<'a>> {
        if !self.root.contains_key(name) {
            let key = Spanned::new(0..0, Cow::Owned(name.to_string()));
            self.root.insert(key, Spanned::new(0..0, DeValue::Table(DeTable::new())));
        }
        match self.root.get_mut(name).map(|v| v.get_mut()) {
            Some(DeValue::Table(table)) => Some(table),
            _ => None,
        }
    }

    /// Puts every key of a config file over the current values. `name` is used in errors.
    /// A key whose value is written exactly as in the default file (`DEFAULT_FILE`, which a
    /// unit test holds equal to the declared defaults) is its default already and is left out,
    /// so a copy of the shipped file with a few keys changed costs those keys only, and the
    /// shipped file itself, unedited, is not even parsed.
    pub(super) fn apply_file(&mut self, name: &str, text: &'a str) -> Result<(), String> {
        self.apply_file_keys(name, text, Shipped::LeftOut)
    }

    /// `apply_file`, with every key read (`Shipped::Read`: how the tests check the default file).
    pub(super) fn apply_file_keys(
        &mut self,
        name: &str,
        text: &'a str,
        shipped: Shipped,
    ) -> Result<(), String> {
        if shipped == Shipped::LeftOut && text == DEFAULT_FILE {
            return Ok(()); // every key as shipped
        }
        let doc = DeTable::parse(text).map_err(|e| at_line(name, text, e.span(), e.message()))?;
        self.text = text;
        let defaults = match (shipped, DeTable::parse(DEFAULT_FILE)) {
            (Shipped::LeftOut, Ok(defaults)) => defaults.into_inner(),
            // Read, or a default file that does not parse (a build defect the tests catch).
            _ => DeTable::new(),
        };
        // Whether `value`, set at `section.key` (or top-level `key`), is written as shipped.
        let as_shipped = |section: Option<&str>, key: &str, value: &Spanned<DeValue<'_>>| {
            let table = match section.map(|s| defaults.get(s).map(Spanned::get_ref)) {
                None => Some(&defaults),
                Some(Some(DeValue::Table(table))) => Some(table),
                Some(_) => None,
            };
            table.and_then(|t| t.get(key)).is_some_and(|shipped| {
                !matches!(shipped.get_ref(), DeValue::Table(_))
                    && text.get(value.span()) == DEFAULT_FILE.get(shipped.span())
            })
        };
        for (key, value) in doc.into_inner() {
            let key_span = key.span();
            let key_name = key.get_ref().to_string();
            let is_section = Config::is_section(&key_name);
            if is_section && matches!(value.get_ref(), DeValue::Table(_)) {
                let DeValue::Table(entries) = value.into_inner() else { continue };
                for (inner, inner_value) in entries {
                    if as_shipped(Some(&key_name), inner.get_ref(), &inner_value) {
                        continue;
                    }
                    let path = format!("{key_name}.{}", inner.get_ref());
                    if Config::find(&path).is_none() {
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
                    match self.section(&key_name) {
                        Some(section) => section.insert(inner, inner_value),
                        None => continue,
                    };
                }
            } else if is_section {
                // Not a table: refused here, as serde would fill the section's keys from an
                // array by position (`#[serde(default)]` takes the rest as defaults).
                return Err(at_line(
                    name,
                    text,
                    Some(value.span()),
                    &format!("`{key_name}` must be a table (`[{key_name}]`)"),
                ));
            } else if as_shipped(None, &key_name, &value) {
                continue;
            } else if Config::find(&key_name).is_some() {
                let origin = Origin::File { name: name.into(), key: key_span, value: value.span() };
                self.origins.insert(key_name, origin);
                self.root.insert(key, value);
            } else {
                return Err(at_line(name, text, Some(key_span), &format!("unknown key `{key_name}`")));
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
        let Some(info) = Config::find(path) else { return Err(format!("{source}: unknown key `{path}`")) };
        let value = raw_value(info.raw, raw).map_err(|e| format!("{source}: `{path}`: {e}"))?;
        let (section, key) = match path.split_once('.') {
            Some((section, key)) => (Some(section), key),
            None => (None, path),
        };
        let table = match section {
            Some(section) => match self.section(section) {
                Some(table) => table,
                None => return Err(format!("{source}: unknown key `{path}`")),
            },
            None => &mut self.root,
        };
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
            None => format!("default: {text}"),
        }
    }
}

/// What `Layers::apply_file_keys` does with a key written exactly as in the default file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shipped {
    LeftOut,
    #[cfg(test)]
    Read,
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

/// Reads an environment or flag value for a key read as `kind`.
fn raw_value(kind: RawKind, raw: &str) -> Result<DeValue<'_>, String> {
    let trimmed = raw.trim();
    let as_toml = || {
        DeValue::parse(trimmed)
            .map(Spanned::into_inner)
            .map_err(|_| format!("cannot read {raw:?} (write it as in the config file)"))
    };
    match kind {
        RawKind::Text if trimmed.starts_with(['"', '\'']) => as_toml(),
        RawKind::Text => Ok(DeValue::String(Cow::Borrowed(raw))),
        RawKind::List if trimmed.starts_with('[') => as_toml(),
        RawKind::List => {
            let mut items = DeArray::new();
            for item in trimmed.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                items.push(Spanned::new(0..0, DeValue::String(Cow::Borrowed(item))));
            }
            Ok(DeValue::Array(items))
        }
        RawKind::Bool if trimmed == "1" => Ok(DeValue::Boolean(true)),
        RawKind::Bool if trimmed == "0" => Ok(DeValue::Boolean(false)),
        _ => as_toml(),
    }
}
