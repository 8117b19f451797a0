//! `mm ps`: the models of a running `mm serve`, from its `/v1/status`.

use crate::output::outln;
use crate::output::print_json;
use model_manager::{off_runtime, ErrorCode, ModelError};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// The parts of a model's entry in `/v1/status` that `mm ps` shows (the names `ModelStatus`
/// serializes to): a server whose status lacks one is reported, not shown as `?`.
#[derive(Deserialize)]
struct ModelRow {
    #[serde(rename = "type")]
    model_type: String,
    state: String,
    references: u64,
    estimated_bytes: Option<u64>,
    engine: Option<EngineRow>,
}

#[derive(Deserialize)]
struct EngineRow {
    queued_texts: u64,
    texts_computed: u64,
}

#[derive(Deserialize)]
struct StatusRows {
    models: BTreeMap<String, ModelRow>,
}

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
    let url_shown = url.clone();
    let key = api_key.map(str::to_owned);
    let panicked = || "asking the server panicked".to_owned();
    let status = off_runtime(ErrorCode::ConfigError, panicked, move || {
        fetch(&url, key.as_deref())
    })
    .await??;
    if json_out {
        print_json(&status)?;
        return Ok(());
    }
    let rows: StatusRows = serde_json::from_value(status)
        .map_err(|e| unreachable(&url_shown, format!("not a status: {e}")))?;
    outln!(
        "{:<16} {:<12} {:<9} {:>4} {:>7} {:>9} {:>10}",
        "ID",
        "TYPE",
        "STATE",
        "REFS",
        "QUEUED",
        "TEXTS",
        "MEMORY"
    )?;
    for (id, model) in &rows.models {
        let memory = model
            .estimated_bytes
            .map_or("-".into(), |b| format!("{:.0} MiB", b as f64 / 1048576.0));
        let (queued, texts) = model
            .engine
            .as_ref()
            .map_or((0, 0), |e| (e.queued_texts, e.texts_computed));
        outln!(
            "{:<16} {:<12} {:<9} {:>4} {:>7} {:>9} {:>10}",
            id,
            model.model_type,
            model.state,
            model.references,
            queued,
            texts,
            memory
        )?;
    }
    Ok(())
}
