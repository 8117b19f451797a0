//! The scoring types through `mm serve` on loopback and through the `mm` commands: `/rerank`
//! (TEI), `/v1/rerank` (Cohere), `/predict`, `/embed_sparse`, `mm rerank`, `mm classify` and
//! a sparse `mm embed`, each answer checked against what sentence-transformers and
//! transformers computed for the fixtures (tests/fixtures/heads), and what bad requests get.

mod common;

use common::{json_of, repo, Server};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A settings file serving the fixtures: `rerank` (BERT cross-encoder), `rerank_onnx` (its
/// ONNX export), `classifier` (DistilBERT, softmax), `multilabel` (BERT, sigmoid), `sparse`
/// (a tiny SPLADE) and `embedding` (MiniLM), at most `max_inputs` inputs a request.
fn settings(dir: &Path, max_inputs: usize) -> PathBuf {
    let heads = repo().join("tests/fixtures/heads");
    let models = [
        ("rerank", "rerank", "rerank_bert", "candle"),
        ("rerank_onnx", "rerank", "rerank_bert", "onnx"),
        ("classifier", "classifier", "classifier_distilbert", "auto"),
        (
            "multilabel",
            "classifier",
            "classifier_bert_multilabel",
            "auto",
        ),
        ("sparse", "sparse", "sparse_bert", "auto"),
    ];
    let mut toml = format!(
        "embedding_cache.enabled = false\nserver.max_inputs = {max_inputs}\n\
         onnx.runtime_path = \"{}\"\n\
         models.embedding.type = \"embedding\"\nmodels.embedding.local_path = \"{}\"\n",
        repo()
            .join("models/onnxruntime/capi/libonnxruntime.so.1.32.0")
            .display(),
        repo().join("models/all-MiniLM-L6-v2").display()
    );
    for (id, kind, folder, backend) in models {
        toml.push_str(&format!(
            "models.{id}.type = \"{kind}\"\nmodels.{id}.backend = \"{backend}\"\n\
             models.{id}.local_path = \"{}\"\n",
            heads.join(folder).display()
        ));
    }
    let path = dir.join("settings.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn expected(name: &str) -> Value {
    let path = repo().join(format!("tests/fixtures/heads/{name}/expected.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The first query of the rerank fixture, its documents, and their expected scores (`key`:
/// `scores` or `raw`).
fn first_query(key: &str) -> (String, Vec<String>, Vec<f64>) {
    let e = expected("rerank_bert");
    let pairs = e["pairs"].as_array().unwrap();
    let query = pairs[0][0].as_str().unwrap().to_owned();
    let n = pairs.iter().take_while(|p| p[0] == query.as_str()).count();
    let documents = pairs[..n]
        .iter()
        .map(|p| p[1].as_str().unwrap().to_owned())
        .collect();
    let scores = e[key].as_array().unwrap()[..n]
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    (query, documents, scores)
}

/// Checks a ranking: indices best first, each score the expected one.
fn assert_ranked(results: &[Value], score_key: &str, expected: &[f64]) {
    let mut previous = f64::INFINITY;
    for r in results {
        let (index, score) = (
            r["index"].as_u64().unwrap() as usize,
            r[score_key].as_f64().unwrap(),
        );
        assert!(
            (score - expected[index]).abs() < 1e-5,
            "{r}: want {}",
            expected[index]
        );
        assert!(score <= previous, "not best first: {results:?}");
        previous = score;
    }
}

/// A sparse vector's `(index, value)` entries against the reference's `{"indices",
/// "values"}`: every value within 1e-5 (a value at the edge of zero may be kept by one side
/// and not the other), none zero.
fn assert_sparse_close(got: &[(u64, f64)], want: &Value) {
    let pairs = want["indices"]
        .as_array()
        .unwrap()
        .iter()
        .zip(want["values"].as_array().unwrap());
    for (i, v) in pairs {
        let (i, v) = (i.as_u64().unwrap(), v.as_f64().unwrap());
        let g = got.iter().find(|p| p.0 == i).map_or(0.0, |p| p.1);
        assert!((g - v).abs() < 1e-5, "index {i}: {g} vs {v}");
    }
    assert!(got.iter().all(|p| p.1 > 0.0), "only non-zero entries");
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "indices ascending");
}

#[test]
fn rerank_routes_rank_as_the_cross_encoder_scores() {
    let dir = tempfile::tempdir().unwrap();
    let config = settings(dir.path(), 64);
    let server = Server::start(&[], &[("MM_CONFIG", config.to_str().unwrap())]);
    let (query, documents, scores) = first_query("scores");
    let (_, _, raw) = first_query("raw");

    let body = json!({"query": query, "texts": documents, "return_text": true});
    let (status, answer) = server.post("/rerank", &body.to_string());
    assert_eq!(status, 200, "{answer}");
    let results = answer.as_array().unwrap();
    assert_eq!(results.len(), documents.len());
    assert_ranked(results, "score", &scores);
    for r in results {
        assert_eq!(r["text"], documents[r["index"].as_u64().unwrap() as usize]);
    }
    let body =
        json!({"query": query, "texts": documents, "raw_scores": true, "model": "rerank_onnx"});
    let (status, answer) = server.post("/rerank", &body.to_string());
    assert_eq!(status, 200, "{answer}");
    assert_ranked(answer.as_array().unwrap(), "score", &raw);

    let objects: Vec<Value> = documents.iter().map(|d| json!({"text": d})).collect();
    let body = json!({"model": "rerank", "query": query, "documents": objects, "top_n": 2, "return_documents": true});
    let (status, answer) = server.post("/v1/rerank", &body.to_string());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model"], "rerank");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_ranked(results, "relevance_score", &scores);
    let best = scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0;
    assert_eq!(results[0]["index"], best);
    assert_eq!(results[0]["document"]["text"], documents[best]);
    assert!(answer["usage"]["total_tokens"].as_u64().unwrap() > documents.len() as u64);
}

#[test]
fn predict_and_embed_sparse_answer_as_the_reference_pipelines() {
    let dir = tempfile::tempdir().unwrap();
    let config = settings(dir.path(), 64);
    let server = Server::start(&[], &[("MM_CONFIG", config.to_str().unwrap())]);

    for model in ["classifier", "multilabel"] {
        let e = expected(&format!(
            "classifier_{}",
            if model == "classifier" {
                "distilbert"
            } else {
                "bert_multilabel"
            }
        ));
        let pairs: Vec<Value> = e["pairs"].as_array().unwrap()[..4].to_vec();
        let mut inputs = e["texts"].as_array().unwrap().clone();
        inputs.extend(pairs);
        let mut want = e["predictions"].as_array().unwrap().clone();
        want.extend(e["pair_predictions"].as_array().unwrap()[..4].to_vec());
        let body = json!({"model": model, "inputs": inputs});
        let (status, answer) = server.post("/predict", &body.to_string());
        assert_eq!(status, 200, "{answer}");
        let rows = answer.as_array().unwrap();
        assert_eq!(rows.len(), want.len());
        for (row, want) in rows.iter().zip(&want) {
            let labels = row.as_array().unwrap();
            assert_eq!(labels.len(), want.as_object().unwrap().len());
            for (i, l) in labels.iter().enumerate() {
                let score = l["score"].as_f64().unwrap();
                let w = want[l["label"].as_str().unwrap()].as_f64().unwrap();
                assert!((score - w).abs() < 1e-5, "{model}: {row} vs {want}");
                assert!(i == 0 || score <= labels[i - 1]["score"].as_f64().unwrap());
            }
        }
    }
    // One text alone gives one row.
    let (status, answer) = server.post("/predict", r#"{"inputs": "hi"}"#);
    assert_eq!((status, answer.as_array().unwrap().len()), (200, 1));

    let e = expected("sparse_bert");
    let body = json!({"inputs": e["texts"]});
    let (status, answer) = server.post("/embed_sparse", &body.to_string());
    assert_eq!(status, 200, "{answer}");
    for (got, want) in answer
        .as_array()
        .unwrap()
        .iter()
        .zip(e["vectors"].as_array().unwrap())
    {
        let got: Vec<(u64, f64)> = got
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["index"].as_u64().unwrap(), p["value"].as_f64().unwrap()))
            .collect();
        assert_sparse_close(&got, want);
    }
}

#[test]
fn scoring_routes_refuse_bad_requests_with_their_codes() {
    let dir = tempfile::tempdir().unwrap();
    let config = settings(dir.path(), 3);
    let server = Server::start(&[], &[("MM_CONFIG", config.to_str().unwrap())]);
    let cases: &[(&str, &str, u16, &str, Option<&str>)] = &[
        (
            "/rerank",
            r#"{"query": "q"}"#,
            400,
            "INVALID_INPUT",
            Some("texts"),
        ),
        (
            "/rerank",
            r#"{"query": "q", "texts": []}"#,
            400,
            "INVALID_INPUT",
            Some("texts"),
        ),
        (
            "/rerank",
            r#"{"query": "q", "texts": ["a", 7]}"#,
            400,
            "INVALID_INPUT",
            Some("texts[1]"),
        ),
        (
            "/rerank",
            r#"{"query": "q", "texts": ["a","b","c","d"]}"#,
            413,
            "INVALID_INPUT",
            Some("texts"),
        ),
        (
            "/rerank",
            r#"{"query": "q", "textz": ["a"]}"#,
            400,
            "INVALID_INPUT",
            Some("textz"),
        ),
        (
            "/rerank",
            r#"{"model": "embedding", "query": "q", "texts": ["a"]}"#,
            400,
            "INVALID_MODEL_TYPE",
            None,
        ),
        (
            "/rerank",
            r#"{"model": "nope", "query": "q", "texts": ["a"]}"#,
            404,
            "MODEL_NOT_CONFIGURED",
            None,
        ),
        (
            "/v1/rerank",
            r#"{"query": "q", "documents": ["a"]}"#,
            400,
            "INVALID_INPUT",
            Some("model"),
        ),
        (
            "/v1/rerank",
            r#"{"model": "rerank", "query": "q", "documents": [{"txt": "a"}]}"#,
            400,
            "INVALID_INPUT",
            Some("documents[0].text"),
        ),
        (
            "/v1/rerank",
            r#"{"model": "sparse", "query": "q", "documents": ["a"]}"#,
            400,
            "INVALID_MODEL_TYPE",
            None,
        ),
        (
            "/predict",
            r#"{"inputs": [["only one"]]}"#,
            400,
            "INVALID_INPUT",
            Some("inputs[0]"),
        ),
        (
            "/predict",
            r#"{"inputs": {"a": 1}}"#,
            400,
            "INVALID_INPUT",
            Some("inputs"),
        ),
        (
            "/predict",
            r#"{"model": "rerank_onnx", "inputs": "x", "truncate": false}"#,
            200,
            "",
            None,
        ),
        (
            "/embed_sparse",
            r#"{"inputs": "x", "prompt_name": "query"}"#,
            400,
            "INVALID_INPUT",
            Some("prompt_name"),
        ),
        (
            "/embed_sparse",
            r#"{"model": "classifier", "inputs": "x"}"#,
            400,
            "INVALID_MODEL_TYPE",
            None,
        ),
        (
            "/v1/embeddings",
            r#"{"model": "rerank", "input": "x"}"#,
            400,
            "INVALID_MODEL_TYPE",
            None,
        ),
        (
            "/v1/embeddings",
            r#"{"model": "sparse", "input": "x"}"#,
            400,
            "INVALID_MODEL_TYPE",
            None,
        ),
    ];
    for (path, body, status, code, field) in cases {
        let (got, answer) = server.post(path, body);
        assert_eq!(got, *status, "{path} {body}: {answer}");
        if *status == 200 {
            continue;
        }
        assert_eq!(answer["code"], *code, "{path} {body}: {answer}");
        if let Some(field) = field {
            assert_eq!(
                answer["details"]["field"], *field,
                "{path} {body}: {answer}"
            );
        }
    }
    // An input the model would cut, with truncation refused.
    let long = "word ".repeat(2000);
    let body = json!({"query": "q", "texts": ["a", long], "truncate": false});
    let (status, answer) = server.post("/rerank", &body.to_string());
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("INVALID_INPUT")),
        "{answer}"
    );
    // The server still answers.
    let (status, _) = server.post("/rerank", r#"{"query": "q", "texts": ["a"]}"#);
    assert_eq!(status, 200);
}

fn mm(config: &Path) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("mm"));
    cmd.env("MM_CONFIG", config).env("HF_HUB_OFFLINE", "1");
    cmd
}

#[test]
fn mm_rerank_classify_and_sparse_embed() {
    let dir = tempfile::tempdir().unwrap();
    let config = settings(dir.path(), 64);
    let (query, documents, scores) = first_query("scores");

    let out = mm(&config)
        .args(["--json", "rerank", "--query", &query, "--top-n", "3"])
        .args(&documents)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer = json_of(&out.stdout);
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_ranked(results, "score", &scores);

    let plain = mm(&config)
        .args(["rerank", "--query", &query])
        .args(&documents)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&plain.stdout);
    assert_eq!(text.lines().count(), documents.len() + 1, "{text}");
    assert!(text.starts_with("RANK"), "{text}");

    let e = expected("classifier_distilbert");
    let first = e["texts"][0].as_str().unwrap();
    let out = mm(&config)
        .args([
            "--json",
            "classify",
            first,
            "--pair",
            "Refunds take two weeks.",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let labels = &json_of(&out.stdout)["predictions"][0]["labels"];
    assert_eq!(labels.as_array().unwrap().len(), 3, "{labels}");
    let out = mm(&config)
        .args(["--json", "classify", first])
        .output()
        .unwrap();
    let labels = json_of(&out.stdout)["predictions"][0]["labels"].clone();
    let best = &labels[0];
    let want = e["predictions"][0][best["label"].as_str().unwrap()]
        .as_f64()
        .unwrap();
    assert!(
        (best["score"].as_f64().unwrap() - want).abs() < 1e-5,
        "{labels}"
    );

    let e = expected("sparse_bert");
    let input = dir.path().join("texts.txt");
    let texts: Vec<&str> = e["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .filter(|t| !t.is_empty() && !t.contains('\n'))
        .collect();
    std::fs::write(&input, texts.join("\n")).unwrap();
    let output = dir.path().join("sparse.jsonl");
    let out = mm(&config)
        .args(["embed", "-m", "sparse", "-i"])
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), texts.len());
    for (i, r) in records.iter().enumerate() {
        assert_eq!(
            (r["index"].as_u64(), r["line"].as_u64()),
            (Some(i as u64), Some(i as u64 + 1))
        );
        let want = e["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .zip(e["texts"].as_array().unwrap())
            .find(|(_, t)| *t == texts[i])
            .unwrap()
            .0;
        let got: Vec<(u64, f64)> = r["indices"]
            .as_array()
            .unwrap()
            .iter()
            .zip(r["values"].as_array().unwrap())
            .map(|(i, v)| (i.as_u64().unwrap(), v.as_f64().unwrap()))
            .collect();
        assert_sparse_close(&got, want);
    }
    // A dense array has no room for sparse vectors: a clear refusal, no file left half written.
    let npy = dir.path().join("sparse.npy");
    let out = mm(&config)
        .args(["--json", "embed", "-m", "sparse", "hello"])
        .arg("-o")
        .arg(&npy)
        .output()
        .unwrap();
    assert_eq!(
        json_of(&out.stdout)["code"],
        "INVALID_INPUT",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Ranking with a model of another kind names the kinds.
    let out = mm(&config)
        .args(["--json", "rerank", "-m", "embedding", "--query", "q", "a"])
        .output()
        .unwrap();
    assert_eq!(json_of(&out.stdout)["code"], "INVALID_MODEL_TYPE");
}

#[test]
fn scoring_routes_need_the_key_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = settings(dir.path(), 64);
    let server = Server::start(
        &[],
        &[
            ("MM_CONFIG", config.to_str().unwrap()),
            ("MM_API_KEY", "k3y"),
        ],
    );
    let key = [("Authorization", "Bearer k3y")];
    for (path, body) in [
        ("/rerank", r#"{"query": "q", "texts": ["a"]}"#),
        (
            "/v1/rerank",
            r#"{"model": "rerank", "query": "q", "documents": ["a"]}"#,
        ),
        ("/predict", r#"{"inputs": "a"}"#),
        ("/embed_sparse", r#"{"inputs": "a"}"#),
    ] {
        let (status, answer) = server.post(path, body);
        assert_eq!(
            (status, answer["code"].as_str()),
            (401, Some("UNAUTHORIZED")),
            "{path}"
        );
        let (status, answer) = server.request("POST", path, body, &key);
        assert_eq!(status, 200, "{path}: {answer}");
    }
    let (status, metrics) = server.request_text("GET", "/metrics", "", &key);
    assert_eq!(status, 200);
    for (route, model) in [
        ("/rerank", "rerank"),
        ("/v1/rerank", "rerank"),
        ("/predict", "classifier"),
        ("/embed_sparse", "sparse"),
    ] {
        let series = format!(
            "mm_http_requests_total{{route=\"{route}\",model=\"{model}\",status=\"200\"}} 1"
        );
        assert!(metrics.contains(&series), "no {series} in:\n{metrics}");
    }
}
