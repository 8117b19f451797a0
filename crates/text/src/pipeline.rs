//! Texts in, vectors out: tokenize, length-sort into batches, forward, pool, normalize,
//! restore input order.

use crate::batching::{length_sorted_batches, PaddedBatch};
use crate::pooling::{normalize, pool, Pooling};
use crate::tokenize::TextTokenizer;
use model_manager_core::{ErrorCode, ModelError, Result};

/// What a forward pass returns for a batch.
pub enum EncoderOutput {
    /// Token embeddings, row-major `[batch, seq, hidden]`: pooled here.
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

/// The engine-specific part: one forward pass over a padded batch.
pub trait TokenEncoder {
    /// Runs the model on `batch`.
    fn forward(&self, batch: &PaddedBatch) -> Result<EncoderOutput>;
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
        Some(tokens.iter().map(|t| t.ids.len()).sum())
    }

    /// One vector per text, in input order.
    pub fn embed(&self, encoder: &dyn TokenEncoder, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let tokens = self.tokenizer.encode(texts)?;
        let lengths: Vec<usize> = tokens.iter().map(|t| t.ids.len()).collect();
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for batch_indices in length_sorted_batches(&lengths, self.batch_size) {
            let rows: Vec<_> = batch_indices.iter().map(|&i| &tokens[i]).collect();
            let batch = PaddedBatch::new(&rows, self.tokenizer.pad_id());
            let vectors = self.pool(encoder.forward(&batch)?, &batch)?;
            for (i, mut vector) in batch_indices.into_iter().zip(vectors) {
                if self.normalize {
                    normalize(&mut vector);
                }
                out[i] = vector;
            }
        }
        Ok(out)
    }

    fn pool(&self, output: EncoderOutput, batch: &PaddedBatch) -> Result<Vec<Vec<f32>>> {
        let (data, hidden, per_row) = match &output {
            EncoderOutput::Tokens { data, hidden } => (data, *hidden, batch.seq * hidden),
            EncoderOutput::Pooled { data, hidden } => (data, *hidden, *hidden),
        };
        if hidden == 0 || data.len() != batch.batch * per_row {
            return Err(ModelError::new(
                ErrorCode::GenerateEmbeddingsError,
                format!(
                    "the model returned {} values for a batch of {} x {} tokens (hidden size {hidden})",
                    data.len(),
                    batch.batch,
                    batch.seq
                ),
            ));
        }
        Ok(match output {
            EncoderOutput::Tokens { data, hidden } => pool(
                &data,
                hidden,
                &batch.attention_mask,
                batch.seq,
                self.pooling,
            ),
            EncoderOutput::Pooled { data, hidden } => {
                data.chunks(hidden).map(<[f32]>::to_vec).collect()
            }
        })
    }
}
