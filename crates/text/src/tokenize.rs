//! Tokenization with the model's `tokenizer.json`, ignoring the padding and truncation baked
//! into the file: sentence-transformers pads per batch and truncates at `max_seq_length`.

use crate::load_error;
use model_manager_core::{ErrorCode, ModelError, Result};
use std::path::Path;
use tokenizers::{Tokenizer, TruncationParams};

/// Token ids of one text, already truncated.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Segment ids.
    pub type_ids: Vec<u32>,
}

/// A tokenizer that truncates at `max_length` tokens and never pads.
pub struct TextTokenizer {
    inner: Tokenizer,
    max_length: usize,
    pad_id: u32,
}

impl TextTokenizer {
    /// Loads `path` (a `tokenizer.json`); a missing file is `MODEL_NOT_FOUND`, a bad one
    /// `MODEL_LOAD_ERROR`, both naming the file.
    pub fn from_file(path: &Path, max_length: usize) -> Result<Self> {
        if !path.is_file() {
            return Err(ModelError::new(
                ErrorCode::ModelNotFound,
                format!("tokenizer file {} not found", path.display()),
            )
            .with("file", path.display().to_string()));
        }
        let mut inner = Tokenizer::from_file(path).map_err(|e| load_error(path, e))?;
        let pad_id = inner.get_padding().map_or(0, |p| p.pad_id);
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| load_error(path, e))?;
        Ok(Self {
            inner,
            max_length,
            pad_id,
        })
    }

    /// The id used for padding.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Longest sequence produced, special tokens included.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The underlying Hugging Face tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Tokenizes `texts` with special tokens, truncating each at `max_length`.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Tokens>> {
        let encodings = self.inner.encode_batch(texts.to_vec(), true).map_err(|e| {
            ModelError::new(
                ErrorCode::GenerateEmbeddingsError,
                format!("tokenization failed: {e}"),
            )
        })?;
        Ok(encodings
            .into_iter()
            .map(|e| Tokens {
                ids: e.get_ids().to_vec(),
                type_ids: e.get_type_ids().to_vec(),
            })
            .collect())
    }
}
