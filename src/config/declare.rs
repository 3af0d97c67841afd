//! The `settings!` macro that declares the config structs: each key once, as a serde field with
//! its type, its default value, its SIGHUP behaviour (`Live` or `Restart`) and its range beside
//! it. From that one declaration come the struct (`serde` with `deny_unknown_fields`, missing keys
//! taking their default), its `Default`, the list of keys that the environment variables, `--help`
//! and the reload log use, the lookup of one key, the range checks, and the reload diff.

/// What a SIGHUP reload does with a changed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The new value is used from the reload on (by new connections where it is read when a
    /// connection starts, e.g. `limits.max_frame_bytes`).
    Live,
    /// Read once at start-up: a reload that changes it keeps the running value and logs that a
    /// restart is needed.
    Restart,
}

impl Reload {
    pub fn as_str(self) -> &'static str {
        match self {
            Reload::Live => "live",
            Reload::Restart => "restart",
        }
    }
}

/// How the text of an environment variable or flag is read for a key, by the key's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawKind {
    /// A string key: the text as it is (or a quoted TOML string).
    Text,
    /// A list: `a,b` (or a TOML array).
    List,
    /// A boolean: `true`, `false`, `1` or `0`.
    Bool,
    /// Anything else (numbers): a TOML value.
    Toml,
}

/// The `RawKind` of a key's type.
pub trait KeyType {
    const RAW: RawKind;
}

macro_rules! key_type {
    ($kind:ident: $($ty:ty),*) => {$(
        impl KeyType for $ty {
            const RAW: RawKind = RawKind::$kind;
        }
    )*};
}
key_type!(Text: String, Option<String>, std::net::SocketAddr, log::LevelFilter);
key_type!(Bool: bool);
key_type!(Toml: u32, u64, usize);

impl<T> KeyType for Vec<T> {
    const RAW: RawKind = RawKind::List;
}

/// One key as declared: its dotted path (`limits.max_connections`), reload behaviour, range and
/// how its environment variable or flag is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub path: String,
    pub reload: Reload,
    /// Inclusive bounds of a whole-number key.
    pub range: Option<(i128, i128)>,
    pub raw: RawKind,
}

impl KeyInfo {
    /// The environment variable that sets this key: `STOMP_EDGE_` + the path in upper case with
    /// `.` as `_` (`STOMP_EDGE_LIMITS_MAX_CONNECTIONS`).
    pub fn env_var(&self) -> String {
        format!("STOMP_EDGE_{}", self.path.replace('.', "_").to_ascii_uppercase())
    }
}

/// A value out of its declared range: the key's path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    pub path: String,
    pub message: String,
}

/// What `settings!` implements for each struct; a section is a struct whose fields are keys.
pub trait Settings {
    /// Appends every key under `prefix` (`""` or `"limits."`).
    fn keys(prefix: &str, out: &mut Vec<KeyInfo>);
    /// The key at `path` below this struct (`max_connections`, or `limits.max_connections` from
    /// `Config`), named `prefix` + `path`; None for an unknown key or a section.
    fn find(path: &str, prefix: &str) -> Option<KeyInfo>;
    /// Whether `name` is one of this struct's `[section]`s.
    fn is_section(name: &str) -> bool;
    /// Checks every declared range.
    fn validate(&self, prefix: &str) -> Result<(), KeyError>;
    /// Appends the keys whose value differs in `new`.
    fn changes(&self, new: &Self, prefix: &str, out: &mut Vec<KeyInfo>);
    /// Puts back the running value of every `Restart` key.
    fn keep_restart_keys(&mut self, running: &Self);
}

/// Checks `value` against the inclusive range `min..=max` declared for `path`.
pub fn check_range(prefix: &str, name: &str, value: i128, min: i128, max: i128) -> Result<(), KeyError> {
    if value < min || value > max {
        return Err(KeyError {
            path: format!("{prefix}{name}"),
            message: format!("must be between {min} and {max}, not {value}"),
        });
    }
    Ok(())
}

/// Declares config structs. Each field is `name: Type = default, Live|Restart [min, max];` (the
/// range only for whole numbers) or `name: SectionType = Default::default(), Section;` for a
/// `[section]` table.
macro_rules! settings {
    ($(
        $(#[$smeta:meta])*
        pub struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                pub $field:ident : $ty:ty = $default:expr, $kind:ident $([$min:expr, $max:expr])?;
            )*
        }
    )*) => {$(
        $(#[$smeta])*
        #[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $( $field: $default, )* }
            }
        }

        impl $crate::config::declare::Settings for $name {
            fn keys(prefix: &str, out: &mut Vec<$crate::config::declare::KeyInfo>) {
                $( settings!(@key out, prefix, $field, $ty, $kind $([$min, $max])?); )*
            }

            fn find(path: &str, prefix: &str) -> Option<$crate::config::declare::KeyInfo> {
                $( settings!(@find path, prefix, $field, $ty, $kind $([$min, $max])?); )*
                None
            }

            fn is_section(name: &str) -> bool {
                let _ = name; // unused by a struct without sections
                false $( || settings!(@is_section name, $field, $kind) )*
            }

            fn validate(&self, prefix: &str) -> Result<(), $crate::config::declare::KeyError> {
                let _ = prefix; // unused by a struct without ranged keys
                $( settings!(@validate self, prefix, $field, $ty, $kind $([$min, $max])?); )*
                Ok(())
            }

            fn changes(&self, new: &Self, prefix: &str, out: &mut Vec<$crate::config::declare::KeyInfo>) {
                let mut all = Vec::new();
                <Self as $crate::config::declare::Settings>::keys(prefix, &mut all);
                $( settings!(@changes self, new, prefix, out, all, $field, $ty, $kind); )*
            }

            fn keep_restart_keys(&mut self, running: &Self) {
                let _ = running; // unused by a struct without `Restart` keys
                $( settings!(@keep self, running, $field, $ty, $kind); )*
            }
        }
    )*};

    (@key $out:ident, $prefix:ident, $field:ident, $ty:ty, Section) => {
        <$ty as $crate::config::declare::Settings>::keys(&format!("{}{}.", $prefix, stringify!($field)), $out)
    };
    (@key $out:ident, $prefix:ident, $field:ident, $ty:ty, $kind:ident $([$min:expr, $max:expr])?) => {
        $out.push($crate::config::declare::KeyInfo {
            path: format!("{}{}", $prefix, stringify!($field)),
            reload: $crate::config::declare::Reload::$kind,
            range: None $(.or(Some((($min) as i128, ($max) as i128))))?,
            raw: <$ty as $crate::config::declare::KeyType>::RAW,
        })
    };

    (@find $path:ident, $prefix:ident, $field:ident, $ty:ty, Section) => {
        if let Some(rest) = $path.strip_prefix(concat!(stringify!($field), ".")) {
            return <$ty as $crate::config::declare::Settings>::find(
                rest,
                &format!("{}{}.", $prefix, stringify!($field)),
            );
        }
    };
    (@find $path:ident, $prefix:ident, $field:ident, $ty:ty, $kind:ident $([$min:expr, $max:expr])?) => {
        if $path == stringify!($field) {
            let mut found = Vec::with_capacity(1);
            settings!(@key found, $prefix, $field, $ty, $kind $([$min, $max])?);
            return found.pop();
        }
    };

    (@is_section $name:ident, $field:ident, Section) => { $name == stringify!($field) };
    (@is_section $name:ident, $field:ident, $kind:ident) => { false };

    (@validate $s:ident, $prefix:ident, $field:ident, $ty:ty, Section) => {
        $crate::config::declare::Settings::validate(
            &$s.$field,
            &format!("{}{}.", $prefix, stringify!($field)),
        )?
    };
    (@validate $s:ident, $prefix:ident, $field:ident, $ty:ty, $kind:ident [$min:expr, $max:expr]) => {
        $crate::config::declare::check_range(
            $prefix,
            stringify!($field),
            $s.$field as i128,
            ($min) as i128,
            ($max) as i128,
        )?
    };
    (@validate $s:ident, $prefix:ident, $field:ident, $ty:ty, $kind:ident) => {};

    (@changes $s:ident, $new:ident, $prefix:ident, $out:ident, $all:ident, $field:ident, $ty:ty, Section) => {
        $crate::config::declare::Settings::changes(
            &$s.$field,
            &$new.$field,
            &format!("{}{}.", $prefix, stringify!($field)),
            $out,
        )
    };
    (@changes $s:ident, $new:ident, $prefix:ident, $out:ident, $all:ident, $field:ident, $ty:ty, $kind:ident) => {
        if $s.$field != $new.$field {
            let path = format!("{}{}", $prefix, stringify!($field));
            if let Some(key) = $all.iter().find(|k| k.path == path) {
                $out.push(key.clone());
            }
        }
    };

    (@keep $s:ident, $running:ident, $field:ident, $ty:ty, Section) => {
        $crate::config::declare::Settings::keep_restart_keys(&mut $s.$field, &$running.$field)
    };
    (@keep $s:ident, $running:ident, $field:ident, $ty:ty, Restart) => {
        $s.$field = $running.$field.clone()
    };
    (@keep $s:ident, $running:ident, $field:ident, $ty:ty, Live) => {};
}

pub(crate) use settings;
