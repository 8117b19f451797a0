//! Turns a TOML document into flat `a.b.c` keys (the keys of the Python Model Manager Module).
//!
//! `sharing.enabled = true`, `"sharing.enabled" = true` and `[sharing] enabled = true` all
//! name the same flat key; writing one key twice in different forms is an error rather than
//! a silent last-one-wins.

use crate::error::{ModelError, Result};
use std::collections::BTreeMap;

/// Flat key → value.
pub type FlatMap = BTreeMap<String, toml::Value>;

/// Parses `text` and flattens every nested table into dotted keys.
pub fn flatten_toml(text: &str, origin: &str) -> Result<FlatMap> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let (line, column) = e
            .span()
            .map(|span| line_and_column(text, span.start))
            .unwrap_or((0, 0));
        let at = match line {
            0 => String::new(),
            _ => format!(" at line {line}, column {column}"),
        };
        ModelError::config(
            "",
            format!("{origin} is not valid TOML{at}: {}", e.message()),
        )
        .with("file", origin)
        .with("line", line)
        .with("column", column)
        .caused_by("TomlError", e.to_string().trim())
    })?;
    let mut flat = FlatMap::new();
    flatten_into(&mut flat, "", table, origin)?;
    Ok(flat)
}

/// 1-based line and column of byte `offset` in `text`.
pub(crate) fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn flatten_into(flat: &mut FlatMap, prefix: &str, table: toml::Table, origin: &str) -> Result<()> {
    for (key, value) in table {
        let full = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => flatten_into(flat, &full, inner, origin)?,
            leaf => {
                if flat.insert(full.clone(), leaf).is_some() {
                    return Err(ModelError::config(
                        &full,
                        format!(
                            "{origin}: key `{full}` is set twice (as a dotted key and in a table)"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_quoted_and_dotted_keys_flatten_alike() {
        let flat = flatten_toml(
            "\"sharing.enabled\" = true\n[embedding_cache]\nttl_seconds = 5\n[models.embedding]\ntype = \"embedding\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(flat["sharing.enabled"], toml::Value::Boolean(true));
        assert_eq!(flat["embedding_cache.ttl_seconds"], toml::Value::Integer(5));
        assert_eq!(flat["models.embedding.type"].as_str(), Some("embedding"));
    }

    #[test]
    fn same_key_in_two_forms_is_an_error() {
        let err = flatten_toml(
            "\"sharing.enabled\" = true\n[sharing]\nenabled = false\n",
            "t",
        )
        .unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::ConfigError);
        assert!(err.message.contains("sharing.enabled"), "{}", err.message);
    }

    #[test]
    fn toml_errors_give_line_and_column() {
        let err = flatten_toml("a = 1\nb = = 2\n", "s.toml").unwrap_err();
        assert!(err.message.contains("line 2"), "{}", err.message);
        assert_eq!(err.details["line"], 2);
    }

    #[test]
    fn invalid_toml_is_a_config_error() {
        let err = flatten_toml("sharing.enabled = = true", "settings.toml").unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::ConfigError);
        assert!(err.message.contains("settings.toml"));
    }
}
