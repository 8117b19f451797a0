//! The T5 model as a [`StepDecoder`]: one generation's encoder output, and the decoder step
//! every strategy of `model-manager-generate` builds on.

use super::model::{DecoderState, T5Model};
use candle_core::Tensor;
use model_manager_core::{ModelError, Result};
use model_manager_generate::StepDecoder;

/// A `GENERATION_ERROR` from candle.
pub fn generation_error(e: candle_core::Error) -> ModelError {
    model_manager_generate::generation_error(format!("generation failed: {e}"))
        .caused_by("CandleError", e)
}

/// One generation's decoder over the encoder output of its prompt.
pub struct T5Steps<'a> {
    pub model: &'a T5Model,
    pub encoder_output: Tensor,
}

impl StepDecoder for T5Steps<'_> {
    type Rows = DecoderState;

    fn start(&self, rows: usize) -> Result<DecoderState> {
        self.model
            .start(&self.encoder_output, rows)
            .map_err(generation_error)
    }

    fn step(&self, state: &mut DecoderState, tokens: &[u32]) -> Result<Vec<f32>> {
        self.model
            .step(state, tokens)
            .and_then(|logits| logits.flatten_all()?.to_vec1::<f32>())
            .map_err(generation_error)
    }

    fn reorder(&self, state: &mut DecoderState, parents: &[u32]) -> Result<()> {
        state.reorder(parents).map_err(generation_error)
    }
}
