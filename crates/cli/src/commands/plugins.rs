//! `mm plugins list|check`.

use crate::output::outln;
use crate::output::print_json;
use model_manager::plugin_host::{open_plugin, register_types, DylibPluginHost, PluginHost};
use model_manager::{ErrorCode, ModelError, PluginRecord, Registry, Settings};

use serde_json::json;
use std::path::Path;
use std::process::Command;

fn print_record(record: &PluginRecord) -> Result<(), ModelError> {
    outln!(
        "{} {} (interface {})  {}",
        record.name,
        record.version,
        record.abi,
        record.path.display()
    )?;
    for t in &record.types {
        outln!(
            "    type {:<20} [{}]  {}",
            t.model_type,
            t.capabilities.join(","),
            t.description
        )?;
    }
    Ok(())
}

/// `mm plugins list`: the plugins the settings name, loaded as `mm serve` would load them.
pub fn list(settings: &Settings, json_out: bool) -> Result<(), ModelError> {
    let config = &settings.plugins;
    // The host's own loading, whatever `plugins.enabled` says, against the built-in types.
    let report = DylibPluginHost.load_plugins(config, &Registry::with_static_loaders())?;
    let records = &report.loaded;
    if json_out {
        print_json(
            &json!({"success": true, "enabled": config.enabled, "plugins": records, "failed": report.failed}),
        )?;
        return Ok(());
    }
    if !config.enabled {
        outln!("plugins are disabled (plugins.enabled = false); these would load:")?;
    }
    if records.is_empty() && report.failed.is_empty() {
        outln!("no plugins configured (plugins.dirs, plugins.paths)")?;
    }
    records.iter().try_for_each(print_record)?;
    for failure in &report.failed {
        outln!(
            "FAILED {}: {} ({})",
            failure.path.display(),
            failure.error.message,
            failure.error.code
        )?;
    }
    Ok(())
}

/// Loads one library in this process and prints its record as JSON: the child side of
/// `mm plugins check`.
pub fn check_here(settings: &Settings, file: &Path) -> Result<(), ModelError> {
    let plugin = open_plugin(file, &settings.plugins.sha256, false)?;
    register_types(&plugin, &Registry::with_static_loaders())?;
    print_json(&json!({"success": true, "plugin": plugin.record}))?;
    Ok(())
}

/// `mm plugins check FILE`: loads the file in a child `mm`, so a library that crashes the
/// loader (a truncated ELF can kill a process inside dlopen) cannot take this one down.
pub fn check(config: &Path, file: &Path, json_out: bool) -> Result<(), ModelError> {
    let exe = std::env::current_exe().map_err(|e| {
        ModelError::new(
            ErrorCode::PluginLoadError,
            format!("cannot find the mm executable: {e}"),
        )
    })?;
    let output = Command::new(exe)
        .arg("--config")
        .arg(config)
        .args(["--json", "plugins", "check", "--in-process"])
        .arg(file)
        .output()
        .map_err(|e| {
            ModelError::new(
                ErrorCode::PluginLoadError,
                format!("cannot start the checker: {e}"),
            )
        })?;
    let answer: Option<serde_json::Value> = serde_json::from_slice(&output.stdout).ok();
    let Some(answer) = answer.filter(|a| a.get("success").is_some()) else {
        return Err(crashed(file, &output));
    };
    if answer["success"] == true {
        if json_out {
            print_json(&answer)?;
        } else {
            let record: PluginRecord = serde_json::from_value(answer["plugin"].clone())
                .map_err(|e| ModelError::new(ErrorCode::PluginLoadError, e.to_string()))?;
            outln!("ok: {} is a loadable plugin", file.display())?;
            print_record(&record)?;
        }
        return Ok(());
    }
    Err(ModelError::from_json(&answer).unwrap_or_else(|| {
        ModelError::new(
            ErrorCode::PluginLoadError,
            format!("unreadable checker answer: {answer}"),
        )
    }))
}

fn crashed(file: &Path, output: &std::process::Output) -> ModelError {
    use std::os::unix::process::ExitStatusExt;
    let how = match (output.status.code(), output.status.signal()) {
        (_, Some(signal)) => format!("was killed by signal {signal}"),
        (Some(code), _) => format!("exited with status {code} without an answer"),
        _ => "failed".to_owned(),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    ModelError::new(
        ErrorCode::PluginLoadError,
        format!(
            "loading {} crashed the checker, which {how}: the file is corrupt or not a plugin for this platform",
            file.display()
        ),
    )
    .with("path", file.display().to_string())
    .with("stderr", stderr.trim().chars().take(2000).collect::<String>())
}
