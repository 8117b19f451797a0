//! Sentences/s and tokens/s of `generate_embeddings` on all-MiniLM-L6-v2 for 1,000
//! sentences, beside a bare candle `BertModel` loop over the same texts in input-order
//! batches, measured in the same run. Medians of several passes; the cache is off.
//!
//! Targets: the backend at least 0.9x the bare loop on uniform sentences, and faster on a
//! mixed-length corpus (length sorting pads less).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use model_manager_candle as _;
use model_manager_core::{ModelManager, Settings};
use std::path::PathBuf;
use std::time::Instant;
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

#[path = "../../../benches/corpus.rs"]
mod corpus;

use corpus::{corpora, median, SENTENCES};

const BATCH: usize = 32;
const PASSES: usize = 3;

struct BareLoop {
    model: BertModel,
    tokenizer: Tokenizer,
}

impl BareLoop {
    fn load(dir: &std::path::Path) -> Self {
        let config: Config =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                &[dir.join("model.safetensors")],
                DType::F32,
                &Device::Cpu,
            )
        }
        .unwrap();
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        tokenizer.with_padding(Some(PaddingParams::default()));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: 256,
                ..Default::default()
            }))
            .unwrap();
        Self {
            model: BertModel::load(vb, &config).unwrap(),
            tokenizer,
        }
    }

    /// Input-order batches padded to their longest, mean pooling, normalization.
    fn embed(&self, texts: &[String]) -> Vec<Vec<f32>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(BATCH) {
            let enc = self.tokenizer.encode_batch(chunk.to_vec(), true).unwrap();
            let rows = |f: &dyn Fn(&tokenizers::Encoding) -> Vec<u32>| {
                let data: Vec<Vec<u32>> = enc.iter().map(f).collect();
                Tensor::new(data, &Device::Cpu).unwrap()
            };
            let ids = rows(&|e| e.get_ids().to_vec());
            let types = rows(&|e| e.get_type_ids().to_vec());
            let mask = rows(&|e| e.get_attention_mask().to_vec());
            let hidden = self.model.forward(&ids, &types, Some(&mask)).unwrap();
            let mask = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
            let summed = hidden.broadcast_mul(&mask).unwrap().sum(1).unwrap();
            let pooled = summed.broadcast_div(&mask.sum(1).unwrap()).unwrap();
            let norm = pooled
                .sqr()
                .unwrap()
                .sum_keepdim(1)
                .unwrap()
                .sqrt()
                .unwrap();
            out.extend(
                pooled
                    .broadcast_div(&norm)
                    .unwrap()
                    .to_vec2::<f32>()
                    .unwrap(),
            );
        }
        out
    }
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "run scripts/fetch-models.sh first"
    );
    let toml = format!(
        "embedding_cache.enabled = false\nmodels.embedding.type = \"embedding\"\n\
         models.embedding.backend = \"candle\"\nmodels.embedding.batch_size = {BATCH}\n\
         models.embedding.local_path = \"{}\"\n",
        dir.display()
    );
    let manager = ModelManager::new(Settings::from_toml_str(&toml, ".").unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bare = BareLoop::load(&dir);
    let counter = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    println!(
        "all-MiniLM-L6-v2, {SENTENCES} sentences, batch {BATCH}, median of {PASSES} passes, CPU"
    );
    println!(
        "{:<22} {:>14} {:>14} {:>14} {:>14} {:>8}",
        "corpus", "backend sent/s", "backend tok/s", "bare sent/s", "bare tok/s", "ratio"
    );
    for (name, texts) in corpora() {
        let tokens: usize = texts
            .iter()
            .map(|t| counter.encode(t.as_str(), true).unwrap().len().min(256))
            .sum();
        rt.block_on(manager.generate_embeddings("embedding", &texts[..BATCH]))
            .unwrap();
        let _ = bare.embed(&texts[..BATCH]);
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..PASSES {
            let start = Instant::now();
            let out = rt
                .block_on(manager.generate_embeddings("embedding", &texts))
                .unwrap();
            ours.push(start.elapsed());
            assert_eq!(out.embeddings.len(), SENTENCES);
            let start = Instant::now();
            assert_eq!(bare.embed(&texts).len(), SENTENCES);
            theirs.push(start.elapsed());
        }
        let (ours, theirs) = (median(ours).as_secs_f64(), median(theirs).as_secs_f64());
        let n = SENTENCES as f64;
        println!(
            "{name:<22} {:>14.1} {:>14.0} {:>14.1} {:>14.0} {:>7.2}x",
            n / ours,
            tokens as f64 / ours,
            n / theirs,
            tokens as f64 / theirs,
            theirs / ours
        );
    }
}
