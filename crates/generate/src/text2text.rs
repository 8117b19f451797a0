//! A tokenizer and an encoder-decoder together: prompt in, text out. A backend provides the
//! [`EncoderDecoder`] (its encoder pass and its [`StepDecoder`]); [`TextToText`] does the rest
//! the same way for every backend: tokenizing within `max_input_length`, the request's
//! parameters over the model's defaults, the bounds, decoding and detokenizing.

use super::{
    check_cache_bytes, check_limits, decode, Decoding, GenerationDefaults, SpecialTokens,
    StepDecoder, Strategy,
};
use model_manager_core::{ErrorCode, GenerationParams, ModelError, ModelSpec, Result};
use model_manager_text::TextTokenizer;
use std::path::Path;

/// What a backend's encoder-decoder gives generation.
pub trait EncoderDecoder {
    /// The decoder of one prompt.
    type Steps<'a>: StepDecoder
    where
        Self: 'a;
    /// Runs the encoder over a prompt's token ids.
    fn encode(&self, ids: &[u32]) -> Result<Self::Steps<'_>>;
    /// The decoder's start token and the end token.
    fn special_tokens(&self) -> SpecialTokens;
    /// Rows of the output layer, when known (a tokenizer may not exceed it).
    fn vocab_size(&self) -> Option<usize>;
    /// Decoder memory one row adds per generated token (0: no bound to check).
    fn bytes_per_row_token(&self) -> u64;
}

/// An encoder-decoder with its tokenizer and its `models.<id>.*` generation defaults.
pub struct TextToText<M> {
    model: M,
    tokenizer: TextTokenizer,
    defaults: GenerationDefaults,
}

impl<M: EncoderDecoder> TextToText<M> {
    /// `model` with the tokenizer at `tokenizer_file` (prompts cut at `max_input_length`,
    /// default 512) and `spec`'s generation options. A tokenizer with more tokens than the
    /// model has rows is `T5_MODEL_LOAD_ERROR` (its ids would index past the embeddings);
    /// defaults past the request bounds are a `CONFIG_ERROR`.
    pub fn new(spec: &ModelSpec, model: M, tokenizer_file: &Path) -> Result<Self> {
        let max_input = spec.option_u64("max_input_length")?.unwrap_or(512) as usize;
        let tokenizer =
            TextTokenizer::from_file(tokenizer_file, max_input).map_err(|e| ModelError {
                code: match e.code {
                    ErrorCode::ModelLoadError => ErrorCode::T5ModelLoadError,
                    other => other,
                },
                ..e
            })?;
        let tokens = tokenizer.inner().get_vocab_size(true);
        if let Some(vocab) = model.vocab_size().filter(|v| tokens > *v) {
            return Err(ModelError::file_load(
                ErrorCode::T5ModelLoadError,
                tokenizer_file,
                format!(
                    "the tokenizer has {tokens} tokens, more than the model's vocab_size {vocab}"
                ),
            ));
        }
        Ok(Self {
            model,
            tokenizer,
            defaults: GenerationDefaults::from_options(spec)?,
        })
    }

    /// The encoder-decoder.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Generated token ids (without the start token and the end token).
    pub fn generate_ids(&self, prompt: &str, params: &GenerationParams) -> Result<Vec<u32>> {
        let p = self.defaults.merged(params);
        self.generate_ids_with(prompt, Strategy::from_params(&p), p.max_length)
    }

    /// Generated token ids with an explicit strategy (e.g. beam search with one beam);
    /// `max_length` falls back to the model's `max_output_length`, then 128.
    pub fn generate_ids_with(
        &self,
        prompt: &str,
        strategy: Strategy,
        max_length: Option<usize>,
    ) -> Result<Vec<u32>> {
        let max_length = self.defaults.max_length(max_length);
        check_limits(strategy, max_length)?;
        check_cache_bytes(strategy, max_length, self.model.bytes_per_row_token())?;
        let ids = self.tokenizer.encode(&[prompt])?.remove(0).ids;
        if ids.is_empty() {
            return Err(ModelError::invalid_input(
                "the prompt has no tokens (this tokenizer adds no end token to an empty text)",
            ));
        }
        let steps = self.model.encode(&ids)?;
        let special = self.model.special_tokens();
        let tokens = Decoding {
            start: special.decoder_start(),
            eos: special.eos_token_id,
            max_length,
        };
        decode(&steps, tokens, strategy)
    }

    /// The generated text.
    pub fn generate(&self, prompt: &str, params: &GenerationParams) -> Result<String> {
        let ids = self.generate_ids(prompt, params)?;
        self.tokenizer.inner().decode(&ids, true).map_err(|e| {
            ModelError::new(
                ErrorCode::GenerationError,
                format!("cannot decode the output: {e}"),
            )
        })
    }
}
