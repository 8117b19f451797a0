//! `mm infer`: generic inference on custom model types (plugins, ONNX graphs).

use crate::output::outln;
use crate::output::print_json;
use model_manager::{ImageValue, InferValue, ModelError, ModelManager, NamedValues, TensorData};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Named inputs from `--values JSON` (an object: tensors `{"shape","dtype","data"}`, images
/// `{"base64","format"}`, strings, other JSON).
pub fn parse_inputs(text: Option<&str>) -> Result<NamedValues, ModelError> {
    let Some(text) = text else {
        return Ok(NamedValues::new());
    };
    serde_json::from_str(text).map_err(|e| {
        ModelError::invalid_input(format!(
            "--values must be a JSON object of named inputs, e.g. '{{\"text\": \"hi\"}}': {e}"
        ))
    })
}

/// An image file as an inference input; the format comes from the extension.
pub fn read_image(path: &Path) -> Result<ImageValue, ModelError> {
    let bytes = std::fs::read(path).map_err(|e| {
        ModelError::invalid_input(format!("cannot read image {}: {e}", path.display()))
            .caused_by("IoError", e)
    })?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let format = match ext.as_str() {
        "png" => "png",
        "jpg" | "jpeg" => "jpeg",
        _ => "",
    };
    Ok(ImageValue {
        bytes,
        format: format.into(),
        ..Default::default()
    })
}

/// Values shown of a summarized tensor.
const PREVIEW_VALUES: usize = 8;

/// The first values of a tensor, e.g. `[1, 2, 3]` or `[0.1, 0.2, … (1000 values)]`.
fn preview(data: &TensorData) -> String {
    fn show<T: std::fmt::Display>(values: &[T]) -> String {
        let shown: Vec<String> = values
            .iter()
            .take(PREVIEW_VALUES)
            .map(|v| v.to_string())
            .collect();
        if values.len() > PREVIEW_VALUES {
            format!("[{}, … ({} values)]", shown.join(", "), values.len())
        } else {
            format!("[{}]", shown.join(", "))
        }
    }
    match data {
        TensorData::F32(v) => show(v),
        TensorData::I64(v) => show(v),
        TensorData::I32(v) => show(v),
    }
}

/// Outputs as JSON (`--json`).
fn outputs_json(outputs: &NamedValues) -> Value {
    outputs
        .iter()
        .map(|(name, value)| {
            (
                name.clone(),
                serde_json::to_value(value).unwrap_or_default(),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// One output for a person: `name: value`, a text as it is, a tensor summarized, other
/// values as compact JSON.
fn output_line(name: &str, value: &InferValue) -> String {
    let shown = match value {
        InferValue::Text(text) => text.clone(),
        InferValue::Tensor(t) => format!(
            "tensor {} {:?} {}",
            t.data.dtype(),
            t.shape,
            preview(&t.data)
        ),
        other => serde_json::to_value(other).unwrap_or_default().to_string(),
    };
    format!("{name}: {shown}")
}

/// `mm infer`: one call with `--values`, or one per `--image` (each as input `image`).
pub async fn infer(
    manager: &ModelManager,
    model: &str,
    images: &[PathBuf],
    input: Option<&str>,
    json_out: bool,
) -> Result<(), ModelError> {
    let base = parse_inputs(input)?;
    let mut results = Vec::new();
    if images.is_empty() {
        results.push((None, manager.infer(model, base.clone()).await?));
    }
    for path in images {
        let mut inputs = base.clone();
        inputs.insert("image".into(), InferValue::Image(read_image(path)?));
        results.push((Some(path), manager.infer(model, inputs).await?));
    }
    if json_out {
        let shown: Vec<Value> = results
            .iter()
            .map(|(path, out)| json!({"image": path, "outputs": outputs_json(out)}))
            .collect();
        match shown.as_slice() {
            [one] if images.len() <= 1 => {
                print_json(&json!({"success": true, "model": model, "outputs": one["outputs"]}))?
            }
            _ => print_json(&json!({"success": true, "model": model, "results": shown}))?,
        }
    } else {
        for (path, out) in &results {
            if let Some(path) = path {
                outln!("{}:", path.display())?;
            }
            for (name, value) in out {
                outln!("{}", output_line(name, value))?;
            }
        }
    }
    Ok(())
}
