//! The encoder and decoder sessions of an export, with their inputs and outputs checked at
//! load, and one run of each.

use crate::session::build_session;
use model_manager_core::{DeviceChoice, ErrorCode, ModelError, ModelSpec, Result};
use model_manager_generate::generation_error;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorElementType};
use parking_lot::Mutex;
use std::path::Path;

/// Prefix of a decoder's cache inputs; its outputs carry the same names after `present.`.
const PAST: &str = "past_key_values.";
const PRESENT: &str = "present.";

/// A load error naming the graph file.
fn graph_error(file: &Path, message: impl std::fmt::Display) -> ModelError {
    ModelError::file_load(ErrorCode::T5ModelLoadError, file, message)
}

/// A run-time failure of ONNX Runtime.
pub fn run_error(e: impl std::fmt::Display) -> ModelError {
    generation_error(format!("ONNX Runtime failed: {e}")).caused_by("OrtError", e)
}

/// An integer input (token ids or a mask) and the element type the graph wants.
#[derive(Debug, Clone)]
struct IntInput {
    name: String,
    ty: TensorElementType,
}

impl IntInput {
    /// `values` as a `[rows, len]` tensor of this input's type.
    fn tensor(&self, values: &[u32], rows: usize) -> Result<DynValue> {
        let shape = [rows, values.len() / rows.max(1)];
        Ok(match self.ty {
            TensorElementType::Int32 => {
                let data: Vec<i32> = values.iter().map(|&x| x as i32).collect();
                Tensor::from_array((shape, data))
                    .map_err(run_error)?
                    .into_dyn()
            }
            _ => {
                let data: Vec<i64> = values.iter().map(|&x| x as i64).collect();
                Tensor::from_array((shape, data))
                    .map_err(run_error)?
                    .into_dyn()
            }
        })
    }
}

/// The inputs and outputs of one graph, by name.
struct Io {
    inputs: Vec<(String, Option<TensorElementType>)>,
    outputs: Vec<(String, Vec<i64>)>,
}

impl Io {
    fn of(session: &Session) -> Self {
        Self {
            inputs: session
                .inputs()
                .iter()
                .map(|i| (i.name().to_owned(), i.dtype().tensor_type()))
                .collect(),
            outputs: session
                .outputs()
                .iter()
                .map(|o| {
                    let shape = o.dtype().tensor_shape().map(|s| s.to_vec());
                    (o.name().to_owned(), shape.unwrap_or_default())
                })
                .collect(),
        }
    }

    fn int_input(&self, file: &Path, name: &str, required: bool) -> Result<Option<IntInput>> {
        match self.inputs.iter().find(|(n, _)| n == name) {
            Some((_, Some(ty @ (TensorElementType::Int64 | TensorElementType::Int32)))) => {
                Ok(Some(IntInput {
                    name: name.to_owned(),
                    ty: *ty,
                }))
            }
            Some((_, other)) => Err(graph_error(
                file,
                format!("input `{name}` has type {other:?}; expected int64 or int32"),
            )),
            None if required => Err(graph_error(
                file,
                format!("the graph has no `{name}` input"),
            )),
            None => Ok(None),
        }
    }

    fn float_input(&self, file: &Path, name: &str) -> Result<bool> {
        match self.inputs.iter().find(|(n, _)| n == name) {
            Some((_, Some(TensorElementType::Float32))) => Ok(true),
            Some((_, other)) => Err(graph_error(
                file,
                format!("input `{name}` has type {other:?}; only float32 exports are supported"),
            )),
            None => Ok(false),
        }
    }

    /// Every input not in `known`, so an unfamiliar graph is refused at load, not at the
    /// first request.
    fn refuse_others(&self, file: &Path, known: impl Fn(&str) -> bool) -> Result<()> {
        match self.inputs.iter().find(|(n, _)| !known(n)) {
            Some((name, _)) => Err(graph_error(
                file,
                format!("unexpected input `{name}` for an encoder-decoder export"),
            )),
            None => Ok(()),
        }
    }

    fn has_output(&self, name: &str) -> bool {
        self.outputs.iter().any(|(n, _)| n == name)
    }
}

/// The encoder: `input_ids` (and `attention_mask`) → `last_hidden_state`.
pub struct EncoderGraph {
    session: Mutex<Session>,
    ids: IntInput,
    mask: Option<IntInput>,
    output: String,
}

/// One prompt's encoder output, `[1, tokens, hidden]`.
pub struct Encoded {
    pub hidden: Vec<f32>,
    pub tokens: usize,
    pub width: usize,
}

impl EncoderGraph {
    /// Opens and checks `file`.
    pub fn load(spec: &ModelSpec, file: &Path, device: &DeviceChoice) -> Result<Self> {
        let session = open(spec, file, device)?;
        let io = Io::of(&session);
        io.refuse_others(file, |n| n == "input_ids" || n == "attention_mask")?;
        let ids = io.int_input(file, "input_ids", true)?.expect("required");
        let mask = io.int_input(file, "attention_mask", false)?;
        let output = match io.outputs.as_slice() {
            [(only, _)] => only.clone(),
            _ if io.has_output("last_hidden_state") => "last_hidden_state".into(),
            _ => {
                return Err(graph_error(
                    file,
                    "the encoder has no `last_hidden_state` output",
                ))
            }
        };
        Ok(Self {
            session: Mutex::new(session),
            ids,
            mask,
            output,
        })
    }

    /// The encoder output of one prompt's token ids.
    pub fn encode(&self, ids: &[u32]) -> Result<Encoded> {
        let mut feeds = vec![(self.ids.name.clone(), self.ids.tensor(ids, 1)?)];
        if let Some(mask) = &self.mask {
            feeds.push((mask.name.clone(), mask.tensor(&vec![1; ids.len()], 1)?));
        }
        let mut session = self.session.lock();
        let outputs = session.run(feeds).map_err(run_error)?;
        let value = outputs
            .get(self.output.as_str())
            .ok_or_else(|| run_error(format!("no output {}", self.output)))?;
        let (shape, data) = value.try_extract_tensor::<f32>().map_err(run_error)?;
        let width = shape.last().copied().unwrap_or(0).max(0) as usize;
        if shape.len() != 3 || width == 0 || data.len() != ids.len() * width {
            return Err(run_error(format!(
                "the encoder output has shape {shape:?} for {} tokens",
                ids.len()
            )));
        }
        Ok(Encoded {
            hidden: data.to_vec(),
            tokens: ids.len(),
            width,
        })
    }
}

/// A decoder graph: token ids, the encoder's output and mask, and (with a cache) the past
/// keys and values → next-token `logits` and the new `present.*`.
pub struct DecoderGraph {
    session: Mutex<Session>,
    ids: IntInput,
    mask: Option<IntInput>,
    /// Whether it reads `encoder_hidden_states` (a decoder with past may not).
    reads_hidden: bool,
    /// `past_key_values.*` inputs.
    past: Vec<String>,
    /// `present.*` outputs, renamed to the inputs they feed.
    presents: Vec<String>,
    /// Width of `logits`, when the graph declares it.
    pub vocab: Option<usize>,
    /// Bytes of the `present.*.decoder.*` cache one row grows per token, when the graph
    /// declares the head sizes.
    pub cache_bytes_per_token: Option<u64>,
}

/// What a decoder step gives: each row's next-token logits and the new cache entries.
pub struct StepOutput {
    pub logits: Vec<f32>,
    pub presents: Vec<(String, DynValue)>,
}

impl DecoderGraph {
    /// Opens and checks `file`; `with_past` asks for `past_key_values.*` inputs.
    pub fn load(
        spec: &ModelSpec,
        file: &Path,
        device: &DeviceChoice,
        with_past: bool,
    ) -> Result<Self> {
        let session = open(spec, file, device)?;
        let io = Io::of(&session);
        io.refuse_others(file, |n| {
            matches!(
                n,
                "input_ids" | "encoder_hidden_states" | "encoder_attention_mask"
            ) || (with_past && n.starts_with(PAST))
        })?;
        let ids = io.int_input(file, "input_ids", true)?.expect("required");
        let mask = io.int_input(file, "encoder_attention_mask", false)?;
        let reads_hidden = io.float_input(file, "encoder_hidden_states")?;
        let past: Vec<String> = io
            .inputs
            .iter()
            .filter(|(n, _)| n.starts_with(PAST))
            .map(|(n, _)| n.clone())
            .collect();
        for name in &past {
            io.float_input(file, name)?;
        }
        if !reads_hidden && past.is_empty() {
            return Err(graph_error(
                file,
                "the decoder reads neither `encoder_hidden_states` nor a cache",
            ));
        }
        if with_past && past.is_empty() {
            return Err(graph_error(
                file,
                "the decoder with past has no `past_key_values.*` inputs",
            ));
        }
        let logits = io
            .outputs
            .iter()
            .find(|(n, _)| n == "logits")
            .ok_or_else(|| graph_error(file, "the decoder has no `logits` output"))?;
        let vocab = logits.1.last().filter(|d| **d > 0).map(|d| *d as usize);
        let presents = io
            .outputs
            .iter()
            .filter_map(|(n, _)| n.strip_prefix(PRESENT))
            .map(|rest| format!("{PAST}{rest}"))
            .collect();
        Ok(Self {
            session: Mutex::new(session),
            ids,
            mask,
            reads_hidden,
            past,
            presents,
            vocab,
            cache_bytes_per_token: cache_bytes_per_token(&io.outputs),
        })
    }

    /// The cache inputs this graph reads.
    pub fn past_inputs(&self) -> &[String] {
        &self.past
    }

    /// The cache entries this graph writes (as the input names they feed).
    pub fn present_outputs(&self) -> &[String] {
        &self.presents
    }

    /// Runs `ids` (`rows` rows of equal length) against the encoder output `hidden`
    /// (`[rows, tokens, width]`) and the cache `past`; each row's logits at its last position.
    pub fn run(
        &self,
        ids: &[u32],
        rows: usize,
        hidden: &DynValue,
        encoder_tokens: usize,
        past: &[(String, DynValue)],
    ) -> Result<StepOutput> {
        let mut feeds: Vec<(String, SessionInputValue<'_>)> =
            vec![(self.ids.name.clone(), self.ids.tensor(ids, rows)?.into())];
        if let Some(mask) = &self.mask {
            let ones = vec![1; rows * encoder_tokens];
            feeds.push((mask.name.clone(), mask.tensor(&ones, rows)?.into()));
        }
        if self.reads_hidden {
            feeds.push(("encoder_hidden_states".into(), hidden.into()));
        }
        for name in &self.past {
            let value = past
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| run_error(format!("no cache entry for `{name}`")))?;
            feeds.push((name.clone(), (&value.1).into()));
        }
        let mut session = self.session.lock();
        let mut outputs = session.run(feeds).map_err(run_error)?;
        let logits = {
            let value = outputs
                .get("logits")
                .ok_or_else(|| run_error("no output logits"))?;
            let (shape, data) = value.try_extract_tensor::<f32>().map_err(run_error)?;
            last_positions(shape, data, rows)?
        };
        let presents = self
            .presents
            .iter()
            .filter_map(|name| {
                let output = format!("{PRESENT}{}", &name[PAST.len()..]);
                outputs.remove(output).map(|v| (name.clone(), v))
            })
            .collect();
        Ok(StepOutput { logits, presents })
    }
}

/// The logits of each row's last position from `[rows, positions, vocab]`.
fn last_positions(shape: &ort::value::Shape, data: &[f32], rows: usize) -> Result<Vec<f32>> {
    let dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    let [r, positions, vocab] = dims[..] else {
        return Err(run_error(format!(
            "logits of shape {dims:?}; expected 3 dimensions"
        )));
    };
    if r != rows || positions == 0 || vocab == 0 {
        return Err(run_error(format!(
            "logits of shape {dims:?} for {rows} rows"
        )));
    }
    Ok((0..rows)
        .flat_map(|row| {
            let start = (row * positions + positions - 1) * vocab;
            data[start..start + vocab].iter().copied()
        })
        .collect())
}

/// Per token and row, the bytes of the decoder's self-attention cache: every
/// `present.*.decoder.*` output `[rows, heads, steps, head_width]` in f32.
fn cache_bytes_per_token(outputs: &[(String, Vec<i64>)]) -> Option<u64> {
    let mut total = 0u64;
    for (name, shape) in outputs {
        if name.starts_with(PRESENT) && name.contains(".decoder.") {
            match shape.as_slice() {
                [_, heads, _, width] if *heads > 0 && *width > 0 => {
                    total += (*heads * *width) as u64 * 4
                }
                _ => return None,
            }
        }
    }
    (total > 0).then_some(total)
}

/// A session for `file`, its load errors as `T5_MODEL_LOAD_ERROR` like every text2text load.
fn open(spec: &ModelSpec, file: &Path, device: &DeviceChoice) -> Result<Session> {
    build_session(spec, file, device).map_err(|e| match e.code {
        ErrorCode::ModelLoadError => ModelError {
            code: ErrorCode::T5ModelLoadError,
            ..e
        },
        _ => e,
    })
}
