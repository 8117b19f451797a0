//! Type `text2text` on ONNX Runtime: T5-style encoder-decoder exports, decoded by the same
//! strategies as the candle T5 (`model-manager-generate`).
//!
//! A folder holds the graphs (optimum's `encoder_model.onnx`, `decoder_model.onnx`,
//! `decoder_with_past_model.onnx`, or a plain `encoder.onnx` and `decoder.onnx`, here or in
//! `onnx/`), `tokenizer.json`, and optionally `config.json` for the special tokens (else
//! T5's: pad 0, end 1, decoder start 0).

mod files;
mod graphs;
mod steps;

use crate::session::SESSION_OPTION_KEYS;
use crate::BACKEND_NAME;
pub use files::GraphFiles;
use graphs::{DecoderGraph, EncoderGraph};
use model_manager_core::backend::{locate_model_folder, ModelLoader, Probe};
use model_manager_core::{
    DeviceChoice, ErrorCode, GenerationParams, Model, ModelError, ModelInfo, ModelSpec, Result,
    TextGenerator,
};
use model_manager_generate::{
    check_cache_bytes, check_limits, decode, Decoding, GenerationDefaults, SpecialTokens, Strategy,
    GENERATION_OPTION_KEYS,
};
use model_manager_text::TextTokenizer;
use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use steps::OnnxSteps;

const CODE: ErrorCode = ErrorCode::T5ModelLoadError;

/// Loads encoder-decoder exports as `text2text` models.
pub struct OnnxText2TextLoader;

fn option_keys() -> &'static [&'static str] {
    static KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let session = SESSION_OPTION_KEYS.iter().filter(|k| **k != "model_file");
        GENERATION_OPTION_KEYS
            .iter()
            .chain(session)
            .copied()
            .collect()
    })
}

/// The folder, its graphs and its tokenizer.
fn model_files(spec: &ModelSpec) -> Result<(PathBuf, GraphFiles)> {
    let folder = locate_model_folder(spec, &["tokenizer.json"])?;
    let graphs = files::find(spec, &folder.path)?;
    Ok((folder.path, graphs))
}

impl ModelLoader for OnnxText2TextLoader {
    fn model_type(&self) -> &str {
        "text2text"
    }
    fn backend(&self) -> &str {
        BACKEND_NAME
    }
    /// Preferred over candle for `auto` when a folder has graphs and a runtime loads.
    fn priority(&self) -> i32 {
        10
    }
    fn probe(&self, spec: &ModelSpec) -> Probe {
        match model_files(spec).and_then(|_| crate::ensure_runtime(spec)) {
            Ok(_) => Probe::Accept,
            Err(e) => Probe::reject(e.code, e.message),
        }
    }
    fn estimate_bytes(&self, spec: &ModelSpec) -> Option<u64> {
        model_files(spec).ok()?.1.bytes()
    }
    fn option_keys(&self) -> &[&str] {
        option_keys()
    }
    fn load(&self, spec: &ModelSpec, device: &DeviceChoice) -> Result<Arc<dyn Model>> {
        Ok(Arc::new(OnnxGenerator::load(spec, device)?))
    }
}

/// The sessions of one export.
pub struct Graphs {
    encoder: EncoderGraph,
    decoder: DecoderGraph,
    decoder_with_past: Option<DecoderGraph>,
}

impl Graphs {
    fn load(spec: &ModelSpec, files: &GraphFiles, device: &DeviceChoice) -> Result<Self> {
        let encoder = EncoderGraph::load(spec, &files.encoder, device)?;
        let decoder = DecoderGraph::load(spec, &files.decoder, device, false)?;
        if !decoder.past_inputs().is_empty() {
            return Err(ModelError::file_load(
                CODE,
                &files.decoder,
                "the first decoder step reads a cache; export it without past inputs (or use optimum's decoder_model.onnx)",
            ));
        }
        let decoder_with_past = match &files.decoder_with_past {
            Some(file) => {
                let with_past = DecoderGraph::load(spec, file, device, true)?;
                let written = |name: &String| {
                    decoder.present_outputs().contains(name)
                        && (with_past.present_outputs().contains(name)
                            || name.contains(".encoder."))
                };
                if let Some(missing) = with_past.past_inputs().iter().find(|n| !written(n)) {
                    return Err(ModelError::file_load(
                        CODE,
                        file,
                        format!(
                            "it reads `{missing}`, which {} does not write",
                            files.decoder.display()
                        ),
                    ));
                }
                Some(with_past)
            }
            None => None,
        };
        Ok(Self {
            encoder,
            decoder,
            decoder_with_past,
        })
    }

    /// Bytes one row adds per generated token: the cache with a past graph, else the
    /// logits of every position that each step of the full-prefix decoder returns.
    fn bytes_per_row_token(&self) -> u64 {
        match &self.decoder_with_past {
            Some(with_past) => with_past.cache_bytes_per_token.unwrap_or(0),
            None => self.decoder.vocab.unwrap_or(0) as u64 * 4,
        }
    }
}

/// A loaded encoder-decoder export with its tokenizer.
pub struct OnnxGenerator {
    graphs: Graphs,
    tokenizer: TextTokenizer,
    tokens: SpecialTokens,
    defaults: GenerationDefaults,
    device: DeviceChoice,
    files: GraphFiles,
}

/// The special tokens from `config.json`, else T5's.
fn special_tokens(folder: &Path) -> Result<SpecialTokens> {
    let path = folder.join("config.json");
    if !path.is_file() {
        return Ok(SpecialTokens::default());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::file_load(CODE, &path, e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::file_load(CODE, &path, e))
}

impl OnnxGenerator {
    /// Loads `spec`'s export.
    pub fn load(spec: &ModelSpec, device: &DeviceChoice) -> Result<Self> {
        let (folder, files) = model_files(spec)?;
        let tokens = special_tokens(&folder)?;
        let defaults = GenerationDefaults::from_options(spec)?;
        let max_input = spec.option_u64("max_input_length")?.unwrap_or(512) as usize;
        let tokenizer_file = folder.join("tokenizer.json");
        let tokenizer =
            TextTokenizer::from_file(&tokenizer_file, max_input).map_err(|e| ModelError {
                code: if e.code == ErrorCode::ModelLoadError {
                    CODE
                } else {
                    e.code
                },
                ..e
            })?;
        let graphs = Graphs::load(spec, &files, device)?;
        let vocab = tokenizer.inner().get_vocab_size(true);
        if let Some(logits) = graphs.decoder.vocab.filter(|l| vocab > *l) {
            return Err(ModelError::file_load(
                CODE,
                &tokenizer_file,
                format!(
                    "the tokenizer has {vocab} tokens, more than the decoder's {logits} logits"
                ),
            ));
        }
        Ok(Self {
            graphs,
            tokenizer,
            tokens,
            defaults,
            device: device.clone(),
            files,
        })
    }

    /// The graph files in use.
    pub fn files(&self) -> &GraphFiles {
        &self.files
    }

    /// Whether decoding uses the export's KV cache (`decoder_with_past_model.onnx`).
    pub fn uses_cache(&self) -> bool {
        self.graphs.decoder_with_past.is_some()
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        self.tokenizer.inner()
    }

    /// Generated token ids (without the start token and the end token).
    pub fn generate_ids(&self, prompt: &str, params: &GenerationParams) -> Result<Vec<u32>> {
        let p = self.defaults.merged(params);
        self.generate_ids_with(prompt, Strategy::from_params(&p), p.max_length)
    }

    /// Generated token ids with an explicit strategy.
    pub fn generate_ids_with(
        &self,
        prompt: &str,
        strategy: Strategy,
        max_length: Option<usize>,
    ) -> Result<Vec<u32>> {
        let max_length = self.defaults.max_length(max_length);
        check_limits(strategy, max_length)?;
        check_cache_bytes(strategy, max_length, self.graphs.bytes_per_row_token())?;
        let ids = self.tokenizer.encode(&[prompt])?.remove(0).ids;
        if ids.is_empty() {
            return Err(ModelError::invalid_input(
                "the prompt has no tokens (this tokenizer adds no end token to an empty text)",
            ));
        }
        let steps = OnnxSteps {
            graphs: &self.graphs,
            encoded: self.graphs.encoder.encode(&ids)?,
        };
        let tokens = Decoding {
            start: self.tokens.decoder_start(),
            eos: self.tokens.eos_token_id,
            max_length,
        };
        decode(&steps, tokens, strategy)
    }
}

impl TextGenerator for OnnxGenerator {
    fn generate(&self, prompt: &str, params: &GenerationParams) -> Result<String> {
        let ids = self.generate_ids(prompt, params)?;
        self.tokenizer.inner().decode(&ids, true).map_err(|e| {
            ModelError::new(
                ErrorCode::GenerationError,
                format!("cannot decode the output: {e}"),
            )
        })
    }
}

impl Model for OnnxGenerator {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            model_type: "text2text".into(),
            backend: BACKEND_NAME.into(),
            device: self.device.device,
            dimension: None,
            bytes: self.files.bytes(),
        }
    }
    fn as_text_generator(&self) -> Option<&dyn TextGenerator> {
        Some(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
