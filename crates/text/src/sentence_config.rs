//! The sentence-transformers files around a model: `modules.json`, the pooling module's
//! `config.json`, `sentence_bert_config.json`; plus the settings that override them.

use crate::pooling::Pooling;
use model_manager_core::{ErrorCode, ModelError, ModelSpec, Result};
use serde::Deserialize;
use std::path::Path;

/// Backend option keys this module reads under `models.<id>.`.
pub const OPTION_KEYS: &[&str] = &["pooling", "normalize", "max_seq_length"];

/// The files this module reads where they exist (a download fetches them too).
pub const FILES: &[&str] = &[
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];

/// How a folder's model turns token embeddings into sentence vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct SentenceConfig {
    /// Pooling mode.
    pub pooling: Pooling,
    /// Whether vectors are scaled to unit length.
    pub normalize: bool,
    /// Longest input in tokens, if the folder or settings say.
    pub max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct Module {
    #[serde(default)]
    path: String,
    #[serde(rename = "type", default)]
    kind: String,
}

#[derive(Deserialize, Default)]
struct PoolingFile {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

#[derive(Deserialize)]
struct SentenceBertFile {
    max_seq_length: Option<usize>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ModelError::file_load(ErrorCode::ModelLoadError, path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ModelError::file_load(ErrorCode::ModelLoadError, path, e)),
    }
}

impl SentenceConfig {
    /// Reads the folder's files, then applies `pooling`, `normalize` and `max_seq_length`
    /// from `spec`'s options. Without `modules.json` the model is pooled by mean and
    /// normalized unless `default_normalize` is false, as the caller's format suggests.
    pub fn resolve(folder: &Path, spec: &ModelSpec, default_normalize: bool) -> Result<Self> {
        let modules: Option<Vec<Module>> = read_json(&folder.join("modules.json"))?;
        let (mut pooling, mut normalize) = (Pooling::Mean, default_normalize);
        if let Some(modules) = &modules {
            normalize = modules.iter().any(|m| m.kind.ends_with("Normalize"));
            if let Some(m) = modules.iter().find(|m| m.kind.ends_with("Pooling")) {
                let file: PoolingFile =
                    read_json(&folder.join(&m.path).join("config.json"))?.unwrap_or_default();
                pooling = pooling_of(&file);
            }
        }
        let st: Option<SentenceBertFile> = read_json(&folder.join("sentence_bert_config.json"))?;
        let mut config = Self {
            pooling,
            normalize,
            max_seq_length: st.and_then(|s| s.max_seq_length),
        };
        config.apply_options(spec)?;
        Ok(config)
    }

    fn apply_options(&mut self, spec: &ModelSpec) -> Result<()> {
        if let Some(text) = spec.option_str("pooling")? {
            self.pooling = Pooling::parse(text).ok_or_else(|| {
                let key = format!("models.{}.pooling", spec.id);
                ModelError::config(
                    &key,
                    format!("settings key `{key}` expects one of mean, cls, max, last_token, mean_sqrt_len, found \"{text}\""),
                )
            })?;
        }
        if let Some(normalize) = spec.option_bool("normalize")? {
            self.normalize = normalize;
        }
        if let Some(max) = spec.option_u64("max_seq_length")? {
            self.max_seq_length = Some(max as usize);
        }
        Ok(())
    }
}

fn pooling_of(file: &PoolingFile) -> Pooling {
    if file.pooling_mode_cls_token {
        Pooling::Cls
    } else if file.pooling_mode_max_tokens {
        Pooling::Max
    } else if file.pooling_mode_lasttoken {
        Pooling::LastToken
    } else if file.pooling_mode_mean_sqrt_len_tokens && !file.pooling_mode_mean_tokens {
        Pooling::MeanSqrtLen
    } else {
        Pooling::Mean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_modules_pooling_and_max_length_and_applies_options() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("modules.json"),
            r#"[{"idx":0,"path":"","type":"sentence_transformers.models.Transformer"},
                {"idx":1,"path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]"#,
        )
        .unwrap();
        std::fs::create_dir(d.join("1_Pooling")).unwrap();
        std::fs::write(
            d.join("1_Pooling/config.json"),
            r#"{"pooling_mode_cls_token": true}"#,
        )
        .unwrap();
        std::fs::write(
            d.join("sentence_bert_config.json"),
            r#"{"max_seq_length": 64}"#,
        )
        .unwrap();
        let mut spec = ModelSpec::new("m", "embedding");
        let config = SentenceConfig::resolve(d, &spec, true).unwrap();
        assert_eq!(
            config,
            SentenceConfig {
                pooling: Pooling::Cls,
                normalize: false,
                max_seq_length: Some(64)
            }
        );

        spec.options.insert("pooling".into(), "max".into());
        spec.options.insert("normalize".into(), true.into());
        let config = SentenceConfig::resolve(d, &spec, true).unwrap();
        assert_eq!((config.pooling, config.normalize), (Pooling::Max, true));

        spec.options.insert("pooling".into(), "median".into());
        let err = SentenceConfig::resolve(d, &spec, true).unwrap_err();
        assert!(err.message.contains("models.m.pooling"), "{}", err.message);
    }

    #[test]
    fn corrupt_config_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("modules.json"), "[{").unwrap();
        let err = SentenceConfig::resolve(dir.path(), &ModelSpec::new("m", "e"), true).unwrap_err();
        assert_eq!(err.code, model_manager_core::ErrorCode::ModelLoadError);
        assert!(err.message.contains("modules.json"), "{}", err.message);
    }
}
