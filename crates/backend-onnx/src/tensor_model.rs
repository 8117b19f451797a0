//! Type `onnx`: a generic model from named tensors to named tensors.

use crate::session::{
    build_session, downloadable, fetch_if_named, graph_entry, onnx_file, SESSION_OPTION_KEYS,
};
use crate::BACKEND_NAME;
use model_manager_core::backend::{locate_model_folder, ModelFiles, ModelLoader, Probe};
use model_manager_core::{
    DeviceChoice, ErrorCode, Infer, InferValue, Model, ModelError, ModelInfo, ModelSpec,
    NamedValues, Result, TensorData, TensorValue,
};
use ort::session::Session;
use ort::value::{DynValue, Tensor, TensorElementType};
use parking_lot::Mutex;
use std::any::Any;
use std::sync::Arc;

/// Loads any ONNX graph as a named-tensor function.
pub struct OnnxTensorLoader;

impl ModelLoader for OnnxTensorLoader {
    fn model_type(&self) -> &str {
        "onnx"
    }
    fn backend(&self) -> &str {
        BACKEND_NAME
    }
    fn probe(&self, spec: &ModelSpec) -> Probe {
        let found = locate_model_folder(spec, &[]).and_then(|f| onnx_file(spec, &f.path));
        let found = match found {
            Err(_) if downloadable(spec, true) => Ok(()),
            other => other.map(drop),
        };
        match found.and_then(|_| crate::ensure_runtime(spec)) {
            Ok(_) => Probe::Accept,
            Err(e) => Probe::reject(e.code, e.message),
        }
    }
    fn option_keys(&self) -> &[&str] {
        SESSION_OPTION_KEYS
    }
    fn check_options(&self, spec: &ModelSpec) -> Result<()> {
        crate::session::check_session_options(spec)
    }
    fn files(&self, spec: &ModelSpec) -> Option<ModelFiles> {
        Some(ModelFiles {
            required: vec![graph_entry(spec).ok()?],
            optional: Vec::new(),
        })
    }
    fn load(&self, spec: &ModelSpec, device: &DeviceChoice) -> Result<Arc<dyn Model>> {
        if let Some(files) = self.files(spec) {
            fetch_if_named(spec, &files, true)?;
        }
        let folder = locate_model_folder(spec, &[])?;
        let file = onnx_file(spec, &folder.path)?;
        let session = build_session(spec, &file, device)?;
        let inputs = session
            .inputs()
            .iter()
            .map(|i| (i.name().to_owned(), i.dtype().tensor_type()))
            .collect();
        Ok(Arc::new(OnnxTensorModel {
            session: Mutex::new(session),
            inputs,
            device: device.clone(),
            bytes: std::fs::metadata(&file).ok().map(|m| m.len()),
        }))
    }
}

/// A loaded generic ONNX model.
pub struct OnnxTensorModel {
    session: Mutex<Session>,
    inputs: Vec<(String, Option<TensorElementType>)>,
    device: DeviceChoice,
    bytes: Option<u64>,
}

fn bad_input(message: String) -> ModelError {
    ModelError::new(ErrorCode::InvalidInput, message)
}

fn run_error(e: impl std::fmt::Display) -> ModelError {
    ModelError::new(
        ErrorCode::InvalidInput,
        format!("ONNX Runtime rejected the inputs: {e}"),
    )
    .caused_by("OrtError", e)
}

fn to_value(name: &str, tensor: &TensorValue) -> Result<DynValue> {
    let expected: usize = tensor.shape.iter().product();
    if expected != tensor.data.len() {
        return Err(bad_input(format!(
            "input `{name}` has shape {:?} ({expected} values) but {} values",
            tensor.shape,
            tensor.data.len()
        )));
    }
    let shape = tensor.shape.clone();
    Ok(match &tensor.data {
        TensorData::F32(v) => Tensor::from_array((shape, v.clone()))
            .map_err(run_error)?
            .into_dyn(),
        TensorData::I64(v) => Tensor::from_array((shape, v.clone()))
            .map_err(run_error)?
            .into_dyn(),
        TensorData::I32(v) => Tensor::from_array((shape, v.clone()))
            .map_err(run_error)?
            .into_dyn(),
    })
}

fn from_value(name: &str, value: &ort::value::DynValue) -> Result<TensorValue> {
    let ty = value.dtype().tensor_type();
    let unsupported = || {
        ModelError::new(
            ErrorCode::InvalidInput,
            format!("output `{name}` has type {ty:?}; only f32, i64 and i32 outputs are supported"),
        )
    };
    let shape_of = |s: &ort::value::Shape| s.iter().map(|&d| d.max(0) as usize).collect::<Vec<_>>();
    Ok(match ty {
        Some(TensorElementType::Float32) => {
            let (s, d) = value.try_extract_tensor::<f32>().map_err(run_error)?;
            TensorValue {
                shape: shape_of(s),
                data: TensorData::F32(d.to_vec()),
            }
        }
        Some(TensorElementType::Int64) => {
            let (s, d) = value.try_extract_tensor::<i64>().map_err(run_error)?;
            TensorValue {
                shape: shape_of(s),
                data: TensorData::I64(d.to_vec()),
            }
        }
        Some(TensorElementType::Int32) => {
            let (s, d) = value.try_extract_tensor::<i32>().map_err(run_error)?;
            TensorValue {
                shape: shape_of(s),
                data: TensorData::I32(d.to_vec()),
            }
        }
        _ => return Err(unsupported()),
    })
}

impl OnnxTensorModel {
    /// Input names and element types of the graph.
    pub fn input_names(&self) -> Vec<String> {
        self.inputs.iter().map(|(n, _)| n.clone()).collect()
    }
}

impl Infer for OnnxTensorModel {
    fn infer(&self, inputs: &NamedValues) -> Result<NamedValues> {
        let mut feeds: Vec<(String, DynValue)> = Vec::new();
        for (name, _) in &self.inputs {
            let tensor = inputs.get(name).ok_or_else(|| {
                bad_input(format!(
                    "missing input `{name}`; the graph takes {}",
                    self.input_names().join(", ")
                ))
            })?;
            let tensor = tensor.as_tensor().ok_or_else(|| {
                bad_input(format!(
                    "input `{name}` must be a tensor, not {}",
                    tensor.kind()
                ))
            })?;
            feeds.push((name.clone(), to_value(name, tensor)?));
        }
        if let Some(extra) = inputs
            .keys()
            .find(|k| !self.inputs.iter().any(|(n, _)| n == *k))
        {
            return Err(bad_input(format!(
                "unknown input `{extra}`; the graph takes {}",
                self.input_names().join(", ")
            )));
        }
        let mut session = self.session.lock();
        let outputs = session.run(feeds).map_err(run_error)?;
        outputs
            .iter()
            .map(|(name, value)| {
                let tensor = from_value(name, &value)?;
                Ok((name.to_owned(), InferValue::Tensor(tensor)))
            })
            .collect()
    }
}

impl Model for OnnxTensorModel {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            model_type: "onnx".into(),
            backend: BACKEND_NAME.into(),
            device: self.device.device,
            dimension: None,
            bytes: self.bytes,
        }
    }
    fn as_infer(&self) -> Option<&dyn Infer> {
        Some(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
