//! Decoding strategies over a T5 decoder: greedy, sampling and beam search.

use candle_core::{DType, Device, Tensor};
use candle_transformers::generation::LogitsProcessor;
use candle_transformers::models::t5::T5ForConditionalGeneration;
use model_manager_core::{ErrorCode, GenerationParams, ModelError, Result};

/// How to pick tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Strategy {
    /// The most likely token each step.
    Greedy,
    /// Temperature and nucleus sampling with a seed.
    Sample {
        /// Softmax temperature (> 0).
        temperature: f64,
        /// Nucleus threshold.
        top_p: Option<f64>,
        /// Random seed: the same seed repeats the same output.
        seed: u64,
    },
    /// Beam search.
    Beam {
        /// Hypotheses kept per step.
        num_beams: usize,
        /// Stop as soon as `num_beams` hypotheses have finished.
        early_stopping: bool,
        /// Exponent on length in hypothesis scores.
        length_penalty: f64,
    },
}

impl Strategy {
    /// Beam search when `num_beams > 1`, else sampling when a temperature above 0 is set,
    /// else greedy.
    pub fn from_params(p: &GenerationParams) -> Self {
        match (p.num_beams.unwrap_or(1), p.temperature.unwrap_or(0.0)) {
            (n, _) if n > 1 => Strategy::Beam {
                num_beams: n,
                early_stopping: p.early_stopping.unwrap_or(false),
                length_penalty: p.length_penalty.unwrap_or(1.0),
            },
            (_, t) if t > 0.0 => Strategy::Sample {
                temperature: t,
                top_p: p.top_p,
                seed: p.seed.unwrap_or(299792458),
            },
            _ => Strategy::Greedy,
        }
    }
}

pub fn generation_error(e: candle_core::Error) -> ModelError {
    ModelError::new(
        ErrorCode::GenerationError,
        format!("generation failed: {e}"),
    )
    .caused_by("CandleError", e)
}

/// One generation's fixed inputs.
pub struct Decoder {
    pub encoder_output: Tensor,
    pub start: u32,
    pub eos: u32,
    pub max_length: usize,
    pub use_cache: bool,
    pub device: Device,
}

/// A partial output with its own copy of the model (and so its own KV cache).
struct Hypothesis {
    model: T5ForConditionalGeneration,
    tokens: Vec<u32>,
    log_prob: f64,
}

impl Decoder {
    /// Generated ids (no start token, no end token) for `strategy`.
    pub fn run(&self, model: T5ForConditionalGeneration, strategy: Strategy) -> Result<Vec<u32>> {
        match strategy {
            Strategy::Greedy => self.greedy(model),
            Strategy::Sample {
                temperature,
                top_p,
                seed,
            } => self.sample(model, LogitsProcessor::new(seed, Some(temperature), top_p)),
            Strategy::Beam {
                num_beams,
                early_stopping,
                length_penalty,
            } => self.beam(model, num_beams, early_stopping, length_penalty),
        }
    }

    /// Next-token logits of `tokens` (the whole prefix, start token first).
    fn logits(&self, model: &mut T5ForConditionalGeneration, tokens: &[u32]) -> Result<Vec<f32>> {
        let input = if self.use_cache {
            &tokens[tokens.len() - 1..]
        } else {
            tokens
        };
        Tensor::new(input, &self.device)
            .and_then(|t| t.unsqueeze(0))
            .and_then(|t| model.decode(&t, &self.encoder_output))
            .and_then(|l| l.squeeze(0)?.to_dtype(DType::F32)?.to_vec1::<f32>())
            .map_err(generation_error)
    }

    fn greedy(&self, mut model: T5ForConditionalGeneration) -> Result<Vec<u32>> {
        let mut tokens = vec![self.start];
        while tokens.len() <= self.max_length {
            let next = argmax(&self.logits(&mut model, &tokens)?);
            if next == self.eos {
                break;
            }
            tokens.push(next);
        }
        Ok(tokens.split_off(1))
    }

    fn sample(
        &self,
        mut model: T5ForConditionalGeneration,
        mut sampler: LogitsProcessor,
    ) -> Result<Vec<u32>> {
        let mut tokens = vec![self.start];
        while tokens.len() <= self.max_length {
            let logits = Tensor::new(self.logits(&mut model, &tokens)?, &Device::Cpu)
                .map_err(generation_error)?;
            let next = sampler.sample(&logits).map_err(generation_error)?;
            if next == self.eos {
                break;
            }
            tokens.push(next);
        }
        Ok(tokens.split_off(1))
    }

    /// Beam search. Scores are summed log-probabilities divided by length^length_penalty.
    /// Stops when `num_beams` hypotheses have finished and (with `early_stopping`) at once,
    /// else once no running beam can beat the worst finished one.
    /// Every beam's `k` best continuations as `(beam, token, log_prob)`, best first.
    fn expand(&self, beams: &mut [Hypothesis], k: usize) -> Result<Vec<(usize, u32, f64)>> {
        let mut candidates = Vec::with_capacity(beams.len() * k);
        for (b, beam) in beams.iter_mut().enumerate() {
            let log_probs = log_softmax(&self.logits(&mut beam.model, &beam.tokens)?);
            for token in top_k(&log_probs, k) {
                candidates.push((b, token, beam.log_prob + log_probs[token as usize] as f64));
            }
        }
        // Stable: ties keep beam order, then token order, like greedy's first maximum.
        candidates.sort_by(|x, y| y.2.total_cmp(&x.2));
        Ok(candidates)
    }

    fn beam(
        &self,
        model: T5ForConditionalGeneration,
        num_beams: usize,
        early_stopping: bool,
        length_penalty: f64,
    ) -> Result<Vec<u32>> {
        let score = |log_prob: f64, len: usize| log_prob / (len.max(1) as f64).powf(length_penalty);
        let mut beams = vec![Hypothesis {
            model,
            tokens: vec![self.start],
            log_prob: 0.0,
        }];
        let mut finished: Vec<(Vec<u32>, f64)> = Vec::new();
        for step in 1..=self.max_length {
            let candidates = self.expand(&mut beams, 2 * num_beams)?;
            let mut next = Vec::with_capacity(num_beams);
            for (b, token, log_prob) in candidates {
                if token == self.eos {
                    finished.push((beams[b].tokens[1..].to_vec(), score(log_prob, step)));
                } else {
                    let mut tokens = beams[b].tokens.clone();
                    tokens.push(token);
                    next.push(Hypothesis {
                        model: beams[b].model.clone(),
                        tokens,
                        log_prob,
                    });
                }
                if next.len() == num_beams {
                    break;
                }
            }
            beams = next;
            if finished.len() >= num_beams {
                let worst_kept = kept_scores(&finished, num_beams)
                    .last()
                    .copied()
                    .unwrap_or(f64::MIN);
                let best_running = beams.first().map_or(f64::MIN, |h| score(h.log_prob, step));
                if early_stopping || best_running <= worst_kept {
                    break;
                }
            }
            if beams.is_empty() {
                break;
            }
        }
        for h in beams {
            let len = h.tokens.len() - 1;
            finished.push((h.tokens[1..].to_vec(), score(h.log_prob, len)));
        }
        // The first of equal scores wins, as in the candidates' order.
        let best = finished
            .into_iter()
            .reduce(|best, h| if h.1 > best.1 { h } else { best })
            .map(|(tokens, _)| tokens)
            .unwrap_or_default();
        Ok(best)
    }
}

fn kept_scores(finished: &[(Vec<u32>, f64)], n: usize) -> Vec<f64> {
    let mut scores: Vec<f64> = finished.iter().map(|f| f.1).collect();
    scores.sort_by(|a, b| b.total_cmp(a));
    scores.truncate(n);
    scores
}

/// Index of the first maximum.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = logits.iter().map(|x| (x - max).exp()).sum::<f32>().ln() + max;
    logits.iter().map(|x| x - log_sum).collect()
}

/// Indices of the `k` largest values, largest first, lower index first among equals.
fn top_k(values: &[f32], k: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..values.len() as u32).collect();
    order.sort_by(|&a, &b| values[b as usize].total_cmp(&values[a as usize]));
    order.truncate(k);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_pick_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(top_k(&[1.0, 3.0, 3.0, 2.0], 3), vec![1, 2, 3]);
        let lp = log_softmax(&[0.0, 0.0]);
        assert!((lp[0] - (0.5f32).ln()).abs() < 1e-6);
    }

    #[test]
    fn strategy_follows_params() {
        let mut p = GenerationParams::default();
        assert_eq!(Strategy::from_params(&p), Strategy::Greedy);
        p.temperature = Some(0.7);
        assert!(matches!(Strategy::from_params(&p), Strategy::Sample { .. }));
        p.num_beams = Some(4);
        assert!(matches!(
            Strategy::from_params(&p),
            Strategy::Beam { num_beams: 4, .. }
        ));
    }
}
