//! `generate_embeddings`: the per-text cache in front of a model's embedder.

use super::{Inner, ModelManager};
use crate::cache::{CacheNamespace, Vector};
use crate::error::{ErrorCode, ModelError, Result};
use crate::fingerprint::model_fingerprint;
use crate::spec::ModelSpec;
use serde::Serialize;
use std::collections::HashMap;

/// The result of [`ModelManager::generate_embeddings`], as the seed's `result.data`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbeddingsOutput {
    /// One vector per input text, in input order.
    pub embeddings: Vec<Vec<f32>>,
    /// Length of each vector.
    pub dimension: usize,
    /// True when every vector came from the cache.
    pub cached: bool,
    /// How many texts were served from the cache.
    pub cache_hits: usize,
    /// The model that produced them.
    pub model_id: String,
}

impl ModelManager {
    /// Embeds `texts` with `model_id`, serving each text from the cache when it can and
    /// computing only the misses. Results are in input order.
    pub async fn generate_embeddings<S: AsRef<str>>(
        &self,
        texts: &[S],
        model_id: &str,
    ) -> Result<EmbeddingsOutput> {
        self.ensure_ready().await?;
        let inner = &self.inner;
        let spec = inner.spec(model_id)?;
        let mut slots: Vec<Option<Vector>> = vec![None; texts.len()];
        let namespace = (inner.cache.is_enabled() && spec.cache_embeddings)
            .then(|| inner.cache_namespace(spec));
        let mut hits = 0;
        if let Some(ns) = namespace {
            for (slot, text) in slots.iter_mut().zip(texts) {
                *slot = inner.cache.get(ns.key(text.as_ref()));
                hits += usize::from(slot.is_some());
            }
        }
        let misses: Vec<usize> = (0..texts.len()).filter(|&i| slots[i].is_none()).collect();
        let mut dimension = slots.iter().flatten().next().map(|v| v.len());
        if !misses.is_empty() {
            let computed = self.embed_misses(spec, texts, &misses).await?;
            for (&i, vector) in misses.iter().zip(computed) {
                if let Some(ns) = namespace {
                    inner
                        .cache
                        .insert(ns.key(texts[i].as_ref()), vector.clone());
                }
                dimension = Some(vector.len());
                slots[i] = Some(vector);
            }
        }
        Ok(EmbeddingsOutput {
            embeddings: slots
                .into_iter()
                .map(|v| v.map(|v| v.to_vec()).unwrap_or_default())
                .collect(),
            dimension: dimension.or(spec.dimension).unwrap_or(0),
            cached: !texts.is_empty() && misses.is_empty(),
            cache_hits: hits,
            model_id: model_id.to_owned(),
        })
    }

    /// Embeds the texts at `misses` (each distinct text once) on a blocking thread.
    async fn embed_misses<S: AsRef<str>>(
        &self,
        spec: &ModelSpec,
        texts: &[S],
        misses: &[usize],
    ) -> Result<Vec<Vector>> {
        let mut distinct: Vec<String> = Vec::new();
        let mut position: HashMap<&str, usize> = HashMap::new();
        let order: Vec<usize> = misses
            .iter()
            .map(|&i| {
                let text = texts[i].as_ref();
                *position.entry(text).or_insert_with(|| {
                    distinct.push(text.to_owned());
                    distinct.len() - 1
                })
            })
            .collect();
        let handle = self.get_embedding_model(&spec.id).await?;
        let count = distinct.len();
        let computed = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = distinct.iter().map(String::as_str).collect();
            handle.embedder()?.embed(&refs)
        })
        .await
        .map_err(|e| {
            ModelError::new(
                ErrorCode::GenerateEmbeddingsError,
                format!("the embedder of model `{}` panicked", spec.id),
            )
            .caused_by("Panic", e)
        })?
        .map_err(|e| e.for_model(&spec.id))?;
        check_shapes(spec, &computed, count)?;
        let vectors: Vec<Vector> = computed.into_iter().map(Vector::from).collect();
        Ok(order.into_iter().map(|j| vectors[j].clone()).collect())
    }
}

/// A backend that returns the wrong number or size of vectors is a bug worth naming.
fn check_shapes(spec: &ModelSpec, computed: &[Vec<f32>], expected: usize) -> Result<()> {
    let dims: Vec<usize> = computed.iter().map(Vec::len).collect();
    let uniform = dims.windows(2).all(|w| w[0] == w[1]);
    if computed.len() == expected && uniform {
        return Ok(());
    }
    Err(ModelError::new(
        ErrorCode::GenerateEmbeddingsError,
        format!(
            "model `{}` returned {} vectors of sizes {:?} for {expected} texts",
            spec.id,
            computed.len(),
            dims
        ),
    )
    .for_model(&spec.id))
}

impl Inner {
    /// The cache namespace of a model: from its loaded fingerprint, else computed once.
    fn cache_namespace(&self, spec: &ModelSpec) -> CacheNamespace {
        let known = self
            .state
            .lock()
            .slots
            .get(&spec.id)
            .and_then(|s| s.fingerprint);
        let fingerprint = known.unwrap_or_else(|| {
            let computed = model_fingerprint(spec);
            if let Some(slot) = self.state.lock().slots.get_mut(&spec.id) {
                slot.fingerprint.get_or_insert(computed);
            }
            computed
        });
        CacheNamespace::new(&spec.id, fingerprint)
    }
}
