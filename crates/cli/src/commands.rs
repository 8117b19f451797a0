//! The `mm` subcommands.

use crate::output::{self, print_json};
use model_manager::{
    ErrorCode, FilesState, ModelError, ModelManager, ModelSpec, Registry, RemoteCacheStats,
    RemoteState, Settings,
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

/// The backends that can load `spec`'s type.
fn loaders(registry: &Registry, spec: &ModelSpec) -> Vec<String> {
    registry
        .entries()
        .into_iter()
        .filter(|(t, _)| *t == spec.model_type)
        .map(|(_, b)| b)
        .collect()
}

fn loader_state(registry: &Registry, spec: &ModelSpec) -> String {
    let backends = loaders(registry, spec);
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
                        "loaders": loaders(registry, spec),
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

/// The problem of an abort-built plugin configured to run in this process (it would be
/// refused there).
fn abort_built_in_process(plugin: &model_manager::PluginRecord) -> ModelError {
    ModelError::new(
        model_manager::ErrorCode::PluginLoadError,
        format!(
            "plugin `{}` ({}) was built with `panic = \"abort\"` and is refused in-process; \
             set `plugins.isolation = \"process\"` or rebuild it with `panic = \"unwind\"`",
            plugin.name,
            plugin.path.display()
        ),
    )
    .with("path", plugin.path.display().to_string())
}

/// What `mm check` found: problems make the file unusable, warnings do not.
#[derive(Default)]
struct Findings {
    problems: Vec<ModelError>,
    warnings: Vec<String>,
}

/// `mm check`: the settings file's keys and values, then each model's type against the
/// loaders of this build, its options, and its files; every problem, not only the first.
pub async fn check(path: &Path, json_out: bool) -> Result<(), ModelError> {
    let mut findings = Findings {
        problems: Settings::problems_in_file(path),
        ..Findings::default()
    };
    let mut count = 0;
    if findings.problems.is_empty() {
        // Plugins are vetted in child processes: a library that crashes while loading
        // cannot take the checker down, and every one of them is reported.
        let mut settings = Settings::from_file(path)?;
        let configured = settings.plugins.isolation;
        settings.plugins.isolation = model_manager::PluginIsolation::Process;
        settings.plugins.required = false;
        let manager = ModelManager::new(settings);
        match manager.load_plugins() {
            Ok(loaded) => {
                findings
                    .problems
                    .extend(manager.plugin_failures().into_iter().map(|f| f.error));
                let in_process = configured == model_manager::PluginIsolation::InProcess;
                findings.problems.extend(
                    loaded
                        .iter()
                        .filter(|p| p.panic_abort && in_process)
                        .map(abort_built_in_process),
                );
            }
            Err(e) => findings.problems.push(e),
        }
        count = manager.settings().models.len();
        for spec in manager.settings().models.values() {
            check_model(manager.registry(), spec, &mut findings);
        }
    }
    for warning in &findings.warnings {
        if !json_out {
            output::status(format_args!("warning: {warning}"));
        }
    }
    if findings.problems.is_empty() {
        if json_out {
            print_json(
                &json!({"success": true, "file": path, "models": count, "warnings": findings.warnings}),
            );
        } else {
            println!("{}: valid ({count} models)", path.display());
        }
        return Ok(());
    }
    if !json_out {
        for problem in &findings.problems {
            eprintln!("problem: {} ({})", problem.message, problem.code);
        }
    }
    let listed: Vec<serde_json::Value> = findings
        .problems
        .iter()
        .map(|p| json!({"code": p.code, "message": p.message, "details": p.details}))
        .collect();
    // The file is what is wrong, whatever each problem's own code: a CONFIG_ERROR (exit 3).
    Err(ModelError::new(
        ErrorCode::ConfigError,
        format!("{}: {} problem(s)", path.display(), findings.problems.len()),
    )
    .with("problems", listed)
    .with("warnings", findings.warnings.clone())
    .with(
        "hint",
        "fix each problem listed; `mm check` again reports what is left",
    ))
}

/// One model: a loader for its type, its options, its files.
fn check_model(registry: &Registry, spec: &ModelSpec, findings: &mut Findings) {
    let types = registry.types();
    if !types.contains(&spec.model_type) {
        let near = model_manager::settings::schema::nearest(
            &spec.model_type,
            types.iter().map(String::as_str),
        );
        let hint = near.map_or(String::new(), |n| format!("; did you mean `{n}`?"));
        findings.problems.push(
            ModelError::new(
                ErrorCode::UnsupportedModelType,
                format!(
                    "models.{}.type = `{}` has no loader in this build (types: {}){hint}",
                    spec.id,
                    spec.model_type,
                    types.join(", ")
                ),
            )
            .for_model(&spec.id),
        );
        return;
    }
    if let Err(e) = registry.validate_spec(spec) {
        findings.problems.push(e);
    }
    let downloadable = model_manager::can_download(spec);
    let id = &spec.id;
    match model_manager::files_state(spec) {
        FilesState::Missing(p) if downloadable => findings.warnings.push(format!(
            "models.{id}: {} does not exist; the files will be downloaded by name on first use (or `mm pull {id}`)",
            p.display()
        )),
        FilesState::Missing(p) => findings.problems.push(
            ModelError::new(
                ErrorCode::ModelNotFound,
                format!("models.{id}.local_path {} does not exist", p.display()),
            )
            .for_model(id),
        ),
        FilesState::NotDownloaded | FilesState::Partial(_) if downloadable => findings
            .warnings
            .push(format!("models.{id}: not downloaded yet; it will be on first use (or `mm pull {id}`)")),
        FilesState::NotDownloaded | FilesState::Partial(_) => findings.problems.push(
            ModelError::new(
                ErrorCode::ModelNotFound,
                format!("models.{id}: its files are not in the Hugging Face cache and cannot be downloaded here"),
            )
            .for_model(id),
        ),
        _ => {}
    }
}
