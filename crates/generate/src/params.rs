//! What a request asks for: the strategy, the length, and the bounds every backend holds it to.

use super::beam::EarlyStopping;
use model_manager_core::{GenerationParams, ModelError, ModelSpec, Result};

/// Most beams a request may ask for: each beam is a row of every decoder step and keeps its
/// own cache, so the bound keeps one request's memory within reason.
pub const MAX_BEAMS: usize = 16;
/// Most tokens a request may ask to generate.
pub const MAX_NEW_TOKENS: usize = 4096;
/// Most bytes one generation's decoder cache may reach (beams x tokens x the model's
/// per-token cache): a large model gets fewer beams or tokens than a small one.
pub const MAX_KV_CACHE_BYTES: u64 = 1 << 30;
/// Generated tokens when neither the request nor the settings say.
const DEFAULT_MAX_LENGTH: usize = 128;

/// `models.<id>.*` keys of every `text2text` model: the input limit and the default
/// generation parameters.
pub const GENERATION_OPTION_KEYS: &[&str] = &[
    "max_input_length",
    "max_output_length",
    "num_beams",
    "temperature",
    "top_p",
    "seed",
    "early_stopping",
    "length_penalty",
];

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

    /// Decoder rows the strategy runs: its beams, else one.
    pub fn rows(&self) -> usize {
        match self {
            Strategy::Beam { num_beams, .. } => *num_beams,
            _ => 1,
        }
    }
}

/// `INVALID_INPUT` for beam counts and lengths past [`MAX_BEAMS`] and [`MAX_NEW_TOKENS`].
pub fn check_limits(strategy: Strategy, max_length: usize) -> Result<()> {
    if max_length > MAX_NEW_TOKENS {
        return Err(ModelError::invalid_input(format!(
            "max_length {max_length} is above the limit of {MAX_NEW_TOKENS} generated tokens"
        )));
    }
    match strategy {
        Strategy::Beam { num_beams, .. } if num_beams == 0 || num_beams > MAX_BEAMS => Err(
            ModelError::invalid_input(format!("num_beams {num_beams} is outside 1..={MAX_BEAMS}")),
        ),
        _ => Ok(()),
    }
}

/// `INVALID_INPUT` when `strategy`'s rows of `max_length` tokens would hold more than
/// [`MAX_KV_CACHE_BYTES`] of decoder cache at `bytes_per_row_token`.
pub fn check_cache_bytes(
    strategy: Strategy,
    max_length: usize,
    bytes_per_row_token: u64,
) -> Result<()> {
    let rows = strategy.rows() as u64;
    let cache = rows * max_length as u64 * bytes_per_row_token;
    if cache > MAX_KV_CACHE_BYTES {
        return Err(ModelError::invalid_input(format!(
            "{rows} beam(s) x {max_length} tokens would hold {} MiB of decoder cache for this \
             model, above the {} MiB limit; ask for fewer beams or tokens",
            cache >> 20,
            MAX_KV_CACHE_BYTES >> 20
        )));
    }
    Ok(())
}

/// A model's generation parameters from its `models.<id>.*` options: what a request that
/// leaves a parameter out gets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationDefaults(pub GenerationParams);

impl GenerationDefaults {
    /// Reads the options of `spec`; defaults past the request bounds are a `CONFIG_ERROR`
    /// at load rather than an error on every request.
    pub fn from_options(spec: &ModelSpec) -> Result<Self> {
        let defaults = GenerationParams {
            max_length: spec.option_u64("max_output_length")?.map(|n| n as usize),
            num_beams: spec.option_u64("num_beams")?.map(|n| n as usize),
            temperature: spec.option_f64("temperature")?,
            top_p: spec.option_f64("top_p")?,
            seed: spec.option_u64("seed")?,
            early_stopping: spec.option_bool("early_stopping")?,
            length_penalty: spec.option_f64("length_penalty")?,
        };
        check_limits(
            Strategy::from_params(&defaults),
            defaults.max_length.unwrap_or(0),
        )
        .map_err(|e| ModelError::config(&format!("models.{}", spec.id), e.message))?;
        Ok(Self(defaults))
    }

    /// `params`, each one left out taken from these defaults.
    pub fn merged(&self, params: &GenerationParams) -> GenerationParams {
        let d = &self.0;
        GenerationParams {
            max_length: params.max_length.or(d.max_length),
            num_beams: params.num_beams.or(d.num_beams),
            temperature: params.temperature.or(d.temperature),
            top_p: params.top_p.or(d.top_p),
            seed: params.seed.or(d.seed),
            early_stopping: params.early_stopping.or(d.early_stopping),
            length_penalty: params.length_penalty.or(d.length_penalty),
        }
    }

    /// The most tokens to generate: `requested`, else the model's `max_output_length`,
    /// else 128.
    pub fn max_length(&self, requested: Option<usize>) -> usize {
        requested
            .or(self.0.max_length)
            .unwrap_or(DEFAULT_MAX_LENGTH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn limits_hold() {
        assert!(check_limits(Strategy::Greedy, MAX_NEW_TOKENS).is_ok());
        assert!(check_limits(Strategy::Greedy, MAX_NEW_TOKENS + 1).is_err());
        let beams = |num_beams| Strategy::Beam {
            num_beams,
            early_stopping: EarlyStopping::Stop,
            length_penalty: 1.0,
        };
        assert!(check_limits(beams(MAX_BEAMS), 10).is_ok());
        assert!(check_limits(beams(MAX_BEAMS + 1), 10).is_err());
        assert!(check_cache_bytes(beams(4), 100, 1 << 20).is_ok());
        let err = check_cache_bytes(beams(16), 4096, 1 << 20).unwrap_err();
        assert_eq!(err.code, model_manager_core::ErrorCode::InvalidInput);
    }

    #[test]
    fn requests_override_defaults() {
        let defaults = GenerationDefaults(GenerationParams {
            max_length: Some(20),
            num_beams: Some(3),
            ..Default::default()
        });
        let asked = GenerationParams {
            num_beams: Some(1),
            ..Default::default()
        };
        let merged = defaults.merged(&asked);
        assert_eq!((merged.num_beams, merged.max_length), (Some(1), Some(20)));
        assert_eq!(defaults.max_length(None), 20);
        assert_eq!(GenerationDefaults::default().max_length(None), 128);
    }
}
