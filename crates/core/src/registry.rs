//! Loaders by model type and backend.

use crate::error::{ErrorCode, ModelError, Result};
use crate::loader::{LoaderRegistration, ModelLoader, Probe};
use crate::settings::schema;
use crate::spec::ModelSpec;
use parking_lot::RwLock;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Maps a model `type` (and backend) to the loaders that serve it.
#[derive(Default)]
pub struct Registry {
    loaders: RwLock<Vec<Arc<dyn ModelLoader>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding every loader submitted with `inventory::submit!`, ordered by
    /// type then backend so `auto` picks deterministically.
    pub fn with_static_loaders() -> Self {
        let mut loaders: Vec<Arc<dyn ModelLoader>> = inventory::iter::<LoaderRegistration>
            .into_iter()
            .map(|r| (r.factory)())
            .collect();
        loaders.sort_by(|a, b| (a.model_type(), a.backend()).cmp(&(b.model_type(), b.backend())));
        // `for_type` then orders by priority; this sort only makes ties deterministic.
        let registry = Self::new();
        for loader in loaders {
            if let Err(e) = registry.register(loader) {
                tracing::warn!("{e}");
            }
        }
        registry
    }

    /// Adds a loader; a second loader for the same type and backend is refused.
    pub fn register(&self, loader: Arc<dyn ModelLoader>) -> Result<()> {
        let mut loaders = self.loaders.write();
        let (t, b) = (loader.model_type(), loader.backend());
        if loaders
            .iter()
            .any(|l| l.model_type() == t && l.backend() == b)
        {
            return Err(ModelError::new(
                ErrorCode::PluginLoadError,
                format!("a loader for type `{t}` with backend `{b}` is already registered"),
            )
            .with("model_type", t)
            .with("backend", b));
        }
        loaders.push(loader);
        Ok(())
    }

    /// Every registered type, sorted.
    pub fn types(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .loaders
            .read()
            .iter()
            .map(|l| l.model_type().to_owned())
            .collect();
        set.into_iter().collect()
    }

    /// `(type, backend)` of every loader, in resolution order.
    pub fn entries(&self) -> Vec<(String, String)> {
        self.loaders
            .read()
            .iter()
            .map(|l| (l.model_type().to_owned(), l.backend().to_owned()))
            .collect()
    }

    /// Loaders of `model_type`, highest priority first (registration order among equals).
    pub(crate) fn for_type(&self, model_type: &str) -> Vec<Arc<dyn ModelLoader>> {
        let mut loaders: Vec<Arc<dyn ModelLoader>> = self
            .loaders
            .read()
            .iter()
            .filter(|l| l.model_type() == model_type)
            .cloned()
            .collect();
        loaders.sort_by_key(|l| std::cmp::Reverse(l.priority()));
        loaders
    }

    /// The loader that will load `spec`: the named backend, or with `auto` the first whose
    /// probe accepts.
    pub fn resolve(&self, spec: &ModelSpec) -> Result<Arc<dyn ModelLoader>> {
        let candidates = self.for_type(&spec.model_type);
        if candidates.is_empty() {
            let types = self.types();
            let listed = if types.is_empty() {
                "none".to_owned()
            } else {
                types.join(", ")
            };
            return Err(ModelError::new(
                ErrorCode::UnsupportedModelType,
                format!(
                    "Model type '{}' not supported; registered types: {listed} (a type from a \
                     plugin needs `plugins.enabled = true` and its library in `plugins.paths` \
                     or `plugins.dirs`)",
                    spec.model_type
                ),
            )
            .for_model(&spec.id)
            .with("model_type", spec.model_type.as_str())
            .with("registered_types", types));
        }
        self.check_options(spec, &candidates)?;
        if spec.backend == "auto" {
            resolve_auto(spec, &candidates)
        } else {
            resolve_named(spec, &candidates)
        }
    }

    /// The loader whose files `spec` needs: the named backend's without probing (its
    /// runtime need not be here to fetch files), else as [`Registry::resolve`] picks.
    pub(crate) fn loader_of(&self, spec: &ModelSpec) -> Result<Arc<dyn ModelLoader>> {
        let named = self
            .for_type(&spec.model_type)
            .into_iter()
            .find(|l| spec.backend != "auto" && l.backend() == spec.backend);
        match named {
            Some(loader) => Ok(loader),
            None => self.resolve(spec),
        }
    }

    /// Refuses option keys that none of the type's loaders reads.
    fn check_options(&self, spec: &ModelSpec, loaders: &[Arc<dyn ModelLoader>]) -> Result<()> {
        match option_problems(spec, loaders).into_iter().next() {
            Some(first) => Err(first),
            None => Ok(()),
        }
    }

    /// Checks the options of `spec` against its type's loaders, if any are registered.
    pub fn validate_spec(&self, spec: &ModelSpec) -> Result<()> {
        let loaders = self.for_type(&spec.model_type);
        if loaders.is_empty() {
            return Ok(());
        }
        self.check_options(spec, &loaders)
    }

    /// Every option of `spec` its type's loaders do not read (each with the nearest key),
    /// not only the first, then a value the loader that would load it refuses: what `mm
    /// check` reports.
    pub fn option_problems(&self, spec: &ModelSpec) -> Vec<ModelError> {
        let mut problems = option_problems(spec, &self.for_type(&spec.model_type));
        if problems.is_empty() {
            if let Ok(loader) = self.loader_of(spec) {
                problems.extend(loader.check_options(spec).err());
            }
        }
        problems
    }
}

/// The options of `spec` none of `loaders` reads.
fn option_problems(spec: &ModelSpec, loaders: &[Arc<dyn ModelLoader>]) -> Vec<ModelError> {
    if loaders.is_empty() {
        return Vec::new();
    }
    let known: BTreeSet<&str> = loaders
        .iter()
        .flat_map(|l| l.option_keys().iter().copied())
        .collect();
    let mut problems = Vec::new();
    for key in spec.options.keys() {
        if known.contains(key.as_str()) {
            continue;
        }
        let full = format!("models.{}.{key}", spec.id);
        let all = known
            .iter()
            .copied()
            .chain(schema::MODEL_KEYS.iter().map(|k| k.key));
        let hint = match schema::nearest(key, all) {
            Some(near) => format!("; did you mean `models.{}.{near}`?", spec.id),
            None => format!(
                "; type `{}` reads: {}",
                spec.model_type,
                known.iter().copied().collect::<Vec<_>>().join(", ")
            ),
        };
        problems.push(
            ModelError::config(&full, format!("settings key `{full}` is unknown{hint}"))
                .for_model(&spec.id),
        );
    }
    problems
}

/// The loader named by `spec.backend`, if its probe accepts.
fn resolve_named(
    spec: &ModelSpec,
    candidates: &[Arc<dyn ModelLoader>],
) -> Result<Arc<dyn ModelLoader>> {
    let Some(loader) = candidates.iter().find(|l| l.backend() == spec.backend) else {
        let backends: Vec<&str> = candidates.iter().map(|l| l.backend()).collect();
        return Err(ModelError::new(
            ErrorCode::UnsupportedModelType,
            format!(
                "no backend `{}` for model type '{}'; available: {} (or `auto`)",
                spec.backend,
                spec.model_type,
                backends.join(", ")
            ),
        )
        .for_model(&spec.id)
        .with("backends", backends));
    };
    match loader.probe(spec) {
        Probe::Accept => Ok(loader.clone()),
        Probe::Reject { code, reason } => Err(with_files_hint(
            ModelError::new(code, reason)
                .for_model(&spec.id)
                .with("backend", loader.backend()),
            spec,
        )),
    }
}

/// Missing files get the hint of what to do for this kind of model.
fn with_files_hint(error: ModelError, spec: &ModelSpec) -> ModelError {
    match (error.code, crate::files::not_found_hint(spec)) {
        (ErrorCode::ModelNotFound, Some(hint)) => error.with("hint", hint),
        _ => error,
    }
}

/// The first loader whose probe accepts, or every loader's reason.
fn resolve_auto(
    spec: &ModelSpec,
    candidates: &[Arc<dyn ModelLoader>],
) -> Result<Arc<dyn ModelLoader>> {
    let mut rejections = Vec::new();
    for loader in candidates {
        match loader.probe(spec) {
            Probe::Accept => return Ok(loader.clone()),
            Probe::Reject { code, reason } => rejections.push((loader.backend(), code, reason)),
        }
    }
    let code = rejections
        .first()
        .map_or(ErrorCode::UnsupportedModelType, |r| r.1);
    let reasons: Vec<String> = rejections
        .iter()
        .map(|(b, _, r)| format!("{b}: {r}"))
        .collect();
    let error = ModelError::new(
        code,
        format!(
            "no backend can load model `{}`: {}",
            spec.id,
            reasons.join("; ")
        ),
    )
    .for_model(&spec.id)
    .with("tried", reasons);
    Err(with_files_hint(error, spec))
}
