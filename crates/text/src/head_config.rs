//! A scoring head's labels and activation, from the model folder's `config.json`, as
//! sentence-transformers' `CrossEncoder` and transformers' text-classification pipeline read
//! them.

use model_manager_core::{ErrorCode, ModelError, Result, ScoreActivation, ScoreHead};
use serde_json::Value;
use std::path::Path;

/// The head of the checkpoint whose `config.json` is `config`: labels from `id2label` (in
/// id order; `num_labels` of `LABEL_i` without one). For a cross-encoder (`rerank`), the
/// activation is the folder's sentence-transformers `activation_fn` (sigmoid when it names
/// none); for a classifier, sigmoid for one label or a multi-label `problem_type`, else
/// softmax.
pub fn score_head(config: &Value, file: &Path, rerank: bool) -> Result<ScoreHead> {
    let bad = |message: String| ModelError::file_load(ErrorCode::ModelLoadError, file, message);
    let labels = labels(config).map_err(bad)?;
    let named = config["sentence_transformers"]["activation_fn"]
        .as_str()
        .or_else(|| config["sbert_ce_default_activation_function"].as_str());
    let activation = match (rerank, named) {
        (true, Some(path)) => ScoreActivation::from_torch(path).ok_or_else(|| {
            bad(format!(
                "activation `{path}` is not supported (Sigmoid, Softmax, Tanh, Identity)"
            ))
        })?,
        (true, None) => ScoreActivation::Sigmoid,
        (false, _) if labels.len() == 1 => ScoreActivation::Sigmoid,
        (false, _) if config["problem_type"] == "multi_label_classification" => {
            ScoreActivation::Sigmoid
        }
        (false, _) => ScoreActivation::Softmax,
    };
    Ok(ScoreHead { labels, activation })
}

fn labels(config: &Value) -> std::result::Result<Vec<String>, String> {
    if let Some(map) = config["id2label"].as_object() {
        let mut pairs = Vec::with_capacity(map.len());
        for (id, label) in map {
            let id: usize = id
                .parse()
                .map_err(|_| format!("id2label has the key `{id}`, not a number"))?;
            let label = label
                .as_str()
                .ok_or_else(|| format!("id2label[{id}] is not a string"))?;
            pairs.push((id, label.to_owned()));
        }
        pairs.sort();
        if pairs.iter().enumerate().any(|(i, (id, _))| i != *id) {
            return Err("id2label's ids are not 0, 1, 2…".into());
        }
        if !pairs.is_empty() {
            return Ok(pairs.into_iter().map(|(_, l)| l).collect());
        }
    }
    let n = config["num_labels"].as_u64().unwrap_or(2) as usize;
    Ok((0..n).map(|i| format!("LABEL_{i}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn heads_follow_the_reference_rules() {
        let file = Path::new("config.json");
        let ce = score_head(&json!({"id2label": {"0": "LABEL_0"}}), file, true).unwrap();
        assert_eq!(
            (ce.labels.len(), ce.activation),
            (1, ScoreActivation::Sigmoid)
        );
        let named = json!({"id2label": {"0": "LABEL_0"}, "sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"}});
        assert_eq!(
            score_head(&named, file, true).unwrap().activation,
            ScoreActivation::Identity
        );
        let three = json!({"id2label": {"2": "c", "0": "a", "1": "b"}});
        let head = score_head(&three, file, false).unwrap();
        assert_eq!(
            (head.labels, head.activation),
            (
                vec!["a".into(), "b".into(), "c".into()],
                ScoreActivation::Softmax
            )
        );
        let multi =
            json!({"id2label": {"0": "a", "1": "b"}, "problem_type": "multi_label_classification"});
        assert_eq!(
            score_head(&multi, file, false).unwrap().activation,
            ScoreActivation::Sigmoid
        );
        assert!(score_head(&json!({"id2label": {"0": "a", "2": "c"}}), file, false).is_err());
        let odd =
            json!({"id2label": {"0": "a"}, "sentence_transformers": {"activation_fn": "my.Thing"}});
        assert!(score_head(&odd, file, true).is_err());
    }
}
