//! The `Model` / `Embedder` glue shared by every text embedding backend: a backend supplies
//! its forward pass ([`TokenEncoder`]) and its pipeline, and [`TextEmbedding`] makes it a
//! model the manager can load, batch and downcast.

use crate::pipeline::{EmbeddingPipeline, TokenEncoder};
use model_manager_core::backend::{BatchCost, TokenEmbedder, TokenizedText};
use model_manager_core::{Architecture, Embedder, Model, ModelInfo, Outputs, Prompts, Result};
use std::any::Any;

/// A backend's text encoder: its forward pass plus the pipeline around it.
pub trait TextEncoder: TokenEncoder + Send + Sync + 'static {
    /// Tokenizer, pooling and normalization.
    fn pipeline(&self) -> &EmbeddingPipeline;
    /// Facts for status; `dimension` must be set.
    fn info(&self) -> ModelInfo;
    /// Family, pooling and packing, for status.
    fn architecture(&self) -> Option<Architecture> {
        None
    }
}

/// A [`TextEncoder`] as a loaded model. [`Model::as_any`] yields the encoder itself, so
/// callers downcast to the backend's type (e.g. the candle `CandleEmbedder`).
pub struct TextEmbedding<E>(pub E);

impl<E: TextEncoder> Model for TextEmbedding<E> {
    fn info(&self) -> ModelInfo {
        self.0.info()
    }
    fn as_embedder(&self) -> Option<&dyn Embedder> {
        Some(self)
    }
    fn as_any(&self) -> &dyn Any {
        &self.0
    }
    fn architecture(&self) -> Option<Architecture> {
        self.0.architecture()
    }
}

impl<E: TextEncoder> Embedder for TextEmbedding<E> {
    fn dimension(&self) -> usize {
        self.0.info().dimension.unwrap_or(0)
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.0.pipeline().embed(&self.0, texts)
    }
    fn count_tokens(&self, texts: &[&str]) -> Option<usize> {
        self.0.pipeline().count_tokens(texts)
    }
    fn prompts(&self) -> Prompts {
        self.0.pipeline().sentence.prompts.clone()
    }
    fn outputs(&self) -> Outputs {
        self.0.pipeline().outputs()
    }
    fn as_token_embedder(&self) -> Option<&dyn TokenEmbedder> {
        Some(self)
    }
}

impl<E: TextEncoder> TokenEmbedder for TextEmbedding<E> {
    fn tokenize(&self, texts: &[&str]) -> Result<Vec<TokenizedText>> {
        self.0.pipeline().tokenize(texts)
    }
    fn tokenize_with_prompt(&self, prompt: &str, texts: &[&str]) -> Result<Vec<TokenizedText>> {
        self.0.pipeline().tokenize_with_prompt(prompt, texts)
    }
    fn tokenize_pairs(&self, pairs: &[(&str, &str)]) -> Result<Vec<TokenizedText>> {
        self.0.pipeline().tokenize_pairs(pairs)
    }
    fn embed_tokens(&self, batch: &[&TokenizedText]) -> Result<Vec<Vec<f32>>> {
        self.0.pipeline().embed_tokens(&self.0, batch)
    }
    fn batch_cost(&self) -> BatchCost {
        self.0.batch_cost()
    }
    fn vocab_size(&self) -> usize {
        self.0.pipeline().tokenizer.inner().get_vocab_size(true)
    }
    fn max_tokens(&self) -> usize {
        self.0.pipeline().tokenizer.max_length()
    }
}
