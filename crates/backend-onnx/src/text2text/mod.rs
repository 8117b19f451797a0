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
use model_manager_generate::{SpecialTokens, Strategy, TextToText, GENERATION_OPTION_KEYS};
use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

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
    fn check_options(&self, spec: &ModelSpec) -> Result<()> {
        crate::session::check_session_options(spec)
    }
    fn load(&self, spec: &ModelSpec, device: &DeviceChoice) -> Result<Arc<dyn Model>> {
        Ok(Arc::new(OnnxGenerator::load(spec, device)?))
    }
}

/// The sessions of one export and its special tokens.
pub struct Graphs {
    encoder: EncoderGraph,
    decoder: DecoderGraph,
    decoder_with_past: Option<DecoderGraph>,
    special: SpecialTokens,
}

impl Graphs {
    fn load(
        spec: &ModelSpec,
        files: &GraphFiles,
        device: &DeviceChoice,
        special: SpecialTokens,
    ) -> Result<Self> {
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
            special,
        })
    }
}

/// A loaded encoder-decoder export with its tokenizer.
pub struct OnnxGenerator {
    generator: TextToText<Graphs>,
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
        let graphs = Graphs::load(spec, &files, device, special_tokens(&folder)?)?;
        Ok(Self {
            generator: TextToText::new(spec, graphs, &folder.join("tokenizer.json"))?,
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
        self.generator.model().decoder_with_past.is_some()
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        self.generator.tokenizer().inner()
    }

    /// Generated token ids (without the start token and the end token).
    pub fn generate_ids(&self, prompt: &str, params: &GenerationParams) -> Result<Vec<u32>> {
        self.generator.generate_ids(prompt, params)
    }

    /// Generated token ids with an explicit strategy.
    pub fn generate_ids_with(
        &self,
        prompt: &str,
        strategy: Strategy,
        max_length: Option<usize>,
    ) -> Result<Vec<u32>> {
        self.generator
            .generate_ids_with(prompt, strategy, max_length)
    }
}

impl TextGenerator for OnnxGenerator {
    fn generate(&self, prompt: &str, params: &GenerationParams) -> Result<String> {
        self.generator.generate(prompt, params)
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
