//! Texts in, vectors out: tokenize, batch, forward, pool, normalize, restore input order.

use crate::batching::{length_sorted_batches, PackedBatch, PaddedBatch, RowSpan};
use crate::heads::RowOutput;
use crate::sentence::{SentenceConfig, Stage};
use crate::tokenize::TextTokenizer;
use model_manager_core::backend::{BatchCost, TokenizedText};
use model_manager_core::{ErrorCode, ModelError, ModelSpec, Outputs, Result};
use std::path::Path;

/// What a forward pass returns for a batch.
pub enum EncoderOutput {
    /// Token embeddings, row-major: `[batch, seq, hidden]` for a padded batch,
    /// `[total_tokens, hidden]` for a packed one. Pooled here.
    Tokens {
        /// The values.
        data: Vec<f32>,
        /// Size of each token's vector.
        hidden: usize,
    },
    /// Already pooled sentence vectors, row-major `[batch, hidden]` (an ONNX export's
    /// `sentence_embedding`): taken as the output of the folder's `Dense` modules when its
    /// width says so, and normalized as the folder says.
    Pooled {
        /// The values.
        data: Vec<f32>,
        /// Size of each vector.
        hidden: usize,
    },
}

/// The engine-specific part: one forward pass over a batch.
pub trait TokenEncoder {
    /// Runs the model on a padded batch.
    fn forward(&self, batch: &PaddedBatch) -> Result<EncoderOutput>;

    /// Runs the model on a packed batch, for encoders that work without padding. Those
    /// return [`BatchCost::Packed`] from [`TokenEncoder::batch_cost`] and are never handed a
    /// padded batch.
    fn forward_packed(&self, _batch: &PackedBatch) -> Result<EncoderOutput> {
        Err(ModelError::new(
            ErrorCode::GenerateEmbeddingsError,
            "this encoder does not run packed batches",
        ))
    }

    /// Which batch layout the encoder takes.
    fn batch_cost(&self) -> BatchCost {
        BatchCost::Padded
    }
}

/// Tokenizer plus the sentence-transformers modules after the model; embeds with any
/// [`TokenEncoder`].
pub struct EmbeddingPipeline {
    /// The tokenizer (truncating at the model's max length).
    pub tokenizer: TextTokenizer,
    /// Pooling, Dense and Normalize modules, prompts.
    pub sentence: SentenceConfig,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// What each row becomes: a sentence embedding (as `sentence` says), a scoring head's
    /// logits, or a SPLADE vector.
    pub output: RowOutput,
}

impl EmbeddingPipeline {
    /// The pipeline of a model folder: its sentence-transformers files (and `spec`'s
    /// overrides) and the tokenizer at `tokenizer`, truncating at the folder's
    /// `max_seq_length` capped by `model_max` (the longest input the model's positions
    /// allow), or at `model_max` alone.
    pub fn load(
        folder: &Path,
        tokenizer: &Path,
        spec: &ModelSpec,
        model_max: Option<usize>,
        default_normalize: bool,
    ) -> Result<Self> {
        let sentence = SentenceConfig::resolve(folder, spec, default_normalize)?;
        Self::build(
            folder,
            tokenizer,
            spec,
            model_max,
            sentence,
            RowOutput::Sentence,
        )
    }

    /// The pipeline of a scoring or SPLADE model (`output` other than
    /// [`RowOutput::Sentence`]): the tokenizer and the longest input as [`Self::load`]
    /// finds them, no sentence-transformers modules.
    pub fn load_rows(
        folder: &Path,
        tokenizer: &Path,
        spec: &ModelSpec,
        model_max: Option<usize>,
        output: RowOutput,
    ) -> Result<Self> {
        let mut sentence = SentenceConfig::resolve(folder, spec, false)?;
        sentence.stages.clear();
        Self::build(folder, tokenizer, spec, model_max, sentence, output)
    }

    fn build(
        folder: &Path,
        tokenizer: &Path,
        spec: &ModelSpec,
        model_max: Option<usize>,
        sentence: SentenceConfig,
        output: RowOutput,
    ) -> Result<Self> {
        let limit = model_max.unwrap_or(usize::MAX);
        let max_length = sentence.max_seq_length.unwrap_or(limit).min(limit);
        if max_length == usize::MAX {
            return Err(ModelError::file_load(
                ErrorCode::ModelLoadError,
                folder,
                format!(
                    "no longest input is known: set models.{}.max_seq_length",
                    spec.id
                ),
            ));
        }
        let mut tokenizer = TextTokenizer::from_file(tokenizer, max_length)?;
        if sentence.do_lower_case {
            tokenizer = tokenizer.lowercased()?;
        }
        Ok(Self {
            tokenizer,
            sentence,
            batch_size: spec.batch_size,
            output,
        })
    }

    /// What the rows are, for the manager.
    pub fn outputs(&self) -> Outputs {
        match &self.output {
            RowOutput::Sentence => Outputs::Embeddings,
            RowOutput::Logits(head) => Outputs::Scores(head.clone()),
            RowOutput::Splade(pooling) => Outputs::Sparse {
                vocab: pooling.vocab,
            },
        }
    }

    /// Tokenizes pairs with the tokenizer's pair template, cut longest-first.
    pub fn tokenize_pairs(&self, pairs: &[(&str, &str)]) -> Result<Vec<TokenizedText>> {
        self.tokenizer.encode_pairs(pairs)
    }

    /// Tokenizes `prompt` + each text, recording the prompt's tokens.
    pub fn tokenize_with_prompt(&self, prompt: &str, texts: &[&str]) -> Result<Vec<TokenizedText>> {
        self.tokenizer.encode_with_prompt(prompt, texts)
    }

    /// Tokens the model reads for `texts`, special tokens included, after truncation.
    pub fn count_tokens(&self, texts: &[&str]) -> Option<usize> {
        let tokens = self.tokenizer.encode(texts).ok()?;
        Some(tokens.iter().map(TokenizedText::len).sum())
    }

    /// Tokenizes `texts`, truncated at the model's longest input.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<TokenizedText>> {
        self.tokenizer.encode(texts)
    }

    /// One vector per text, in input order, in length-sorted batches of `batch_size`: for
    /// direct callers (the manager's engine batches through [`Self::embed_tokens`]).
    pub fn embed(&self, encoder: &dyn TokenEncoder, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let tokens = self.tokenize(texts)?;
        let lengths: Vec<usize> = tokens.iter().map(TokenizedText::len).collect();
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for batch_indices in length_sorted_batches(&lengths, self.batch_size) {
            let rows: Vec<&TokenizedText> = batch_indices.iter().map(|&i| &tokens[i]).collect();
            for (i, vector) in batch_indices
                .into_iter()
                .zip(self.embed_tokens(encoder, &rows)?)
            {
                out[i] = vector;
            }
        }
        Ok(out)
    }

    /// One forward pass over `rows` as one batch (padded or packed, as the encoder takes
    /// it), pooled and normalized: one vector per row, in order.
    pub fn embed_tokens(
        &self,
        encoder: &dyn TokenEncoder,
        rows: &[&TokenizedText],
    ) -> Result<Vec<Vec<f32>>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let (output, mut spans) = match encoder.batch_cost() {
            BatchCost::Padded => {
                let batch = PaddedBatch::new(rows, self.tokenizer.pad_id());
                (encoder.forward(&batch)?, batch.spans())
            }
            BatchCost::Packed => {
                let batch = PackedBatch::new(rows);
                (encoder.forward_packed(&batch)?, batch.spans())
            }
        };
        for (span, row) in spans.iter_mut().zip(rows) {
            span.prompt = row.prompt_tokens;
        }
        match &self.output {
            RowOutput::Sentence => {}
            RowOutput::Logits(head) => return logit_rows(output, rows.len(), head.labels.len()),
            RowOutput::Splade(pooling) => {
                let vectors = match output {
                    EncoderOutput::Tokens { data, hidden } if hidden == pooling.vocab => {
                        pooling.pool(&data, &spans)
                    }
                    EncoderOutput::Pooled { data, hidden }
                        if hidden == pooling.vocab && data.len() == rows.len() * hidden =>
                    {
                        data.chunks(hidden)
                            .map(model_manager_core::SparseVector::from_dense)
                            .collect()
                    }
                    _ => return Err(malformed_rows("SPLADE logits over the vocabulary")),
                };
                return vectors.iter().map(|v| v.to_row()).collect();
            }
        }
        let pooled_output = matches!(output, EncoderOutput::Pooled { .. });
        let vectors = self.pool(output, &spans)?;
        Ok(vectors
            .into_iter()
            .map(|v| match pooled_output {
                true => self.finish_pooled(v),
                false => self.sentence.finish(v),
            })
            .collect())
    }

    /// An export's own pooled vector: before the Dense modules if its width is theirs to
    /// take (and not what they give), else after them; normalized either way as the folder
    /// says.
    fn finish_pooled(&self, vector: Vec<f32>) -> Vec<f32> {
        let stages = &self.sentence.stages;
        let dense = stages.iter().find_map(|s| match s {
            Stage::Dense(d) => Some(d),
            Stage::Normalize => None,
        });
        let last_dense = stages.iter().rev().find_map(|s| match s {
            Stage::Dense(d) => Some(d),
            Stage::Normalize => None,
        });
        let before_dense = match (dense, last_dense) {
            (Some(first), Some(last)) => {
                vector.len() == first.inputs() && vector.len() != last.outputs()
            }
            _ => false,
        };
        if before_dense {
            return self.sentence.finish(vector);
        }
        let mut vector = vector;
        if self.sentence.normalizes() {
            crate::pooling::normalize(&mut vector);
        }
        vector
    }

    fn pool(&self, output: EncoderOutput, spans: &[RowSpan]) -> Result<Vec<Vec<f32>>> {
        let (data, hidden, expected) = match &output {
            EncoderOutput::Tokens { data, hidden } => {
                let tokens = spans.iter().map(|s| s.start + s.len).max().unwrap_or(0);
                (data, *hidden, tokens * hidden)
            }
            EncoderOutput::Pooled { data, hidden } => (data, *hidden, spans.len() * hidden),
        };
        // A token output may be longer than the last real token (padding), never shorter.
        let fits = match &output {
            EncoderOutput::Tokens { .. } => data.len() >= expected,
            EncoderOutput::Pooled { .. } => data.len() == expected,
        };
        if hidden == 0 || !fits {
            return Err(ModelError::new(
                ErrorCode::GenerateEmbeddingsError,
                format!(
                    "the model returned {} values for a batch of {} texts ({expected} expected, hidden size {hidden})",
                    data.len(),
                    spans.len(),
                ),
            ));
        }
        Ok(match output {
            EncoderOutput::Tokens { data, hidden } => {
                self.sentence.pooling.pool(&data, hidden, spans)
            }
            EncoderOutput::Pooled { data, hidden } => {
                data.chunks(hidden).map(<[f32]>::to_vec).collect()
            }
        })
    }
}

fn malformed_rows(what: &str) -> ModelError {
    ModelError::new(
        ErrorCode::GenerateEmbeddingsError,
        format!("the model did not return {what}"),
    )
}

/// A scoring head's rows: one pooled row of `labels` logits per input.
fn logit_rows(output: EncoderOutput, count: usize, labels: usize) -> Result<Vec<Vec<f32>>> {
    match output {
        EncoderOutput::Pooled { data, hidden }
            if hidden == labels && data.len() == count * labels =>
        {
            Ok(data.chunks(labels).map(<[f32]>::to_vec).collect())
        }
        _ => Err(malformed_rows(&format!("{labels} logits per input"))),
    }
}
