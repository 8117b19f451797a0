//! Settings: `settings.toml` in flat `a.b.c` keys, environment overrides, validation.

mod check;
mod env;
mod flatten;
mod remote_cache;
pub mod schema;
mod server;
mod value;

pub use check::FileCheck;
pub use env::{env_spelling, ENV_PREFIX};
pub use flatten::{flatten_toml, FlatMap};
pub use remote_cache::RemoteCacheSettings;
pub use server::ServerSettings;
pub use value::resolve_path;

/// Backend options that name a file of the user's (not one in the model's folder): resolved
/// against the settings file's folder, as `local_path` is.
const OPTIONS_NAMING_FILES: &[&str] = &["calibration_file"];

use crate::device::{DevicePolicy, DevicePreference};
use crate::error::{ModelError, Result};
use crate::spec::ModelSpec;
use schema::{Kind, GLOBAL_KEYS};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use value::Reader;

/// `sharing.*`.
#[derive(Debug, Clone, PartialEq)]
pub struct SharingSettings {
    /// Share one instance among callers.
    pub enabled: bool,
    /// Most models loaded at once.
    pub max_shared_models: usize,
    /// Idle time before unload; `None` never unloads.
    pub unload_after: Option<Duration>,
    /// Whether live references protect a model from unload and eviction.
    pub reference_counting: bool,
    /// How long a load waits for room before `CAPACITY_EXHAUSTED`.
    pub capacity_wait: Duration,
    /// How long a load may run before its callers get `MODEL_LOAD_ERROR`; `None` waits.
    pub load_timeout: Option<Duration>,
}

/// `embedding_cache.*`.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    /// Cache embeddings at all.
    pub enabled: bool,
    /// Most entries.
    pub max_cache_size: u64,
    /// Entry lifetime; `None` never expires.
    pub ttl: Option<Duration>,
    /// Save at shutdown, load at initialize.
    pub persist_to_disk: bool,
    /// Where the persisted cache lives.
    pub path: PathBuf,
    /// How often the cache is saved while running (with `persist_to_disk`); `None` saves
    /// only at shutdown.
    pub save_interval: Option<Duration>,
    /// The shared tier behind this one; `None` when `redis_url` is empty.
    pub remote: Option<RemoteCacheSettings>,
}

/// `plugins.*`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PluginSettings {
    /// Load plugins at all.
    pub enabled: bool,
    /// Folders whose libraries are loaded.
    pub dirs: Vec<PathBuf>,
    /// Library files to load.
    pub paths: Vec<PathBuf>,
    /// Expected sha256 (lowercase hex) by file name or path; a library that does not match is
    /// refused before it is opened.
    pub sha256: BTreeMap<String, String>,
    /// Where plugin code runs.
    pub isolation: PluginIsolation,
    /// The program hosting plugin children; `None`: this executable, when it serves them.
    pub host_program: Option<PathBuf>,
    /// With process isolation, the longest wait for one plugin call.
    pub timeout: Duration,
    /// A plugin that fails to load fails initialize (else only its models fail).
    pub required: bool,
}

/// `plugins.isolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PluginIsolation {
    /// Plugin code runs in this process: no overhead, but a crash in it ends the process.
    #[default]
    InProcess,
    /// Each plugin library runs in a child process the host restarts when it dies or hangs.
    Process,
}

/// The validated settings of one manager.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `device_preference`.
    pub device_preference: DevicePreference,
    /// `gpu_memory_fraction`.
    pub gpu_memory_fraction: f64,
    /// `allow_gpu_growth`.
    pub allow_gpu_growth: bool,
    /// `device_fallback`.
    pub device_fallback: bool,
    /// `sharing.*`.
    pub sharing: SharingSettings,
    /// `memory.max_bytes`; `None` is no budget.
    pub memory_max_bytes: Option<u64>,
    /// `embedding_cache.*`.
    pub embedding_cache: CacheSettings,
    /// `enabled`.
    pub enabled: bool,
    /// `auto_initialize`.
    pub auto_initialize: bool,
    /// `log_model_usage`.
    pub log_model_usage: bool,
    /// `memory_monitoring`.
    pub memory_monitoring: bool,
    /// `shutdown_timeout_seconds`.
    pub shutdown_timeout: Duration,
    /// `plugins.*`.
    pub plugins: PluginSettings,
    /// `server.*`.
    pub server: ServerSettings,
    /// `models.<id>.*`, by id.
    pub models: BTreeMap<String, ModelSpec>,
    /// The file the settings came from, if any.
    pub source: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Self::from_flat(FlatMap::new(), Path::new("."), None)
            .expect("the built-in defaults are valid")
    }
}

impl Settings {
    /// Reads `path`, applies the process's `CORE_MODEL_MANAGER_*` variables and validates.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_file_with_env(path, std::env::vars())
    }

    /// Like [`Settings::from_file`], with the environment given explicitly.
    pub fn from_file_with_env(
        path: impl AsRef<Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ModelError::config(
                "",
                format!("cannot read settings file {}: {e}", path.display()),
            )
            .with("file", path.display().to_string())
            .caused_by("IoError", &e)
        })?;
        let base_dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let origin = path.display().to_string();
        let mut flat = flatten_toml(&text, &origin)?;
        env::apply_env_overrides(&mut flat, vars)?;
        Self::from_flat(flat, &base_dir, Some(path.to_path_buf()))
    }

    /// Every problem of the settings file at `path` (with the process's environment
    /// overrides), not only the first, each key's with its line and column. Empty when it
    /// loads. [`Settings::check_file`] also gives the settings of the sound keys.
    pub fn problems_in_file(path: impl AsRef<Path>) -> Vec<ModelError> {
        Self::check_file(path).problems
    }

    /// Parses TOML text with no environment overrides; relative paths resolve against
    /// `base_dir`.
    pub fn from_toml_str(text: &str, base_dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_toml_str_with_env(text, base_dir, std::iter::empty())
    }

    /// Parses TOML text and applies the `CORE_MODEL_MANAGER_*` variables among `vars`.
    pub fn from_toml_str_with_env(
        text: &str,
        base_dir: impl AsRef<Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let mut flat = flatten_toml(text, "settings")?;
        env::apply_env_overrides(&mut flat, vars)?;
        Self::from_flat(flat, base_dir.as_ref(), None)
    }

    /// Builds settings from an already flat map.
    pub fn from_flat(flat: FlatMap, base_dir: &Path, source: Option<PathBuf>) -> Result<Self> {
        validate(&flat)?;
        let r = Reader {
            flat: &flat,
            base_dir,
        };
        let seconds = |key: &str| match r.u64(key) {
            0 => None,
            n => Some(Duration::from_secs(n)),
        };
        let backend_settings = std::sync::Arc::new(backend_settings(&r));
        let mut models = BTreeMap::new();
        for id in env::model_ids(&flat) {
            let mut spec = model_spec(&r, &id)?;
            spec.backend_settings = backend_settings.clone();
            models.insert(id.clone(), spec);
        }
        Ok(Settings {
            device_preference: match r.string("device_preference").as_deref() {
                Some("cpu") => DevicePreference::Cpu,
                Some("gpu") => DevicePreference::Gpu,
                _ => DevicePreference::Auto,
            },
            gpu_memory_fraction: r.f64("gpu_memory_fraction"),
            allow_gpu_growth: r.bool("allow_gpu_growth"),
            device_fallback: r.bool("device_fallback"),
            sharing: SharingSettings {
                enabled: r.bool("sharing.enabled"),
                max_shared_models: r.u64("sharing.max_shared_models") as usize,
                unload_after: seconds("sharing.unload_after_seconds"),
                reference_counting: r.bool("sharing.reference_counting"),
                capacity_wait: Duration::from_secs_f64(r.f64("sharing.capacity_wait_seconds")),
                load_timeout: match r.f64("sharing.load_timeout_seconds") {
                    s if s > 0.0 => Some(Duration::from_secs_f64(s)),
                    _ => None,
                },
            },
            memory_max_bytes: match r.u64("memory.max_bytes") {
                0 => None,
                n => Some(n),
            },
            embedding_cache: CacheSettings {
                enabled: r.bool("embedding_cache.enabled"),
                max_cache_size: r.u64("embedding_cache.max_cache_size"),
                ttl: seconds("embedding_cache.ttl_seconds"),
                persist_to_disk: r.bool("embedding_cache.persist_to_disk"),
                path: r.path("embedding_cache.path").unwrap_or_default(),
                save_interval: seconds("embedding_cache.save_interval_seconds"),
                remote: RemoteCacheSettings::read(&r),
            },
            enabled: r.bool("enabled"),
            auto_initialize: r.bool("auto_initialize"),
            log_model_usage: r.bool("log_model_usage"),
            memory_monitoring: r.bool("memory_monitoring"),
            shutdown_timeout: Duration::from_secs_f64(r.f64("shutdown_timeout_seconds")),
            server: ServerSettings::read(&r),
            plugins: PluginSettings {
                enabled: r.bool("plugins.enabled"),
                dirs: r.paths("plugins.dirs"),
                paths: r.paths("plugins.paths"),
                sha256: plugin_pins(&flat),
                isolation: match r.string("plugins.isolation").as_deref() {
                    Some("process") => PluginIsolation::Process,
                    _ => PluginIsolation::InProcess,
                },
                host_program: r.path("plugins.host_program"),
                timeout: Duration::from_secs_f64(r.f64("plugins.timeout_seconds")),
                required: r.bool("plugins.required"),
            },
            models,
            source,
        })
    }

    /// The device policy derived from the global device keys.
    pub fn device_policy(&self) -> DevicePolicy {
        DevicePolicy {
            preference: self.device_preference,
            fallback: self.device_fallback,
            gpu_memory_fraction: self.gpu_memory_fraction,
            allow_gpu_growth: self.allow_gpu_growth,
        }
    }

    /// Adds or replaces a model configured in code.
    pub fn with_model(mut self, spec: ModelSpec) -> Self {
        self.models.insert(spec.id.clone(), spec);
        self
    }
}

fn plugin_pins(flat: &FlatMap) -> BTreeMap<String, String> {
    flat.iter()
        .filter_map(|(k, v)| {
            let file = k.strip_prefix(schema::PLUGIN_SHA256_PREFIX)?;
            Some((file.to_owned(), v.as_str()?.to_ascii_lowercase()))
        })
        .collect()
}

/// Global keys of backend sections, with paths resolved.
fn backend_settings(r: &Reader<'_>) -> serde_json::Map<String, serde_json::Value> {
    GLOBAL_KEYS
        .iter()
        .filter(|def| {
            schema::BACKEND_SECTIONS
                .iter()
                .any(|section| def.key.starts_with(&format!("{section}.")))
        })
        .filter(|def| r.flat.contains_key(def.key))
        .map(|def| {
            let value = match def.kind {
                Kind::Path => r
                    .path(def.key)
                    .map(|p| serde_json::Value::String(p.display().to_string()))
                    .unwrap_or_default(),
                _ => serde_json::to_value(&r.flat[def.key]).unwrap_or_default(),
            };
            (def.key.to_owned(), value)
        })
        .collect()
}

fn model_spec(r: &Reader<'_>, id: &str) -> Result<ModelSpec> {
    let key = |k: &str| format!("models.{id}.{k}");
    let model_type = r.string(&key("type")).ok_or_else(|| {
        ModelError::config(
            &key("type"),
            format!("model `{id}` has no `type`; set `models.{id}.type` (e.g. \"embedding\")"),
        )
        .for_model(id)
    })?;
    let prefix = format!("models.{id}.");
    let options = r
        .flat
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?, v)))
        .filter(|(k, _)| schema::model_key(k).is_none())
        .map(
            |(k, v)| match (OPTIONS_NAMING_FILES.contains(&k), v.as_str()) {
                (true, Some(path)) => {
                    let path = resolve_path(r.base_dir, path).display().to_string();
                    (k.to_owned(), serde_json::Value::from(path))
                }
                _ => (k.to_owned(), serde_json::to_value(v).unwrap_or_default()),
            },
        )
        .collect();
    Ok(ModelSpec {
        id: id.to_owned(),
        model_type,
        backend: r.string(&key("backend")).unwrap_or_else(|| "auto".into()),
        name: r.string(&key("name")),
        local_path: r.path(&key("local_path")),
        dimension: r
            .flat
            .get(&key("dimension"))
            .map(|_| r.u64(&key("dimension")) as usize),
        device: r
            .string(&key("device"))
            .and_then(|d| value::parse_device(&d))
            .unwrap_or(crate::device::DeviceRequest::Auto),
        batch_size: r.u64(&key("batch_size")) as usize,
        max_batch_tokens: r.u64(&key("max_batch_tokens")) as usize,
        max_queued_tokens: r.u64(&key("max_queued_tokens")) as usize,
        engine_workers: r.u64(&key("engine_workers")).max(1) as usize,
        shared: r.bool(&key("shared")),
        cache_embeddings: r.bool(&key("cache_embeddings")),
        pinned: r.bool(&key("pinned")),
        preload: r.bool(&key("preload")),
        options,
        backend_settings: Default::default(),
    })
}

/// Checks every key: known, of the right type, or a model option that is not an obvious typo.
fn validate(flat: &FlatMap) -> Result<()> {
    match validate_all(flat).into_iter().next() {
        Some(first) => Err(first),
        None => Ok(()),
    }
}

/// Every problem of the flat settings, in key order.
fn validate_all(flat: &FlatMap) -> Vec<ModelError> {
    flat.iter()
        .filter_map(|(key, value)| {
            if let Some(def) = schema::global(key) {
                value::check(key, def.kind, value).err()
            } else if let Some(rest) = key.strip_prefix("models.") {
                validate_model_key(key, rest, value).err()
            } else if key.starts_with(schema::PLUGIN_SHA256_PREFIX) {
                validate_sha256_pin(key, value).err()
            } else {
                Some(unknown_key(key))
            }
        })
        .collect()
}

fn validate_model_key(key: &str, rest: &str, value: &toml::Value) -> Result<()> {
    let Some((id, suffix)) = rest.rsplit_once('.') else {
        return Err(ModelError::config(
            key,
            format!("`{key}` is not a model setting; write `models.<id>.<key>`, e.g. `models.{rest}.type`"),
        ));
    };
    if id.contains('.') || id.is_empty() {
        return Err(ModelError::config(
            key,
            format!("`{key}`: model ids may not be empty or contain dots (found id `{id}`)"),
        ));
    }
    if let Some(def) = schema::model_key(suffix) {
        return value::check(key, def.kind, value);
    }
    // Other keys are backend options: the model's loaders check them (see
    // `ModelLoader::option_keys`), since only they know which they read.
    Ok(())
}

fn validate_sha256_pin(key: &str, value: &toml::Value) -> Result<()> {
    let is_hex_digest = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    match value.as_str() {
        Some(s) if is_hex_digest(s) => Ok(()),
        _ => Err(ModelError::config(
            key,
            format!(
                "settings key `{key}` expects a sha256 digest (64 hex digits), found {}",
                value::describe_found(value)
            ),
        )),
    }
}

fn unknown_key(key: &str) -> ModelError {
    let candidates = GLOBAL_KEYS.iter().map(|k| k.key);
    let hint = match schema::nearest(key, candidates) {
        Some(near) => format!("; did you mean `{near}`?"),
        None => "; see the settings reference in the README".to_owned(),
    };
    ModelError::config(key, format!("settings key `{key}` is unknown{hint}"))
}

/// Formats `kind` for documentation; used by the README reference test.
pub fn describe_kind(kind: Kind) -> String {
    kind.describe()
}

#[cfg(test)]
mod tests;
