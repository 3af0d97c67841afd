//! A reader for the small TOML subset the config file uses: `[section]` headers, `key = value`
//! lines with strings, integers, booleans and one-line string arrays, and `#` comments.
//! It keeps the line number of every value so that errors can point at it.

use std::fmt;

/// One value from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<String>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::List(items) => write!(f, "{items:?}"),
        }
    }
}

/// A `section.key = value` entry (the key of a top-level entry has no section part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Value,
    pub line: usize,
}

/// Parses the whole text; the first syntax error stops it, naming the line.
pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let mut section = String::new();
    let mut entries = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| format!("line {line_no}: section header must end with ']'"))?
                .trim();
            if name.is_empty() || !name.chars().all(is_key_char) {
                return Err(format!("line {line_no}: bad section name {name:?}"));
            }
            section = name.to_string();
            continue;
        }
        let (key, value) =
            line.split_once('=').ok_or_else(|| format!("line {line_no}: expected `key = value`"))?;
        let key = key.trim();
        if key.is_empty() || !key.chars().all(is_key_char) {
            return Err(format!("line {line_no}: bad key {key:?}"));
        }
        let value = parse_value(value.trim()).map_err(|e| format!("line {line_no}: {key}: {e}"))?;
        let key = if section.is_empty() { key.to_string() } else { format!("{section}.{key}") };
        entries.push(Entry { key, value, line: line_no });
    }
    Ok(entries)
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Cuts a `#` comment that is not inside a string.
fn strip_comment(line: &str) -> &str {
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            '\\' if in_string => escaped = !escaped,
            '"' if !escaped => in_string = !in_string,
            '#' if !in_string => return &line[..i],
            _ => escaped = false,
        }
        if c != '\\' {
            escaped = false;
        }
    }
    line
}

/// Parses a value as it appears after `=`; also used for environment variables and flags,
/// where a bare word is taken as a string.
pub fn parse_value(text: &str) -> Result<Value, String> {
    if text.starts_with('"') {
        let (s, rest) = parse_string(text)?;
        if !rest.trim().is_empty() {
            return Err(format!("unexpected text after string: {rest:?}"));
        }
        return Ok(Value::Str(s));
    }
    if let Some(inner) = text.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or("array must end with ']' on the same line")?;
        let mut items = Vec::new();
        let mut rest = inner.trim();
        while !rest.is_empty() {
            let (item, after) = parse_string(rest)?;
            items.push(item);
            rest = after.trim_start();
            if let Some(after_comma) = rest.strip_prefix(',') {
                rest = after_comma.trim_start();
            } else if !rest.is_empty() {
                return Err("array items must be strings separated by ','".into());
            }
        }
        return Ok(Value::List(items));
    }
    match text {
        "true" => return Ok(Value::Bool(true)),
        "false" => return Ok(Value::Bool(false)),
        "" => return Err("missing value".into()),
        _ => {}
    }
    let digits: String = text.chars().filter(|c| *c != '_').collect();
    if let Ok(n) = digits.parse::<i64>() {
        return Ok(Value::Int(n));
    }
    Err(format!("cannot read {text:?}: strings need double quotes"))
}

/// Reads a double-quoted string with `\" \\ \n \t` escapes; returns it and the text after it.
fn parse_string(text: &str) -> Result<(String, &str), String> {
    let body = text.strip_prefix('"').ok_or("expected a double-quoted string")?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &body[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '"')) => out.push('"'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                other => return Err(format!("bad escape in string: {:?}", other.map(|(_, c)| c))),
            },
            c => out.push(c),
        }
    }
    Err("string is not closed".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sections_values_and_comments() {
        let text =
            "a = 1 # one\n[s]\nb = \"x # not a comment\"\nc = true\nd = [\"p:q\", \"r\"]\ne = 131_072\n";
        let entries = parse(text).unwrap();
        let keys: Vec<_> = entries.iter().map(|e| (e.key.as_str(), e.value.clone(), e.line)).collect();
        assert_eq!(
            keys,
            vec![
                ("a", Value::Int(1), 1),
                ("s.b", Value::Str("x # not a comment".into()), 3),
                ("s.c", Value::Bool(true), 4),
                ("s.d", Value::List(vec!["p:q".into(), "r".into()]), 5),
                ("s.e", Value::Int(131072), 6),
            ]
        );
    }

    #[test]
    fn empty_list_and_escapes() {
        assert_eq!(parse_value("[]").unwrap(), Value::List(vec![]));
        assert_eq!(parse_value(r#""a\"b\\c""#).unwrap(), Value::Str("a\"b\\c".into()));
    }

    #[test]
    fn errors_name_the_line() {
        assert!(parse("x = 1\ny\n").unwrap_err().starts_with("line 2"));
        assert!(parse("[s\n").unwrap_err().contains("line 1"));
        assert!(parse("k = \"open\n").unwrap_err().contains("not closed"));
        assert!(parse("k = bare\n").unwrap_err().contains("double quotes"));
        assert!(parse("k = [1, 2]\n").is_err());
        assert!(parse("k = \"a\" b\n").is_err());
    }
}
