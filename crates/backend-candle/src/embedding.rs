//! Type `embedding`: BERT-family SentenceTransformer models on candle.

use crate::device::{candle_device, core_device, dtype_option};
use crate::weights::{
    estimate_bytes, estimate_spec_bytes, file_error, probe_safetensors_folder, var_builder,
    weight_files,
};
use crate::BACKEND_NAME;
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::{BertModel, Config};
use model_manager_core::locate_or_download;
use model_manager_core::{
    DeviceChoice, ErrorCode, Model, ModelError, ModelInfo, ModelLoader, ModelSpec, Probe, Result,
};
use model_manager_text::{
    sentence_config, EmbeddingPipeline, EncoderOutput, PaddedBatch, SentenceConfig, TextEmbedding,
    TextEncoder, TextTokenizer, TokenEncoder,
};
use std::sync::Arc;

const REQUIRED: &[&str] = &["config.json", "tokenizer.json"];
/// Fetched too when downloading from the hub, where they exist.
const OPTIONAL: &[&str] = &[
    "model.safetensors",
    "model.safetensors.index.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];

/// Loads SentenceTransformer BERT models.
pub struct BertEmbeddingLoader;

fn option_keys() -> &'static [&'static str] {
    static KEYS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = vec!["dtype"];
        keys.extend_from_slice(sentence_config::OPTION_KEYS);
        keys
    })
}

impl ModelLoader for BertEmbeddingLoader {
    fn model_type(&self) -> &str {
        "embedding"
    }
    fn backend(&self) -> &str {
        BACKEND_NAME
    }
    fn probe(&self, spec: &ModelSpec) -> Probe {
        probe_safetensors_folder(spec, REQUIRED)
    }
    fn estimate_bytes(&self, spec: &ModelSpec) -> Option<u64> {
        estimate_spec_bytes(spec, REQUIRED)
    }
    fn option_keys(&self) -> &[&str] {
        option_keys()
    }
    fn load(&self, spec: &ModelSpec, device: &DeviceChoice) -> Result<Arc<dyn Model>> {
        Ok(Arc::new(TextEmbedding(BertEmbedder::load(spec, device)?)))
    }
}

/// A loaded SentenceTransformer BERT model. Reach the raw model and device through
/// [`BertEmbedder::model`] and [`BertEmbedder::device`].
pub struct BertEmbedder {
    model: BertModel,
    pipeline: EmbeddingPipeline,
    device: Device,
    dimension: usize,
    bytes: Option<u64>,
}

impl BertEmbedder {
    /// Loads `spec`'s folder onto `choice`'s device.
    pub fn load(spec: &ModelSpec, choice: &DeviceChoice) -> Result<Self> {
        let folder = locate_or_download(spec, REQUIRED, OPTIONAL)?;
        let dtype = dtype_option(spec)?;
        let device = candle_device(choice)?;
        let config_path = folder.file("config.json");
        let config_text = std::fs::read_to_string(&config_path)
            .map_err(|e| file_error(ErrorCode::ModelLoadError, &config_path, e))?;
        let config: Config = serde_json::from_str(&config_text)
            .map_err(|e| file_error(ErrorCode::ModelLoadError, &config_path, e))?;
        let architecture: serde_json::Value =
            serde_json::from_str(&config_text).unwrap_or_default();
        match architecture["model_type"].as_str() {
            None | Some("bert") => {}
            Some(other) => {
                return Err(file_error(
                    ErrorCode::ModelLoadError,
                    &config_path,
                    format!("model_type `{other}` is not supported by the candle embedding loader (it serves bert)"),
                ))
            }
        }
        let files = weight_files(&folder, ErrorCode::ModelLoadError)?;
        let vb = var_builder(&files, dtype, &device, ErrorCode::ModelLoadError)?;
        let model = BertModel::load(vb, &config).map_err(|e| {
            ModelError::new(
                ErrorCode::ModelLoadError,
                format!(
                    "weights in {} do not fit config.json: {e}",
                    folder.path.display()
                ),
            )
            .with("file", files[0].display().to_string())
            .caused_by("CandleError", e)
        })?;
        let sentence = SentenceConfig::resolve(&folder.path, spec, true)?;
        let max_length = sentence
            .max_seq_length
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);
        let tokenizer = TextTokenizer::from_file(&folder.file("tokenizer.json"), max_length)?;
        Ok(Self {
            model,
            pipeline: EmbeddingPipeline {
                tokenizer,
                pooling: sentence.pooling,
                normalize: sentence.normalize,
                batch_size: spec.batch_size,
            },
            device,
            dimension: config.hidden_size,
            bytes: estimate_bytes(&files, dtype),
        })
    }

    /// The raw candle model.
    pub fn model(&self) -> &BertModel {
        &self.model
    }

    /// The device it runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The embedding pipeline (tokenizer, pooling, normalization, batch size).
    pub fn pipeline(&self) -> &EmbeddingPipeline {
        &self.pipeline
    }
}

fn candle_error(e: candle_core::Error) -> ModelError {
    ModelError::new(
        ErrorCode::GenerateEmbeddingsError,
        format!("forward pass failed: {e}"),
    )
    .caused_by("CandleError", e)
}

impl TokenEncoder for BertEmbedder {
    fn forward(&self, batch: &PaddedBatch) -> Result<EncoderOutput> {
        let shape = (batch.batch, batch.seq);
        let tensor = |data: &[u32]| Tensor::from_slice(data, shape, &self.device);
        let ids = tensor(&batch.ids).map_err(candle_error)?;
        let type_ids = tensor(&batch.type_ids).map_err(candle_error)?;
        let mask = tensor(&batch.attention_mask).map_err(candle_error)?;
        let hidden = self
            .model
            .forward(&ids, &type_ids, Some(&mask))
            .and_then(|h| h.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>())
            .map_err(candle_error)?;
        Ok(EncoderOutput::Tokens {
            data: hidden,
            hidden: self.dimension,
        })
    }
}

impl TextEncoder for BertEmbedder {
    fn pipeline(&self) -> &EmbeddingPipeline {
        &self.pipeline
    }
    fn info(&self) -> ModelInfo {
        ModelInfo {
            model_type: "embedding".into(),
            backend: BACKEND_NAME.into(),
            device: core_device(&self.device),
            dimension: Some(self.dimension),
            bytes: self.bytes,
        }
    }
}
