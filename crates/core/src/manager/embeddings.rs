//! `generate_embeddings`: the per-text cache in front of a model's engine.

use super::cache_tiers::{self, Misses};
use super::handle::ModelHandle;
use super::ModelManager;
use crate::blocking::{off_runtime, on_this_thread};
use crate::cache::bounds::estimated_tokens;
use crate::cache::CachedEmbedding;
use crate::engine::{Admission, Work};
use crate::error::{ErrorCode, ModelError, Result};
use crate::model::{Prompts, TokenizedText};
use crate::spec::ModelSpec;
use serde::Serialize;
use std::borrow::Cow;
use std::sync::Arc;

/// How [`ModelManager::generate_embeddings_with_options`] embeds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmbedOptions {
    /// What to do when the engine's queue is full.
    pub admission: Admission,
    /// A prompt of the model's configuration to prepend, by name (`query`, `passage`…).
    pub prompt_name: Option<String>,
    /// A prompt text to prepend. Without it and without `prompt_name` the model's default
    /// prompt applies, if its configuration names one; `Some("")` applies none.
    pub prompt: Option<String>,
}

impl EmbedOptions {
    /// Options with `admission` and the default prompt.
    pub fn admission(admission: Admission) -> Self {
        Self {
            admission,
            ..Self::default()
        }
    }
}

/// The result of [`ModelManager::generate_embeddings`], as the Python module's `result.data`.
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
    /// Tokens the model reads for all the inputs (after truncation, special tokens
    /// included), cached ones too: the `usage` of an API response. Embedders that do not
    /// tokenize apart report an estimate of a quarter of the bytes plus two.
    pub tokens: usize,
    /// The tokens of each input text, in input order (cached ones too).
    pub token_counts: Vec<usize>,
    /// The model that produced them.
    pub model_id: String,
}

impl ModelManager {
    /// Embeds `texts` with `model_id`, serving each text from the cache when it can and
    /// computing only the misses, through the model's engine (batched with every other
    /// caller's texts). Results are in input order. When the engine's queue is full this
    /// fails at once with `CAPACITY_EXHAUSTED`; see [`Self::generate_embeddings_with`].
    pub async fn generate_embeddings<S: AsRef<str>>(
        &self,
        model_id: &str,
        texts: &[S],
    ) -> Result<EmbeddingsOutput> {
        self.generate_embeddings_with(model_id, texts, Admission::FailFast)
            .await
    }

    /// [`Self::generate_embeddings`] with a choice of what to do when the engine's queue is
    /// full: fail at once, or wait for room (bulk jobs).
    pub async fn generate_embeddings_with<S: AsRef<str>>(
        &self,
        model_id: &str,
        texts: &[S],
        admission: Admission,
    ) -> Result<EmbeddingsOutput> {
        let options = EmbedOptions::admission(admission);
        self.generate_embeddings_with_options(model_id, texts, &options)
            .await
    }

    /// [`Self::generate_embeddings`] with every option: admission, and the prompt prepended
    /// to each text (sentence-transformers' `prompt_name` and `prompt`; the model's default
    /// prompt otherwise). The cache keys the text the model saw, prompt included; to know
    /// the prompt, the first request after the model's files change loads the model.
    /// Embeddings of a model that leaves prompts out of its pooling are not cached when a
    /// prompt applies (the text alone would not say where the prompt ends).
    pub async fn generate_embeddings_with_options<S: AsRef<str>>(
        &self,
        model_id: &str,
        texts: &[S],
        options: &EmbedOptions,
    ) -> Result<EmbeddingsOutput> {
        self.ensure_ready().await?;
        let inner = &self.inner;
        let spec = inner.spec(model_id)?;
        let mut caching = inner.caches(spec);
        let mut key = match caching {
            true => Some(inner.cache_key(spec).await?),
            false => None,
        };
        if texts.is_empty() {
            // Nothing to embed: no prompt to choose, no model to load.
            return Ok(output(spec, Vec::new(), 0, 0));
        }
        let fingerprint = key.map(|k| k.fingerprint);
        let known = match inner.known_prompts(spec, fingerprint) {
            Some(prompts) => Some(prompts),
            None => inner.read_prompts(spec, fingerprint).await,
        };
        let (prompts, mut handle) = match known {
            Some(prompts) => (prompts, None),
            None => {
                let handle = self.get_embedding_model(model_id).await?;
                // The loaded instance knows its outputs: its key checks what is found.
                key = caching.then(|| handle.instance().cache_key(spec));
                (handle.prompts()?, Some(handle))
            }
        };
        let prompt = prompts
            .select(options.prompt_name.as_deref(), options.prompt.as_deref())
            .map_err(|e| e.for_model(model_id))?;
        if prompts.excluded_from_pooling && !prompt.is_empty() {
            caching = false;
            key = None;
        }
        let seen: Vec<Cow<str>> = texts
            .iter()
            .map(|t| match prompt {
                "" => Cow::Borrowed(t.as_ref()),
                p => Cow::Owned(format!("{p}{}", t.as_ref())),
            })
            .collect();
        let mut found = cache_tiers::lookup(inner, spec, key, &seen).await;
        let mut misses = Misses::of(&seen, &found);
        if !misses.distinct.is_empty() {
            let handle = match handle.take() {
                Some(handle) => handle,
                None => self.get_embedding_model(model_id).await?,
            };
            // The instance that computes the misses decides the keys, so a response never
            // mixes vectors of a model and of its changed files; and what it knows of its
            // outputs checks the entries found before it was known.
            let own = caching.then(|| handle.instance().cache_key(spec));
            if own != key {
                match (key, own) {
                    (Some(was), Some(now)) if was.fingerprint == now.fingerprint => {
                        cache_tiers::recheck(inner, spec, now, &seen, &mut found)
                    }
                    _ => found = cache_tiers::lookup(inner, spec, own, &seen).await,
                }
                key = own;
                misses = Misses::of(&seen, &found);
            }
            let work = Texts {
                prompt: prompt.to_owned(),
                seen: misses.distinct.clone(),
            };
            let computed = embed_distinct(spec, handle, work, options.admission).await?;
            cache_tiers::store(inner, spec, key, &misses.distinct, &computed).await;
            let computed: Vec<_> = computed.into_iter().map(Some).collect();
            misses.fill(&mut found, &computed);
        }
        Ok(output(spec, found.entries, misses.at.len(), texts.len()))
    }
}

impl super::Inner {
    /// The prompts of the model's last load (or last read from its files), while its files
    /// are those `fingerprint` names.
    fn known_prompts(&self, spec: &ModelSpec, fingerprint: Option<u64>) -> Option<Arc<Prompts>> {
        let fingerprint = fingerprint?;
        let state = self.state.lock();
        let (of, prompts) = state.slots.get(&spec.id)?.prompts.as_ref()?;
        (*of == fingerprint).then(|| prompts.clone())
    }

    /// The prompts the loader that would serve `spec` reads from its files (no load:
    /// a request the cache answers never loads the model), remembered for `fingerprint`.
    /// `None` when caching is off or the loader cannot tell: the model is asked then.
    async fn read_prompts(
        self: &Arc<Self>,
        spec: &ModelSpec,
        fingerprint: Option<u64>,
    ) -> Option<Arc<Prompts>> {
        let fingerprint = fingerprint?;
        let (registry, s) = (self.registry.clone(), spec.clone());
        let panicked = || "reading the model's prompts panicked".to_owned();
        let read = off_runtime(ErrorCode::ModelLoadError, panicked, move || {
            registry.resolve(&s).ok()?.prompts(&s)
        });
        let prompts = Arc::new(read.await.ok()??);
        if let Some(slot) = self.state.lock().slots.get_mut(&spec.id) {
            slot.prompts = Some((fingerprint, prompts.clone()));
        }
        Some(prompts)
    }
}

/// Texts to compute: each as the model sees it, and the prompt it starts with.
struct Texts {
    prompt: String,
    seen: Vec<String>,
}

impl Texts {
    /// Whether these texts are few and short enough to tokenize on the async thread that
    /// carries them (BERT's tokenizer: ~0.1 ms for 170 bytes, 1.2 ms for 2 KiB of punctuation):
    /// handing a single text to the blocking pool cost two thread wake-ups, about a fifth
    /// of the server's per-request CPU under 32 single-text clients. Few enough that the
    /// tokenizer works serially (more would fan out to the compute pool and wait there
    /// behind a forward pass, holding the async thread).
    fn tokenize_inline(&self) -> bool {
        self.seen.len() <= 8 && self.seen.iter().map(String::len).sum::<usize>() <= 2048
    }
}

impl ModelManager {
    /// The most tokens `model_id` reads from one text (special tokens included), loading
    /// it if needed; `None` for an embedder that does not tokenize apart. A text whose
    /// count in [`EmbeddingsOutput::token_counts`] reaches it was cut there (or fit exactly).
    pub async fn input_token_limit(&self, model_id: &str) -> Result<Option<usize>> {
        let handle = self.get_embedding_model(model_id).await?;
        Ok(handle
            .embedder()?
            .as_token_embedder()
            .map(|t| t.max_tokens()))
    }

    /// Embeds sequences of token ids as given (OpenAI's token-array inputs): no special
    /// tokens are added, ids are checked against the model's vocabulary, and each sequence
    /// is cut at the model's longest input. Not cached. `INVALID_INPUT` for a model that
    /// does not take tokens, or an id out of range.
    pub async fn generate_embeddings_for_tokens(
        &self,
        model_id: &str,
        inputs: &[Vec<u32>],
        admission: Admission,
    ) -> Result<EmbeddingsOutput> {
        self.ensure_ready().await?;
        let spec = self.inner.spec(model_id)?;
        let handle = self.get_embedding_model(model_id).await?;
        let work = token_work(&handle, inputs).map_err(|e| e.for_model(model_id))?;
        let work_counts: Vec<usize> = work.iter().map(|(_, n)| *n).collect();
        let tokens: usize = work_counts.iter().sum();
        let vectors = handle
            .instance()
            .engine()?
            .embed(work, admission)
            .await
            .map_err(|e| e.for_model(model_id))?;
        check_shapes(spec, &vectors, inputs.len())?;
        let token_counts = work_counts;
        Ok(EmbeddingsOutput {
            token_counts,
            dimension: vectors.first().map_or(0, Vec::len),
            embeddings: vectors,
            cached: false,
            cache_hits: 0,
            tokens,
            model_id: model_id.to_owned(),
        })
    }
}

/// The engine's work for token inputs, checked against the model.
fn token_work(handle: &ModelHandle, inputs: &[Vec<u32>]) -> Result<Vec<(Work, usize)>> {
    let embedder = handle.embedder()?;
    let Some(model) = embedder.as_token_embedder() else {
        return Err(ModelError::invalid_input(format!(
            "model `{}` takes text, not token ids",
            handle.model_id()
        )));
    };
    let (vocab, max) = (model.vocab_size(), model.max_tokens());
    inputs
        .iter()
        .enumerate()
        .map(|(i, ids)| {
            if ids.is_empty() {
                return Err(
                    ModelError::invalid_input(format!("input {i} has no tokens"))
                        .with("field", format!("input[{i}]")),
                );
            }
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(ModelError::invalid_input(format!(
                    "input {i} holds token id {bad}, outside the model's vocabulary of {vocab}"
                ))
                .with("field", format!("input[{i}]")));
            }
            let ids: Vec<u32> = ids.iter().take(max).copied().collect();
            let n = ids.len();
            let type_ids = vec![0; n];
            Ok((Work::Tokens(TokenizedText::new(ids, type_ids)), n))
        })
        .collect()
}

fn output(
    spec: &ModelSpec,
    found: Vec<Option<CachedEmbedding>>,
    computed: usize,
    count: usize,
) -> EmbeddingsOutput {
    let entries: Vec<CachedEmbedding> = found.into_iter().flatten().collect();
    EmbeddingsOutput {
        dimension: entries
            .first()
            .map(|e| e.vector.len())
            .or(spec.dimension)
            .unwrap_or(0),
        tokens: entries.iter().map(|e| e.tokens as usize).sum(),
        token_counts: entries.iter().map(|e| e.tokens as usize).collect(),
        embeddings: entries.into_iter().map(|e| e.vector.to_vec()).collect(),
        cached: count > 0 && computed == 0,
        cache_hits: count - computed,
        model_id: spec.id.clone(),
    }
}

/// Tokenizes `texts` off the async runtime, then runs them through the instance's engine.
async fn embed_distinct(
    spec: &ModelSpec,
    handle: ModelHandle,
    texts: Texts,
    admission: Admission,
) -> Result<Vec<CachedEmbedding>> {
    let count = texts.seen.len();
    let panicked = || format!("the tokenizer of model `{}` panicked", spec.id);
    let (handle, work) = if texts.tokenize_inline() {
        let work = on_this_thread(ErrorCode::GenerateEmbeddingsError, panicked, || {
            prepare(&handle, texts)
        })?;
        (handle, work)
    } else {
        off_runtime(ErrorCode::GenerateEmbeddingsError, panicked, move || {
            let work = prepare(&handle, texts);
            (handle, work)
        })
        .await?
    };
    let work = work.map_err(|e| e.for_model(&spec.id))?;
    let tokens: Vec<u32> = work.iter().map(|(_, n)| *n as u32).collect();
    let vectors = handle
        .instance()
        .engine()?
        .embed(work, admission)
        .await
        .map_err(|e| e.for_model(&spec.id))?;
    check_shapes(spec, &vectors, count)?;
    Ok(vectors
        .into_iter()
        .zip(tokens)
        .map(|(vector, tokens)| CachedEmbedding {
            vector: vector.into(),
            tokens,
        })
        .collect())
}

/// The engine's work for `texts` and each text's token count.
fn prepare(handle: &ModelHandle, texts: Texts) -> Result<Vec<(Work, usize)>> {
    let embedder = handle.embedder()?;
    let Some(tokenizer) = embedder.as_token_embedder() else {
        return Ok(texts
            .seen
            .into_iter()
            .map(|t| {
                let estimate = estimated_tokens(&t);
                (Work::Text(t), estimate)
            })
            .collect());
    };
    let count = texts.seen.len();
    let tokenized = if texts.prompt.is_empty() {
        let refs: Vec<&str> = texts.seen.iter().map(String::as_str).collect();
        tokenizer.tokenize(&refs)?
    } else {
        // Each text was keyed with the prompt in front; the tokenizer is given them apart
        // to know where the prompt ends.
        let at = texts.prompt.len();
        let refs: Vec<&str> = texts.seen.iter().map(|t| &t[at..]).collect();
        tokenizer.tokenize_with_prompt(&texts.prompt, &refs)?
    };
    if tokenized.len() != count {
        return Err(ModelError::new(
            ErrorCode::GenerateEmbeddingsError,
            format!(
                "the tokenizer returned {} sequences for {count} texts",
                tokenized.len(),
            ),
        ));
    }
    Ok(tokenized
        .into_iter()
        .map(|t| {
            let n = t.len();
            (Work::Tokens(t), n)
        })
        .collect())
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
