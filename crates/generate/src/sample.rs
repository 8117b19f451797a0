//! Seeded temperature and nucleus (top-p) sampling, drawn as candle-transformers'
//! `LogitsProcessor` draws: softmax of `logits / temperature` in f32, the least likely
//! tokens past `top_p` of the mass set to zero, then one `WeightedIndex` draw from a
//! `StdRng` seeded once per generation (the same seed repeats the same output).

use super::generation_error;
use super::single::argmax;
use model_manager_core::Result;
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::SeedableRng;

/// Draws tokens for one generation.
pub struct Sampler {
    rng: rand::rngs::StdRng,
    temperature: f64,
    top_p: Option<f64>,
}

impl Sampler {
    /// A sampler with its own random stream.
    pub fn new(seed: u64, temperature: f64, top_p: Option<f64>) -> Self {
        Self {
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            temperature,
            top_p,
        }
    }

    /// The next token from one row's logits.
    pub fn pick(&mut self, logits: &[f32]) -> Result<u32> {
        // A temperature this close to 0 is greedy (and would overflow the division).
        if self.temperature < 1e-7 {
            return Ok(argmax(logits));
        }
        let mut probs = softmax(logits, self.temperature as f32);
        if let Some(p) = self.top_p.filter(|p| *p > 0.0 && *p < 1.0) {
            keep_nucleus(&mut probs, p as f32);
        }
        let distribution = WeightedIndex::new(&probs)
            .map_err(|e| generation_error(format!("cannot sample from the logits: {e}")))?;
        Ok(distribution.sample(&mut self.rng) as u32)
    }
}

/// `softmax(logits / temperature)` in f32.
fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let scaled: Vec<f32> = logits.iter().map(|x| x / temperature).collect();
    let max = scaled.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    let mut probs: Vec<f32> = scaled
        .iter()
        .map(|x| {
            let e = (x - max).exp();
            sum += e;
            e
        })
        .collect();
    probs.iter_mut().for_each(|p| *p /= sum);
    probs
}

/// Zeroes the least likely tokens once the more likely ones hold `top_p` of the mass.
fn keep_nucleus(probs: &mut [f32], top_p: f32) {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&i, &j| probs[j].total_cmp(&probs[i]));
    let mut mass = 0.0;
    for i in order {
        if mass >= top_p {
            probs[i] = 0.0;
        } else {
            mass += probs[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = |seed| {
            let mut s = Sampler::new(seed, 1.0, None);
            (0..20)
                .map(|_| s.pick(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn the_nucleus_keeps_only_the_top_mass() {
        let mut probs = vec![0.5, 0.3, 0.15, 0.05];
        keep_nucleus(&mut probs, 0.7);
        assert_eq!(probs, [0.5, 0.3, 0.0, 0.0]);
        let logits = [10.0, 9.0, 0.0, 0.0];
        let mut s = Sampler::new(1, 1.0, Some(0.5));
        assert!((0..50).all(|_| s.pick(&logits).unwrap() == 0));
    }

    #[test]
    fn a_tiny_temperature_is_greedy_and_bad_logits_are_errors() {
        let mut s = Sampler::new(1, 1e-9, None);
        assert_eq!(s.pick(&[0.0, 2.0, 1.0]).unwrap(), 1);
        let mut s = Sampler::new(1, 1.0, None);
        let err = s.pick(&[f32::NEG_INFINITY; 3]).unwrap_err();
        assert_eq!(err.code, model_manager_core::ErrorCode::GenerationError);
    }
}
