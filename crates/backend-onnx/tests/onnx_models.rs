//! The real ONNX models and runtime fetched by scripts/fetch-models.sh, through the manager.

#[path = "../../../tests/support/reference.rs"]
mod support;
use model_manager_core::{
    ErrorCode, InferValue, ModelManager, NamedValues, Settings, TensorData, TensorValue,
};
use model_manager_onnx as _;
use std::path::PathBuf;
use support::reference;

fn models() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models");
    assert!(
        dir.join("onnxruntime/capi/libonnxruntime.so.1.32.0")
            .is_file(),
        "{} lacks the ONNX models and runtime: run scripts/fetch-models.sh first",
        dir.display()
    );
    dir
}

fn manager(models_toml: &str) -> ModelManager {
    let m = models();
    let toml = format!(
        "embedding_cache.enabled = false\nonnx.runtime_path = \"{}\"\n{}",
        m.join("onnxruntime/capi/libonnxruntime.so.1.32.0")
            .display(),
        models_toml.replace("$MODELS", &m.display().to_string())
    );
    ModelManager::new(Settings::from_toml_str(&toml, ".").unwrap())
}

const INT8: &str = "models.int8.type = \"embedding\"\nmodels.int8.local_path = \"$MODELS/all-MiniLM-L6-v2-int8-onnx\"\n\
    models.int8.tokenizer_path = \"$MODELS/all-MiniLM-L6-v2/tokenizer.json\"\nmodels.int8.max_seq_length = 256\n\
    models.int8.batch_size = 4\n";
const L3: &str = "models.l3.type = \"embedding\"\nmodels.l3.backend = \"onnx\"\n\
    models.l3.local_path = \"$MODELS/paraphrase-MiniLM-L3-v2-onnx\"\nmodels.l3.model_file = \"paraphrase-MiniLM-L3-v2.onnx\"\n\
    models.l3.tokenizer_path = \"$MODELS/all-MiniLM-L6-v2/tokenizer.json\"\nmodels.l3.batch_size = 3\n\
    models.l3.output = \"onnx::Shape_422\"\n";

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int8_minilm_is_close_to_the_reference_and_auto_picks_onnx() {
    let manager = manager(INT8);
    let items = reference();
    let texts: Vec<&str> = items.iter().map(|(t, _)| t.as_str()).collect();
    let out = manager.generate_embeddings("int8", &texts).await.unwrap();
    assert_eq!(out.dimension, 384);
    for ((text, want), got) in items.iter().zip(&out.embeddings) {
        let cos = cosine(got, want);
        assert!(cos >= 0.999, "{text}: cosine {cos}");
    }
    let alone = manager
        .generate_embeddings("int8", &[texts[3]])
        .await
        .unwrap();
    assert!(cosine(&alone.embeddings[0], &items[3].1) >= 0.999);
    let status = manager.get_model_status().await.unwrap();
    assert_eq!(
        status.models["int8"].backend.as_deref(),
        Some("onnx"),
        "auto chose onnx for a model.onnx folder"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paraphrase_l3_gives_normalized_vectors_equal_for_equal_texts_in_any_batch() {
    let manager = manager(L3);
    let a = "The quick brown fox jumps over the lazy dog.";
    let batch1 = [
        a,
        "short",
        "a much longer sentence that pads the others in its batch quite a lot",
        a,
    ];
    let batch2 = ["x", a];
    let one = manager.generate_embeddings("l3", &batch1).await.unwrap();
    let two = manager.generate_embeddings("l3", &batch2).await.unwrap();
    assert_eq!(one.dimension, 384);
    for v in one.embeddings.iter().chain(&two.embeddings) {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    let close = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(p, q)| (p - q).abs() < 1e-5);
    assert!(close(&one.embeddings[0], &one.embeddings[3]));
    assert!(close(&one.embeddings[0], &two.embeddings[1]));
    assert!(!close(&one.embeddings[0], &one.embeddings[1]));

    // The graph's own pooled output (already [batch, hidden], used as is) agrees with our
    // pooling of its token output.
    let pooled = manager_for_pooled_output()
        .generate_embeddings("l3", &batch1)
        .await
        .unwrap();
    for (ours, theirs) in one.embeddings.iter().zip(&pooled.embeddings) {
        let theirs: Vec<f64> = theirs.iter().map(|x| *x as f64).collect();
        assert!(cosine(ours, &theirs) > 0.9999);
    }
}

fn manager_for_pooled_output() -> ModelManager {
    manager(&L3.replace("onnx::Shape_422", "461"))
}

#[tokio::test]
async fn an_ambiguous_graph_asks_for_the_output_setting() {
    let toml = L3.replace("models.l3.output = \"onnx::Shape_422\"\n", "");
    let err = manager(&toml).get_model("l3").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ConfigError);
    assert!(
        err.message.contains("models.l3.output")
            && err.message.contains("onnx::Shape_422 [-1, -1, 384]"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn missing_tokenizer_and_corrupt_graph_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        models().join("all-MiniLM-L6-v2-int8-onnx/model.onnx"),
        dir.path().join("model.onnx"),
    )
    .unwrap();
    let toml = format!("models.m.type = \"embedding\"\nmodels.m.backend = \"onnx\"\nmodels.m.local_path = \"{}\"\n", dir.path().display());
    let err = manager(&toml).get_model("m").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ModelNotFound);
    assert!(err.message.contains("tokenizer"), "{}", err.message);

    std::fs::copy(
        models().join("all-MiniLM-L6-v2/tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("model.onnx"),
        b"this is not a protobuf graph",
    )
    .unwrap();
    let err = manager(&toml).get_model("m").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ModelLoadError);
    assert!(err.message.contains("model.onnx"), "{}", err.message);
}

#[tokio::test]
async fn a_generic_onnx_model_runs_on_named_tensors() {
    let manager = manager(
        "models.mul.type = \"onnx\"\nmodels.mul.local_path = \"$MODELS/onnxruntime/datasets\"\nmodels.mul.model_file = \"mul_1.onnx\"\n",
    );
    let handle = manager.get_model("mul").await.unwrap();
    let model = handle.model().as_infer().expect("generic models infer");
    let mut inputs = NamedValues::new();
    inputs.insert(
        "X".into(),
        InferValue::Tensor(TensorValue {
            shape: vec![3, 2],
            data: TensorData::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        }),
    );
    let outputs = model.infer(&inputs).unwrap();
    let y = outputs["Y"].as_tensor().expect("a tensor output");
    assert_eq!(y.shape, vec![3, 2]);
    // mul_1.onnx multiplies X by [[1, 2], [3, 4], [5, 6]] element-wise.
    assert_eq!(
        y.data,
        TensorData::F32(vec![1.0, 4.0, 9.0, 16.0, 25.0, 36.0])
    );

    inputs.insert(
        "X".into(),
        InferValue::Tensor(TensorValue {
            shape: vec![3, 3],
            data: TensorData::F32(vec![1.0; 6]),
        }),
    );
    assert_eq!(
        model.infer(&inputs).unwrap_err().code,
        ErrorCode::InvalidInput
    );
    inputs.insert("X".into(), InferValue::Text("not a tensor".into()));
    assert_eq!(
        model.infer(&inputs).unwrap_err().code,
        ErrorCode::InvalidInput
    );
    let err = model.infer(&NamedValues::new()).unwrap_err();
    assert!(err.message.contains("missing input `X`"), "{}", err.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_through_the_engine_get_the_vectors_of_each_text_alone() {
    let manager = manager(INT8);
    let items = reference();
    let alone: Vec<Vec<f32>> = {
        let handle = manager.get_embedding_model("int8").await.unwrap();
        let embedder = handle.embedder().unwrap();
        items
            .iter()
            .map(|(t, _)| embedder.embed(&[t.as_str()]).unwrap().remove(0))
            .collect()
    };
    // Each caller sends every reference text in its own order; the engine mixes callers'
    // texts of similar length in shared batches (batch_size 4).
    let callers: Vec<_> = (0..6)
        .map(|c| {
            let m = manager.clone();
            let mut texts: Vec<String> = items.iter().map(|(t, _)| t.clone()).collect();
            texts.rotate_left(c);
            tokio::spawn(async move { (c, m.generate_embeddings("int8", &texts).await.unwrap()) })
        })
        .collect();
    for caller in callers {
        let (c, out) = caller.await.unwrap();
        for (k, vector) in out.embeddings.iter().enumerate() {
            let want = &alone[(k + c) % items.len()];
            let max_abs = vector
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(max_abs < 1e-5, "caller {c} text {k}: max abs {max_abs}");
        }
    }
    let status = manager.get_status().await.unwrap();
    let engine = status.models["int8"].engine.clone().unwrap();
    assert_eq!(engine.texts_computed, 60);
    assert!(engine.batch_rows.count <= 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intra_op_spinning_is_a_checked_session_option() {
    let texts = ["spinning or not, the same vector"];
    let spinning = manager(INT8)
        .generate_embeddings("int8", &texts)
        .await
        .unwrap();
    let quiet = manager(&format!("{INT8}models.int8.intra_op_spinning = false\n"))
        .generate_embeddings("int8", &texts)
        .await
        .unwrap();
    assert_eq!(spinning.embeddings, quiet.embeddings);
    let err = manager(&format!(
        "{INT8}models.int8.intra_op_spinning = \"sometimes\"\n"
    ))
    .generate_embeddings("int8", &texts)
    .await
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::ConfigError, "{err}");
    assert!(err.message.contains("intra_op_spinning"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engine_workers_each_with_a_session_give_the_same_vectors() {
    let texts: Vec<String> = (0..24)
        .map(|i| format!("text number {i} with {} words", "more ".repeat(i % 7)))
        .collect();
    let one = manager(INT8)
        .generate_embeddings("int8", &texts)
        .await
        .unwrap();
    let two = manager(&format!("{INT8}models.int8.engine_workers = 2\n"));
    let callers: Vec<_> = texts
        .chunks(3)
        .map(|chunk| {
            let (m, chunk) = (two.clone(), chunk.to_vec());
            tokio::spawn(async move { m.generate_embeddings("int8", &chunk).await.unwrap() })
        })
        .collect();
    let mut vectors = Vec::new();
    for caller in callers {
        vectors.extend(caller.await.unwrap().embeddings);
    }
    for (a, b) in one.embeddings.iter().zip(&vectors) {
        assert!(
            a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5),
            "same vector from either session"
        );
    }
}
