//! Checking a value against its [`Kind`], and reading typed values out of the flat map.

use super::flatten::FlatMap;
use super::schema::{self, Kind};
use crate::error::{ModelError, Result};
use std::path::{Path, PathBuf};

/// How a value is named in an error message: its TOML type and the value itself.
pub fn describe_found(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("string \"{s}\""),
        toml::Value::Integer(i) => format!("integer {i}"),
        toml::Value::Float(f) => format!("float {f}"),
        toml::Value::Boolean(b) => format!("boolean {b}"),
        toml::Value::Datetime(d) => format!("datetime {d}"),
        toml::Value::Array(_) => "an array".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

fn mismatch(key: &str, kind: Kind, value: &toml::Value) -> ModelError {
    ModelError::config(
        key,
        format!(
            "settings key `{key}` expects {}, found {}",
            kind.describe(),
            describe_found(value)
        ),
    )
    .with("expected", kind.describe())
    .with("found", describe_found(value))
}

/// Returns an error naming the key, what was expected and what was found, unless `value`
/// fits `kind`.
pub fn check(key: &str, kind: Kind, value: &toml::Value) -> Result<()> {
    let fits = match (kind, value) {
        (Kind::Bool, toml::Value::Boolean(_)) => true,
        (Kind::Int { min }, toml::Value::Integer(i)) => *i >= min,
        (Kind::Float { min, max }, toml::Value::Integer(i)) => (min..=max).contains(&(*i as f64)),
        (Kind::Float { min, max }, toml::Value::Float(f)) => (min..=max).contains(f),
        (Kind::Choice(choices), toml::Value::String(s)) => choices.contains(&s.as_str()),
        (Kind::Str | Kind::Path, toml::Value::String(_)) => true,
        (Kind::Device, toml::Value::String(s)) => parse_device(s).is_some(),
        (Kind::PathList, toml::Value::Array(items)) => items.iter().all(|i| i.is_str()),
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(mismatch(key, kind, value))
    }
}

/// Parses an environment variable's text into a value of `kind`.
pub fn from_env_text(key: &str, var: &str, kind: Kind, text: &str) -> Result<toml::Value> {
    let parsed = match kind {
        Kind::Bool => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Some(toml::Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Some(toml::Value::Boolean(false)),
            _ => None,
        },
        Kind::Int { .. } => text.trim().parse::<i64>().ok().map(toml::Value::Integer),
        Kind::Float { .. } => text.trim().parse::<f64>().ok().map(toml::Value::Float),
        Kind::Choice(_) | Kind::Str | Kind::Path | Kind::Device => {
            Some(toml::Value::String(text.to_owned()))
        }
        Kind::PathList => Some(toml::Value::Array(
            std::env::split_paths(text)
                .filter(|p| !p.as_os_str().is_empty())
                .map(|p| toml::Value::String(p.display().to_string()))
                .collect(),
        )),
    };
    let value = parsed.ok_or_else(|| {
        ModelError::config(
            key,
            format!(
                "environment variable {var} sets `{key}`, which expects {}, but its value is \"{text}\"",
                kind.describe()
            ),
        )
        .with("variable", var)
        .with("expected", kind.describe())
        .with("found", text)
    })?;
    check(key, kind, &value).map_err(|e| e.with("variable", var))?;
    Ok(value)
}

/// Parses a value for a key the schema does not type (a backend option) from its
/// environment text: as the same TOML type as the value it replaces.
pub fn option_from_env_text(
    key: &str,
    var: &str,
    current: &toml::Value,
    text: &str,
) -> Result<toml::Value> {
    let kind = match current {
        toml::Value::Boolean(_) => Kind::Bool,
        toml::Value::Integer(_) => Kind::Int { min: i64::MIN },
        toml::Value::Float(_) => Kind::Float {
            min: f64::MIN,
            max: f64::MAX,
        },
        _ => Kind::Str,
    };
    from_env_text(key, var, kind, text)
}

/// A device request as written in settings: `None` when it is not one.
pub fn parse_device(text: &str) -> Option<crate::device::DeviceRequest> {
    use crate::device::DeviceRequest;
    match text {
        "auto" => Some(DeviceRequest::Auto),
        "cpu" => Some(DeviceRequest::Cpu),
        "gpu" | "cuda" => Some(DeviceRequest::Cuda(None)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .map(|n| DeviceRequest::Cuda(Some(n))),
    }
}

/// Typed access to a validated flat map, falling back to the schema's defaults.
pub struct Reader<'a> {
    /// The validated values.
    pub flat: &'a FlatMap,
    /// Folder that relative paths resolve against.
    pub base_dir: &'a Path,
}

impl Reader<'_> {
    fn value(&self, key: &str) -> Option<&toml::Value> {
        self.flat.get(key)
    }

    fn default_of(key: &str) -> toml::Value {
        let def = schema::global(key)
            .or_else(|| key.rsplit('.').next().and_then(schema::model_key))
            .map(|d| d.default)
            .unwrap_or("");
        format!("v = {def}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(String::new()))
    }

    fn get(&self, key: &str) -> toml::Value {
        self.value(key)
            .cloned()
            .unwrap_or_else(|| Self::default_of(key))
    }

    /// A boolean key.
    pub fn bool(&self, key: &str) -> bool {
        self.get(key).as_bool().unwrap_or(false)
    }

    /// An integer key (validated non-negative where the schema says so).
    pub fn u64(&self, key: &str) -> u64 {
        self.get(key).as_integer().unwrap_or(0).max(0) as u64
    }

    /// A number key.
    pub fn f64(&self, key: &str) -> f64 {
        match self.get(key) {
            toml::Value::Integer(i) => i as f64,
            toml::Value::Float(f) => f,
            _ => 0.0,
        }
    }

    /// A string key, `None` when unset and without default.
    pub fn string(&self, key: &str) -> Option<String> {
        match self.get(key) {
            toml::Value::String(s) if !s.is_empty() || self.value(key).is_some() => Some(s),
            _ => None,
        }
    }

    /// A path-list key, each resolved against the settings file's folder.
    pub fn paths(&self, key: &str) -> Vec<PathBuf> {
        match self.get(key) {
            toml::Value::Array(items) => items
                .iter()
                .filter_map(|i| i.as_str())
                .map(|s| resolve_path(self.base_dir, s))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A path key, resolved against the settings file's folder.
    pub fn path(&self, key: &str) -> Option<PathBuf> {
        self.string(key).map(|s| resolve_path(self.base_dir, &s))
    }
}

/// Resolves `text` against `base_dir` unless it is absolute; `~/` expands to `$HOME`.
pub fn resolve_path(base_dir: &Path, text: &str) -> PathBuf {
    if let (Some(rest), Some(home)) = (text.strip_prefix("~/"), std::env::var_os("HOME")) {
        return PathBuf::from(home).join(rest);
    }
    let path = Path::new(text);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        let joined = base_dir.join(path);
        // Drop the `./` segments so paths in status and errors read cleanly.
        joined.components().collect()
    }
}
