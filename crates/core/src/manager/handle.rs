//! The RAII reference to a loaded model.

use super::instance::Instance;
use super::Inner;
use crate::error::{ErrorCode, ModelError, Result};
use crate::model::{Embedder, Model, TextGenerator};
use crate::outputs::Outputs;
use std::fmt;
use std::sync::Arc;

/// A counted reference to a loaded model. While it lives the model is never unloaded or
/// evicted; dropping it releases the reference, so a forgotten release cannot leak.
pub struct ModelHandle {
    inner: Arc<Inner>,
    model_id: String,
    /// Always `Some` until the handle drops.
    instance: Option<Arc<Instance>>,
    exclusive: bool,
    /// Cleared by `detach`, whose reference `release_model` returns instead of `Drop`.
    counted: bool,
}

impl ModelHandle {
    fn new(inner: Arc<Inner>, model_id: &str, instance: Arc<Instance>, exclusive: bool) -> Self {
        Self {
            inner,
            model_id: model_id.to_owned(),
            instance: Some(instance),
            exclusive,
            counted: true,
        }
    }

    pub(crate) fn shared(inner: Arc<Inner>, model_id: &str, instance: Arc<Instance>) -> Self {
        Self::new(inner, model_id, instance, false)
    }

    pub(crate) fn exclusive(inner: Arc<Inner>, model_id: &str, instance: Arc<Instance>) -> Self {
        Self::new(inner, model_id, instance, true)
    }

    /// The instance (model and engine) this handle holds.
    pub(crate) fn instance(&self) -> &Instance {
        self.instance.as_ref().expect("present until drop")
    }

    /// The configured id.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// The model.
    pub fn model(&self) -> &Arc<dyn Model> {
        &self.instance().model
    }

    /// Whether this is a private instance (`shared = false`).
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    /// The model as an embedder, or `INVALID_MODEL_TYPE`.
    pub fn embedder(&self) -> Result<&dyn Embedder> {
        let embedder = self.engine_model()?;
        match embedder.outputs() {
            Outputs::Embeddings => Ok(embedder),
            other => Err(self.wrong_kind(&format!(
                "an embedding model (it is of kind `{}`: use its own call)",
                other.kind()
            ))),
        }
    }

    /// The model as its engine runs it, whatever its rows are (embeddings, scores, sparse
    /// vectors), or `INVALID_MODEL_TYPE`.
    pub(crate) fn engine_model(&self) -> Result<&dyn Embedder> {
        self.instance()
            .model
            .as_embedder()
            .ok_or_else(|| self.wrong_kind("a model that embeds or scores texts"))
    }

    /// The model as a text generator, or `INVALID_MODEL_TYPE`.
    pub fn text_generator(&self) -> Result<&dyn TextGenerator> {
        self.instance()
            .model
            .as_text_generator()
            .ok_or_else(|| self.wrong_kind("a text generation model"))
    }

    /// The model as a generic inference function, or `INVALID_MODEL_TYPE`.
    pub fn infer_model(&self) -> Result<&dyn crate::Infer> {
        self.instance()
            .model
            .as_infer()
            .ok_or_else(|| self.wrong_kind("a model that runs generic inference"))
    }

    /// The model's prompts (see [`crate::Prompts`]); `INVALID_MODEL_TYPE` for a model that
    /// does not embed.
    pub fn prompts(&self) -> Result<Arc<crate::model::Prompts>> {
        Ok(Arc::new(self.embedder()?.prompts()))
    }

    /// The backend's concrete model type, for raw access (model, tokenizer, device).
    pub fn downcast_ref<T: 'static>(&self) -> Option<&T> {
        self.instance().model.as_any().downcast_ref::<T>()
    }

    fn wrong_kind(&self, wanted: &str) -> ModelError {
        let info = self.instance().model.info();
        ModelError::new(
            ErrorCode::InvalidModelType,
            format!(
                "model `{}` is of type `{}` (backend {}), not {wanted}",
                self.model_id, info.model_type, info.backend
            ),
        )
        .for_model(&self.model_id)
        .with("model_type", info.model_type)
    }

    /// Releases the reference now (the same as dropping the handle).
    pub fn release(self) {}

    /// Keeps the reference counted without a handle, as Python callers do; return it
    /// with [`super::ModelManager::release_model`].
    pub fn detach(mut self) -> Arc<dyn Model> {
        if !self.exclusive {
            let mut state = self.inner.state.lock();
            if let Some(slot) = state.slots.get_mut(&self.model_id) {
                slot.detached += 1;
            }
            self.counted = false;
        }
        self.instance().model.clone()
    }
}

impl fmt::Debug for ModelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelHandle")
            .field("model_id", &self.model_id)
            .field("exclusive", &self.exclusive)
            .finish()
    }
}

impl Drop for ModelHandle {
    fn drop(&mut self) {
        if let Some(instance) = self.instance.take() {
            release_last_off_runtime(instance);
        }
        if self.counted {
            release_reference(&self.inner, &self.model_id, self.exclusive);
        }
    }
}

/// Drops `instance`; when this was the last reference (a private instance, or one unloaded
/// while in use) the model is freed on a blocking thread, not on an async worker.
fn release_last_off_runtime(instance: Arc<Instance>) {
    if Arc::strong_count(&instance) > 1 {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(move || instance.release())),
        Err(_) => instance.release(),
    }
}

fn release_reference(inner: &Inner, model_id: &str, exclusive: bool) {
    {
        let mut state = inner.state.lock();
        let Some(slot) = state.slots.get_mut(model_id) else {
            return;
        };
        if exclusive {
            slot.exclusive_instances = slot.exclusive_instances.saturating_sub(1);
        } else {
            slot.refs = slot.refs.saturating_sub(1);
        }
        slot.touch();
    }
    if inner.log_usage() {
        tracing::debug!(model_id, "model reference released");
    }
    inner.bump();
}

/// Returns one detached reference of `model_id`; the references left.
pub(crate) fn release_detached(inner: &Inner, model_id: &str) -> Result<usize> {
    {
        let mut state = inner.state.lock();
        let slot = state
            .slots
            .get_mut(model_id)
            .expect("configured models have slots");
        if slot.detached == 0 {
            return Err(ModelError::invalid_input(format!(
                "release_model(\"{model_id}\") has no reference to release: handles release on drop, \
                 and release_model only returns references taken with ModelHandle::detach"
            ))
            .for_model(model_id));
        }
        slot.detached -= 1;
    }
    release_reference(inner, model_id, false);
    let state = inner.state.lock();
    Ok(state.slots.get(model_id).map_or(0, |s| s.refs))
}
