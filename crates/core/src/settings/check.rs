//! Every problem of a settings file at once, each key's with its line and column, and the
//! settings its sound keys make (what `mm check` reads).

use super::flatten::{flatten_toml, line_and_column, FlatMap};
use super::{env, validate_all, Settings};
use crate::error::ModelError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What [`Settings::check_file`] found.
#[derive(Debug)]
pub struct FileCheck {
    /// Every problem, in key order; those about a key written in the file carry its `line`
    /// and `column` in `details`.
    pub problems: Vec<ModelError>,
    /// The settings of the keys without problems (a bad key falls back to its default, a
    /// model without a usable `type` is left out), so checks that need models can still run;
    /// `None` when the file cannot be read or parsed at all.
    pub settings: Option<Settings>,
    /// Where each flat key is written: 1-based line and column of its name.
    positions: BTreeMap<String, (usize, usize)>,
}

impl FileCheck {
    /// `error` with the `line` and `column` of the key it names (`details.key`) when the
    /// file writes that key, else of the nearest table that holds it (a model's missing
    /// `type` points at the model).
    pub fn locate(&self, error: ModelError) -> ModelError {
        if error.details.contains_key("line") {
            return error;
        }
        let mut key = error.details.get("key").and_then(|k| k.as_str());
        while let Some(k) = key {
            if let Some(&(line, column)) = self.positions.get(k) {
                return error.with("line", line).with("column", column);
            }
            key = k.rsplit_once('.').map(|(parent, _)| parent);
        }
        error
    }

    /// Orders the problems as they appear in the file (those without a position last).
    pub fn sort(&mut self) {
        let line = |p: &ModelError| {
            let at = |k: &str| {
                p.details
                    .get(k)
                    .and_then(|v| v.as_u64())
                    .unwrap_or(u64::MAX)
            };
            (at("line"), at("column"))
        };
        self.problems.sort_by_key(line);
    }
}

impl Settings {
    /// Reads `path` as [`Settings::from_file`] does, but collects every problem instead of
    /// stopping at the first: unknown keys, bad values, bad environment overrides and models
    /// without a type, each key's with its position.
    pub fn check_file(path: impl AsRef<Path>) -> FileCheck {
        let path = path.as_ref();
        let failed = |error| FileCheck {
            problems: vec![error],
            settings: None,
            positions: BTreeMap::new(),
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                let error = ModelError::config(
                    "",
                    format!("cannot read settings file {}: {e}", path.display()),
                )
                .with("file", path.display().to_string());
                return failed(error);
            }
        };
        let mut flat = match flatten_toml(&text, &path.display().to_string()) {
            Ok(flat) => flat,
            Err(e) => return failed(e),
        };
        let mut check = FileCheck {
            problems: Vec::new(),
            settings: None,
            positions: key_positions(&text),
        };
        if let Err(e) = env::apply_env_overrides(&mut flat, std::env::vars()) {
            check.problems.push(e);
        }
        for problem in validate_all(&flat) {
            if let Some(key) = problem.details.get("key").and_then(|k| k.as_str()) {
                flat.remove(key);
            }
            check.problems.push(problem);
        }
        check.settings = sound_settings(flat, path, &mut check.problems);
        check.problems = std::mem::take(&mut check.problems)
            .into_iter()
            .map(|p| check.locate(p))
            .collect();
        check.sort();
        check
    }
}

/// The settings of `flat`, each model whose spec fails (a missing `type`) left out with its
/// problem recorded.
fn sound_settings(
    mut flat: FlatMap,
    path: &Path,
    problems: &mut Vec<ModelError>,
) -> Option<Settings> {
    let base_dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    loop {
        match Settings::from_flat(flat.clone(), &base_dir, Some(path.to_path_buf())) {
            Ok(settings) => return Some(settings),
            Err(e) => {
                let model = e.details.get("model_id").and_then(|m| m.as_str());
                let Some(prefix) = model.map(|id| format!("models.{id}.")) else {
                    problems.push(e);
                    return None;
                };
                flat.retain(|key, _| !key.starts_with(&prefix));
                problems.push(e);
            }
        }
    }
}

/// 1-based line and column of every flat key's name in `text` (the last segment of a dotted
/// key; a key inside `[table]` or an inline table is found under its full name).
fn key_positions(text: &str) -> BTreeMap<String, (usize, usize)> {
    let mut positions = BTreeMap::new();
    if let Ok(document) = toml_edit::ImDocument::parse(text) {
        walk(text, "", document.as_table(), &mut positions);
    }
    positions
}

fn walk(
    text: &str,
    prefix: &str,
    table: &dyn toml_edit::TableLike,
    positions: &mut BTreeMap<String, (usize, usize)>,
) {
    for (name, item) in table.iter() {
        let full = match prefix {
            "" => name.to_owned(),
            _ => format!("{prefix}.{name}"),
        };
        if let Some(span) = table.key(name).and_then(|k| k.span()) {
            positions.insert(full.clone(), line_and_column(text, span.start));
        }
        match item {
            toml_edit::Item::Table(inner) => walk(text, &full, inner, positions),
            toml_edit::Item::Value(toml_edit::Value::InlineTable(inner)) => {
                walk(text, &full, inner, positions)
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_cover_dotted_quoted_table_and_inline_keys() {
        let text = "a = 1\nsharing.enabled = true\n\"quoted.key\" = 2\n[models.e]\ntype = \"x\"\n\
                    opts = { inner = 3 }\n";
        let p = key_positions(text);
        assert_eq!(p["a"], (1, 1));
        assert_eq!(p["sharing.enabled"], (2, 9));
        assert_eq!(p["quoted.key"], (3, 1));
        assert_eq!(p["models.e.type"], (5, 1));
        assert_eq!(p["models.e.opts.inner"], (6, 10));
    }
}
