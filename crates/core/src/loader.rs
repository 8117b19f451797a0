//! How a backend turns a [`ModelSpec`] into a [`Model`].

use crate::device::DeviceChoice;
use crate::error::{ErrorCode, Result};
use crate::model::{Architecture, Model, Prompts};
use crate::spec::ModelSpec;
use std::sync::Arc;

/// A loader's answer to "can you serve this model?".
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// Yes.
    Accept,
    /// No, with the code a load would fail with and why.
    Reject {
        /// E.g. `MODEL_NOT_FOUND` for missing files, `MISSING_DEPENDENCY` for a missing runtime.
        code: ErrorCode,
        /// Why, in words.
        reason: String,
    },
}

impl Probe {
    /// A rejection.
    pub fn reject(code: ErrorCode, reason: impl Into<String>) -> Self {
        Probe::Reject {
            code,
            reason: reason.into(),
        }
    }
}

/// The files a loader reads from a model's folder, named relative to it, so they can be
/// brought in (`mm pull`) without loading the model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelFiles {
    /// Files the model cannot load without; `a|b` is satisfied by either. An index
    /// (`*.index.json`) brings the shards it names.
    pub required: Vec<String>,
    /// Files read when they exist (sentence-transformers configs and the like).
    pub optional: Vec<String>,
}

impl ModelFiles {
    /// The required and the optional names, borrowed.
    pub fn names(&self) -> (Vec<&str>, Vec<&str>) {
        fn names(list: &[String]) -> Vec<&str> {
            list.iter().map(String::as_str).collect()
        }
        (names(&self.required), names(&self.optional))
    }

    /// `required` and `optional` from static lists.
    pub fn of(required: &[&str], optional: &[&str]) -> Self {
        let owned = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
        Self {
            required: owned(required),
            optional: owned(optional),
        }
    }
}

/// Loads models of one `type` with one backend. Registered statically with
/// [`inventory::submit!`] of a [`LoaderRegistration`], or at run time with
/// [`crate::Registry::register`].
pub trait ModelLoader: Send + Sync + 'static {
    /// Registry key: `embedding`, `text2text`, `onnx`, `custom_vision`…
    fn model_type(&self) -> &str;
    /// Backend name: `candle`, `onnx`, or a plugin's name.
    fn backend(&self) -> &str;
    /// Whether this loader can serve `spec` (files present, runtime available…). Cheap.
    fn probe(&self, spec: &ModelSpec) -> Probe;
    /// Bytes the loaded model will hold, for the memory budget; `None` if unknown.
    fn estimate_bytes(&self, _spec: &ModelSpec) -> Option<u64> {
        None
    }
    /// Order among loaders of one type for `backend = "auto"`: higher is tried first.
    fn priority(&self) -> i32 {
        0
    }
    /// Backend-specific keys this loader reads under `models.<id>.`; other unknown keys are
    /// reported as typos.
    fn option_keys(&self) -> &[&str] {
        &[]
    }
    /// Checks the values of `spec`'s options as [`ModelLoader::load`] would read them,
    /// without loading (`mm check` reports the error instead of the first use). Cheap; the
    /// default accepts every value.
    fn check_options(&self, _spec: &ModelSpec) -> Result<()> {
        Ok(())
    }
    /// The files this loader reads for `spec`, so that `mm pull` (and
    /// [`crate::ModelManager::fetch_files`]) can bring them without loading the model.
    /// `None` (the default): the loader does not say, and fetching means loading.
    fn files(&self, _spec: &ModelSpec) -> Option<ModelFiles> {
        None
    }
    /// Loads the model. Blocking: the manager runs it on a blocking thread.
    fn load(&self, spec: &ModelSpec, device: &DeviceChoice) -> Result<Arc<dyn Model>>;
    /// How `spec`'s model would be built (family, pooling, packing), read from its files
    /// without loading it, for `mm models`; `None` when the loader cannot tell. Cheap.
    fn describe(&self, _spec: &ModelSpec) -> Option<Architecture> {
        None
    }
    /// The prompts of `spec`'s model (see [`Prompts`]), read from its files without loading
    /// it, so requests answered from the cache need no load; `None` (the default) when the
    /// loader cannot tell, and the manager asks the loaded model. Blocking, cheap.
    fn prompts(&self, _spec: &ModelSpec) -> Option<Prompts> {
        None
    }
}

/// A statically registered loader: `inventory::submit! { LoaderRegistration::new(|| Arc::new(MyLoader)) }`.
pub struct LoaderRegistration {
    /// Builds the loader.
    pub factory: fn() -> Arc<dyn ModelLoader>,
}

impl LoaderRegistration {
    /// Wraps a factory.
    pub const fn new(factory: fn() -> Arc<dyn ModelLoader>) -> Self {
        Self { factory }
    }
}

inventory::collect!(LoaderRegistration);
