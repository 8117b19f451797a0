//! Type `embedding`: SentenceTransformer models of every family in [`crate::families`] on
//! candle, run by the packed encoder.

use crate::device::{candle_device, core_device, dtype_option};
use crate::encoder::PackedEncoder;
use crate::families::heads::Head;
use crate::families::Family;
use crate::purpose::headed;
use crate::quantize::{self, QuantizeOptions};
use crate::weights::{estimate_bytes, var_builder, weight_files, REQUIRED};
use crate::BACKEND_NAME;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use model_manager_core::backend::{locate_or_download, BatchCost, ModelFolder};
use model_manager_core::{
    Architecture, DeviceChoice, ErrorCode, ModelError, ModelInfo, ModelSpec, Prompts, Quantization,
    Result,
};
use model_manager_text::Purpose;
use model_manager_text::{
    sentence, EmbeddingPipeline, EncoderOutput, PackedBatch, PaddedBatch, TextEncoder, TokenEncoder,
};
use std::path::Path;

/// Fetched too when downloading from the hub, where they exist.
pub(crate) const OPTIONAL: &[&str] = sentence::FILES;

/// Option keys of `embedding` models: precision, packing and the sentence-transformers
/// overrides.
pub(crate) fn option_keys() -> &'static [&'static str] {
    static KEYS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = vec!["dtype", "packed"];
        keys.extend_from_slice(sentence::OPTION_KEYS);
        keys.extend_from_slice(crate::quantize::OPTION_KEYS);
        keys
    })
}

/// The forward pass a [`CandleEmbedder`] runs.
pub enum Encoder {
    /// The packed encoder of this crate (the default): no padding, every family.
    Packed(PackedEncoder),
    /// candle-transformers' `BertModel` on padded batches (`models.<id>.packed = false`,
    /// BERT checkpoints only).
    Padded(BertModel),
}

/// A loaded SentenceTransformer model of any supported family. Reach the raw model and
/// device through [`CandleEmbedder::encoder`] and [`CandleEmbedder::device`].
pub struct CandleEmbedder {
    encoder: Encoder,
    /// The head of a scoring or sparse model, on the encoder's hidden states.
    head: Option<Head>,
    purpose: Purpose,
    family: Family,
    pipeline: EmbeddingPipeline,
    device: Device,
    /// Width of the token vectors.
    hidden: usize,
    /// Width of the sentence vectors (after pooling and Dense modules).
    dimension: usize,
    bytes: Option<u64>,
    /// How it is quantized, if it is.
    quantization: Option<Quantization>,
}

/// `config.json` as JSON, and the family it names.
pub(crate) fn read_config(path: &Path) -> Result<(serde_json::Value, Family)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ModelError::file_load(ErrorCode::ModelLoadError, path, e))?;
    let config: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ModelError::file_load(ErrorCode::ModelLoadError, path, e))?;
    let family = Family::detect(&config).map_err(|model_type| unsupported(&model_type, path))?;
    Ok((config, family))
}

/// `UNSUPPORTED_MODEL_TYPE` naming the type and the supported ones.
pub(crate) fn unsupported(model_type: &str, config: &Path) -> ModelError {
    ModelError::new(
        ErrorCode::UnsupportedModelType,
        format!(
            "model_type `{model_type}` in {} is not a family the candle embedding loader runs (supported: {})",
            config.display(),
            Family::supported()
        ),
    )
    .with("model_type", model_type)
    .with("file", config.display().to_string())
}

impl CandleEmbedder {
    /// Loads `spec`'s folder onto `choice`'s device, for sentence embeddings.
    pub fn load(spec: &ModelSpec, choice: &DeviceChoice) -> Result<Self> {
        Self::load_for(spec, choice, Purpose::Embedding)
    }

    /// Loads `spec`'s folder onto `choice`'s device for `purpose`: sentence embeddings, or
    /// the checkpoint's classification or masked-LM head.
    pub fn load_for(spec: &ModelSpec, choice: &DeviceChoice, purpose: Purpose) -> Result<Self> {
        let (quantize, dtype, packed) = load_options(spec, purpose)?;
        let folder = locate_or_download(spec, REQUIRED, OPTIONAL)?;
        let device = candle_device(choice)?;
        let (config, family) = read_config(&folder.file("config.json"))?;
        let files = weight_files(&folder, ErrorCode::ModelLoadError)?;
        let vb = var_builder(&files, dtype, &device, ErrorCode::ModelLoadError)?;
        let (output, head) = headed(purpose, family, &config, &folder.path, vb.clone())
            .map_err(|e| e.for_model(&spec.id))?;
        let encoder = build_encoder(spec, &folder, &config, family, vb, packed)
            .map_err(|e| e.with("file", files[0].display().to_string()))?;
        let (hidden, model_max) = match &encoder {
            Encoder::Packed(e) => (e.hidden_size(), e.max_tokens()),
            Encoder::Padded(_) => (
                config["hidden_size"].as_u64().unwrap_or(0) as usize,
                config["max_position_embeddings"]
                    .as_u64()
                    .map(|n| n as usize),
            ),
        };
        let tokenizer = folder.file("tokenizer.json");
        let pipeline = purpose.pipeline(&folder.path, &tokenizer, spec, model_max, output)?;
        let dimension = match &head {
            Some(head) => head.width(),
            None => pipeline
                .sentence
                .dimension(hidden)
                .map_err(|e| e.for_model(&spec.id))?,
        };
        let mut embedder = Self {
            encoder,
            head,
            purpose,
            family,
            pipeline,
            device,
            hidden,
            dimension,
            bytes: estimate_bytes(&files, dtype),
            quantization: None,
        };
        if let Some(options) = quantize {
            let source = quantize::Source {
                folder: &folder.path,
                weights: &files,
            };
            embedder.quantization =
                Some(quantize::quantize(&mut embedder, &options, spec, source)?);
        }
        Ok(embedder)
    }

    /// Width of the vectors it gives.
    pub(crate) fn dimension(&self) -> usize {
        self.dimension
    }

    /// The packed encoder, when it runs the fused CPU kernels (what int8 needs).
    pub(crate) fn packed(&self) -> Option<&PackedEncoder> {
        match &self.encoder {
            Encoder::Packed(e) if e.fused() && self.head.is_none() => Some(e),
            _ => None,
        }
    }

    /// See [`Self::packed`].
    pub(crate) fn packed_mut(&mut self) -> Option<&mut PackedEncoder> {
        match &mut self.encoder {
            Encoder::Packed(e) if e.fused() && self.head.is_none() => Some(e),
            _ => None,
        }
    }

    /// Takes `bytes` off the memory estimate (freed by quantization).
    pub(crate) fn forget_bytes(&mut self, bytes: u64) {
        self.bytes = self.bytes.map(|b| b.saturating_sub(bytes));
    }

    /// How it is quantized, if it is.
    pub fn quantization(&self) -> Option<&Quantization> {
        self.quantization.as_ref()
    }

    /// The forward pass: the packed encoder, or candle-transformers' `BertModel`.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// The family of the checkpoint.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The device it runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The embedding pipeline (tokenizer, pooling and the modules after it, batch size).
    pub fn pipeline(&self) -> &EmbeddingPipeline {
        &self.pipeline
    }
}

/// The family, pooling and packing `spec`'s folder would load with, if its files are there.
pub(crate) fn describe(spec: &ModelSpec) -> Option<Architecture> {
    let folder = model_manager_core::backend::locate_model_folder(spec, REQUIRED).ok()?;
    let (_, family) = read_config(&folder.file("config.json")).ok()?;
    let sentence = model_manager_text::SentenceConfig::resolve(&folder.path, spec, true).ok()?;
    Some(Architecture {
        family: family.name().into(),
        pooling: sentence.pooling.describe(),
        packed: spec.option_bool("packed").ok().flatten().unwrap_or(true),
        quantization: quantize::planned(spec),
    })
}

/// The prompts of `spec`'s folder, if its files are there.
pub(crate) fn prompts(spec: &ModelSpec) -> Option<Prompts> {
    let folder = model_manager_core::backend::locate_model_folder(spec, REQUIRED).ok()?;
    model_manager_text::SentenceConfig::prompts(&folder.path).ok()
}

/// The packed encoder of the family, or (`packed = false`, BERT only) candle-transformers'
/// padded `BertModel`.
fn build_encoder(
    spec: &ModelSpec,
    folder: &ModelFolder,
    config: &serde_json::Value,
    family: Family,
    vb: VarBuilder<'static>,
    packed: bool,
) -> Result<Encoder> {
    if !packed && family != Family::Bert {
        let key = format!("models.{}.packed", spec.id);
        return Err(ModelError::config(
            &key,
            format!(
                "`{key}` = false runs candle-transformers' padded BERT, which cannot run a {} checkpoint",
                family.name()
            ),
        ));
    }
    let encoder = if packed {
        family.load(config, vb).map(Encoder::Packed)
    } else {
        serde_json::from_value::<Config>(config.clone())
            .map_err(candle_core::Error::wrap)
            .and_then(|c| BertModel::load(vb, &c))
            .map(Encoder::Padded)
    };
    encoder.map_err(|e| {
        ModelError::new(
            ErrorCode::ModelLoadError,
            format!(
                "the {} checkpoint in {} does not fit its config.json: {e}",
                family.name(),
                folder.path.display()
            ),
        )
        .with("family", family.name())
        .caused_by("CandleError", e)
    })
}

fn candle_error(e: candle_core::Error) -> ModelError {
    ModelError::new(
        ErrorCode::GenerateEmbeddingsError,
        format!("forward pass failed: {e}"),
    )
    .caused_by("CandleError", e)
}

/// A tensor's values as f32, row-major.
fn values(tensor: std::result::Result<Tensor, candle_core::Error>) -> Result<Vec<f32>> {
    tensor
        .and_then(|h| h.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>())
        .map_err(candle_error)
}

/// `[tokens, hidden]` (or `[batch, seq, hidden]`) as f32 values, row-major.
fn token_output(
    hidden: std::result::Result<Tensor, candle_core::Error>,
    width: usize,
) -> Result<EncoderOutput> {
    Ok(EncoderOutput::Tokens {
        data: values(hidden)?,
        hidden: width,
    })
}

/// Runs a forward pass on a thread of rayon's pool. The encoder's kernels fork work dozens
/// of times a layer; forked from a thread outside the pool (the engine's worker), each fork
/// parks that thread on a latch and wakes a pool thread, two context switches a fork, and
/// the caller's core sits idle meanwhile. Forked from a pool thread they run in place. One
/// hop a pass instead.
fn in_pool<R: Send>(pass: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| pass())
}

impl TokenEncoder for CandleEmbedder {
    fn forward(&self, batch: &PaddedBatch) -> Result<EncoderOutput> {
        in_pool(|| self.forward_padded(batch))
    }

    fn forward_packed(&self, batch: &PackedBatch) -> Result<EncoderOutput> {
        in_pool(|| self.forward_packed_in_pool(batch))
    }

    fn batch_cost(&self) -> BatchCost {
        match self.encoder {
            Encoder::Packed(_) => BatchCost::Packed,
            Encoder::Padded(_) => BatchCost::Padded,
        }
    }
}

impl CandleEmbedder {
    fn forward_padded(&self, batch: &PaddedBatch) -> Result<EncoderOutput> {
        let model = match &self.encoder {
            Encoder::Padded(model) => model,
            // The packed encoder pads nothing: strip the padding, run packed, pad the output.
            Encoder::Packed(_) => {
                let out = self.forward_packed_in_pool(&unpad(batch)?)?;
                return repad(out, batch);
            }
        };
        let shape = (batch.batch, batch.seq);
        let tensor = |data: &[u32]| Tensor::from_slice(data, shape, &self.device);
        let ids = tensor(&batch.ids).map_err(candle_error)?;
        let type_ids = tensor(&batch.type_ids).map_err(candle_error)?;
        let mask = tensor(&batch.attention_mask).map_err(candle_error)?;
        token_output(model.forward(&ids, &type_ids, Some(&mask)), self.hidden)
    }

    fn forward_packed_in_pool(&self, batch: &PackedBatch) -> Result<EncoderOutput> {
        match (&self.encoder, &self.head) {
            (Encoder::Packed(model), Some(head)) => {
                let rows = model
                    .forward(&batch.ids, &batch.type_ids, &batch.lengths)
                    .and_then(|h| head.forward(&h, &batch.lengths, model.fused()));
                Ok(EncoderOutput::Pooled {
                    data: values(rows)?,
                    hidden: head.width(),
                })
            }
            (Encoder::Packed(model), None) => token_output(
                model.forward(&batch.ids, &batch.type_ids, &batch.lengths),
                self.hidden,
            ),
            (Encoder::Padded(_), _) => Err(ModelError::new(
                ErrorCode::GenerateEmbeddingsError,
                "this model runs padded batches (packed = false)",
            )),
        }
    }
}

impl TextEncoder for CandleEmbedder {
    fn pipeline(&self) -> &EmbeddingPipeline {
        &self.pipeline
    }
    fn info(&self) -> ModelInfo {
        ModelInfo {
            model_type: self.purpose.model_type().into(),
            backend: BACKEND_NAME.into(),
            device: core_device(&self.device),
            dimension: Some(self.dimension),
            bytes: self.bytes,
        }
    }
    fn architecture(&self) -> Option<Architecture> {
        Some(Architecture {
            family: self.family.name().into(),
            pooling: match &self.head {
                Some(head) => head.describe(),
                None => self.pipeline.sentence.pooling.describe(),
            },
            packed: matches!(self.encoder, Encoder::Packed(_)),
            quantization: self.quantization.clone(),
        })
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

/// The options of a load for `purpose` (quantization, dtype, packing), or the
/// `CONFIG_ERROR` of the first value it refuses; [`check_options`] for `mm check`.
fn load_options(
    spec: &ModelSpec,
    purpose: Purpose,
) -> Result<(Option<QuantizeOptions>, candle_core::DType, bool)> {
    let quantize = QuantizeOptions::from_spec(spec)?;
    if quantize.is_some() && purpose != Purpose::Embedding {
        let key = format!("models.{}.quantize", spec.id);
        return Err(ModelError::config(
            &key,
            format!(
                "`{key}` is for type `embedding`: its fidelity check compares sentence vectors"
            ),
        ));
    }
    let dtype = dtype_option(spec)?;
    let packed = spec.option_bool("packed")?.unwrap_or(true);
    if !packed && purpose != Purpose::Embedding {
        let key = format!("models.{}.packed", spec.id);
        return Err(ModelError::config(
            &key,
            format!("`{key}` = false is for embeddings only"),
        ));
    }
    Ok((quantize, dtype, packed))
}

/// Checks `spec`'s option values as a load for `purpose` would (the calibration file
/// included), without loading.
pub fn check_options(spec: &ModelSpec, purpose: Purpose) -> Result<()> {
    load_options(spec, purpose).map(drop)
}
