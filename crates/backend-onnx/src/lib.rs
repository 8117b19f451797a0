//! ONNX Runtime backend of model-manager, through `ort` with a dynamically loaded runtime.
//!
//! - type `embedding`: a folder with `model.onnx` (or `onnx/model.onnx`) and `tokenizer.json`
//!   (or `tokenizer_path`), pooled and normalized by the shared text pipeline;
//! - type `onnx`: a generic model from named f32/i64/i32 tensors to named tensors;
//! - type `text2text`: T5-style encoder-decoder exports (optimum's, with or without a KV
//!   cache, or a plain `encoder.onnx` and `decoder.onnx`), decoded like the candle T5.
//!
//! The runtime library is found at run time (`onnx.runtime_path`, `ORT_DYLIB_PATH`, then
//! well-known places); when none loads, every ONNX call is `MISSING_DEPENDENCY`.

mod embedding;
mod runtime;
mod session;
mod tensor_model;
mod text2text;

pub use embedding::{OnnxEmbedder, OnnxEmbeddingLoader};
pub use runtime::{ensure_runtime, RuntimeInfo};
pub use tensor_model::{OnnxTensorLoader, OnnxTensorModel};
pub use text2text::{GraphFiles, OnnxGenerator, OnnxText2TextLoader};

use model_manager_core::backend::{inventory, LoaderRegistration};
use model_manager_text::Purpose;
use std::sync::Arc;

/// Name under which this backend's loaders register.
pub const BACKEND_NAME: &str = "onnx";

inventory::submit! { LoaderRegistration::new(|| Arc::new(OnnxEmbeddingLoader::new(Purpose::Embedding))) }
inventory::submit! { LoaderRegistration::new(|| Arc::new(OnnxEmbeddingLoader::new(Purpose::Rerank))) }
inventory::submit! { LoaderRegistration::new(|| Arc::new(OnnxEmbeddingLoader::new(Purpose::Classifier))) }
inventory::submit! { LoaderRegistration::new(|| Arc::new(OnnxEmbeddingLoader::new(Purpose::Sparse))) }
inventory::submit! { LoaderRegistration::new(|| Arc::new(OnnxTensorLoader)) }
inventory::submit! { LoaderRegistration::new(|| Arc::new(OnnxText2TextLoader)) }
