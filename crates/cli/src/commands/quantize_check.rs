//! `mm quantize-check`: loads a model in int8 and prints how close its vectors stay to
//! f32 on the calibration texts (built-in, or the user's file), beside the gate.

use crate::output::{outln, print_json};
use model_manager::{ErrorCode, Fidelity, ModelError, ModelManager, Settings};
use serde_json::{json, Value};
use std::path::Path;

/// The gate the load-time check applies: mean cosine, lowest cosine, agreement.
const GATE: (f64, f64, f64) = model_manager::candle::quantize::GATE;

/// `settings` with model `id` set to load in int8 whatever the check finds (so the
/// figures come back), on `texts` when given.
pub fn checking_settings(mut settings: Settings, id: &str, texts: Option<&Path>) -> Settings {
    if let Some(spec) = settings.models.get_mut(id) {
        spec.options.insert("quantize".into(), "int8".into());
        spec.options.insert("fidelity".into(), "warn".into());
        if let Some(path) = texts {
            let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
            spec.options.insert(
                "calibration_file".into(),
                Value::from(path.display().to_string()),
            );
        }
    }
    settings
}

/// Loads `id` (settings from [`checking_settings`]) and prints its report; an error when
/// the figures miss the gate.
pub async fn quantize_check(
    manager: &ModelManager,
    id: &str,
    json_out: bool,
) -> Result<(), ModelError> {
    let handle = manager.get_model(id).await?;
    let quantization = handle
        .model()
        .architecture()
        .and_then(|a| a.quantization)
        .ok_or_else(|| {
            ModelError::new(
                ErrorCode::ConfigError,
                format!("model `{id}` did not load quantized: int8 is for candle embedding models"),
            )
        })?;
    handle.release();
    let Some(figures) = quantization.fidelity.clone() else {
        return Err(ModelError::new(
            ErrorCode::ModelLoadError,
            format!("model `{id}` reported no fidelity figures"),
        ));
    };
    if json_out && figures.passed {
        print_json(&json!({"success": true, "model": id, "quantization": quantization}))?;
    } else if !json_out {
        let layers = match quantization.f32_layers.is_empty() {
            true => "none".to_string(),
            false => quantization.f32_layers.join(", "),
        };
        outln!(
            "model {id}: int8 on the {} kernel; layers kept in f32: {layers}",
            quantization.kernel
        )?;
        report(&figures)?;
    }
    match figures.passed {
        true => Ok(()),
        // With --json the error is the one line printed, the figures in its details.
        false => Err(ModelError::new(
            ErrorCode::ModelLoadError,
            format!("model `{id}`: int8 misses the fidelity gate; it loads only with models.{id}.fidelity = \"warn\""),
        )
        .with("quantization", serde_json::to_value(&quantization).unwrap_or_default())),
    }
}

fn report(f: &Fidelity) -> Result<(), ModelError> {
    let rows = [
        ("mean cosine", f.mean_cosine, GATE.0),
        ("lowest cosine", f.min_cosine, GATE.1),
        (
            "10-nearest-neighbour agreement",
            f.neighbour_agreement,
            GATE.2,
        ),
    ];
    outln!("  {:<32} {}", "calibration texts", f.texts)?;
    for (name, value, gate) in rows {
        let verdict = if value >= gate { "ok" } else { "BELOW" };
        outln!("  {name:<32} {value:.5}   gate >= {gate}   {verdict}")?;
    }
    outln!(
        "{}",
        if f.passed {
            "passes the gate"
        } else {
            "misses the gate"
        }
    )
}
