//! One generation's decoder: its fixed inputs and the step every strategy builds on (start
//! rows, feed tokens, read the next-token logits).

use super::model::{DecoderState, T5Model};
use candle_core::Tensor;
use model_manager_core::{ErrorCode, ModelError, Result};

/// A `GENERATION_ERROR` from candle.
pub fn generation_error(e: candle_core::Error) -> ModelError {
    ModelError::new(
        ErrorCode::GenerationError,
        format!("generation failed: {e}"),
    )
    .caused_by("CandleError", e)
}

/// One generation's fixed inputs.
pub struct Decoder<'a> {
    pub model: &'a T5Model,
    pub encoder_output: Tensor,
    pub start: u32,
    pub eos: u32,
    /// Most tokens to generate (the end token not counted).
    pub max_length: usize,
}

impl Decoder<'_> {
    /// A decoder state of `rows` rows.
    pub fn start_rows(&self, rows: usize) -> Result<DecoderState> {
        self.model
            .start(&self.encoder_output, rows)
            .map_err(generation_error)
    }

    /// Next-token logits of every row after feeding `tokens`, row-major `[rows * vocab]`.
    pub fn step(&self, state: &mut DecoderState, tokens: &[u32]) -> Result<Vec<f32>> {
        let logits = self
            .model
            .step(state, tokens)
            .and_then(|logits| logits.flatten_all()?.to_vec1::<f32>())
            .map_err(generation_error)?;
        if logits.iter().any(|x| x.is_nan()) {
            return Err(ModelError::new(
                ErrorCode::GenerationError,
                "the model produced NaN logits (overflow in its weights' precision?)",
            ));
        }
        Ok(logits)
    }
}
