//! `mm status`: the manager's status, the remote cache's reachability included.

use crate::output::outln;
use crate::output::print_json;
use model_manager::{ModelError, ModelManager, RemoteCacheStats, RemoteState};
use serde_json::json;

/// `mm status`.
pub async fn status(manager: &ModelManager, json_out: bool) -> Result<(), ModelError> {
    manager.load_plugins()?;
    manager.connect_remote_cache().await?;
    let status = manager.get_status().await?;
    if json_out {
        let mut value = serde_json::to_value(&status).unwrap_or_default();
        value["success"] = json!(true);
        print_json(&value)?;
        return Ok(());
    }
    outln!(
        "models: {} configured, {} loaded (limit {}); references: {}",
        status.configured_models,
        status.loaded_models,
        status.max_shared_models,
        status.total_references
    )?;
    outln!(
        "cache: {} entries (max {}), {} hits, {} misses",
        status.cache.entries,
        status.cache.max_entries,
        status.cache.hits,
        status.cache.misses
    )?;
    if let Some(remote) = &status.cache.remote {
        print_remote_cache(remote)?;
    }
    let types = if status.registered_types.is_empty() {
        "none".to_string()
    } else {
        status.registered_types.join(", ")
    };
    outln!("registered model types: {types}")?;
    for plugin in &status.plugins {
        outln!(
            "plugin {} {} ({})",
            plugin.name,
            plugin.version,
            plugin.path.display()
        )?;
    }
    let features = status.cpu.names();
    outln!(
        "cpu features: {}",
        if features.is_empty() {
            "baseline".to_string()
        } else {
            features.join(" ")
        }
    )?;
    if let Some(rss) = status.process_resident_bytes {
        outln!("process resident memory: {:.1} MiB", rss as f64 / 1048576.0)?;
    }
    for (id, m) in &status.models {
        outln!("  {id:<16} {:<12} {}", m.model_type, m.state)?;
        let quantization = m
            .architecture
            .as_ref()
            .and_then(|a| a.quantization.as_ref());
        if let Some(f) = quantization.and_then(|q| q.fidelity.as_ref()) {
            outln!(
                "    int8: mean cosine {:.5}, lowest {:.5}, neighbours kept {:.3} over {} texts ({})",
                f.mean_cosine,
                f.min_cosine,
                f.neighbour_agreement,
                f.texts,
                if f.passed { "passes" } else { "below the gate, loaded with fidelity = warn" }
            )?;
        }
    }
    Ok(())
}

fn print_remote_cache(remote: &RemoteCacheStats) -> Result<(), ModelError> {
    outln!(
        "remote cache: {} {} ({}); {} hits, {} misses ({} refused, {} unauthenticated), {} errors, {} timeouts",
        remote.url,
        remote.state.as_str(),
        match remote.authenticated {
            true => "values authenticated",
            false => "values trusted as they are: no embedding_cache.redis_secret_file",
        },
        remote.hits,
        remote.misses,
        remote.corrupt,
        remote.unauthenticated,
        remote.errors,
        remote.timeouts
    )?;
    if let (Some(error), true) = (&remote.last_error, remote.state != RemoteState::Connected) {
        outln!("  last error: {error}")?;
    }
    Ok(())
}
