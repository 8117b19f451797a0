//! The `mm` subcommands.

use crate::output::print_json;
use model_manager::{
    FilesState, ModelError, ModelManager, ModelSpec, Registry, RemoteCacheStats, RemoteState,
    Settings,
};
use serde_json::json;
use std::path::Path;

fn files_state(spec: &ModelSpec) -> String {
    match model_manager::files_state(spec) {
        FilesState::Local(p) => format!("found  {}", p.display()),
        FilesState::Missing(p) => format!("MISSING {}", p.display()),
        FilesState::Cached(p) => format!("cached {}", p.display()),
        FilesState::Partial(p) => format!("partial {} (mm pull {})", p.display(), spec.id),
        FilesState::NotDownloaded => format!("not downloaded (mm pull {})", spec.id),
        FilesState::Unset => "neither local_path nor name".into(),
    }
}

fn loader_state(registry: &Registry, spec: &ModelSpec) -> String {
    let backends: Vec<String> = registry
        .entries()
        .into_iter()
        .filter(|(t, _)| *t == spec.model_type)
        .map(|(_, b)| b)
        .collect();
    if backends.is_empty() {
        "no loader in this build".into()
    } else {
        backends.join(",")
    }
}

/// `mm models`.
pub async fn models(settings: Settings, json_out: bool) -> Result<(), ModelError> {
    let manager = ModelManager::new(settings);
    manager.load_plugins()?;
    let status = manager.get_model_status().await?;
    let registry = manager.registry();
    if json_out {
        let models: serde_json::Map<String, serde_json::Value> = manager
            .settings()
            .models
            .values()
            .map(|spec| {
                (
                    spec.id.clone(),
                    json!({
                        "type": spec.model_type,
                        "backend": spec.backend,
                        "loaders": loader_state(registry, spec),
                        "local_path": spec.local_path,
                        "files_present": spec.local_path.as_ref().map(|p| p.exists()),
                        "files": model_manager::files_state(spec),
                        "state": status.models[&spec.id].state,
                    }),
                )
            })
            .collect();
        print_json(&json!({"success": true, "models": models}));
        return Ok(());
    }
    println!(
        "{:<16} {:<12} {:<10} {:<24} FILES",
        "ID", "TYPE", "STATE", "LOADERS"
    );
    for spec in manager.settings().models.values() {
        println!(
            "{:<16} {:<12} {:<10} {:<24} {}",
            spec.id,
            spec.model_type,
            status.models[&spec.id].state,
            loader_state(registry, spec),
            files_state(spec)
        );
    }
    Ok(())
}

/// `mm status`.
pub async fn status(settings: Settings, json_out: bool) -> Result<(), ModelError> {
    let manager = ModelManager::new(settings);
    manager.load_plugins()?;
    manager.connect_remote_cache().await?;
    let status = manager.get_status().await?;
    if json_out {
        let mut value = serde_json::to_value(&status).unwrap_or_default();
        value["success"] = json!(true);
        print_json(&value);
        return Ok(());
    }
    println!(
        "models: {} configured, {} loaded (limit {}); references: {}",
        status.configured_models,
        status.loaded_models,
        status.max_shared_models,
        status.total_references
    );
    println!(
        "cache: {} entries (max {}), {} hits, {} misses",
        status.cache.entries, status.cache.max_entries, status.cache.hits, status.cache.misses
    );
    if let Some(remote) = &status.cache.remote {
        print_remote_cache(remote);
    }
    let types = if status.registered_types.is_empty() {
        "none".to_string()
    } else {
        status.registered_types.join(", ")
    };
    println!("registered model types: {types}");
    for plugin in &status.plugins {
        println!(
            "plugin {} {} ({})",
            plugin.name,
            plugin.version,
            plugin.path.display()
        );
    }
    if let Some(rss) = status.process_resident_bytes {
        println!("process resident memory: {:.1} MiB", rss as f64 / 1048576.0);
    }
    for (id, m) in &status.models {
        println!("  {id:<16} {:<12} {}", m.model_type, m.state);
    }
    Ok(())
}

fn print_remote_cache(remote: &RemoteCacheStats) {
    println!(
        "remote cache: {} {}; {} hits, {} misses ({} refused), {} errors, {} timeouts",
        remote.url,
        remote.state.as_str(),
        remote.hits,
        remote.misses,
        remote.corrupt,
        remote.errors,
        remote.timeouts
    );
    if let (Some(error), true) = (&remote.last_error, remote.state != RemoteState::Connected) {
        println!("  last error: {error}");
    }
}

/// `mm check`: settings parse and every model's options suit its loaders.
pub async fn check(settings: Settings, path: &Path, json_out: bool) -> Result<(), ModelError> {
    let manager = ModelManager::new(settings);
    for spec in manager.settings().models.values() {
        manager.registry().validate_spec(spec)?;
    }
    let count = manager.settings().models.len();
    if json_out {
        print_json(&json!({"success": true, "file": path, "models": count}));
    } else {
        println!("{}: valid ({count} models)", path.display());
    }
    Ok(())
}
