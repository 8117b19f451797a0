//! The packed encoder on the real all-MiniLM-L6-v2: a batch of very different lengths gives
//! each text the vector it gets alone, the fused CPU kernels agree with stock candle ops,
//! and the padded `BertModel` path (`packed = false`) and f16 still match the reference.

#[path = "support/minilm.rs"]
mod minilm;
#[path = "../../../tests/support/reference.rs"]
mod support;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use minilm::{cpu, minilm};
use model_manager_candle::{CandleEmbedder, Encoder, Family, PackedEncoder};
use model_manager_core::backend::TokenizedText;
use model_manager_core::{ModelManager, ModelSpec, Settings};
use model_manager_text::{EncoderOutput, PackedBatch, PaddedBatch, TokenEncoder};
use support::reference;

fn embedder(options: &[(&str, serde_json::Value)]) -> CandleEmbedder {
    let mut spec = ModelSpec::new("e", "embedding");
    spec.local_path = Some(minilm());
    for (key, value) in options {
        spec.options.insert((*key).into(), value.clone());
    }
    CandleEmbedder::load(&spec, &cpu()).unwrap()
}

/// From 3 to 256 tokens (the last one truncated), in no particular order.
fn mixed_texts() -> Vec<String> {
    let words = |n: usize| {
        (0..n)
            .map(|i| ["model", "shared", "weights", "the", "quick", "fox", "cache"][i % 7])
            .collect::<Vec<_>>()
            .join(" ")
    };
    vec![
        words(40),
        "Hi".into(),
        words(400),
        words(7),
        "A sentence of ordinary length, with punctuation; and numbers 12 345.".into(),
        words(150),
        String::new(),
        words(7),
    ]
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// One forward pass over all texts together against one pass per text.
fn batch_against_alone(embedder: &CandleEmbedder, tolerance: f32) {
    let texts = mixed_texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let pipeline = embedder.pipeline();
    let tokens = pipeline.tokenize(&refs).unwrap();
    let lengths: Vec<usize> = tokens.iter().map(TokenizedText::len).collect();
    assert_eq!(
        (lengths.iter().min(), lengths.iter().max()),
        (Some(&2), Some(&256))
    );
    let rows: Vec<&TokenizedText> = tokens.iter().collect();
    let together = pipeline.embed_tokens(embedder, &rows).unwrap();
    let mut worst = 0f32;
    for (row, vector) in rows.iter().zip(&together) {
        let alone = pipeline.embed_tokens(embedder, &[row]).unwrap();
        let diff = max_diff(&alone[0], vector);
        assert!(diff <= tolerance, "{} tokens: {diff}", row.len());
        worst = worst.max(diff);
    }
    println!("lengths {lengths:?} in one batch vs alone: max abs difference {worst:e}");
}

#[test]
fn a_batch_of_very_different_lengths_matches_each_text_alone() {
    let embedder = embedder(&[]);
    assert!(matches!(embedder.encoder(), Encoder::Packed(_)));
    batch_against_alone(&embedder, 1e-5);
}

#[test]
fn f16_runs_packed_on_candle_ops() {
    let embedder = embedder(&[("dtype", "f16".into())]);
    batch_against_alone(&embedder, 2e-3);
}

#[test]
fn a_padded_batch_given_to_the_packed_encoder_comes_back_padded() {
    let embedder = embedder(&[]);
    let texts = mixed_texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tokens = embedder.pipeline().tokenize(&refs[..4]).unwrap();
    let rows: Vec<&TokenizedText> = tokens.iter().collect();
    let padded = PaddedBatch::new(&rows, 0);
    let packed = PackedBatch::new(&rows);
    let (EncoderOutput::Tokens { data: a, hidden }, EncoderOutput::Tokens { data: b, .. }) = (
        embedder.forward(&padded).unwrap(),
        embedder.forward_packed(&packed).unwrap(),
    ) else {
        panic!("token outputs expected");
    };
    assert_eq!(a.len(), padded.batch * padded.seq * hidden);
    for (p, q) in padded.spans().iter().zip(packed.spans()) {
        let a = &a[p.start * hidden..(p.start + p.len) * hidden];
        let b = &b[q.start * hidden..(q.start + q.len) * hidden];
        assert!(max_diff(a, b) <= 1e-5);
    }
    let mut malformed = padded.clone();
    malformed.ids.pop();
    assert!(embedder.forward(&malformed).is_err());
}

#[test]
fn fused_kernels_agree_with_candle_ops() {
    let dir = minilm();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    // SAFETY: the test's own read-only model file.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
    }
    .unwrap();
    let mut model = Family::Bert.load(&config, vb).unwrap();
    let lengths = [9, 1, 128, 9, 9, 40];
    let total: usize = lengths.iter().sum();
    let ids: Vec<u32> = (0..total as u32)
        .map(|i| 1000 + (i * 7919) % 20000)
        .collect();
    let types = vec![0u32; total];
    let run = |model: &PackedEncoder| -> Vec<f32> {
        let out = model.forward(&ids, &types, &lengths).unwrap();
        assert_eq!(out.dims(), &[total, 384]);
        out.flatten_all().unwrap().to_vec1().unwrap()
    };
    assert!(model.set_fused(true));
    let fused = run(&model);
    assert!(!model.set_fused(false));
    let ops = run(&model);
    assert!(max_diff(&fused, &ops) <= 1e-4, "{}", max_diff(&fused, &ops));
    // Bad input is an error, not a panic.
    assert!(model.forward(&ids[1..], &types, &lengths).is_err());
    assert!(model.forward(&[0; 600], &[0; 600], &[600]).is_err());
    assert!(model.forward(&[1_000_000], &[0], &[1]).is_err());
    assert_eq!(model.forward(&[], &[], &[]).unwrap().dims(), &[0, 384]);
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum();
    let na = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

async fn reference_cosines(extra: &str) -> Vec<f64> {
    let toml = format!(
        "embedding_cache.enabled = false\nmodels.e.type = \"embedding\"\n\
         models.e.backend = \"candle\"\nmodels.e.local_path = \"{}\"\n{extra}",
        minilm().display()
    );
    let manager = ModelManager::new(Settings::from_toml_str(&toml, ".").unwrap());
    let items = reference();
    let texts: Vec<&str> = items.iter().map(|(t, _)| t.as_str()).collect();
    let out = manager.generate_embeddings("e", &texts).await.unwrap();
    items
        .iter()
        .zip(&out.embeddings)
        .map(|((_, want), got)| cosine(got, want))
        .collect()
}

#[tokio::test]
async fn every_path_matches_the_reference() {
    let paths = [
        ("packed f32 (fused kernels)", "", 0.99999),
        (
            "padded f32 (BertModel)",
            "models.e.packed = false\n",
            0.99999,
        ),
        (
            "packed f16 (candle ops)",
            "models.e.dtype = \"f16\"\n",
            0.999,
        ),
    ];
    for (name, extra, min) in paths {
        let cosines = reference_cosines(extra).await;
        let worst = cosines.iter().copied().fold(1.0, f64::min);
        println!(
            "{name}: min cosine to the float64 reference 1 - {:.1e}",
            1.0 - worst
        );
        assert!(worst >= min, "{name}: {cosines:?}");
    }
}
