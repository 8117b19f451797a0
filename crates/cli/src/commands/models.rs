//! `mm models`: each configured model with its type, state, loaders and files.

use crate::output::outln;
use crate::output::print_json;
use model_manager::{FilesState, ModelError, ModelManager, ModelSpec, Registry};
use serde_json::json;

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

/// Family, pooling and packing of the model the loader `backend = auto` picks would build.
fn architecture(registry: &Registry, spec: &ModelSpec) -> Option<model_manager::Architecture> {
    registry.resolve(spec).ok()?.describe(spec)
}

fn architecture_text(registry: &Registry, spec: &ModelSpec) -> String {
    match architecture(registry, spec) {
        Some(a) => format!(
            "{} {}{}{}",
            a.family,
            a.pooling,
            if a.packed { " packed" } else { "" },
            match &a.quantization {
                Some(q) => format!(" {} ({})", q.scheme, q.kernel),
                None => String::new(),
            }
        ),
        None => "-".into(),
    }
}

/// `mm models`.
pub async fn models(manager: &ModelManager, json_out: bool) -> Result<(), ModelError> {
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
                        "architecture": architecture(registry, spec),
                    }),
                )
            })
            .collect();
        print_json(&json!({"success": true, "models": models}))?;
        return Ok(());
    }
    outln!(
        "{:<16} {:<12} {:<10} {:<24} {:<28} FILES",
        "ID",
        "TYPE",
        "STATE",
        "LOADERS",
        "ARCHITECTURE"
    )?;
    for spec in manager.settings().models.values() {
        outln!(
            "{:<16} {:<12} {:<10} {:<24} {:<28} {}",
            spec.id,
            spec.model_type,
            status.models[&spec.id].state,
            loader_state(registry, spec),
            architecture_text(registry, spec),
            files_state(spec)
        )?;
    }
    Ok(())
}
