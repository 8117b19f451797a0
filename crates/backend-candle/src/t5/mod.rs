//! Type `text2text`: T5 and FLAN-T5 generation on candle.

mod buckets;
mod config;
mod layers;
mod model;
mod stepper;

use crate::device::{candle_device, core_device, dtype_option};
use crate::weights::{estimate_bytes, var_builder, weight_files, REQUIRED};
use crate::BACKEND_NAME;
pub use buckets::relative_position_bucket;
use candle_core::Device;
pub use config::T5Config;
pub use model::{DecoderState, T5Model};
use model_manager_core::backend::locate_or_download;
use model_manager_core::{
    DeviceChoice, ErrorCode, GenerationParams, Model, ModelError, ModelInfo, ModelSpec, Result,
    TextGenerator,
};
pub use model_manager_generate::{
    EarlyStopping, Strategy, MAX_BEAMS, MAX_KV_CACHE_BYTES, MAX_NEW_TOKENS,
};
use model_manager_generate::{TextToText, GENERATION_OPTION_KEYS};
use std::any::Any;
use std::sync::OnceLock;

/// Fetched too when downloading from the hub, where they exist.
pub(crate) const OPTIONAL: &[&str] = &[];
const CODE: ErrorCode = ErrorCode::T5ModelLoadError;
/// Option keys of `text2text` models: the weights' dtype, the input limit and the default
/// generation parameters.
pub(crate) fn option_keys() -> &'static [&'static str] {
    static KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
    KEYS.get_or_init(|| [&["dtype"], GENERATION_OPTION_KEYS].concat())
}

/// A loaded T5 model with its tokenizer and device (the `model`, `tokenizer` and
/// `device` of the Python Model Manager Module), reachable through `ModelHandle::downcast_ref::<T5Generator>()`.
pub struct T5Generator {
    generator: TextToText<T5Model>,
    device: Device,
    bytes: Option<u64>,
}

impl T5Generator {
    /// Loads `spec`'s folder onto `choice`'s device.
    pub fn load(spec: &ModelSpec, choice: &DeviceChoice) -> Result<Self> {
        let folder = locate_or_download(spec, REQUIRED, OPTIONAL)?;
        let dtype = dtype_option(spec)?;
        if dtype == candle_core::DType::F16 {
            return Err(ModelError::config(
                &format!("models.{}.dtype", spec.id),
                "T5 overflows in f16 (activations exceed its range; Hugging Face clamps them and \
                 keeps `wo` in f32): use f32 or bf16",
            ));
        }
        let device = candle_device(choice)?;
        let config_path = folder.file("config.json");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| ModelError::file_load(CODE, &config_path, e))?;
        let config: T5Config = serde_json::from_str(&text)
            .map_err(|e| ModelError::file_load(CODE, &config_path, e))?;
        config
            .validate()
            .map_err(|e| ModelError::file_load(CODE, &config_path, e))?;
        let files = weight_files(&folder, CODE)?;
        let vb = var_builder(&files, dtype, &device, CODE)?;
        let model = T5Model::load(vb, &config).map_err(|e| {
            ModelError::new(
                CODE,
                format!(
                    "weights in {} do not fit config.json: {e}",
                    folder.path.display()
                ),
            )
            .with("file", files[0].display().to_string())
            .caused_by("CandleError", e)
        })?;
        Ok(Self {
            generator: TextToText::new(spec, model, &folder.file("tokenizer.json"))?,
            device,
            bytes: estimate_bytes(&files, dtype),
        })
    }

    /// The encoder-decoder (each generation keeps its KV cache in its own [`DecoderState`]).
    pub fn model(&self) -> &T5Model {
        self.generator.model()
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        self.generator.tokenizer().inner()
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The model's config.
    pub fn config(&self) -> &T5Config {
        self.model().config()
    }

    /// Generated token ids (without the start token and the end token).
    pub fn generate_ids(&self, prompt: &str, params: &GenerationParams) -> Result<Vec<u32>> {
        self.generator.generate_ids(prompt, params)
    }

    /// Generated token ids with an explicit strategy (e.g. beam search with one beam).
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

impl TextGenerator for T5Generator {
    fn generate(&self, prompt: &str, params: &GenerationParams) -> Result<String> {
        self.generator.generate(prompt, params)
    }
}

impl Model for T5Generator {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            model_type: "text2text".into(),
            backend: BACKEND_NAME.into(),
            device: core_device(&self.device),
            dimension: None,
            bytes: self.bytes,
        }
    }
    fn as_text_generator(&self) -> Option<&dyn TextGenerator> {
        Some(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
