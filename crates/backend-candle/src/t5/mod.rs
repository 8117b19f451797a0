//! Type `text2text`: T5 and FLAN-T5 generation on candle.

mod beam;
mod buckets;
mod config;
mod decode;
mod layers;
mod model;
mod stepper;

use crate::device::{candle_device, core_device, dtype_option};
use crate::weights::{estimate_bytes, var_builder, weight_files, REQUIRED};
use crate::BACKEND_NAME;
pub use beam::EarlyStopping;
pub use buckets::relative_position_bucket;
use candle_core::Device;
pub use config::T5Config;
pub use decode::Strategy;
pub use model::{DecoderState, T5Model};
use model_manager_core::backend::locate_or_download;
use model_manager_core::{
    DeviceChoice, ErrorCode, GenerationParams, Model, ModelError, ModelInfo, ModelSpec, Result,
    TextGenerator,
};
use model_manager_text::TextTokenizer;
use std::any::Any;
use stepper::Decoder;

/// Fetched too when downloading from the hub, where they exist.
pub(crate) const OPTIONAL: &[&str] = &[];
const CODE: ErrorCode = ErrorCode::T5ModelLoadError;
/// Most beams a request may ask for: each beam is a row of every decoder step and keeps its
/// own KV cache, so the bound keeps one request's memory within reason.
pub const MAX_BEAMS: usize = 16;
/// Most tokens a request may ask to generate.
pub const MAX_NEW_TOKENS: usize = 4096;
/// Most bytes one generation's KV cache may reach (beams x tokens x the model's per-token
/// cache): a large model gets fewer beams or tokens than a small one.
pub const MAX_KV_CACHE_BYTES: u64 = 1 << 30;

/// Option keys of `text2text` models: limits and default generation parameters.
pub(crate) const OPTION_KEYS: &[&str] = &[
    "dtype",
    "max_input_length",
    "max_output_length",
    "num_beams",
    "temperature",
    "top_p",
    "seed",
    "early_stopping",
    "length_penalty",
];

/// A loaded T5 model with its tokenizer and device (the `model`, `tokenizer` and
/// `device` of the Python Model Manager Module), reachable through `ModelHandle::downcast_ref::<T5Generator>()`.
pub struct T5Generator {
    model: T5Model,
    tokenizer: TextTokenizer,
    device: Device,
    defaults: GenerationParams,
    bytes: Option<u64>,
}

fn params_from_options(spec: &ModelSpec) -> Result<GenerationParams> {
    Ok(GenerationParams {
        max_length: spec.option_u64("max_output_length")?.map(|n| n as usize),
        num_beams: spec.option_u64("num_beams")?.map(|n| n as usize),
        temperature: spec.option_f64("temperature")?,
        top_p: spec.option_f64("top_p")?,
        seed: spec.option_u64("seed")?,
        early_stopping: spec.option_bool("early_stopping")?,
        length_penalty: spec.option_f64("length_penalty")?,
    })
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
        let max_input = spec.option_u64("max_input_length")?.unwrap_or(512) as usize;
        let tokenizer = TextTokenizer::from_file(&folder.file("tokenizer.json"), max_input)
            .map_err(|e| ModelError {
                code: if e.code == ErrorCode::ModelLoadError {
                    CODE
                } else {
                    e.code
                },
                ..e
            })?;
        if tokenizer.inner().get_vocab_size(true) > config.vocab_size {
            return Err(ModelError::file_load(
                CODE,
                &folder.file("tokenizer.json"),
                format!(
                    "the tokenizer has {} tokens, more than the model's vocab_size {}",
                    tokenizer.inner().get_vocab_size(true),
                    config.vocab_size
                ),
            ));
        }
        let defaults = params_from_options(spec)?;
        check_limits(
            Strategy::from_params(&defaults),
            defaults.max_length.unwrap_or(0),
        )
        .map_err(|e| ModelError::config(&format!("models.{}", spec.id), e.message))?;
        Ok(Self {
            model,
            tokenizer,
            device,
            defaults,
            bytes: estimate_bytes(&files, dtype),
        })
    }

    /// The encoder-decoder (each generation keeps its KV cache in its own [`DecoderState`]).
    pub fn model(&self) -> &T5Model {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        self.tokenizer.inner()
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The model's config.
    pub fn config(&self) -> &T5Config {
        self.model.config()
    }

    /// Generated token ids (without the start token and the end token).
    pub fn generate_ids(&self, prompt: &str, params: &GenerationParams) -> Result<Vec<u32>> {
        let p = self.merged(params);
        self.generate_ids_with(prompt, Strategy::from_params(&p), p.max_length)
    }

    /// Generated token ids with an explicit strategy (e.g. beam search with one beam).
    pub fn generate_ids_with(
        &self,
        prompt: &str,
        strategy: Strategy,
        max_length: Option<usize>,
    ) -> Result<Vec<u32>> {
        let max_length = max_length.or(self.defaults.max_length).unwrap_or(128);
        check_limits(strategy, max_length)?;
        let rows = match strategy {
            Strategy::Beam { num_beams, .. } => num_beams,
            _ => 1,
        } as u64;
        let cache = rows * max_length as u64 * self.model.kv_bytes_per_row_token();
        if cache > MAX_KV_CACHE_BYTES {
            return Err(ModelError::invalid_input(format!(
                "{rows} beam(s) x {max_length} tokens would hold {} MiB of decoder cache for this \
                 model, above the {} MiB limit; ask for fewer beams or tokens",
                cache >> 20,
                MAX_KV_CACHE_BYTES >> 20
            )));
        }
        let ids = self.tokenizer.encode(&[prompt])?.remove(0).ids;
        let encoder_output = self.model.encode(&ids).map_err(stepper::generation_error)?;
        let config = self.model.config();
        let decoder = Decoder {
            model: &self.model,
            encoder_output,
            start: config.decoder_start(),
            eos: config.eos_token_id,
            max_length,
        };
        decoder.run(strategy)
    }

    fn merged(&self, params: &GenerationParams) -> GenerationParams {
        let d = &self.defaults;
        GenerationParams {
            max_length: params.max_length.or(d.max_length),
            num_beams: params.num_beams.or(d.num_beams),
            temperature: params.temperature.or(d.temperature),
            top_p: params.top_p.or(d.top_p),
            seed: params.seed.or(d.seed),
            early_stopping: params.early_stopping.or(d.early_stopping),
            length_penalty: params.length_penalty.or(d.length_penalty),
        }
    }
}

/// `INVALID_INPUT` for beam counts and lengths past [`MAX_BEAMS`] and [`MAX_NEW_TOKENS`].
fn check_limits(strategy: Strategy, max_length: usize) -> Result<()> {
    if max_length > MAX_NEW_TOKENS {
        return Err(ModelError::invalid_input(format!(
            "max_length {max_length} is above the limit of {MAX_NEW_TOKENS} generated tokens"
        )));
    }
    match strategy {
        Strategy::Beam { num_beams, .. } if num_beams == 0 || num_beams > MAX_BEAMS => Err(
            ModelError::invalid_input(format!("num_beams {num_beams} is outside 1..={MAX_BEAMS}")),
        ),
        _ => Ok(()),
    }
}

impl TextGenerator for T5Generator {
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
