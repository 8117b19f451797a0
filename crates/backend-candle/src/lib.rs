//! candle backend of model-manager.
//!
//! - type `embedding`: SentenceTransformer models of every family in [`families`] (BERT,
//!   XLM-RoBERTa, DistilBERT, MPNet, ModernBERT, NomicBert, GTE, Qwen3) from a snapshot
//!   folder with `config.json`, safetensors weights, `tokenizer.json` and the
//!   sentence-transformers configs, run by [`PackedEncoder`] on packed batches (no padding;
//!   for BERT, `models.<id>.packed = false` runs candle-transformers' padded `BertModel`);
//! - type `text2text`: T5 / FLAN-T5 generation (greedy, sampling, beam search).
//!
//! Both register with `inventory`; linking this crate (the facade's `candle` feature) is all
//! it takes.

mod device;
mod embedding;
pub mod encoder;
pub mod families;
mod loader;
mod purpose;
pub mod quantize;
mod t5;
mod weights;

pub use embedding::{CandleEmbedder, Encoder};
pub use encoder::PackedEncoder;
pub use families::Family;
pub use loader::SafetensorsLoader;
pub use model_manager_text::Purpose;
pub use t5::{
    relative_position_bucket, DecoderState, EarlyStopping, Strategy, T5Config, T5Generator,
    T5Model, MAX_BEAMS, MAX_KV_CACHE_BYTES, MAX_NEW_TOKENS,
};

use model_manager_core::backend::{inventory, LoaderRegistration};
use std::sync::Arc;

/// Name under which this backend's loaders register.
pub const BACKEND_NAME: &str = "candle";

inventory::submit! { LoaderRegistration::new(|| Arc::new(SafetensorsLoader::embedding())) }
inventory::submit! { LoaderRegistration::new(|| Arc::new(SafetensorsLoader::text2text())) }
inventory::submit! { LoaderRegistration::new(|| Arc::new(SafetensorsLoader::rerank())) }
inventory::submit! { LoaderRegistration::new(|| Arc::new(SafetensorsLoader::classifier())) }
inventory::submit! { LoaderRegistration::new(|| Arc::new(SafetensorsLoader::sparse())) }

#[cfg(feature = "cuda")]
inventory::submit! {
    model_manager_core::backend::GpuProbe { provider: BACKEND_NAME, cuda_device_count: device::cuda_device_count }
}
