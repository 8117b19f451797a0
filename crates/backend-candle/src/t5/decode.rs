//! Decoding strategies over the T5 decoder: greedy, sampling and beam search.

use super::beam::{beam_search, EarlyStopping};
use super::stepper::{generation_error, Decoder};
use candle_core::{Device, Tensor};
use candle_transformers::generation::LogitsProcessor;
use model_manager_core::{GenerationParams, Result};

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
    /// Beam search with Hugging Face's rules (`BeamSearchScorer`).
    Beam {
        /// Hypotheses kept per step.
        num_beams: usize,
        /// When to stop (Hugging Face's `early_stopping`).
        early_stopping: EarlyStopping,
        /// Exponent on the generated length in hypothesis scores.
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
                early_stopping: match p.early_stopping {
                    Some(true) => EarlyStopping::Stop,
                    _ => EarlyStopping::Heuristic,
                },
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

impl Decoder<'_> {
    /// Generated ids (no start token, no end token) for `strategy`.
    pub fn run(&self, strategy: Strategy) -> Result<Vec<u32>> {
        match strategy {
            Strategy::Greedy => self.one_row(|logits| Ok(argmax(&logits))),
            Strategy::Sample {
                temperature,
                top_p,
                seed,
            } => {
                let mut sampler = LogitsProcessor::new(seed, Some(temperature), top_p);
                self.one_row(|logits| {
                    let logits = Tensor::new(logits, &Device::Cpu).map_err(generation_error)?;
                    sampler.sample(&logits).map_err(generation_error)
                })
            }
            Strategy::Beam {
                num_beams,
                early_stopping,
                length_penalty,
            } => beam_search(self, num_beams, early_stopping, length_penalty),
        }
    }

    /// Greedy or sampled decoding: `pick` chooses each next token from the logits.
    fn one_row(&self, mut pick: impl FnMut(Vec<f32>) -> Result<u32>) -> Result<Vec<u32>> {
        let mut state = self.start_rows(1)?;
        let mut tokens = Vec::new();
        let mut last = self.start;
        while tokens.len() < self.max_length {
            let next = pick(self.step(&mut state, &[last])?)?;
            if next == self.eos {
                break;
            }
            tokens.push(next);
            last = next;
        }
        Ok(tokens)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_picks_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
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
            Strategy::Beam {
                num_beams: 4,
                early_stopping: EarlyStopping::Heuristic,
                ..
            }
        ));
        p.early_stopping = Some(true);
        assert!(matches!(
            Strategy::from_params(&p),
            Strategy::Beam {
                early_stopping: EarlyStopping::Stop,
                ..
            }
        ));
    }
}
