//! `CORE_MODEL_MANAGER_*` environment overrides, resolved against the keys that exist.
//!
//! Ids and keys contain underscores, so a variable cannot be split mechanically: instead
//! every key that could be set is spelled the way a variable would spell it, and the
//! variable must match exactly one of them.

use super::flatten::FlatMap;
use super::schema::{self, GLOBAL_KEYS, MODEL_KEYS};
use super::value;
use crate::error::{ModelError, Result};
use std::collections::BTreeSet;

/// The prefix of every override variable.
pub const ENV_PREFIX: &str = "CORE_MODEL_MANAGER_";

/// How a settings key is spelled as an environment variable suffix.
pub fn env_spelling(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '.' | '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// Model ids present in the flat map.
pub fn model_ids(flat: &FlatMap) -> BTreeSet<String> {
    flat.keys()
        .filter_map(|k| k.strip_prefix("models."))
        .filter_map(|rest| rest.rsplit_once('.').map(|(id, _)| id.to_owned()))
        .collect()
}

/// Every key an environment variable may set: the global keys, and for each configured
/// model the common model keys plus the options its file already sets.
fn settable_keys(flat: &FlatMap) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = GLOBAL_KEYS.iter().map(|k| k.key.to_owned()).collect();
    for id in model_ids(flat) {
        keys.extend(MODEL_KEYS.iter().map(|k| format!("models.{id}.{}", k.key)));
    }
    keys.extend(flat.keys().filter(|k| k.starts_with("models.")).cloned());
    keys
}

/// Applies every `CORE_MODEL_MANAGER_*` variable in `vars` to `flat`.
pub fn apply_env_overrides(
    flat: &mut FlatMap,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<()> {
    let keys = settable_keys(flat);
    for (var, text) in vars {
        let Some(suffix) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let matches: Vec<&String> = keys.iter().filter(|k| env_spelling(k) == suffix).collect();
        let key = match matches.as_slice() {
            [one] => (*one).clone(),
            [] => return Err(unknown_variable(&var, suffix, &keys)),
            several => {
                let names: Vec<&str> = several.iter().map(|k| k.as_str()).collect();
                return Err(ModelError::config(
                    "",
                    format!(
                        "environment variable {var} is ambiguous: it could set any of {}",
                        names.join(", ")
                    ),
                )
                .with("variable", var.as_str())
                .with("candidates", names));
            }
        };
        let parsed = typed_value(&key, &var, &text, flat)?;
        flat.insert(key, parsed);
    }
    Ok(())
}

fn typed_value(key: &str, var: &str, text: &str, flat: &FlatMap) -> Result<toml::Value> {
    if let Some(def) = schema::global(key) {
        return value::from_env_text(key, var, def.kind, text);
    }
    let suffix = key.rsplit('.').next().unwrap_or(key);
    if let Some(def) = schema::model_key(suffix) {
        return value::from_env_text(key, var, def.kind, text);
    }
    match flat.get(key) {
        Some(current) => value::option_from_env_text(key, var, current, text),
        None => Ok(toml::Value::String(text.to_owned())),
    }
}

fn unknown_variable(var: &str, suffix: &str, keys: &BTreeSet<String>) -> ModelError {
    let spellings: Vec<(String, &String)> = keys.iter().map(|k| (env_spelling(k), k)).collect();
    let nearest = schema::nearest(suffix, spellings.iter().map(|(s, _)| s.as_str()))
        .and_then(|s| spellings.iter().find(|(sp, _)| sp == s))
        .map(|(sp, key)| format!(" (did you mean {ENV_PREFIX}{sp}, which sets `{key}`?)"))
        .unwrap_or_default();
    ModelError::config(
        "",
        format!(
            "environment variable {var} matches no settings key{nearest}; \
             a model's backend option can only be overridden when the settings file sets it"
        ),
    )
    .with("variable", var)
}

#[cfg(test)]
mod tests {
    use super::super::flatten::flatten_toml;
    use super::*;

    fn flat() -> FlatMap {
        flatten_toml(
            "models.t5_summarizer.type = \"text2text\"\nmodels.t5_summarizer.max_input_length = 512\n\
             models.t5.type = \"text2text\"\n",
            "t",
        )
        .unwrap()
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn ids_with_underscores_resolve_against_existing_keys() {
        let mut f = flat();
        apply_env_overrides(
            &mut f,
            vars(&[
                (
                    "CORE_MODEL_MANAGER_MODELS_T5_SUMMARIZER_LOCAL_PATH",
                    "/m/t5",
                ),
                (
                    "CORE_MODEL_MANAGER_MODELS_T5_SUMMARIZER_MAX_INPUT_LENGTH",
                    "256",
                ),
                ("CORE_MODEL_MANAGER_MODELS_T5_LOCAL_PATH", "/m/small"),
                ("CORE_MODEL_MANAGER_GPU_MEMORY_FRACTION", "0.9"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(f["models.t5_summarizer.local_path"].as_str(), Some("/m/t5"));
        assert_eq!(
            f["models.t5_summarizer.max_input_length"].as_integer(),
            Some(256)
        );
        assert_eq!(f["models.t5.local_path"].as_str(), Some("/m/small"));
        assert_eq!(f["gpu_memory_fraction"].as_float(), Some(0.9));
    }

    #[test]
    fn unknown_variable_names_itself_and_suggests() {
        let mut f = flat();
        let err = apply_env_overrides(
            &mut f,
            vars(&[("CORE_MODEL_MANAGER_GPU_MEMORY_FRACTON", "0.9")]),
        )
        .unwrap_err();
        assert!(
            err.message
                .contains("CORE_MODEL_MANAGER_GPU_MEMORY_FRACTON"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("gpu_memory_fraction"),
            "{}",
            err.message
        );
    }

    #[test]
    fn ambiguous_variable_lists_candidates() {
        let mut f = flatten_toml(
            "models.a_b.type = \"x\"\nmodels.a_b.c_d = 1\nmodels.a.type = \"x\"\nmodels.a.b_c_d = 2\n",
            "t",
        )
        .unwrap();
        let err = apply_env_overrides(&mut f, vars(&[("CORE_MODEL_MANAGER_MODELS_A_B_C_D", "3")]))
            .unwrap_err();
        assert!(err.message.contains("ambiguous"), "{}", err.message);
        assert!(err.message.contains("models.a_b.c_d") && err.message.contains("models.a.b_c_d"));
    }

    #[test]
    fn wrong_type_in_variable_is_named() {
        let mut f = flat();
        let err = apply_env_overrides(
            &mut f,
            vars(&[("CORE_MODEL_MANAGER_SHARING_MAX_SHARED_MODELS", "five")]),
        )
        .unwrap_err();
        assert!(
            err.message.contains("sharing.max_shared_models"),
            "{}",
            err.message
        );
        assert!(err.message.contains("five"), "{}", err.message);
    }
}
