//! How `mm` prints results and errors.

use model_manager::{ErrorCode, ModelError};

/// Prints `error`: the seed's JSON on stdout with `--json`, else one line and a hint on stderr.
pub fn print_error(error: &ModelError, json: bool) {
    if json {
        println!("{}", error.to_json());
        return;
    }
    eprintln!("error: {} ({})", error.message, error.code);
    let specific = error.details.get("hint").and_then(|h| h.as_str());
    if let Some(hint) = specific.or(hint(error.code)) {
        eprintln!("hint: {hint}");
    }
}

fn hint(code: ErrorCode) -> Option<&'static str> {
    Some(match code {
        ErrorCode::ConfigError => "check the settings file named by --config / $MM_CONFIG (default ./settings.toml); the README lists every key",
        ErrorCode::ModelNotConfigured => "add the model under models.<id>.* in the settings file (`mm models` lists what is configured)",
        ErrorCode::UnsupportedModelType => "this build has no loader for that type; `mm status` lists the registered types",
        ErrorCode::ModelNotFound => "`mm models` shows where each model's files are expected",
        ErrorCode::CapacityExhausted => "raise sharing.max_shared_models or memory.max_bytes, or release models sooner",
        _ => return None,
    })
}

/// Prints a JSON value, pretty.
pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}
