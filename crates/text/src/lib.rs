//! The text embedding pipeline shared by model-manager's backends, independent of any
//! inference engine: a backend supplies only the forward pass ([`TokenEncoder`]); this crate
//! tokenizes, lays batches out padded to their longest member or packed without padding,
//! pools each row's real tokens, applies the folder's Dense and Normalize modules and prompts,
//! and returns vectors in input order.

pub mod batching;
pub mod head_config;
pub mod heads;
pub mod model;
pub mod pipeline;
pub mod pooling;
pub mod purpose;
pub mod sentence;
pub mod tokenize;

pub use batching::{PackedBatch, PaddedBatch, RowSpan};
pub use heads::{RowOutput, SpladePooling};
pub use model::{TextEmbedding, TextEncoder};
pub use model_manager_core::backend::TokenizedText;
pub use pipeline::{EmbeddingPipeline, EncoderOutput, TokenEncoder};
pub use pooling::{Pooling, PoolingConfig};
pub use purpose::Purpose;
pub use sentence::{SentenceConfig, Stage};
pub use tokenize::TextTokenizer;
