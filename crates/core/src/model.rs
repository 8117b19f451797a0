//! What a loaded model is and what it can do.

use crate::device::Device;
use crate::error::{ModelError, Result};
use serde::{Deserialize, Serialize};
use std::any::Any;

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
    /// How the model is built, for status, where the backend knows (text models).
    fn architecture(&self) -> Option<Architecture> {
        None
    }
}

/// How a text model is built, for status and `mm models`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Architecture {
    /// The checkpoint's family (`bert`, `xlm-roberta`, `qwen3`…).
    pub family: String,
    /// How token vectors become one (`mean`, `cls`, `lasttoken`…).
    pub pooling: String,
    /// Whether batches run packed: no padding computed.
    pub packed: bool,
    /// How it is quantized, if it is.
    pub quantization: Option<Quantization>,
}

/// A quantized model's scheme, kernel and fidelity to its f32 form.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quantization {
    /// `int8`.
    pub scheme: String,
    /// The kernel its quantized layers run (`avx512-vnni`, `avx2`, `scalar`).
    pub kernel: String,
    /// Layers left in f32 because the fidelity check needed them (`feed_forward.down`…).
    pub f32_layers: Vec<String>,
    /// The fidelity check at load, once loaded.
    pub fidelity: Option<Fidelity>,
}

/// How close a quantized model's vectors stay to its f32 vectors on the calibration texts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fidelity {
    /// Calibration texts compared.
    pub texts: usize,
    /// Mean cosine between each text's f32 and quantized vectors.
    pub mean_cosine: f64,
    /// The lowest of those cosines.
    pub min_cosine: f64,
    /// Share of each text's 10 nearest neighbours (among the texts) kept, on average.
    pub neighbour_agreement: f64,
    /// Whether the figures meet the gate (mean ≥ 0.999, min ≥ 0.995, agreement ≥ 0.95).
    pub passed: bool,
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
    /// What the rows this embedder computes are: sentence embeddings (the default), the
    /// logits of a scoring head, or sparse vectors.
    fn outputs(&self) -> crate::outputs::Outputs {
        crate::outputs::Outputs::Embeddings
    }
    /// The instructions the model's configuration names (sentence-transformers'
    /// `prompts`), which callers select by name. The manager prepends the chosen prompt to
    /// each text; [`Embedder::embed`] itself applies none.
    fn prompts(&self) -> Prompts {
        Prompts::default()
    }
}

/// Instructions prepended to texts before embedding, by name (sentence-transformers'
/// `prompts` and `default_prompt_name` in `config_sentence_transformers.json`): e.g.
/// `query` → `"query: "` for e5 models.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Prompts {
    /// Prompt text by name.
    pub named: std::collections::BTreeMap<String, String>,
    /// The prompt used when a request names none.
    pub default_name: Option<String>,
    /// Whether the model leaves a prompt's tokens out of pooling (sentence-transformers'
    /// `include_prompt = false`), so where the prompt ends matters beyond the text.
    pub excluded_from_pooling: bool,
}

impl Prompts {
    /// The text of the prompt a request selects: a literal `prompt`, else the prompt
    /// named `name`, else the default one, else none (`""`). Naming an unknown prompt, or
    /// both a name and a literal, is `INVALID_INPUT`.
    pub fn select<'a>(&'a self, name: Option<&str>, prompt: Option<&'a str>) -> Result<&'a str> {
        match (name, prompt) {
            (Some(_), Some(_)) => Err(crate::error::ModelError::invalid_input(
                "give a prompt name or a prompt text, not both",
            )
            .with("field", "prompt_name")),
            (None, Some(text)) => Ok(text),
            (Some(name), None) => self.named.get(name).map(String::as_str).ok_or_else(|| {
                let known: Vec<&str> = self.named.keys().map(String::as_str).collect();
                crate::error::ModelError::invalid_input(format!(
                    "prompt name `{name}` is not one of the model's prompts ({})",
                    if known.is_empty() {
                        "it has none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ))
                .with("field", "prompt_name")
            }),
            (None, None) => Ok(self
                .default_name
                .as_deref()
                .and_then(|n| self.named.get(n))
                .map_or("", String::as_str)),
        }
    }
}

/// One text as the model reads it: token ids after truncation, special tokens included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenizedText {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Segment ids, one per token.
    pub type_ids: Vec<u32>,
    /// How many leading tokens are an instruction prompt (see [`Prompts`]); models that
    /// do not pool a prompt's tokens leave these out. 0 without a prompt.
    pub prompt_tokens: usize,
}

impl TokenizedText {
    /// Tokens without a prompt.
    pub fn new(ids: Vec<u32>, type_ids: Vec<u32>) -> Self {
        Self {
            ids,
            type_ids,
            prompt_tokens: 0,
        }
    }

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
    /// Tokenizes each pair as the tokenizer's pair template says (`[CLS] a [SEP] b [SEP]`
    /// with segment ids, `<s> a </s></s> b </s>`…), cut longest-first at the model's
    /// longest input: the inputs of cross-encoders. The default: `INVALID_MODEL_TYPE`.
    fn tokenize_pairs(&self, _pairs: &[(&str, &str)]) -> Result<Vec<TokenizedText>> {
        Err(crate::error::ModelError::new(
            crate::error::ErrorCode::InvalidModelType,
            "this model does not take pairs of texts",
        ))
    }
    /// Tokenizes `prompt` followed by each text (as one string, like sentence-transformers),
    /// recording how many tokens the prompt is. The default counts none.
    fn tokenize_with_prompt(&self, prompt: &str, texts: &[&str]) -> Result<Vec<TokenizedText>> {
        let joined: Vec<String> = texts.iter().map(|t| format!("{prompt}{t}")).collect();
        let refs: Vec<&str> = joined.iter().map(String::as_str).collect();
        self.tokenize(&refs)
    }
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

pub use model_manager_values::{ImageValue, InferValue, NamedValues, TensorData, TensorValue};

/// A model used as a function from named values to named values (tensors for ONNX graphs;
/// images, text and JSON too for plugin types).
pub trait Infer {
    /// Runs the model. Blocking; call it off the async runtime.
    fn infer(&self, inputs: &NamedValues) -> Result<NamedValues>;
}

/// Checks generic-inference inputs before any model sees them: each tensor's shape against
/// its data, each raw image's dimensions against its bytes, and, with `max_elements`, the
/// elements of all inputs together (tensor values and image bytes). Returns that total;
/// `INVALID_INPUT` naming the input as `details.field` = `inputs.NAME`.
pub fn check_infer_inputs(inputs: &NamedValues, max_elements: Option<usize>) -> Result<usize> {
    let mut total = 0usize;
    for (name, value) in inputs {
        // A name is the caller's: one of a megabyte is repeated cut (to 256 characters).
        let name: String = name.chars().take(256).collect();
        let field = format!("inputs.{name}");
        let elements = value.checked_len().map_err(|why| {
            ModelError::invalid_input(format!("input `{name}`: {why}"))
                .with("field", field.as_str())
        })?;
        total = total.saturating_add(elements);
        if let Some(max) = max_elements.filter(|max| total > *max) {
            return Err(ModelError::invalid_input(format!(
                "input `{name}` brings the request to {total} elements, over server.max_tensor_elements ({max})"
            ))
            .with("field", field));
        }
    }
    Ok(total)
}
