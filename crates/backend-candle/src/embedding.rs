//! Type `embedding`: BERT-family SentenceTransformer models on candle.

use crate::device::{candle_device, core_device, dtype_option};
use crate::packed::PackedBert;
use crate::weights::{estimate_bytes, var_builder, weight_files, REQUIRED};
use crate::BACKEND_NAME;
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::{BertModel, Config};
use model_manager_core::backend::locate_or_download;
use model_manager_core::backend::BatchCost;
use model_manager_core::{DeviceChoice, ErrorCode, ModelError, ModelInfo, ModelSpec, Result};
use model_manager_text::{
    sentence_config, EmbeddingPipeline, EncoderOutput, PackedBatch, PaddedBatch, SentenceConfig,
    TextEncoder, TextTokenizer, TokenEncoder,
};

/// Fetched too when downloading from the hub, where they exist.
pub(crate) const OPTIONAL: &[&str] = sentence_config::FILES;

/// Option keys of `embedding` models: precision, packing and the sentence-transformers
/// overrides.
pub(crate) fn option_keys() -> &'static [&'static str] {
    static KEYS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = vec!["dtype", "packed"];
        keys.extend_from_slice(sentence_config::OPTION_KEYS);
        keys
    })
}

/// The forward pass a [`BertEmbedder`] runs.
pub enum BertEncoder {
    /// The packed encoder of this crate (the default): no padding.
    Packed(PackedBert),
    /// candle-transformers' `BertModel` on padded batches (`models.<id>.packed = false`).
    Padded(BertModel),
}

/// A loaded SentenceTransformer BERT model. Reach the raw model and device through
/// [`BertEmbedder::encoder`] and [`BertEmbedder::device`].
pub struct BertEmbedder {
    encoder: BertEncoder,
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
            .map_err(|e| ModelError::file_load(ErrorCode::ModelLoadError, &config_path, e))?;
        let config: Config = serde_json::from_str(&config_text)
            .map_err(|e| ModelError::file_load(ErrorCode::ModelLoadError, &config_path, e))?;
        let architecture: serde_json::Value =
            serde_json::from_str(&config_text).unwrap_or_default();
        match architecture["model_type"].as_str() {
            None | Some("bert") => {}
            Some(other) => {
                return Err(ModelError::file_load(
                    ErrorCode::ModelLoadError,
                    &config_path,
                    format!("model_type `{other}` is not supported by the candle embedding loader (it serves bert)"),
                ))
            }
        }
        let files = weight_files(&folder, ErrorCode::ModelLoadError)?;
        let vb = var_builder(&files, dtype, &device, ErrorCode::ModelLoadError)?;
        let packed = spec.option_bool("packed")?.unwrap_or(true);
        let encoder = if packed {
            PackedBert::load(vb, &config).map(BertEncoder::Packed)
        } else {
            BertModel::load(vb, &config).map(BertEncoder::Padded)
        };
        let encoder = encoder.map_err(|e| {
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
            encoder,
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

    /// The forward pass: the packed encoder, or candle-transformers' `BertModel`.
    pub fn encoder(&self) -> &BertEncoder {
        &self.encoder
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

/// `[tokens, hidden]` (or `[batch, seq, hidden]`) as f32 values, row-major.
fn token_output(
    hidden: std::result::Result<Tensor, candle_core::Error>,
    width: usize,
) -> Result<EncoderOutput> {
    let data = hidden
        .and_then(|h| h.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>())
        .map_err(candle_error)?;
    Ok(EncoderOutput::Tokens {
        data,
        hidden: width,
    })
}

impl TokenEncoder for BertEmbedder {
    fn forward(&self, batch: &PaddedBatch) -> Result<EncoderOutput> {
        let model = match &self.encoder {
            BertEncoder::Padded(model) => model,
            // The packed encoder pads nothing: strip the padding, run packed, pad the output.
            BertEncoder::Packed(_) => {
                let out = self.forward_packed(&unpad(batch)?)?;
                return repad(out, batch);
            }
        };
        let shape = (batch.batch, batch.seq);
        let tensor = |data: &[u32]| Tensor::from_slice(data, shape, &self.device);
        let ids = tensor(&batch.ids).map_err(candle_error)?;
        let type_ids = tensor(&batch.type_ids).map_err(candle_error)?;
        let mask = tensor(&batch.attention_mask).map_err(candle_error)?;
        token_output(model.forward(&ids, &type_ids, Some(&mask)), self.dimension)
    }

    fn forward_packed(&self, batch: &PackedBatch) -> Result<EncoderOutput> {
        match &self.encoder {
            BertEncoder::Packed(model) => token_output(
                model.forward(&batch.ids, &batch.type_ids, &batch.lengths),
                self.dimension,
            ),
            BertEncoder::Padded(_) => Err(ModelError::new(
                ErrorCode::GenerateEmbeddingsError,
                "this model runs padded batches (packed = false)",
            )),
        }
    }

    fn batch_cost(&self) -> BatchCost {
        match self.encoder {
            BertEncoder::Packed(_) => BatchCost::Packed,
            BertEncoder::Padded(_) => BatchCost::Padded,
        }
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

fn malformed(what: &str) -> ModelError {
    ModelError::new(
        ErrorCode::GenerateEmbeddingsError,
        format!("malformed batch: {what}"),
    )
}

/// The real tokens of a padded batch, packed (padding is on the right of each row).
fn unpad(batch: &PaddedBatch) -> Result<PackedBatch> {
    let cells = batch.batch * batch.seq;
    if [&batch.ids, &batch.type_ids, &batch.attention_mask]
        .iter()
        .any(|v| v.len() != cells)
    {
        return Err(malformed(
            "ids, type ids and mask must each hold batch x seq values",
        ));
    }
    let mut packed = PackedBatch {
        ids: Vec::new(),
        type_ids: Vec::new(),
        lengths: Vec::with_capacity(batch.batch),
    };
    for r in 0..batch.batch {
        let len = batch.row_length(r);
        let row = r * batch.seq..r * batch.seq + len;
        packed.ids.extend_from_slice(&batch.ids[row.clone()]);
        packed.type_ids.extend_from_slice(&batch.type_ids[row]);
        packed.lengths.push(len);
    }
    Ok(packed)
}

/// A packed token output laid out as `[batch, seq, hidden]` for `batch`, zeros at padding.
fn repad(output: EncoderOutput, batch: &PaddedBatch) -> Result<EncoderOutput> {
    let EncoderOutput::Tokens { data, hidden } = output else {
        return Ok(output);
    };
    let mut padded = vec![0f32; batch.batch * batch.seq * hidden];
    // `max(1)`: chunk sizes must not be 0; an empty batch has no chunks anyway.
    let mut rows = data.chunks_exact(hidden.max(1));
    for (r, to) in padded
        .chunks_exact_mut((batch.seq * hidden).max(1))
        .enumerate()
    {
        for to in to.chunks_exact_mut(hidden.max(1)).take(batch.row_length(r)) {
            let from = rows
                .next()
                .ok_or_else(|| malformed("fewer output rows than tokens"))?;
            to.copy_from_slice(from);
        }
    }
    Ok(EncoderOutput::Tokens {
        data: padded,
        hidden,
    })
}
