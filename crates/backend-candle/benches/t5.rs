//! T5 decoding speed, in one run on the same weights: the project's T5 (a KV cache per row,
//! beams decoded as one batch per step) against the path it replaced (candle-transformers
//! 0.11's T5: greedy on one model clone; beam search with a model clone, and so a KV cache,
//! per beam, one beam per forward pass, the clones copied when beams are chosen).
//!
//! Two random models: the tiny one of the tests (d_model 32, 2 layers, vocab 64) and one of
//! FLAN-T5-small's shape (d_model 512, 8 layers, 6 heads, d_ff 1024, vocab 32128). Prints the
//! median tokens per second of greedy and 4-beam decoding (output tokens over time; each path
//! counts its own outputs, which differ where the old decoder's position buckets were wrong).
//!
//! Run: `cargo bench -p model-manager-candle --bench t5` (MM_BENCH_PASSES, default 5).

#[path = "../tests/common/mod.rs"]
mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::t5 as previous;
use model_manager_candle::{EarlyStopping, Strategy, T5Config, T5Generator, T5Model};
use model_manager_core::{ModelManager, Settings};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::{Duration, Instant};

const MAX_NEW: usize = 32;
const BEAMS: usize = 4;
const PROMPTS: [&str; 3] = [
    "w5 w9 w17 w33 w40 w41",
    "w60 w3 w3 w12",
    "w7 w8 w9 w10 w11 w12 w13",
];

fn write_random_t5(dir: &Path, config: serde_json::Value, scale: f32) {
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let cfg: T5Config = serde_json::from_value(config).unwrap();
    let varmap = VarMap::new();
    T5Model::load(
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        &cfg,
    )
    .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut vars: Vec<_> = varmap.data().lock().unwrap().clone().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, var) in vars {
        let values: Vec<f32> = (0..var.elem_count())
            .map(|_| rng.random_range(-scale..scale))
            .collect();
        var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
    varmap.save(dir.join("model.safetensors")).unwrap();
    common::write_word_tokenizer(dir, 64);
}

/// The replaced decoder: returns the generated tokens.
struct Previous {
    model: previous::T5ForConditionalGeneration,
    start: u32,
    eos: u32,
}

impl Previous {
    fn load(dir: &Path) -> Self {
        let config: previous::Config =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let files = [dir.join("model.safetensors")];
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &Device::Cpu) }
            .unwrap();
        Self {
            model: previous::T5ForConditionalGeneration::load(vb, &config).unwrap(),
            start: config.decoder_start_token_id.unwrap_or(config.pad_token_id) as u32,
            eos: config.eos_token_id as u32,
        }
    }

    fn logits(
        model: &mut previous::T5ForConditionalGeneration,
        last: u32,
        enc: &Tensor,
    ) -> Vec<f32> {
        let input = Tensor::new(&[last], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = model.decode(&input, enc).unwrap();
        logits.squeeze(0).unwrap().to_vec1::<f32>().unwrap()
    }

    fn generate(&self, ids: &[u32], beams: usize) -> Vec<u32> {
        let mut model = self.model.clone();
        model.clear_kv_cache();
        let input = Tensor::new(ids, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let enc = model.encode(&input).unwrap();
        if beams == 1 {
            let mut tokens = vec![self.start];
            while tokens.len() <= MAX_NEW {
                let logits = Self::logits(&mut model, *tokens.last().unwrap(), &enc);
                let next = argmax(&logits);
                if next == self.eos {
                    break;
                }
                tokens.push(next);
            }
            return tokens.split_off(1);
        }
        let mut running = vec![(model, vec![self.start], 0.0f64)];
        let mut finished: Vec<(Vec<u32>, f64)> = Vec::new();
        for step in 1..=MAX_NEW {
            let mut candidates = Vec::new();
            for (b, (model, tokens, score)) in running.iter_mut().enumerate() {
                let logits = Self::logits(model, *tokens.last().unwrap(), &enc);
                let max = logits.iter().copied().fold(f32::MIN, f32::max);
                let log_sum = logits.iter().map(|x| (x - max).exp()).sum::<f32>().ln() + max;
                for (t, l) in logits.iter().enumerate() {
                    candidates.push((b, t as u32, *score + (l - log_sum) as f64));
                }
            }
            candidates.sort_by(|x, y| y.2.total_cmp(&x.2));
            let mut next = Vec::new();
            for (b, t, score) in candidates.into_iter().take(2 * beams) {
                if t == self.eos {
                    finished.push((running[b].1[1..].to_vec(), score / step as f64));
                } else if next.len() < beams {
                    let mut tokens = running[b].1.clone();
                    tokens.push(t);
                    next.push((running[b].0.clone(), tokens, score));
                }
            }
            running = next;
            if finished.len() >= beams {
                break;
            }
        }
        finished.extend(
            running
                .into_iter()
                .map(|(_, t, s)| (t[1..].to_vec(), s / (t.len() - 1) as f64)),
        );
        finished
            .into_iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap()
            .0
    }
}

fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Tokens per second of `run` over the prompts, median of `passes`.
fn tokens_per_second(passes: usize, mut run: impl FnMut(&str) -> usize) -> f64 {
    run(PROMPTS[0]);
    median(
        (0..passes)
            .map(|_| {
                let start = Instant::now();
                let tokens: usize = PROMPTS.iter().map(|p| run(p)).sum();
                tokens as f64 / start.elapsed().max(Duration::from_nanos(1)).as_secs_f64()
            })
            .collect(),
    )
}

fn bench_model(name: &str, config: serde_json::Value, scale: f32, passes: usize) {
    let dir = tempfile::tempdir().unwrap();
    write_random_t5(dir.path(), config, scale);
    let toml = format!(
        "models.t5.type = \"text2text\"\nmodels.t5.local_path = \"{}\"\n",
        dir.path().display()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let manager = ModelManager::new(Settings::from_toml_str(&toml, ".").unwrap());
    let handle = rt
        .block_on(manager.get_text_generation_model("t5"))
        .unwrap();
    let ours = handle.downcast_ref::<T5Generator>().unwrap();
    let before = Previous::load(dir.path());
    let ids = |p: &str| ours.tokenizer().encode(p, true).unwrap().get_ids().to_vec();
    for (label, beams) in [("greedy", 1), ("4 beams", BEAMS)] {
        let strategy = if beams == 1 {
            Strategy::Greedy
        } else {
            Strategy::Beam {
                num_beams: beams,
                early_stopping: EarlyStopping::Heuristic,
                length_penalty: 1.0,
            }
        };
        let old = tokens_per_second(passes, |p| before.generate(&ids(p), beams).len());
        let new = tokens_per_second(passes, |p| {
            ours.generate_ids_with(p, strategy, Some(MAX_NEW))
                .unwrap()
                .len()
        });
        println!(
            "{name:<28} {label:<8} before {old:>9.1} tok/s   after {new:>9.1} tok/s   {:>5.2}x",
            new / old
        );
    }
}

fn main() {
    let passes = std::env::var("MM_BENCH_PASSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let base =
        |d_model: usize, layers: usize, heads: usize, d_kv: usize, d_ff: usize, vocab: usize| {
            serde_json::json!({
                "vocab_size": vocab, "d_model": d_model, "d_kv": d_kv, "d_ff": d_ff,
                "num_layers": layers, "num_heads": heads, "relative_attention_num_buckets": 32,
                "relative_attention_max_distance": 128, "feed_forward_proj": "gated-gelu",
                "tie_word_embeddings": false, "is_encoder_decoder": true, "pad_token_id": 0,
                "eos_token_id": 1, "decoder_start_token_id": 0, "dropout_rate": 0.0,
            "layer_norm_epsilon": 1e-6, "initializer_factor": 1.0, "use_cache": true,
            "num_decoder_layers": layers
            })
        };
    println!(
        "T5 decoding, {MAX_NEW} new tokens at most, {} prompts, median of {passes} passes",
        PROMPTS.len()
    );
    bench_model(
        "tiny (32 wide, 2 layers)",
        base(32, 2, 4, 8, 64, 64),
        0.5,
        passes,
    );
    bench_model(
        "flan-t5-small shape (512, 8)",
        base(512, 8, 6, 64, 1024, 32128),
        0.05,
        passes,
    );
}
