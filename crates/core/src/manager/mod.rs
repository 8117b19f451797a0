//! The model manager: shared, reference-counted, lazily loaded models within limits.

mod acquire;
mod cache_tiers;
mod embeddings;
mod handle;
mod instance;
mod lifecycle;
mod load;
mod scoring;
mod slot;
mod status;

pub use embeddings::{EmbedOptions, EmbeddingsOutput};
pub use handle::ModelHandle;
pub use lifecycle::{InitReport, ShutdownReport};
pub use scoring::{
    ClassifyInput, ClassifyOutput, LabelScore, RerankOutput, ScoreOptions, SparseOutput,
};
pub use status::{ModelStatus, ModelStatusReport, ServiceStatus};

/// The `tracing` target of the warning a failed load logs (the caller gets the error too):
/// a program that reports the error itself can filter this target out.
pub const LOAD_FAILURE_LOG_TARGET: &str = "model_manager::load_failure";

use crate::blocking::off_runtime;
use crate::cache::EmbeddingCache;
use crate::error::{ErrorCode, ModelError, Result};
use crate::registry::Registry;
use crate::settings::Settings;
use crate::spec::ModelSpec;
use parking_lot::Mutex;
use slot::{Slot, State};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// Owns the configured models of an application. Cheap to clone: clones share one manager.
///
/// Mirrors the Python Model Manager Module's `ModelManagerService` by name. Models load on first use (one load
/// however many callers ask at once), are shared through reference-counted
/// [`ModelHandle`]s, unload when idle, and are evicted least-recently-used to respect
/// `sharing.max_shared_models` and `memory.max_bytes`.
#[derive(Clone)]
pub struct ModelManager {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub settings: Settings,
    pub registry: Arc<Registry>,
    pub cache: EmbeddingCache,
    pub state: Mutex<State>,
    /// Bumped on every change of state (a reference released, a load finished, a model
    /// unloaded or pinned, shutdown begun). Whoever waits for the state subscribes before
    /// looking at it, so no change goes unseen.
    pub changed: watch::Sender<u64>,
    pub initialized: AtomicBool,
    pub shutting_down: AtomicBool,
    pub init_lock: tokio::sync::Mutex<()>,
    pub cache_load_error: Mutex<Option<ModelError>>,
    /// What initialize restored from the persisted cache.
    pub cache_restored: Mutex<Option<crate::cache::RestoreReport>>,
    /// Callers waiting for room to load a model.
    pub capacity_waiters: AtomicUsize,
    /// `None` until the plugins are loaded.
    pub plugins: Mutex<Option<crate::PluginLoadReport>>,
    /// Models set aside at initialize with the error every use of them returns.
    pub model_faults: Mutex<std::collections::BTreeMap<String, ModelError>>,
    /// The shared cache tier, opened at initialize when `embedding_cache.redis_url` is set.
    pub remote: std::sync::OnceLock<Arc<crate::cache::remote::RemoteTier>>,
}

impl ModelManager {
    /// A manager over `settings` with every statically registered loader.
    pub fn new(settings: Settings) -> Self {
        Self::with_registry(settings, Arc::new(Registry::with_static_loaders()))
    }

    /// A manager over `settings` using `registry` (add run-time loaders to it first or later).
    pub fn with_registry(settings: Settings, registry: Arc<Registry>) -> Self {
        let slots = settings
            .models
            .values()
            .map(|spec| (spec.id.clone(), Slot::new(spec.pinned)))
            .collect();
        let inner = Inner {
            cache: EmbeddingCache::new(&settings.embedding_cache),
            settings,
            registry,
            state: Mutex::new(State { slots }),
            changed: watch::channel(0).0,
            initialized: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            init_lock: tokio::sync::Mutex::new(()),
            cache_load_error: Mutex::new(None),
            cache_restored: Mutex::new(None),
            capacity_waiters: AtomicUsize::new(0),
            plugins: Mutex::new(None),
            model_faults: Mutex::new(Default::default()),
            remote: std::sync::OnceLock::new(),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The settings this manager runs with.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The registry of loaders.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// The configuration of one model (`MODEL_NOT_CONFIGURED` if absent).
    pub fn get_model_config(&self, model_id: &str) -> Result<ModelSpec> {
        self.inner.spec(model_id).cloned()
    }

    /// A handle on the model, loading it if needed. Dropping the handle releases it.
    pub async fn get_model(&self, model_id: &str) -> Result<ModelHandle> {
        self.ensure_ready().await?;
        acquire::acquire(&self.inner, model_id).await
    }

    /// Like [`ModelManager::get_model`], for a model that embeds (`INVALID_MODEL_TYPE` if not).
    pub async fn get_embedding_model(&self, model_id: &str) -> Result<ModelHandle> {
        let handle = self.get_model(model_id).await?;
        handle.embedder()?;
        Ok(handle)
    }

    /// Like [`ModelManager::get_model`], for a model that generates text. Reach the raw
    /// model, tokenizer and device through [`ModelHandle::downcast_ref`].
    pub async fn get_text_generation_model(&self, model_id: &str) -> Result<ModelHandle> {
        let handle = self.get_model(model_id).await?;
        handle.text_generator()?;
        Ok(handle)
    }

    /// Generates text with `model_id` on a blocking thread, holding a reference meanwhile.
    pub async fn generate_text(
        &self,
        model_id: &str,
        prompt: &str,
        params: &crate::GenerationParams,
    ) -> Result<String> {
        let handle = self.get_text_generation_model(model_id).await?;
        let (prompt, params) = (prompt.to_owned(), params.clone());
        on_blocking_thread(
            model_id,
            handle,
            ErrorCode::GenerationError,
            || format!("the generator of model `{model_id}` panicked"),
            move |h| h.text_generator()?.generate(&prompt, &params),
        )
        .await
    }

    /// Runs generic inference with `model_id` on a blocking thread, holding a reference
    /// meanwhile (`INVALID_MODEL_TYPE` for a model that does not infer). Inputs whose
    /// stated shape lies about their data never reach the model ([`crate::check_infer_inputs`]).
    pub async fn infer(
        &self,
        model_id: &str,
        inputs: crate::NamedValues,
    ) -> Result<crate::NamedValues> {
        self.inner.spec(model_id)?;
        crate::check_infer_inputs(&inputs, None).map_err(|e| e.for_model(model_id))?;
        let handle = self.get_model(model_id).await?;
        handle.infer_model()?;
        on_blocking_thread(
            model_id,
            handle,
            ErrorCode::InferenceError,
            || format!("model `{model_id}` panicked during inference"),
            move |h| h.infer_model()?.infer(&inputs),
        )
        .await
    }

    /// The plugins loaded at initialize.
    pub fn plugins(&self) -> Vec<crate::PluginRecord> {
        self.inner
            .plugins
            .lock()
            .as_ref()
            .map(|r| r.loaded.clone())
            .unwrap_or_default()
    }

    /// Returns one reference taken with [`ModelHandle::detach`] (the explicit form Python callers use).
    /// Returns the references left on the model.
    pub async fn release_model(&self, model_id: &str) -> Result<usize> {
        self.inner.spec(model_id)?;
        handle::release_detached(&self.inner, model_id)
    }

    /// Brings `model_id`'s files into place without loading it: found in `local_path` or
    /// the Hugging Face cache, else downloaded by `name` (verified, resumable; with the
    /// `hub` feature). The folder, or `None` when its loader does not list its files
    /// ([`crate::backend::ModelLoader::files`]): then loading it is the way to fetch them.
    /// Does not initialize: no cache tier is opened or restored and nothing is preloaded;
    /// plugins are loaded only when no built-in loader serves the model's type.
    pub async fn fetch_files(&self, model_id: &str) -> Result<Option<crate::files::ModelFolder>> {
        self.inner.check_accepting()?;
        let spec = self.inner.spec(model_id)?.clone();
        let registry = self.inner.registry.clone();
        let manager = self.clone();
        let panicked = || format!("fetching the files of model `{model_id}` panicked");
        off_runtime(ErrorCode::ModelLoadError, panicked, move || {
            if registry.for_type(&spec.model_type).is_empty() {
                manager.load_plugins()?;
            }
            let Some(files) = registry.loader_of(&spec)?.files(&spec) else {
                return Ok(None);
            };
            let (required, optional) = files.names();
            crate::files::locate_or_download(&spec, &required, &optional).map(Some)
        })
        .await?
        .map_err(|e| e.for_model(model_id))
    }

    /// Loads a model now and keeps it loaded (idle) without holding a reference.
    pub async fn preload(&self, model_id: &str) -> Result<()> {
        self.get_model(model_id).await.map(drop)
    }

    /// Pins or unpins a model: a pinned model is never unloaded or evicted.
    pub fn pin(&self, model_id: &str, pinned: bool) -> Result<()> {
        self.inner.spec(model_id)?;
        let mut state = self.inner.state.lock();
        if let Some(slot) = state.slots.get_mut(model_id) {
            slot.pinned = pinned;
        }
        drop(state);
        self.inner.bump();
        Ok(())
    }

    /// Unloads a model once its references are gone, waiting up to the shutdown bound.
    /// Returns whether it was loaded.
    pub async fn unload_model(&self, model_id: &str) -> Result<bool> {
        self.inner.spec(model_id)?;
        lifecycle::unload_when_unreferenced(&self.inner, model_id).await
    }

    /// Empties the embedding cache.
    pub fn clear_cache(&self) {
        self.inner.cache.clear();
    }

    /// Fails unless the manager is enabled, initialized (or may auto-initialize), and not
    /// shutting down.
    async fn ensure_ready(&self) -> Result<()> {
        self.inner.check_accepting()?;
        if self.inner.initialized.load(Ordering::Acquire) {
            return Ok(());
        }
        if !self.inner.settings.auto_initialize {
            return Err(ModelError::config(
                "auto_initialize",
                "the model manager is not initialized and auto_initialize = false; call initialize() first",
            ));
        }
        self.initialize().await.map(drop)
    }
}

/// The most characters of a caller's model id an error repeats.
const MAX_ECHOED_ID: usize = 256;

impl Inner {
    pub fn spec(&self, model_id: &str) -> Result<&ModelSpec> {
        self.settings
            .models
            .get(model_id)
            .ok_or_else(|| self.not_configured(model_id))
    }

    /// `MODEL_NOT_CONFIGURED` for `model_id`, with a "did you mean" hint. The id is repeated
    /// once, in `details.model_id`, cut to [`MAX_ECHOED_ID`] characters (a longer one is a
    /// caller's mistake or abuse); the message is the seed's, without it.
    fn not_configured(&self, model_id: &str) -> ModelError {
        let configured: Vec<&String> = self.settings.models.keys().collect();
        let listed = format!("configured models: {}", join(&configured));
        let cut: String = model_id.chars().take(MAX_ECHOED_ID).collect();
        let (message, hint) = if cut.len() < model_id.len() {
            let message = format!(
                "Model not found in configuration (an id of {} bytes, shown cut to {MAX_ECHOED_ID} characters in details.model_id)",
                model_id.len()
            );
            (message, listed)
        } else {
            let names = configured.iter().map(|k| k.as_str());
            let hint = match crate::settings::schema::nearest(model_id, names) {
                Some(near) => format!("did you mean `{near}`? {listed}"),
                None => listed,
            };
            ("Model not found in configuration".to_owned(), hint)
        };
        ModelError::new(ErrorCode::ModelNotConfigured, message)
            .for_model(&cut)
            .with("configured_models", serde_json::json!(configured))
            .with("hint", hint)
    }

    pub fn check_accepting(&self) -> Result<()> {
        if self.is_shutting_down() {
            return Err(shutting_down_error());
        }
        if !self.settings.enabled {
            return Err(ModelError::config(
                "enabled",
                "the model manager is disabled (enabled = false in settings)",
            ));
        }
        Ok(())
    }

    pub fn log_usage(&self) -> bool {
        self.settings.log_model_usage
    }

    /// Tells every waiter that the state changed.
    pub fn bump(&self) {
        self.changed.send_modify(|generation| *generation += 1);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}

/// The error of work refused or cut short because shutdown began.
pub(crate) fn shutting_down_error() -> ModelError {
    ModelError::new(
        ErrorCode::ShuttingDown,
        "the model manager is shutting down and accepts no new work",
    )
}

/// Drops instances on a blocking thread, stopping their engines first, and waits for it:
/// freeing a model can take long (and on a GPU must finish before the next load).
pub(crate) async fn release_instances(instances: Vec<Arc<instance::Instance>>) {
    if instances.is_empty() {
        return;
    }
    let released = tokio::task::spawn_blocking(move || {
        instances.into_iter().for_each(instance::Instance::release);
    });
    if let Err(e) = released.await {
        tracing::warn!("a model panicked while being dropped: {e}");
    }
}

/// Runs `work` on a blocking thread while `handle` keeps the model referenced; a panic
/// becomes `code` with the message `panicked` writes, and errors name the model.
async fn on_blocking_thread<T: Send + 'static>(
    model_id: &str,
    handle: ModelHandle,
    code: ErrorCode,
    panicked: impl FnOnce() -> String,
    work: impl FnOnce(&ModelHandle) -> Result<T> + Send + 'static,
) -> Result<T> {
    off_runtime(code, panicked, move || work(&handle))
        .await?
        .map_err(|e| e.for_model(model_id))
}

fn join(ids: &[&String]) -> String {
    match ids.is_empty() {
        true => "none".into(),
        false => ids
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    }
}
