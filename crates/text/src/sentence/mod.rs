//! The sentence-transformers files around a model: `modules.json` (which modules, in
//! order), the pooling module's config, `Dense` and `Normalize` modules, the longest input
//! (`sentence_bert_config.json`, else `tokenizer_config.json`), `do_lower_case`, and the
//! prompts of `config_sentence_transformers.json`; plus the settings that override them.

mod dense;

pub use dense::{DenseActivation, DenseLayer};

use crate::pooling::{normalize, Pooling, PoolingConfig};
use model_manager_core::{ErrorCode, ModelError, ModelSpec, Prompts, Result};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Backend option keys this module reads under `models.<id>.`.
pub const OPTION_KEYS: &[&str] = &["pooling", "normalize", "max_seq_length"];

/// The files this module reads where they exist (a download fetches them too; `Dense`
/// modules at their conventional place).
pub const FILES: &[&str] = &[
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "tokenizer_config.json",
    "1_Pooling/config.json",
    "2_Dense/config.json",
    "2_Dense/model.safetensors",
];

/// tokenizers' "no limit" (`VERY_LARGE_INTEGER`) and anything near it is no length.
const NO_LIMIT: u64 = 1 << 40;

/// A step after pooling, in `modules.json` order.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// A `Dense` module.
    Dense(DenseLayer),
    /// A `Normalize` module.
    Normalize,
}

/// How a folder's model turns token embeddings into sentence vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct SentenceConfig {
    /// Pooling modes and whether prompts are pooled.
    pub pooling: PoolingConfig,
    /// Dense and Normalize modules after pooling.
    pub stages: Vec<Stage>,
    /// Longest input in tokens, if the folder or settings say.
    pub max_seq_length: Option<usize>,
    /// Whether texts are lowercased before tokenizing.
    pub do_lower_case: bool,
    /// Named prompts.
    pub prompts: Prompts,
}

#[derive(Deserialize)]
struct Module {
    #[serde(default)]
    path: String,
    #[serde(rename = "type", default)]
    kind: String,
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

fn bad(path: &Path, message: String) -> ModelError {
    ModelError::file_load(ErrorCode::ModelLoadError, path, message)
}

impl SentenceConfig {
    /// Reads the folder's files, then applies `pooling`, `normalize` and `max_seq_length`
    /// from `spec`'s options. Without `modules.json` the model is pooled by mean and
    /// normalized unless `default_normalize` is false, as the caller's format suggests.
    pub fn resolve(folder: &Path, spec: &ModelSpec, default_normalize: bool) -> Result<Self> {
        let modules_path = folder.join("modules.json");
        let mut config = Self {
            pooling: PoolingConfig::single(Pooling::Mean),
            stages: if default_normalize {
                vec![Stage::Normalize]
            } else {
                Vec::new()
            },
            max_seq_length: None,
            do_lower_case: false,
            prompts: Prompts::default(),
        };
        if let Some(modules) = read_json::<Vec<Module>>(&modules_path)? {
            config.stages.clear();
            for module in &modules {
                config.add_module(folder, module, &modules_path)?;
            }
        }
        let st: Option<Value> = read_json(&folder.join("sentence_bert_config.json"))?;
        let from_st = st.as_ref().and_then(|s| s["max_seq_length"].as_u64());
        config.do_lower_case = st
            .as_ref()
            .and_then(|s| s["do_lower_case"].as_bool())
            .unwrap_or(false);
        let tokenizer: Option<Value> = read_json(&folder.join("tokenizer_config.json"))?;
        let from_tokenizer = tokenizer
            .and_then(|t| t["model_max_length"].as_f64())
            .filter(|&n| n >= 1.0 && n < NO_LIMIT as f64)
            .map(|n| n as u64);
        config.max_seq_length = from_st.or(from_tokenizer).map(|n| n as usize);
        config.prompts = read_prompts(folder)?;
        config.apply_options(spec)?;
        config.prompts.excluded_from_pooling = !config.pooling.include_prompt;
        Ok(config)
    }

    /// The folder's prompts alone (its `config_sentence_transformers.json`, and whether its
    /// pooling leaves them out), without reading its other modules.
    pub fn prompts(folder: &Path) -> Result<Prompts> {
        let mut prompts = read_prompts(folder)?;
        let modules_path = folder.join("modules.json");
        let modules = read_json::<Vec<Module>>(&modules_path)?.unwrap_or_default();
        if let Some(m) = modules.iter().find(|m| m.kind.ends_with("Pooling")) {
            let pooling = read_pooling(&folder.join(&m.path).join("config.json"))?;
            prompts.excluded_from_pooling = !pooling.include_prompt;
        }
        Ok(prompts)
    }

    fn add_module(&mut self, folder: &Path, module: &Module, modules_path: &Path) -> Result<()> {
        let kind = module.kind.rsplit('.').next().unwrap_or_default();
        match kind {
            "Transformer" if module.path.is_empty() || module.path == "." => {}
            "Transformer" => {
                return Err(bad(modules_path, format!("the transformer is in the subfolder `{}`; only a transformer at the folder's root is supported", module.path)))
            }
            "Pooling" => self.pooling = read_pooling(&folder.join(&module.path).join("config.json"))?,
            "Dense" => self.stages.push(Stage::Dense(DenseLayer::load(&folder.join(&module.path))?)),
            "Normalize" => self.stages.push(Stage::Normalize),
            _ => {
                return Err(bad(
                    modules_path,
                    format!("module `{}` is not supported (Transformer, Pooling, Dense, Normalize)", module.kind),
                ))
            }
        }
        Ok(())
    }

    fn apply_options(&mut self, spec: &ModelSpec) -> Result<()> {
        if let Some(text) = spec.option_str("pooling")? {
            let mode = Pooling::parse(text).ok_or_else(|| {
                let key = format!("models.{}.pooling", spec.id);
                ModelError::config(
                    &key,
                    format!("settings key `{key}` expects one of mean, cls, max, lasttoken, mean_sqrt_len_tokens, weightedmean, found \"{text}\""),
                )
            })?;
            self.pooling.modes = vec![mode];
        }
        match spec.option_bool("normalize")? {
            Some(true) if !self.normalizes() => self.stages.push(Stage::Normalize),
            Some(false) => self.stages.retain(|s| *s != Stage::Normalize),
            _ => {}
        }
        if let Some(max) = spec.option_u64("max_seq_length")? {
            self.max_seq_length = Some(max as usize);
        }
        Ok(())
    }

    /// Whether the last step scales vectors to unit length.
    pub fn normalizes(&self) -> bool {
        self.stages.last() == Some(&Stage::Normalize)
    }

    /// Size of the sentence vectors for token vectors of `hidden` values; an error when a
    /// `Dense` module does not take what comes before it.
    pub fn dimension(&self, hidden: usize) -> Result<usize> {
        let mut width = self.pooling.width(hidden);
        for stage in &self.stages {
            if let Stage::Dense(dense) = stage {
                if dense.inputs() != width {
                    return Err(ModelError::new(
                        ErrorCode::ModelLoadError,
                        format!("a Dense module takes {} values but receives {width} (pooling {} of {hidden})", dense.inputs(), self.pooling.describe()),
                    ));
                }
                width = dense.outputs();
            }
        }
        Ok(width)
    }

    /// The steps after pooling, on one pooled vector.
    pub fn finish(&self, mut vector: Vec<f32>) -> Vec<f32> {
        for stage in &self.stages {
            match stage {
                Stage::Dense(dense) => vector = dense.apply(&vector),
                Stage::Normalize => normalize(&mut vector),
            }
        }
        vector
    }
}

/// The pooling module's config: sentence-transformers 6's `pooling_mode` (a name or a
/// list), or the older `pooling_mode_*` flags (in the order it concatenates them).
fn read_pooling(path: &Path) -> Result<PoolingConfig> {
    let file: Value = read_json(path)?.unwrap_or_default();
    let include_prompt = file["include_prompt"].as_bool().unwrap_or(true);
    let unknown = |name: &str| bad(path, format!("pooling mode `{name}` is not supported"));
    let modes = match &file["pooling_mode"] {
        Value::String(name) => vec![Pooling::parse(name).ok_or_else(|| unknown(name))?],
        Value::Array(names) => names
            .iter()
            .map(|n| {
                n.as_str()
                    .and_then(Pooling::parse)
                    .ok_or_else(|| unknown(&n.to_string()))
            })
            .collect::<Result<Vec<_>>>()?,
        _ => {
            let flag = |key: &str| file[key].as_bool().unwrap_or(false);
            let legacy = [
                ("pooling_mode_cls_token", Pooling::Cls),
                ("pooling_mode_max_tokens", Pooling::Max),
                ("pooling_mode_mean_tokens", Pooling::Mean),
                ("pooling_mode_mean_sqrt_len_tokens", Pooling::MeanSqrtLen),
                ("pooling_mode_weightedmean_tokens", Pooling::WeightedMean),
                ("pooling_mode_lasttoken", Pooling::LastToken),
            ];
            legacy
                .iter()
                .filter(|(k, _)| flag(k))
                .map(|(_, m)| *m)
                .collect()
        }
    };
    Ok(PoolingConfig {
        modes: if modes.is_empty() {
            vec![Pooling::Mean]
        } else {
            modes
        },
        include_prompt,
    })
}

#[derive(Deserialize, Default)]
struct PromptsFile {
    #[serde(default)]
    prompts: BTreeMap<String, String>,
    default_prompt_name: Option<String>,
}

fn read_prompts(folder: &Path) -> Result<Prompts> {
    let path = folder.join("config_sentence_transformers.json");
    let file: PromptsFile = read_json(&path)?.unwrap_or_default();
    if let Some(name) = file
        .default_prompt_name
        .as_deref()
        .filter(|n| !file.prompts.contains_key(*n))
    {
        return Err(bad(
            &path,
            format!("default_prompt_name `{name}` is not one of its prompts"),
        ));
    }
    Ok(Prompts {
        named: file.prompts,
        default_name: file.default_prompt_name,
        excluded_from_pooling: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn reads_modules_pooling_lengths_prompts_and_applies_options() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "modules.json",
            r#"[{"idx":0,"path":"","type":"sentence_transformers.models.Transformer"},
                {"idx":1,"path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]"#,
        );
        write(
            d,
            "1_Pooling/config.json",
            r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true}"#,
        );
        write(
            d,
            "sentence_bert_config.json",
            r#"{"max_seq_length": 64, "do_lower_case": true}"#,
        );
        write(d, "tokenizer_config.json", r#"{"model_max_length": 512}"#);
        write(
            d,
            "config_sentence_transformers.json",
            r#"{"prompts": {"query": "query: "}, "default_prompt_name": "query"}"#,
        );
        let mut spec = ModelSpec::new("m", "embedding");
        let config = SentenceConfig::resolve(d, &spec, true).unwrap();
        assert_eq!(config.pooling.modes, vec![Pooling::Cls, Pooling::Mean]);
        assert!(config.stages.is_empty() && config.do_lower_case);
        assert_eq!(config.max_seq_length, Some(64));
        assert_eq!(config.prompts.select(None, None).unwrap(), "query: ");
        assert_eq!(config.dimension(8).unwrap(), 16);

        spec.options.insert("pooling".into(), "max".into());
        spec.options.insert("normalize".into(), true.into());
        let config = SentenceConfig::resolve(d, &spec, true).unwrap();
        assert_eq!(
            (config.pooling.modes.clone(), config.normalizes()),
            (vec![Pooling::Max], true)
        );

        spec.options.insert("pooling".into(), "median".into());
        let err = SentenceConfig::resolve(d, &spec, true).unwrap_err();
        assert!(err.message.contains("models.m.pooling"), "{}", err.message);

        // sentence-transformers 6 keeps the length in tokenizer_config.json only.
        std::fs::remove_file(d.join("sentence_bert_config.json")).unwrap();
        let config = SentenceConfig::resolve(d, &ModelSpec::new("m", "e"), true).unwrap();
        assert_eq!(config.max_seq_length, Some(512));
        write(
            d,
            "tokenizer_config.json",
            r#"{"model_max_length": 1000000000000000019884624838656}"#,
        );
        let config = SentenceConfig::resolve(d, &ModelSpec::new("m", "e"), true).unwrap();
        assert_eq!(config.max_seq_length, None);
    }

    #[test]
    fn new_pooling_files_and_unknown_modules() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "modules.json",
            r#"[{"path":"","type":"sentence_transformers.base.modules.transformer.Transformer"},{"path":"p","type":"x.Pooling"},{"path":"n","type":"x.Normalize"}]"#,
        );
        write(
            d,
            "p/config.json",
            r#"{"embedding_dimension": 4, "pooling_mode": ["lasttoken"], "include_prompt": false}"#,
        );
        let config = SentenceConfig::resolve(d, &ModelSpec::new("m", "e"), false).unwrap();
        assert_eq!(config.pooling.modes, vec![Pooling::LastToken]);
        assert!(config.normalizes() && config.prompts.excluded_from_pooling);
        write(
            d,
            "modules.json",
            r#"[{"path":"","type":"sentence_transformers.models.LSTM"}]"#,
        );
        let err = SentenceConfig::resolve(d, &ModelSpec::new("m", "e"), false).unwrap_err();
        assert!(err.message.contains("LSTM"), "{}", err.message);
        write(d, "modules.json", "[]");
        write(
            d,
            "config_sentence_transformers.json",
            r#"{"prompts": {}, "default_prompt_name": "q"}"#,
        );
        let err = SentenceConfig::resolve(d, &ModelSpec::new("m", "e"), false).unwrap_err();
        assert!(
            err.message.contains("default_prompt_name"),
            "{}",
            err.message
        );
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
