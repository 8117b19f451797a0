//! The T5 model as `model-manager-generate` sees it: an [`EncoderDecoder`] whose prompts
//! give a [`StepDecoder`] (one generation's encoder output and the decoder step every
//! strategy builds on).

use super::model::{DecoderState, T5Model};
use candle_core::Tensor;
use model_manager_core::{ModelError, Result};
use model_manager_generate::{EncoderDecoder, SpecialTokens, StepDecoder};

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

impl EncoderDecoder for T5Model {
    type Steps<'a> = T5Steps<'a>;

    fn encode(&self, ids: &[u32]) -> Result<T5Steps<'_>> {
        let encoder_output = T5Model::encode(self, ids).map_err(generation_error)?;
        Ok(T5Steps {
            model: self,
            encoder_output,
        })
    }

    fn special_tokens(&self) -> SpecialTokens {
        let config = self.config();
        SpecialTokens {
            pad_token_id: config.pad_token_id,
            eos_token_id: config.eos_token_id,
            decoder_start_token_id: config.decoder_start_token_id,
        }
    }

    fn vocab_size(&self) -> Option<usize> {
        Some(self.config().vocab_size)
    }

    fn bytes_per_row_token(&self) -> u64 {
        self.kv_bytes_per_row_token()
    }
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
