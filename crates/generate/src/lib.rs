//! Engine-free text generation for model-manager's `text2text` backends.
//!
//! The decoding strategies (greedy, seeded temperature and nucleus sampling, beam search with
//! Hugging Face transformers' rules) run over any model that implements [`StepDecoder`]:
//! "feed one token per row, give me the next-token logits of every row, reorder the rows".
//! The candle T5 and the ONNX Runtime encoder-decoder both decode through [`decode`], so a
//! request means the same on either backend. The request bounds ([`MAX_BEAMS`],
//! [`MAX_NEW_TOKENS`], [`MAX_KV_CACHE_BYTES`]) and the `models.<id>.*` generation options
//! ([`GenerationDefaults`]) live here too, and [`TextToText`]: a backend's [`EncoderDecoder`]
//! with its tokenizer, prompt in and text out.

mod beam;
mod params;
mod sample;
mod single;
mod text2text;
pub mod token_ids;

pub use beam::EarlyStopping;
pub use params::{
    check_cache_bytes, check_limits, GenerationDefaults, Strategy, GENERATION_OPTION_KEYS,
    MAX_BEAMS, MAX_KV_CACHE_BYTES, MAX_NEW_TOKENS,
};
pub use text2text::{EncoderDecoder, TextToText};
pub use token_ids::SpecialTokens;

use model_manager_core::{ErrorCode, ModelError, Result};

/// A decoder run one step at a time over a batch of rows (the beams of a search, or one row).
pub trait StepDecoder {
    /// One generation's state over its rows (e.g. a KV cache per row).
    type Rows;
    /// The state of `rows` rows before any token.
    fn start(&self, rows: usize) -> Result<Self::Rows>;
    /// Feeds one token per row; the next-token logits of every row, row-major
    /// `[rows * vocab]`.
    fn step(&self, rows: &mut Self::Rows, tokens: &[u32]) -> Result<Vec<f32>>;
    /// Makes row `i` continue from row `parents[i]` (beam search keeps the best children,
    /// which may share a parent).
    fn reorder(&self, rows: &mut Self::Rows, parents: &[u32]) -> Result<()>;
}

/// One generation's fixed token settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoding {
    /// The first decoder input.
    pub start: u32,
    /// The end-of-sequence token: generation stops there (it is not returned).
    pub eos: u32,
    /// Most tokens to generate (the end token not counted).
    pub max_length: usize,
}

/// Generated token ids (no start token, no end token) of `decoder` under `strategy`.
pub fn decode<D: StepDecoder>(
    decoder: &D,
    tokens: Decoding,
    strategy: Strategy,
) -> Result<Vec<u32>> {
    let run = Run { decoder, tokens };
    match strategy {
        Strategy::Greedy => run.one_row(|logits| Ok(single::argmax(logits))),
        Strategy::Sample {
            temperature,
            top_p,
            seed,
        } => {
            let mut sampler = sample::Sampler::new(seed, temperature, top_p);
            run.one_row(|logits| sampler.pick(logits))
        }
        Strategy::Beam {
            num_beams,
            early_stopping,
            length_penalty,
        } => beam::beam_search(&run, num_beams, early_stopping, length_penalty),
    }
}

/// A `GENERATION_ERROR`: generation failed at run time.
pub fn generation_error(message: impl Into<String>) -> ModelError {
    ModelError::new(ErrorCode::GenerationError, message)
}

/// A decoder and its token settings, with the checks every strategy relies on.
struct Run<'a, D> {
    decoder: &'a D,
    tokens: Decoding,
}

impl<D: StepDecoder> Run<'_, D> {
    fn start_rows(&self, rows: usize) -> Result<D::Rows> {
        self.decoder.start(rows)
    }

    /// The next-token logits of every row; NaN logits (an overflow in the weights'
    /// precision) are an error rather than a silent argmax over garbage.
    fn step(&self, state: &mut D::Rows, tokens: &[u32]) -> Result<Vec<f32>> {
        let logits = self.decoder.step(state, tokens)?;
        if logits.is_empty() || logits.len() % tokens.len().max(1) != 0 {
            return Err(generation_error(format!(
                "the decoder gave {} logits for {} rows",
                logits.len(),
                tokens.len()
            )));
        }
        if logits.iter().any(|x| x.is_nan()) {
            return Err(generation_error(
                "the model produced NaN logits (overflow in its weights' precision?)",
            ));
        }
        Ok(logits)
    }

    fn reorder(&self, state: &mut D::Rows, parents: &[u32]) -> Result<()> {
        self.decoder.reorder(state, parents)
    }
}
