//! The table of known settings keys: their types, defaults and meaning.
//!
//! One table drives validation, environment overrides, typo suggestions and the README's
//! settings reference, so they cannot drift apart.

/// What a key accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// `true` or `false`.
    Bool,
    /// An integer no smaller than `min`.
    Int {
        /// Smallest accepted value.
        min: i64,
    },
    /// A number (integer or float) within `min..=max`.
    Float {
        /// Smallest accepted value.
        min: f64,
        /// Largest accepted value.
        max: f64,
    },
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    /// Any string.
    Str,
    /// A filesystem path; relative paths resolve against the settings file's folder.
    Path,
    /// `auto`, `cpu`, `gpu`, `cuda` or `cuda:N`.
    Device,
    /// A list of paths; in an environment variable, separated by `:`.
    PathList,
}

impl Kind {
    /// How the expected value is described in error messages.
    pub fn describe(self) -> String {
        match self {
            Kind::Bool => "a boolean (true or false)".into(),
            Kind::Int { min } => format!("an integer >= {min}"),
            Kind::Float { min, max } => format!("a number between {min} and {max}"),
            Kind::Choice(choices) => format!("one of {}", choices.join(", ")),
            Kind::Str => "a string".into(),
            Kind::Path => "a path (string)".into(),
            Kind::Device => "a device: auto, cpu, gpu, cuda or cuda:N".into(),
            Kind::PathList => "a list of paths (array of strings)".into(),
        }
    }
}

/// One known key.
#[derive(Debug, Clone, Copy)]
pub struct KeyDef {
    /// The flat key (for model keys, the part after `models.<id>.`).
    pub key: &'static str,
    /// What it accepts.
    pub kind: Kind,
    /// The default, as written in TOML; empty when there is none.
    pub default: &'static str,
    /// What it does.
    pub doc: &'static str,
}

const fn key(key: &'static str, kind: Kind, default: &'static str, doc: &'static str) -> KeyDef {
    KeyDef {
        key,
        kind,
        default,
        doc,
    }
}

/// Prefix of the optional sha256 pins of plugin files: `plugins.sha256."<file name>"`.
pub const PLUGIN_SHA256_PREFIX: &str = "plugins.sha256.";

/// Keys outside `models.*`: the Python Model Manager Module's global keys plus ours.
pub const GLOBAL_KEYS: &[KeyDef] = &[
    key("device_preference", Kind::Choice(&["auto", "cpu", "gpu"]), "\"auto\"", "Where models run unless a model says otherwise."),
    key("gpu_memory_fraction", Kind::Float { min: 0.0, max: 1.0 }, "0.8", "Share of GPU memory a backend may reserve (passed to backends)."),
    key("allow_gpu_growth", Kind::Bool, "true", "Let backends grow GPU memory on demand (passed to backends)."),
    key("device_fallback", Kind::Bool, "true", "A GPU that was asked for and is missing falls back to CPU with a warning; false makes it a DEVICE_SETUP_ERROR."),
    key("sharing.enabled", Kind::Bool, "true", "Share one instance of a model among callers; false gives every caller its own."),
    key("sharing.max_shared_models", Kind::Int { min: 1 }, "5", "Most models loaded at once; the least recently used idle one is evicted to make room."),
    key("sharing.unload_after_seconds", Kind::Int { min: 0 }, "1800", "Unload a model after this long with no references (0: never)."),
    key("sharing.reference_counting", Kind::Bool, "true", "Count references; false lets idle unload and eviction ignore live handles."),
    key("sharing.capacity_wait_seconds", Kind::Float { min: 0.0, max: 86400.0 }, "30", "How long a load waits for room when every loaded model is in use, before CAPACITY_EXHAUSTED."),
    key("sharing.load_timeout_seconds", Kind::Float { min: 0.0, max: 86400.0 }, "0", "How long a load may run before its callers get MODEL_LOAD_ERROR (0: no bound); a loader that hangs on is left to finish and its model dropped."),
    key("memory.max_bytes", Kind::Int { min: 0 }, "0", "Memory budget for loaded models from the loaders' estimates (0: no budget)."),
    key("embedding_cache.enabled", Kind::Bool, "true", "Cache embeddings per text."),
    key("embedding_cache.max_cache_size", Kind::Int { min: 0 }, "10000", "Most cached embeddings."),
    key("embedding_cache.ttl_seconds", Kind::Int { min: 0 }, "3600", "Lifetime of a cached embedding (0: no expiry)."),
    key("embedding_cache.persist_to_disk", Kind::Bool, "false", "Restore the cache at initialize, save it periodically and at shutdown."),
    key("embedding_cache.save_interval_seconds", Kind::Int { min: 0 }, "60", "With persist_to_disk, save the cache this often while running, so a crash loses at most this window (0: only at shutdown)."),
    key("embedding_cache.path", Kind::Path, "\"./cache/embeddings.mmcache\"", "Where the persisted cache lives."),
    key("embedding_cache.redis_url", Kind::Str, "", "A shared cache tier behind the in-process one, e.g. redis://127.0.0.1:6379/0 (rediss:// for TLS; empty: off)."),
    key("embedding_cache.redis_password_file", Kind::Path, "", "File holding the Redis password, for a URL without one."),
    key("embedding_cache.redis_secret_file", Kind::Path, "", "File holding the secret the replicas share (16+ bytes; or MM_REDIS_SECRET): every Redis value is authenticated with HMAC-SHA256 under it, so only its holders can write what the tier serves. Without one, values are only checksummed and trusted as they are."),
    key("embedding_cache.redis_key_prefix", Kind::Str, "\"mm:emb:\"", "Prefix of every key the tier writes."),
    key("embedding_cache.redis_timeout_ms", Kind::Int { min: 1 }, "50", "Longest wait for a Redis look-up or write; past it the request goes on without the tier (counted as a timeout)."),
    key("enabled", Kind::Bool, "true", "false refuses every model call with CONFIG_ERROR."),
    key("auto_initialize", Kind::Bool, "true", "The first call initializes the manager; false requires initialize() first."),
    key("log_model_usage", Kind::Bool, "true", "Log loads, unloads, gets and releases at info level."),
    key("memory_monitoring", Kind::Bool, "true", "Report the process's resident memory in status."),
    key("hub.timeout_seconds", Kind::Float { min: 0.1, max: 86400.0 }, "30", "Connect and read timeout of Hugging Face hub downloads (per request and per read, not per file)."),
    key("hub.min_bytes_per_second", Kind::Int { min: 1 }, "65536", "Slowest average speed a hub download may keep: a whole file must arrive within hub.timeout_seconds plus a second per this many bytes (lower it for slow links)."),
    key("onnx.runtime_path", Kind::Path, "", "ONNX Runtime shared library (libonnxruntime.so.*); else ORT_DYLIB_PATH, then well-known places."),
    key("onnx.intra_threads", Kind::Int { min: 0 }, "0", "Default ONNX Runtime intra-op threads per session (0: available cores)."),
    key("plugins.enabled", Kind::Bool, "false", "Load plugin dylibs from `plugins.dirs` and `plugins.paths` at initialize."),
    key("plugins.dirs", Kind::PathList, "[]", "Folders whose `*.so` / `*.dylib` / `*.dll` files are loaded as plugins."),
    key("plugins.paths", Kind::PathList, "[]", "Plugin library files to load."),
    key("plugins.isolation", Kind::Choice(&["in-process", "process"]), "\"in-process\"", "`process` runs each plugin library in a child process of its own: a crash, abort or hang of the plugin is an error for the calls in flight and the child restarts; `in-process` calls it directly (no overhead; abort-built plugins are refused)."),
    key("plugins.host_program", Kind::Path, "", "The program that hosts plugin children (`mm-plugin-host`); empty: this executable, when it serves children (`mm` does)."),
    key("plugins.timeout_seconds", Kind::Float { min: 0.1, max: 86400.0 }, "60", "With process isolation, longest wait for a plugin call; past it the child is killed and restarted."),
    key("plugins.required", Kind::Bool, "false", "true: a plugin that fails to load fails initialize (all or nothing); false: only the models of its types fail, with its error."),
    key("server.max_body_bytes", Kind::Int { min: 1 }, "2097152", "Largest request body in bytes; more is 413."),
    key("server.max_inputs", Kind::Int { min: 1 }, "2048", "Most texts (or token arrays) in one embeddings request; more is 413."),
    key("server.max_concurrent", Kind::Int { min: 1 }, "256", "Inference requests (embeddings, generate, infer) served at once; more get 503 at once, with Retry-After."),
    key("server.max_connections", Kind::Int { min: 1 }, "1024", "Open connections at once (lowered to fit the process's file limit); more are answered 503 and closed."),
    key("server.header_timeout_seconds", Kind::Float { min: 0.1, max: 3600.0 }, "10", "Time to send a request's headers; also how long an idle keep-alive connection stays open."),
    key("server.body_timeout_seconds", Kind::Float { min: 0.1, max: 3600.0 }, "30", "Time to send a request's whole body once its headers arrived; more is 408."),
    key("server.max_response_bytes", Kind::Int { min: 1024 }, "8388608", "Largest response body; a request whose answer would be larger is 413 (base64 embeddings are a quarter of the size)."),
    key("server.max_tensor_elements", Kind::Int { min: 1 }, "16777216", "Most elements (tensor values and image bytes, all inputs together) in one generic inference request; more is 400 naming the input."),
    key("server.shutdown_grace_seconds", Kind::Float { min: 0.0, max: 3600.0 }, "10", "After SIGTERM, how long in-flight requests may finish; those still running then are answered 503 SHUTTING_DOWN with Retry-After and Connection: close."),
    key("server.api_key_file", Kind::Path, "", "File holding the API key required as `Authorization: Bearer KEY` (or MM_API_KEY_FILE, --api-key-file)."),
    key("shutdown_timeout_seconds", Kind::Float { min: 0.0, max: 86400.0 }, "30", "How long shutdown waits for in-flight work before unloading."),
];

/// Keys under `models.<id>.` that every model understands. Others are backend options,
/// checked against the keys the model's loaders declare.
pub const MODEL_KEYS: &[KeyDef] = &[
    key(
        "type",
        Kind::Str,
        "",
        "Registry key of the model's kind: embedding, text2text, onnx…  (required)",
    ),
    key(
        "backend",
        Kind::Str,
        "\"auto\"",
        "Which loader serves the type; auto takes the first whose probe accepts the files.",
    ),
    key(
        "name",
        Kind::Str,
        "",
        "The model's hub name, e.g. sentence-transformers/all-MiniLM-L6-v2.",
    ),
    key(
        "local_path",
        Kind::Path,
        "",
        "Folder with the model's files.",
    ),
    key(
        "dimension",
        Kind::Int { min: 1 },
        "",
        "Expected embedding size; a model of another size fails with CONFIG_ERROR.",
    ),
    key(
        "device",
        Kind::Device,
        "\"auto\"",
        "auto, cpu, gpu, cuda or cuda:N.",
    ),
    key(
        "batch_size",
        Kind::Int { min: 1 },
        "32",
        "Most texts in one forward pass (the engine's row cap).",
    ),
    key(
        "max_batch_tokens",
        Kind::Int { min: 1 },
        "16384",
        "Tokens one forward pass may pay for (padding included where the backend pads); the engine's batch budget.",
    ),
    key(
        "max_queued_tokens",
        Kind::Int { min: 1 },
        "262144",
        "Tokens that may wait for a batch; past it new requests fail at once with CAPACITY_EXHAUSTED (a request alone in an empty queue is always taken).",
    ),
    key(
        "engine_workers",
        Kind::Int { min: 1 },
        "1",
        "Forward passes the engine runs at once; backends split their threads among them (ONNX: one session per worker with cores / workers intra-op threads).",
    ),
    key(
        "shared",
        Kind::Bool,
        "true",
        "false gives each caller its own instance.",
    ),
    key(
        "cache_embeddings",
        Kind::Bool,
        "true",
        "Use the embedding cache for this model.",
    ),
    key(
        "pinned",
        Kind::Bool,
        "false",
        "Never unload or evict this model.",
    ),
    key(
        "preload",
        Kind::Bool,
        "false",
        "Load this model during initialize.",
    ),
];

/// Sections of global keys that belong to backends; they reach loaders through
/// `ModelSpec::backend_settings`.
pub const BACKEND_SECTIONS: &[&str] = &["onnx", "hub"];

/// Looks a global key up.
pub fn global(key: &str) -> Option<&'static KeyDef> {
    GLOBAL_KEYS.iter().find(|k| k.key == key)
}

/// Looks a common model key up (the part after `models.<id>.`).
pub fn model_key(key: &str) -> Option<&'static KeyDef> {
    MODEL_KEYS.iter().find(|k| k.key == key)
}

/// The candidate closest to `wanted`, if it is close enough to be a likely typo.
pub fn nearest<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(wanted, c), c))
        .filter(|(score, _)| *score >= 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
