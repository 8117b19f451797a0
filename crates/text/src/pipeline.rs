//! Texts in, vectors out: tokenize, batch, forward, pool, normalize, restore input order.

use crate::batching::{length_sorted_batches, PackedBatch, PaddedBatch, RowSpan};
use crate::pooling::{normalize, pool, Pooling};
use crate::tokenize::TextTokenizer;
use model_manager_core::backend::{BatchCost, TokenizedText};
use model_manager_core::{ErrorCode, ModelError, Result};

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
    /// Already pooled sentence vectors, row-major `[batch, hidden]`.
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

/// Tokenizer plus pooling settings; embeds with any [`TokenEncoder`].
pub struct EmbeddingPipeline {
    /// The tokenizer (truncating at the model's max length).
    pub tokenizer: TextTokenizer,
    /// Pooling mode for token outputs.
    pub pooling: Pooling,
    /// Whether vectors are normalized.
    pub normalize: bool,
    /// Texts per forward pass.
    pub batch_size: usize,
}

impl EmbeddingPipeline {
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
        let (output, spans) = match encoder.batch_cost() {
            BatchCost::Padded => {
                let batch = PaddedBatch::new(rows, self.tokenizer.pad_id());
                (encoder.forward(&batch)?, batch.spans())
            }
            BatchCost::Packed => {
                let batch = PackedBatch::new(rows);
                (encoder.forward_packed(&batch)?, batch.spans())
            }
        };
        let mut vectors = self.pool(output, &spans)?;
        if self.normalize {
            vectors.iter_mut().for_each(|v| normalize(v));
        }
        Ok(vectors)
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
            EncoderOutput::Tokens { data, hidden } => pool(&data, hidden, spans, self.pooling),
            EncoderOutput::Pooled { data, hidden } => {
                data.chunks(hidden).map(<[f32]>::to_vec).collect()
            }
        })
    }
}
