//! Type `embedding` on ONNX Runtime: the shared text pipeline around an ONNX graph.

use crate::session::{
    build_session, downloadable, fetch_if_named, graph_entry, onnx_file, SESSION_OPTION_KEYS,
};
use crate::BACKEND_NAME;
use model_manager_core::backend::{locate_model_folder, ModelFiles, ModelLoader, Probe};
use model_manager_core::{
    Architecture, DeviceChoice, ErrorCode, Model, ModelError, ModelInfo, ModelSpec, Prompts, Result,
};
use model_manager_text::{
    sentence, EmbeddingPipeline, EncoderOutput, PaddedBatch, Purpose, RowOutput, TextEmbedding,
    TextEncoder, TokenEncoder,
};
use ort::session::Session;
use ort::value::{DynValue, Tensor, TensorElementType};
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// Loads text graphs (`model.onnx` plus a tokenizer) for a purpose: sentence embeddings
/// (type `embedding`), or exports with a head's logits (`rerank`, `classifier`, `sparse`).
pub struct OnnxEmbeddingLoader {
    purpose: Purpose,
}

impl OnnxEmbeddingLoader {
    /// The loader of `purpose`'s type.
    pub fn new(purpose: Purpose) -> Self {
        Self { purpose }
    }
}

fn option_keys() -> &'static [&'static str] {
    static KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = vec!["output", "tokenizer_path", "quantize"];
        keys.extend_from_slice(SESSION_OPTION_KEYS);
        keys.extend_from_slice(sentence::OPTION_KEYS);
        keys
    })
}

/// `quantize` is known (so it is not reported as a typo) and refused with the reason: ONNX
/// Runtime's load-time int8 (`quantize_dynamic`) scales activations per tensor, which
/// BERT's activation outliers do not survive (mean cosine 0.955 to fp32 on
/// all-MiniLM-L6-v2, 70-84% of nearest neighbours kept).
fn refuse_quantize(spec: &ModelSpec) -> Result<()> {
    let Some(scheme) = spec.option_str("quantize")? else {
        return Ok(());
    };
    let key = format!("models.{}.quantize", spec.id);
    Err(ModelError::config(
        &key,
        format!(
            "`{key}` = \"{scheme}\": the onnx backend does not quantize at load, because ONNX \
             Runtime's int8 scales activations per tensor and loses retrieval quality (mean \
             cosine 0.955 to fp32 on all-MiniLM-L6-v2); use backend = \"candle\", whose int8 \
             passes a fidelity check at load, or point local_path at an int8 export you have checked"
        ),
    ))
}

fn model_files(spec: &ModelSpec) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let folder = locate_model_folder(spec, &[])?;
    let onnx = onnx_file(spec, &folder.path)?;
    let tokenizer = match spec.option_str("tokenizer_path")? {
        Some(path) => model_manager_core::settings::resolve_path(&folder.path, path),
        None => folder.file("tokenizer.json"),
    };
    if !tokenizer.is_file() {
        return Err(ModelError::new(
            ErrorCode::ModelNotFound,
            format!(
                "tokenizer {} not found (set models.{}.tokenizer_path to a tokenizer.json)",
                tokenizer.display(),
                spec.id
            ),
        )
        .for_model(&spec.id)
        .with("file", tokenizer.display().to_string()));
    }
    Ok((folder.path, onnx, tokenizer))
}

impl ModelLoader for OnnxEmbeddingLoader {
    fn model_type(&self) -> &str {
        self.purpose.model_type()
    }
    fn backend(&self) -> &str {
        BACKEND_NAME
    }
    /// Preferred over candle for `auto` when a graph and a runtime are there.
    fn priority(&self) -> i32 {
        10
    }
    fn probe(&self, spec: &ModelSpec) -> Probe {
        match model_files(spec) {
            Err(_) if downloadable(spec, false) => {}
            Err(e) => return Probe::reject(e.code, e.message),
            Ok(_) => {}
        }
        match crate::ensure_runtime(spec) {
            Ok(_) => Probe::Accept,
            Err(e) => Probe::reject(e.code, e.message),
        }
    }
    fn estimate_bytes(&self, spec: &ModelSpec) -> Option<u64> {
        let (_, onnx, _) = model_files(spec).ok()?;
        std::fs::metadata(onnx).ok().map(|m| m.len())
    }
    fn option_keys(&self) -> &[&str] {
        option_keys()
    }
    fn check_options(&self, spec: &ModelSpec) -> Result<()> {
        refuse_quantize(spec)?;
        crate::session::check_session_options(spec)
    }
    fn files(&self, spec: &ModelSpec) -> Option<ModelFiles> {
        let tokenizer = match spec.option_str("tokenizer_path").ok()? {
            Some(path) if std::path::Path::new(path).is_absolute() => None,
            Some(path) => Some(path.to_owned()),
            None => Some("tokenizer.json".to_owned()),
        };
        let mut files = ModelFiles::of(&[], model_manager_text::sentence::FILES);
        files.required.push(graph_entry(spec).ok()?);
        files.required.extend(tokenizer);
        files.optional.push("config.json".to_owned());
        Some(files)
    }
    fn load(&self, spec: &ModelSpec, device: &DeviceChoice) -> Result<Arc<dyn Model>> {
        if let Some(files) = self.files(spec) {
            fetch_if_named(spec, &files, false)?;
        }
        Ok(Arc::new(TextEmbedding(OnnxEmbedder::load_for(
            spec,
            device,
            self.purpose,
        )?)))
    }
    fn prompts(&self, spec: &ModelSpec) -> Option<Prompts> {
        if self.purpose != Purpose::Embedding {
            return Some(Prompts::default());
        }
        let (folder, _, _) = model_files(spec).ok()?;
        model_manager_text::SentenceConfig::prompts(&folder).ok()
    }
    fn describe(&self, spec: &ModelSpec) -> Option<Architecture> {
        if self.purpose != Purpose::Embedding {
            return None;
        }
        let (folder, _, _) = model_files(spec).ok()?;
        let sentence = model_manager_text::SentenceConfig::resolve(&folder, spec, true).ok()?;
        Some(Architecture {
            family: exported_model(&folder)
                .0
                .unwrap_or_else(|| "onnx graph".into()),
            pooling: sentence.pooling.describe(),
            packed: false,
            quantization: None,
        })
    }
}

/// How one graph input is fed.
#[derive(Debug, Clone, Copy)]
enum Feed {
    Ids,
    Mask,
    TypeIds,
    /// Each token's position in its row (decoder exports): from 0, padding at 1 as
    /// transformers' `attention_mask.cumsum(-1) - 1` with padding filled.
    Positions,
}

/// A loaded ONNX text model: sentence embeddings, or a head's logits.
pub struct OnnxEmbedder {
    purpose: Purpose,
    sessions: Vec<Mutex<Session>>,
    inputs: Vec<(String, Feed, TensorElementType)>,
    output: String,
    /// Whether the output is already one vector per text (`[batch, hidden]`).
    pooled_output: bool,
    pipeline: EmbeddingPipeline,
    dimension: usize,
    /// `model_type` of the folder's `config.json`, if it has one.
    family: Option<String>,
    device: DeviceChoice,
    bytes: Option<u64>,
}

/// The folder's `config.json`, or `null` without one.
fn exported_config(folder: &std::path::Path) -> serde_json::Value {
    std::fs::read_to_string(folder.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// What the folder's `config.json` says about the exported model: its `model_type` and the
/// longest input its positions allow (512 when nothing says, as BERT's).
fn exported_model(folder: &std::path::Path) -> (Option<String>, usize) {
    let config = exported_config(folder);
    let model_type = config["model_type"].as_str().map(str::to_owned);
    let positions = config["max_position_embeddings"]
        .as_u64()
        .map(|n| n as usize);
    // RoBERTa-style models number positions after the padding id.
    let offset = match model_type.as_deref() {
        Some("xlm-roberta" | "roberta" | "camembert" | "mpnet") => {
            config["pad_token_id"].as_u64().unwrap_or(1) as usize + 1
        }
        _ => 0,
    };
    let max = positions.map_or(512, |p| p.saturating_sub(offset).max(1));
    (model_type, max)
}

/// A graph `file` of `spec` this backend cannot embed with.
fn graph_error(spec: &ModelSpec, file: &std::path::Path, message: String) -> ModelError {
    ModelError::file_load(ErrorCode::ModelLoadError, file, message).for_model(&spec.id)
}

/// One session per engine worker, the cores split among them (unless `intra_threads` says
/// otherwise): passes run side by side instead of sharing one pool.
fn sessions(
    spec: &ModelSpec,
    onnx: &std::path::Path,
    device: &DeviceChoice,
) -> Result<Vec<Mutex<Session>>> {
    let workers = spec.engine_workers.max(1);
    let mut per = spec.clone();
    if workers > 1 && !per.options.contains_key("intra_threads") {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        per.options.insert(
            "intra_threads".into(),
            ((cores / workers).max(1) as u64).into(),
        );
    }
    (0..workers)
        .map(|_| build_session(&per, onnx, device).map(Mutex::new))
        .collect()
}

/// How each input of the graph is fed, with its integer type.
fn graph_inputs(
    spec: &ModelSpec,
    onnx: &std::path::Path,
    session: &Session,
) -> Result<Vec<(String, Feed, TensorElementType)>> {
    let mut inputs = Vec::new();
    for input in session.inputs() {
        let feed = match input.name() {
            "input_ids" => Feed::Ids,
            "attention_mask" => Feed::Mask,
            "token_type_ids" => Feed::TypeIds,
            "position_ids" => Feed::Positions,
            other => return Err(graph_error(spec, onnx, format!(
                "unexpected input `{other}`: a text graph takes input_ids, attention_mask and optionally token_type_ids and position_ids (use type \"onnx\" for other graphs)"
            ))),
        };
        let ty = match input.dtype().tensor_type() {
            Some(t @ (TensorElementType::Int64 | TensorElementType::Int32)) => t,
            other => {
                return Err(graph_error(
                    spec,
                    onnx,
                    format!(
                        "input `{}` has type {other:?}; expected int64 or int32",
                        input.name()
                    ),
                ))
            }
        };
        inputs.push((input.name().to_owned(), feed, ty));
    }
    if !inputs.iter().any(|(_, f, _)| matches!(f, Feed::Ids)) {
        return Err(graph_error(
            spec,
            onnx,
            "the graph has no input_ids input".into(),
        ));
    }
    Ok(inputs)
}

impl OnnxEmbedder {
    /// Loads `spec`'s graph and tokenizer for sentence embeddings.
    pub fn load(spec: &ModelSpec, device: &DeviceChoice) -> Result<Self> {
        Self::load_for(spec, device, Purpose::Embedding)
    }

    /// Loads `spec`'s graph and tokenizer for `purpose`.
    pub fn load_for(spec: &ModelSpec, device: &DeviceChoice, purpose: Purpose) -> Result<Self> {
        refuse_quantize(spec)?;
        let (folder, onnx, tokenizer_file) = model_files(spec)?;
        let sessions = sessions(spec, &onnx, device)?;
        let inputs = graph_inputs(spec, &onnx, &sessions[0].lock())?;
        let (output, static_dim, pooled) = pick_output(spec, &sessions[0].lock(), &onnx, purpose)?;
        let (family, model_max) = exported_model(&folder);
        let row_output = purpose
            .row_output(&exported_config(&folder), &folder)
            .map_err(|e| e.for_model(&spec.id))?;
        let rows = match &row_output {
            RowOutput::Sentence => None,
            RowOutput::Logits(head) => Some(head.labels.len()),
            RowOutput::Splade(pooling) => Some(pooling.vocab),
        };
        let pipeline =
            purpose.pipeline(&folder, &tokenizer_file, spec, Some(model_max), row_output)?;
        let dimension = match (rows, static_dim, pooled) {
            (Some(width), _, _) => width,
            (None, Some(width), false) => pipeline
                .sentence
                .dimension(width)
                .map_err(|e| e.for_model(&spec.id))?,
            _ => 0,
        };
        let mut model = Self {
            purpose,
            sessions,
            inputs,
            output,
            pooled_output: pooled,
            pipeline,
            dimension,
            family,
            device: device.clone(),
            bytes: std::fs::metadata(&onnx).ok().map(|m| m.len()),
        };
        if model.dimension == 0 {
            // A dynamic hidden size, or a pooled output that may or may not have passed the
            // Dense modules: learn the width from one real run.
            model.dimension = model.pipeline.embed(&model, &["dimension probe"])?[0].len();
        }
        Ok(model)
    }

    /// The name of the output used.
    pub fn output_name(&self) -> &str {
        &self.output
    }
}

/// The output to use: `output` from settings, the only one, or a recognisable name; with
/// its last dimension when static, and whether it is already pooled (`[batch, hidden]`).
fn pick_output(
    spec: &ModelSpec,
    session: &Session,
    file: &std::path::Path,
    purpose: Purpose,
) -> Result<(String, Option<usize>, bool)> {
    let outputs: Vec<(String, Vec<i64>)> = session
        .outputs()
        .iter()
        .map(|o| {
            let shape = o.dtype().tensor_shape().map(|s| s.to_vec());
            (o.name().to_owned(), shape.unwrap_or_default())
        })
        .collect();
    let (name, shape) = choose_output(spec, &outputs, file, purpose)?;
    if !(2..=3).contains(&shape.len()) {
        return Err(graph_error(
            spec,
            file,
            format!(
                "output `{name}` has rank {}; expected [batch, seq, hidden] or [batch, hidden]",
                shape.len()
            ),
        ));
    }
    let last = shape.last().copied().filter(|d| *d > 0).map(|d| d as usize);
    Ok((name.clone(), last, shape.len() == 2))
}

/// The `output` setting's output, else the only one, else a recognisable name.
fn choose_output<'a>(
    spec: &ModelSpec,
    outputs: &'a [(String, Vec<i64>)],
    file: &std::path::Path,
    purpose: Purpose,
) -> Result<&'a (String, Vec<i64>)> {
    let key = format!("models.{}.output", spec.id);
    let listed = || {
        let names: Vec<String> = outputs
            .iter()
            .map(|(n, shape)| format!("{n} {shape:?}"))
            .collect();
        names.join(", ")
    };
    if let Some(wanted) = spec.option_str("output")? {
        return outputs.iter().find(|(n, _)| n == wanted).ok_or_else(|| {
            ModelError::config(
                &key,
                format!(
                    "`{key}` = \"{wanted}\" is not an output of {}; outputs: {}",
                    file.display(),
                    listed()
                ),
            )
        });
    }
    // An export's own sentence vectors first (its pooling is part of the model), then
    // token outputs to pool as the folder says; a head's logits for the other types.
    let preferred: &[&str] = match purpose {
        Purpose::Embedding => &[
            "sentence_embedding",
            "last_hidden_state",
            "token_embeddings",
        ],
        _ => &["logits"],
    };
    let by_name = preferred
        .iter()
        .find_map(|p| outputs.iter().find(|(n, _)| n == p));
    match (outputs, by_name) {
        ([only], _) => Ok(only),
        (_, Some(found)) => Ok(found),
        _ => Err(ModelError::config(
            &key,
            format!(
                "{} has several outputs ({}); set `{key}` to the one holding token or sentence embeddings",
                file.display(),
                listed()
            ),
        )
        .for_model(&spec.id)),
    }
}

fn run_error(e: impl std::fmt::Display) -> ModelError {
    ModelError::new(
        ErrorCode::GenerateEmbeddingsError,
        format!("ONNX Runtime failed: {e}"),
    )
    .caused_by("OrtError", e)
}

fn int_tensor(data: &[u32], shape: [usize; 2], ty: TensorElementType) -> Result<DynValue> {
    Ok(match ty {
        TensorElementType::Int32 => {
            Tensor::from_array((shape, data.iter().map(|&x| x as i32).collect::<Vec<_>>()))
                .map_err(run_error)?
                .into_dyn()
        }
        _ => Tensor::from_array((shape, data.iter().map(|&x| x as i64).collect::<Vec<_>>()))
            .map_err(run_error)?
            .into_dyn(),
    })
}

impl TokenEncoder for OnnxEmbedder {
    fn forward(&self, batch: &PaddedBatch) -> Result<EncoderOutput> {
        let shape = [batch.batch, batch.seq];
        let mut feeds: Vec<(String, DynValue)> = Vec::with_capacity(self.inputs.len());
        for (name, feed, ty) in &self.inputs {
            let positions;
            let data = match feed {
                Feed::Ids => &batch.ids,
                Feed::Mask => &batch.attention_mask,
                Feed::TypeIds => &batch.type_ids,
                Feed::Positions => {
                    positions = position_ids(batch);
                    &positions
                }
            };
            feeds.push((name.clone(), int_tensor(data, shape, *ty)?));
        }
        // A free session; all busy (more callers than workers) means waiting for the first.
        let mut session = self
            .sessions
            .iter()
            .find_map(|s| s.try_lock())
            .unwrap_or_else(|| self.sessions[0].lock());
        let outputs = session.run(feeds).map_err(run_error)?;
        let value = outputs
            .get(self.output.as_str())
            .ok_or_else(|| run_error(format!("no output {}", self.output)))?;
        let (out_shape, data) = value.try_extract_tensor::<f32>().map_err(run_error)?;
        let hidden = out_shape.last().copied().unwrap_or(0).max(0) as usize;
        let data = data.to_vec();
        Ok(if out_shape.len() == 3 {
            EncoderOutput::Tokens { data, hidden }
        } else {
            EncoderOutput::Pooled { data, hidden }
        })
    }
}

/// Positions of a right-padded batch as transformers computes them from the mask: 0, 1, …
/// over real tokens, 1 at padding.
fn position_ids(batch: &PaddedBatch) -> Vec<u32> {
    let mut out = Vec::with_capacity(batch.ids.len());
    for row in batch.attention_mask.chunks(batch.seq.max(1)) {
        let mut seen = 0u32;
        for &m in row {
            seen += u32::from(m != 0);
            out.push(if m != 0 { seen - 1 } else { 1 });
        }
    }
    out
}

impl TextEncoder for OnnxEmbedder {
    fn pipeline(&self) -> &EmbeddingPipeline {
        &self.pipeline
    }
    fn architecture(&self) -> Option<Architecture> {
        Some(Architecture {
            family: self.family.clone().unwrap_or_else(|| "onnx graph".into()),
            pooling: match self.pooled_output {
                true => format!("in the graph (`{}`)", self.output),
                false => self.pipeline.sentence.pooling.describe(),
            },
            packed: false,
            quantization: None,
        })
    }
    fn info(&self) -> ModelInfo {
        ModelInfo {
            model_type: self.purpose.model_type().into(),
            backend: BACKEND_NAME.into(),
            device: self.device.device,
            dimension: Some(self.dimension),
            bytes: self.bytes,
        }
    }
}
