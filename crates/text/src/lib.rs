//! The text embedding pipeline shared by model-manager's backends, independent of any
//! inference engine: a backend supplies only the forward pass ([`TokenEncoder`]); this crate
//! tokenizes, sorts texts by length into batches padded to their longest member, pools with
//! the attention mask, normalizes, and returns vectors in input order.

pub mod batching;
pub mod pipeline;
pub mod pooling;
pub mod sentence_config;
pub mod tokenize;

pub use batching::PaddedBatch;
pub use pipeline::{EmbeddingPipeline, EncoderOutput, TokenEncoder};
pub use pooling::Pooling;
pub use sentence_config::SentenceConfig;
pub use tokenize::{TextTokenizer, Tokens};

use model_manager_core::{ErrorCode, ModelError};
use std::path::Path;

/// A `MODEL_LOAD_ERROR` naming the file and the cause.
pub fn load_error(file: &Path, cause: impl std::fmt::Display) -> ModelError {
    ModelError::new(
        ErrorCode::ModelLoadError,
        format!("cannot load {}: {cause}", file.display()),
    )
    .with("file", file.display().to_string())
    .caused_by("LoadError", cause)
}
