//! `mm ps`: the models of a running `mm serve`, from its `/v1/status`.

use crate::output::print_json;
use model_manager::{off_runtime, ErrorCode, ModelError};
use serde_json::Value;
use std::time::Duration;

fn unreachable(url: &str, why: impl std::fmt::Display) -> ModelError {
    ModelError::new(
        ErrorCode::ConfigError,
        format!("cannot read {url}/v1/status: {why}"),
    )
    .with("url", url)
    .with(
        "hint",
        "is `mm serve` running there? choose the server with --url or MM_URL",
    )
}

/// Fetches the server's status.
fn fetch(url: &str, api_key: Option<&str>) -> Result<Value, ModelError> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let mut request = agent.get(&format!("{url}/v1/status"));
    if let Some(key) = api_key {
        request = request.set("Authorization", &format!("Bearer {key}"));
    }
    let response = request.call().map_err(|e| match e {
        ureq::Error::Status(401, _) => ModelError::new(
            ErrorCode::Unauthorized,
            format!("{url}/v1/status refused the API key (401)"),
        )
        .with("url", url)
        .with("hint", "give the server's key with --api-key or MM_API_KEY"),
        e => unreachable(url, e),
    })?;
    let text = response.into_string().map_err(|e| unreachable(url, e))?;
    serde_json::from_str(&text).map_err(|e| unreachable(url, format!("not a status: {e}")))
}

/// `mm ps`.
pub async fn ps(url: &str, api_key: Option<&str>, json_out: bool) -> Result<(), ModelError> {
    let url = url.trim_end_matches('/').to_owned();
    let key = api_key.map(str::to_owned);
    let panicked = || "asking the server panicked".to_owned();
    let status = off_runtime(ErrorCode::ConfigError, panicked, move || {
        fetch(&url, key.as_deref())
    })
    .await??;
    if json_out {
        print_json(&status);
        return Ok(());
    }
    println!(
        "{:<16} {:<12} {:<9} {:>4} {:>7} {:>9} {:>10}",
        "ID", "TYPE", "STATE", "REFS", "QUEUED", "TEXTS", "MEMORY"
    );
    let empty = serde_json::Map::new();
    for (id, model) in status["models"].as_object().unwrap_or(&empty) {
        let engine = &model["engine"];
        let memory = model["estimated_bytes"]
            .as_u64()
            .map_or("-".into(), |b| format!("{:.0} MiB", b as f64 / 1048576.0));
        println!(
            "{:<16} {:<12} {:<9} {:>4} {:>7} {:>9} {:>10}",
            id,
            model["model_type"].as_str().unwrap_or("?"),
            model["state"].as_str().unwrap_or("?"),
            model["references"].as_u64().unwrap_or(0),
            engine["queued_texts"].as_u64().unwrap_or(0),
            engine["texts_computed"].as_u64().unwrap_or(0),
            memory
        );
    }
    Ok(())
}
