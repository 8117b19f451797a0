//! `mm check`: every problem of a settings file, not only the first.

use crate::output::{self, counted, outln, print_json};
use crate::session::{with_manager, OnSignal};
use model_manager::{
    ErrorCode, FilesState, ModelError, ModelManager, ModelSpec, Registry, Settings,
};
use serde_json::json;
use std::path::Path;

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
/// loaders of this build, its options, and its files; every problem in one run, not only
/// the first (the model checks run on the keys without problems), with the line and column
/// of the key it concerns.
pub async fn check(path: &Path, json_out: bool) -> Result<(), ModelError> {
    let mut file = Settings::check_file(path);
    let mut findings = Findings {
        problems: std::mem::take(&mut file.problems),
        ..Findings::default()
    };
    let mut count = 0;
    if let Some(mut settings) = file.settings.take() {
        let configured = settings.plugins.isolation;
        settings.plugins.isolation = model_manager::PluginIsolation::Process;
        settings.plugins.required = false;
        count = settings.models.len();
        let found = with_manager(settings, OnSignal::Interrupt, |manager| async move {
            Ok(check_loaded(&manager, configured))
        })
        .await?;
        let located: Vec<ModelError> = found.problems.into_iter().map(|p| file.locate(p)).collect();
        file.problems = std::mem::take(&mut findings.problems);
        file.problems.extend(located);
        file.sort();
        findings.problems = std::mem::take(&mut file.problems);
        findings.warnings.extend(found.warnings);
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
            )?;
        } else {
            outln!(
                "{}: valid ({})",
                path.display(),
                counted(count as u64, "model")
            )?;
        }
        return Ok(());
    }
    if !json_out {
        for problem in &findings.problems {
            let at = match (problem.details.get("line"), problem.details.get("column")) {
                (Some(line), Some(column)) => format!("{}:{line}:{column}: ", path.display()),
                _ => String::new(),
            };
            eprintln!("problem: {at}{} ({})", problem.message, problem.code);
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
        format!(
            "{}: {}",
            path.display(),
            counted(findings.problems.len() as u64, "problem")
        ),
    )
    .with("problems", listed)
    .with("warnings", findings.warnings.clone())
    .with(
        "hint",
        "fix each problem listed; `mm check` again reports what is left",
    ))
}

/// The plugins (vetted in child processes: a library that crashes while loading cannot
/// take the checker down, and every one of them is reported), then each model.
fn check_loaded(manager: &ModelManager, configured: model_manager::PluginIsolation) -> Findings {
    let mut findings = Findings::default();
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
    for spec in manager.settings().models.values() {
        check_model(manager.registry(), spec, &mut findings);
    }
    findings
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
            .for_model(&spec.id)
            .with("key", format!("models.{}.type", spec.id)),
        );
        return;
    }
    findings.problems.extend(registry.option_problems(spec));
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
            .for_model(id)
            .with("key", format!("models.{id}.local_path")),
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
