//! What a loaded model is and what it can do.

use crate::device::Device;
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::collections::BTreeMap;

/// Facts about a loaded model, shown in status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    /// Registry key of its kind.
    pub model_type: String,
    /// Backend that loaded it.
    pub backend: String,
    /// Where it runs.
    pub device: Device,
    /// Embedding size, for embedders.
    pub dimension: Option<usize>,
    /// Memory it holds, when the backend knows.
    pub bytes: Option<u64>,
}

/// A loaded model. Backends implement this plus the capability traits that apply.
pub trait Model: Send + Sync + 'static {
    /// Facts for status.
    fn info(&self) -> ModelInfo;
    /// The model as an embedder, if it is one.
    fn as_embedder(&self) -> Option<&dyn Embedder> {
        None
    }
    /// The model as a text generator, if it is one.
    fn as_text_generator(&self) -> Option<&dyn TextGenerator> {
        None
    }
    /// The model as a generic named-tensor function, if it is one (custom types).
    fn as_infer(&self) -> Option<&dyn Infer> {
        None
    }
    /// The backend's concrete type, for callers that need the raw model, tokenizer or device.
    fn as_any(&self) -> &dyn Any;
}

/// Turns texts into vectors.
pub trait Embedder {
    /// Length of every vector.
    fn dimension(&self) -> usize;
    /// One vector per text, in input order. Blocking. The manager does not call it for
    /// embedders that offer [`Embedder::as_token_embedder`]: their work goes through the
    /// model's batching engine instead.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
    /// Tokens the model reads for `texts` (after truncation), when it tokenizes: for usage
    /// accounting.
    fn count_tokens(&self, _texts: &[&str]) -> Option<usize> {
        None
    }
    /// The embedder split into tokenizing and forward passes, so the engine can batch
    /// texts of many callers by length under a token budget. `None`: the engine batches
    /// whole texts through [`Embedder::embed`].
    fn as_token_embedder(&self) -> Option<&dyn TokenEmbedder> {
        None
    }
}

/// One text as the model reads it: token ids after truncation, special tokens included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenizedText {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Segment ids, one per token.
    pub type_ids: Vec<u32>,
}

impl TokenizedText {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// What a forward pass over a batch costs, for the engine's token budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchCost {
    /// Every row is padded to the longest: the cost is longest × rows.
    #[default]
    Padded,
    /// Rows are packed without padding: the cost is the sum of their lengths.
    Packed,
}

/// An embedder whose tokenizing is apart from its forward pass (see
/// [`Embedder::as_token_embedder`]). Both methods are blocking.
pub trait TokenEmbedder: Send + Sync {
    /// Tokenizes `texts`, each truncated to the model's longest input.
    fn tokenize(&self, texts: &[&str]) -> Result<Vec<TokenizedText>>;
    /// One vector per sequence, in order: one forward pass over a batch the engine formed.
    fn embed_tokens(&self, batch: &[&TokenizedText]) -> Result<Vec<Vec<f32>>>;
    /// How a batch is paid for.
    fn batch_cost(&self) -> BatchCost {
        BatchCost::Padded
    }
    /// Token ids run from 0 to this (exclusive): ids given by callers are checked against it.
    fn vocab_size(&self) -> usize;
    /// Longest sequence the model reads, special tokens included.
    fn max_tokens(&self) -> usize;
}

/// How to generate text. `None` fields take the model's configured defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationParams {
    /// Most tokens to generate.
    pub max_length: Option<usize>,
    /// Beam width; 1 or `None` is greedy unless sampling is asked for.
    pub num_beams: Option<usize>,
    /// Sampling temperature; `None` or 0 is greedy.
    pub temperature: Option<f64>,
    /// Nucleus sampling threshold.
    pub top_p: Option<f64>,
    /// Seed for sampling.
    pub seed: Option<u64>,
    /// Stop beam search once `num_beams` hypotheses are finished.
    pub early_stopping: Option<bool>,
    /// Exponent on length in beam scores.
    pub length_penalty: Option<f64>,
}

/// Generates text from a prompt (encoder-decoder or decoder-only).
pub trait TextGenerator {
    /// The generated text. Blocking; the manager calls it off the async runtime.
    fn generate(&self, prompt: &str, params: &GenerationParams) -> Result<String>;
}

/// The values of a tensor, by element type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dtype", content = "data", rename_all = "lowercase")]
pub enum TensorData {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 64-bit integers.
    I64(Vec<i64>),
    /// 32-bit integers.
    I32(Vec<i32>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::I32(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type as written in JSON (`f32`, `i64`, `i32`).
    pub fn dtype(&self) -> &'static str {
        match self {
            TensorData::F32(_) => "f32",
            TensorData::I64(_) => "i64",
            TensorData::I32(_) => "i32",
        }
    }
}

/// A tensor crossing a generic inference call: a shape and row-major data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorValue {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values, row-major; their count is the product of `shape`.
    #[serde(flatten)]
    pub data: TensorData,
}

/// An image for generic inference: encoded file bytes (`format` png, jpeg…) or raw pixels
/// (`format` raw, with width, height and channels). In JSON the bytes are base64.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageValue {
    /// The bytes, base64 in JSON.
    #[serde(rename = "base64", with = "base64_bytes")]
    pub bytes: Vec<u8>,
    /// Pixels per row; 0 when the decoder finds out.
    #[serde(default)]
    pub width: u32,
    /// Rows; 0 when the decoder finds out.
    #[serde(default)]
    pub height: u32,
    /// Channels per pixel; 0 when the decoder finds out.
    #[serde(default)]
    pub channels: u32,
    /// `png`, `jpeg`, `raw`, or empty to let the model guess.
    #[serde(default)]
    pub format: String,
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// One named input or output of generic inference. In JSON: a tensor is
/// `{"shape", "dtype", "data"}`, an image `{"base64", "format", …}`, text a string, and
/// anything else free-form JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum InferValue {
    /// A tensor.
    Tensor(TensorValue),
    /// An image.
    Image(ImageValue),
    /// Text.
    Text(String),
    /// Free-form JSON (labels, scores, options…).
    Json(serde_json::Value),
}

impl InferValue {
    /// The tensor, if this is one.
    pub fn as_tensor(&self) -> Option<&TensorValue> {
        match self {
            InferValue::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// What kind of value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            InferValue::Tensor(_) => "a tensor",
            InferValue::Image(_) => "an image",
            InferValue::Text(_) => "text",
            InferValue::Json(_) => "JSON",
        }
    }
}

/// Values by name: the inputs or outputs of generic inference.
pub type NamedValues = BTreeMap<String, InferValue>;

/// A model used as a function from named values to named values (tensors for ONNX graphs;
/// images, text and JSON too for plugin types).
pub trait Infer {
    /// Runs the model. Blocking; call it off the async runtime.
    fn infer(&self, inputs: &NamedValues) -> Result<NamedValues>;
}
