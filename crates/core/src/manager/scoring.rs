//! Models whose engine rows are not sentence embeddings: cross-encoders (`rerank`),
//! sequence classifiers (`classifier`) and SPLADE (`sparse`). Their inputs are tokenized
//! (texts, or pairs with the tokenizer's pair template) and batched by the same engine as
//! embeddings, with its admission, cancellation and metrics; what comes back is read as
//! [`Outputs`] says. Not cached.

use super::handle::ModelHandle;
use super::ModelManager;
use crate::blocking::off_runtime;
use crate::engine::{Admission, Work};
use crate::error::{ErrorCode, ModelError, Result};
use crate::model::TokenizedText;
use crate::outputs::{Outputs, ScoreHead, SparseVector};
use serde::Serialize;

/// How [`ModelManager::rerank`], [`ModelManager::classify`] and
/// [`ModelManager::embed_sparse`] run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreOptions {
    /// What to do when the engine's queue is full.
    pub admission: Admission,
    /// Cut inputs longer than the model reads (longest text of a pair first), as
    /// sentence-transformers does; `false` refuses them with `INVALID_INPUT`.
    pub truncate: bool,
    /// Scores as the head's raw logits, without its activation.
    pub raw_scores: bool,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        Self {
            admission: Admission::FailFast,
            truncate: true,
            raw_scores: false,
        }
    }
}

/// One input of a classifier: a text, or a pair of texts (NLI-style).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassifyInput {
    /// A text.
    Text(String),
    /// A pair, encoded with the tokenizer's pair template.
    Pair(String, String),
}

/// A label and its score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelScore {
    /// The label (`id2label`).
    pub label: String,
    /// Its score after the head's activation (softmax or sigmoid).
    pub score: f32,
}

/// What [`ModelManager::rerank`] computed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RerankOutput {
    /// One score per document, in input order (the head's activation applied unless
    /// `raw_scores`).
    pub scores: Vec<f32>,
    /// Tokens the model read for every pair.
    pub tokens: usize,
    /// The model that scored them.
    pub model_id: String,
}

/// What [`ModelManager::classify`] computed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassifyOutput {
    /// Per input, every label with its score, highest first.
    pub predictions: Vec<Vec<LabelScore>>,
    /// Tokens the model read.
    pub tokens: usize,
    /// The model.
    pub model_id: String,
}

/// What [`ModelManager::embed_sparse`] computed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SparseOutput {
    /// One sparse vector per text, in input order.
    pub vectors: Vec<SparseVector>,
    /// Tokens the model read for all the texts.
    pub tokens: usize,
    /// Tokens of each text, in input order.
    pub token_counts: Vec<usize>,
    /// Entries of the vocabulary the indices point into.
    pub vocab: usize,
    /// The model.
    pub model_id: String,
}

/// What a call computed: its rows, each input's tokens, and what the rows are.
struct Computed {
    rows: Vec<Vec<f32>>,
    token_counts: Vec<usize>,
    outputs: Outputs,
}

impl ModelManager {
    /// Scores each document against `query` with a cross-encoder (type `rerank`): one
    /// score per document, in input order (sort them yourself, or use the HTTP routes,
    /// which do). `INVALID_MODEL_TYPE` for a model that is not a one-label scorer.
    pub async fn rerank<S: AsRef<str>>(
        &self,
        model_id: &str,
        query: &str,
        documents: &[S],
        options: &ScoreOptions,
    ) -> Result<RerankOutput> {
        let pairs = documents
            .iter()
            .map(|d| ClassifyInput::Pair(query.to_owned(), d.as_ref().to_owned()))
            .collect();
        let computed = self.compute(model_id, pairs, options).await?;
        let head = score_head(model_id, &computed.outputs)?;
        if head.labels.len() != 1 {
            return Err(wrong_outputs(
                model_id,
                "a one-label cross-encoder",
                &computed.outputs,
            ));
        }
        let scores = computed
            .rows
            .iter()
            .map(|logits| match options.raw_scores {
                true => logits[0],
                false => head.activation.apply(logits)[0],
            })
            .collect();
        Ok(RerankOutput {
            scores,
            tokens: computed.token_counts.iter().sum(),
            model_id: model_id.to_owned(),
        })
    }

    /// Every label's score for each input with a sequence classifier (type `classifier`),
    /// highest first. A pair whose second text is empty is classified as its first text
    /// alone, as transformers' text-classification pipeline does.
    pub async fn classify(
        &self,
        model_id: &str,
        inputs: &[ClassifyInput],
        options: &ScoreOptions,
    ) -> Result<ClassifyOutput> {
        let inputs = inputs
            .iter()
            .map(|input| match input {
                ClassifyInput::Pair(a, b) if b.is_empty() => ClassifyInput::Text(a.clone()),
                other => other.clone(),
            })
            .collect();
        let computed = self.compute(model_id, inputs, options).await?;
        let head = score_head(model_id, &computed.outputs)?;
        let predictions = computed
            .rows
            .iter()
            .map(|logits| {
                let scores = match options.raw_scores {
                    true => logits.clone(),
                    false => head.activation.apply(logits),
                };
                let mut labelled: Vec<LabelScore> = head
                    .labels
                    .iter()
                    .zip(scores)
                    .map(|(label, score)| LabelScore {
                        label: label.clone(),
                        score,
                    })
                    .collect();
                labelled.sort_by(|a, b| b.score.total_cmp(&a.score));
                labelled
            })
            .collect();
        Ok(ClassifyOutput {
            predictions,
            tokens: computed.token_counts.iter().sum(),
            model_id: model_id.to_owned(),
        })
    }

    /// A sparse vector over the vocabulary for each text with a SPLADE model (type
    /// `sparse`), in input order.
    pub async fn embed_sparse<S: AsRef<str>>(
        &self,
        model_id: &str,
        texts: &[S],
        options: &ScoreOptions,
    ) -> Result<SparseOutput> {
        let texts = texts
            .iter()
            .map(|t| ClassifyInput::Text(t.as_ref().to_owned()))
            .collect();
        let computed = self.compute(model_id, texts, options).await?;
        let Outputs::Sparse { vocab } = computed.outputs else {
            return Err(wrong_outputs(
                model_id,
                "a sparse (SPLADE) model",
                &computed.outputs,
            ));
        };
        let vectors = computed
            .rows
            .iter()
            .map(|row| SparseVector::from_row(row, vocab))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| e.for_model(model_id))?;
        Ok(SparseOutput {
            vectors,
            tokens: computed.token_counts.iter().sum(),
            token_counts: computed.token_counts,
            vocab,
            model_id: model_id.to_owned(),
        })
    }

    /// Tokenizes `inputs` off the async runtime and runs them through the model's engine.
    async fn compute(
        &self,
        model_id: &str,
        inputs: Vec<ClassifyInput>,
        options: &ScoreOptions,
    ) -> Result<Computed> {
        self.ensure_ready().await?;
        self.inner.spec(model_id)?;
        let count = inputs.len();
        let handle = self.get_model(model_id).await?;
        let outputs = handle.engine_model()?.outputs();
        if count == 0 {
            return Ok(Computed {
                rows: Vec::new(),
                token_counts: Vec::new(),
                outputs,
            });
        }
        let panicked = || format!("the tokenizer of model `{model_id}` panicked");
        let (handle, tokenized) =
            off_runtime(ErrorCode::GenerateEmbeddingsError, panicked, move || {
                let tokenized = tokenize(&handle, &inputs);
                (handle, tokenized)
            })
            .await?;
        let (work, limit) = tokenized.map_err(|e| e.for_model(model_id))?;
        if !options.truncate {
            refuse_cut(&work, limit)?;
        }
        let token_counts: Vec<usize> = work.iter().map(TokenizedText::len).collect();
        let work: Vec<(Work, usize)> = work
            .into_iter()
            .map(|t| {
                let n = t.len();
                (Work::Tokens(t), n)
            })
            .collect();
        let rows = handle
            .instance()
            .engine()?
            .embed(work, options.admission)
            .await
            .map_err(|e| e.for_model(model_id))?;
        if rows.len() != count {
            return Err(ModelError::new(
                ErrorCode::GenerateEmbeddingsError,
                format!(
                    "model `{model_id}` returned {} rows for {count} inputs",
                    rows.len()
                ),
            )
            .for_model(model_id));
        }
        Ok(Computed {
            rows,
            token_counts,
            outputs,
        })
    }
}

/// The tokens of every input, in order (texts and pairs each tokenized at once), and the
/// model's longest input.
fn tokenize(handle: &ModelHandle, inputs: &[ClassifyInput]) -> Result<(Vec<TokenizedText>, usize)> {
    let model = handle.engine_model()?;
    let Some(tokenizer) = model.as_token_embedder() else {
        return Err(ModelError::new(
            ErrorCode::InvalidModelType,
            format!(
                "model `{}` does not tokenize apart from its forward pass",
                handle.model_id()
            ),
        ));
    };
    let texts: Vec<&str> = inputs
        .iter()
        .filter_map(|i| match i {
            ClassifyInput::Text(t) => Some(t.as_str()),
            ClassifyInput::Pair(..) => None,
        })
        .collect();
    let pairs: Vec<(&str, &str)> = inputs
        .iter()
        .filter_map(|i| match i {
            ClassifyInput::Pair(a, b) => Some((a.as_str(), b.as_str())),
            ClassifyInput::Text(_) => None,
        })
        .collect();
    let mut texts = tokenizer.tokenize(&texts)?.into_iter();
    let mut pairs = match pairs.is_empty() {
        true => Vec::new().into_iter(),
        false => tokenizer.tokenize_pairs(&pairs)?.into_iter(),
    };
    let tokens = inputs
        .iter()
        .map(|i| match i {
            ClassifyInput::Text(_) => texts.next(),
            ClassifyInput::Pair(..) => pairs.next(),
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            ModelError::new(
                ErrorCode::GenerateEmbeddingsError,
                "the tokenizer returned fewer sequences than inputs",
            )
        })?;
    Ok((tokens, tokenizer.max_tokens()))
}

/// `INVALID_INPUT` for the first input that reached the model's limit (it may have been
/// cut there), as `truncate = false` asks.
fn refuse_cut(tokens: &[TokenizedText], limit: usize) -> Result<()> {
    match tokens.iter().position(|t| t.len() >= limit) {
        Some(i) => Err(ModelError::invalid_input(format!(
            "input {i} reaches the model's limit of {limit} tokens and would be cut (truncate = false)"
        ))
        .with("field", format!("inputs[{i}]"))),
        None => Ok(()),
    }
}

fn score_head<'a>(model_id: &str, outputs: &'a Outputs) -> Result<&'a ScoreHead> {
    match outputs {
        Outputs::Scores(head) if !head.labels.is_empty() => Ok(head),
        other => Err(wrong_outputs(
            model_id,
            "a scoring (rerank or classifier) model",
            other,
        )),
    }
}

fn wrong_outputs(model_id: &str, wanted: &str, outputs: &Outputs) -> ModelError {
    ModelError::new(
        ErrorCode::InvalidModelType,
        format!(
            "model `{model_id}` is of kind `{}`, not {wanted}",
            outputs.kind()
        ),
    )
    .for_model(model_id)
}
