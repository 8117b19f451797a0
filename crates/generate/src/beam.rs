//! Beam search with the rules of Hugging Face transformers 4.4x (`BeamSearchScorer`,
//! `BeamHypotheses`), all beams decoded as one batch per step.
//!
//! Per step: every beam's log-probabilities plus its running sum, the best `2 * num_beams`
//! candidates over all beams; walking them best first, an end token ranked within the first
//! `num_beams` finishes a hypothesis (lower-ranked ones are dropped), other tokens continue
//! until `num_beams` beams are chosen. A finished hypothesis of `n` generated tokens (the end
//! token counted) scores `sum / n^length_penalty`; a beam still running at the length limit
//! joins the finished ones (its `n` without an end token) unless the search already stopped.

use super::{Run, StepDecoder};
use model_manager_core::Result;

/// When beam search stops (Hugging Face's `early_stopping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyStopping {
    /// `False`: stop once `num_beams` hypotheses finished and the best candidate, scored at
    /// the current length, cannot beat the worst of them.
    Heuristic,
    /// `True`: stop as soon as `num_beams` hypotheses finished.
    Stop,
    /// `"never"`: like `Heuristic`, but a positive length penalty assumes the best candidate
    /// could still grow to the length limit.
    Never,
}

/// Score given to beams that do not exist yet on the first step (Hugging Face's `-1e9`), so
/// that the first step expands beam 0 only.
const ABSENT_BEAM: f64 = -1e9;

/// The best finished hypotheses (at most `num_beams`), as `BeamHypotheses` keeps them.
struct Hypotheses {
    num_beams: usize,
    length_penalty: f64,
    early_stopping: EarlyStopping,
    max_length: usize,
    /// `(score, tokens)` in insertion order.
    kept: Vec<(f64, Vec<u32>)>,
    worst: f64,
}

impl Hypotheses {
    fn score(&self, sum_log_probs: f64, generated: usize) -> f64 {
        sum_log_probs / (generated as f64).powf(self.length_penalty)
    }

    fn add(&mut self, tokens: Vec<u32>, sum_log_probs: f64, generated: usize) {
        let score = self.score(sum_log_probs, generated);
        if self.kept.len() < self.num_beams || score > self.worst {
            self.kept.push((score, tokens));
            if self.kept.len() > self.num_beams {
                // Python's sorted((score, index)): the first of equal worst scores goes.
                let mut order: Vec<usize> = (0..self.kept.len()).collect();
                order.sort_by(|&a, &b| self.kept[a].0.total_cmp(&self.kept[b].0));
                let second_worst = self.kept[order[1]].0;
                self.kept.remove(order[0]);
                self.worst = second_worst;
            } else {
                self.worst = self.worst.min(score);
            }
        }
    }

    /// Whether no candidate can improve the kept hypotheses; `generated` counts the tokens
    /// of the candidates of this step.
    fn is_done(&self, best_sum_log_probs: f64, generated: usize) -> bool {
        if self.kept.len() < self.num_beams {
            return false;
        }
        let length = match self.early_stopping {
            EarlyStopping::Stop => return true,
            EarlyStopping::Never if self.length_penalty > 0.0 => self.max_length,
            _ => generated,
        };
        self.worst >= self.score(best_sum_log_probs, length)
    }

    /// The best hypothesis; among equal scores the one added last (`sorted(...).pop()`).
    fn best(self) -> Vec<u32> {
        let mut best: Option<(f64, Vec<u32>)> = None;
        for hypothesis in self.kept {
            if best.as_ref().is_none_or(|b| hypothesis.0 >= b.0) {
                best = Some(hypothesis);
            }
        }
        best.map(|b| b.1).unwrap_or_default()
    }
}

/// One running beam: its tokens (start token excluded) and log-probability sum.
#[derive(Clone)]
struct Beam {
    tokens: Vec<u32>,
    sum_log_probs: f64,
}

/// A continuation of beam `beam` by `token`, with the new sum.
struct Candidate {
    beam: usize,
    token: u32,
    sum_log_probs: f64,
}

/// The best `count` continuations over all beams, best first; ties keep the lower flat index
/// (beam, then token).
fn best_candidates(beams: &[Beam], logits: &[f32], count: usize) -> Vec<Candidate> {
    let vocab = logits.len() / beams.len();
    let mut all = Vec::with_capacity(logits.len());
    for (b, (beam, row)) in beams.iter().zip(logits.chunks(vocab)).enumerate() {
        for (token, log_prob) in log_softmax(row).into_iter().enumerate() {
            all.push(Candidate {
                beam: b,
                token: token as u32,
                sum_log_probs: beam.sum_log_probs + log_prob,
            });
        }
    }
    let count = count.min(all.len());
    let by_score = |a: &Candidate, b: &Candidate| b.sum_log_probs.total_cmp(&a.sum_log_probs);
    if count < all.len() {
        all.select_nth_unstable_by(count, |a, b| {
            by_score(a, b).then((a.beam, a.token).cmp(&(b.beam, b.token)))
        });
        all.truncate(count);
    }
    all.sort_by(|a, b| by_score(a, b).then((a.beam, a.token).cmp(&(b.beam, b.token))));
    all
}

/// Log-softmax in f64 of one row of f32 logits.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let log_sum = logits
        .iter()
        .map(|&x| (x as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    logits.iter().map(|&x| x as f64 - log_sum).collect()
}

/// Beam search over `run`'s decoder: the tokens of the best hypothesis (no start, no end
/// token).
pub(crate) fn beam_search<D: StepDecoder>(
    run: &Run<'_, D>,
    num_beams: usize,
    early_stopping: EarlyStopping,
    length_penalty: f64,
) -> Result<Vec<u32>> {
    if run.tokens.max_length == 0 {
        return Ok(Vec::new());
    }
    let mut state = run.start_rows(num_beams)?;
    let mut beams: Vec<Beam> = (0..num_beams)
        .map(|b| Beam {
            tokens: Vec::new(),
            sum_log_probs: if b == 0 { 0.0 } else { ABSENT_BEAM },
        })
        .collect();
    let mut last = vec![run.tokens.start; num_beams];
    let mut finished = Hypotheses {
        num_beams,
        length_penalty,
        early_stopping,
        max_length: run.tokens.max_length,
        kept: Vec::new(),
        worst: 1e9,
    };
    let mut done = false;
    for generated in 1..=run.tokens.max_length {
        let logits = run.step(&mut state, &last)?;
        let candidates = best_candidates(&beams, &logits, 2 * num_beams);
        let mut next: Vec<(usize, Beam)> = Vec::with_capacity(num_beams);
        for (rank, c) in candidates.iter().enumerate() {
            if c.token == run.tokens.eos {
                if rank < num_beams {
                    finished.add(beams[c.beam].tokens.clone(), c.sum_log_probs, generated);
                }
            } else {
                let mut tokens = beams[c.beam].tokens.clone();
                tokens.push(c.token);
                let sum_log_probs = c.sum_log_probs;
                next.push((
                    c.beam,
                    Beam {
                        tokens,
                        sum_log_probs,
                    },
                ));
            }
            if next.len() == num_beams {
                break;
            }
        }
        let best_sum = candidates.first().map_or(f64::MIN, |c| c.sum_log_probs);
        done = finished.is_done(best_sum, generated);
        let parents: Vec<u32> = next.iter().map(|(parent, _)| *parent as u32).collect();
        run.reorder(&mut state, &parents)?;
        beams = next.into_iter().map(|(_, beam)| beam).collect();
        last = beams
            .iter()
            .map(|b| *b.tokens.last().unwrap_or(&0))
            .collect();
        if done {
            break;
        }
    }
    if !done {
        for beam in beams {
            let generated = beam.tokens.len();
            finished.add(beam.tokens, beam.sum_log_probs, generated);
        }
    }
    Ok(finished.best())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hypotheses(num_beams: usize, early_stopping: EarlyStopping) -> Hypotheses {
        Hypotheses {
            num_beams,
            length_penalty: 1.0,
            early_stopping,
            max_length: 10,
            kept: Vec::new(),
            worst: 1e9,
        }
    }

    #[test]
    fn hypotheses_keep_the_best_and_track_the_worst() {
        let mut h = hypotheses(2, EarlyStopping::Heuristic);
        h.add(vec![1], -2.0, 1);
        h.add(vec![2, 2], -2.0, 2);
        assert_eq!(h.worst, -2.0);
        h.add(vec![3, 3, 3, 3], -2.0, 4);
        assert_eq!(h.kept.len(), 2);
        assert_eq!(h.worst, -1.0, "the -2.0 of [1] is gone");
        h.add(vec![4], -5.0, 1);
        assert_eq!(h.kept.len(), 2, "worse than the worst: not kept");
        assert_eq!(h.best(), vec![3, 3, 3, 3]);
    }

    #[test]
    fn equal_scores_prefer_the_later_hypothesis_and_drop_the_earlier() {
        let mut h = hypotheses(2, EarlyStopping::Heuristic);
        h.add(vec![1], -1.0, 1);
        h.add(vec![2], -1.0, 1);
        assert_eq!(h.best(), vec![2]);
        let mut h = hypotheses(2, EarlyStopping::Heuristic);
        h.add(vec![1], -3.0, 1);
        h.add(vec![2], -3.0, 1);
        h.add(vec![3], -1.0, 1);
        assert_eq!(h.kept.iter().map(|k| k.1[0]).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn stopping_rules_follow_early_stopping() {
        let mut h = hypotheses(1, EarlyStopping::Heuristic);
        assert!(!h.is_done(-0.1, 3), "nothing finished yet");
        h.add(vec![1, 2], -3.0, 3); // score -1.0
        assert!(!h.is_done(-2.0, 3), "-2/3 may still beat -1");
        assert!(h.is_done(-3.0, 3), "-3/3 cannot beat -1");
        h.early_stopping = EarlyStopping::Stop;
        assert!(h.is_done(-0.1, 3));
        h.early_stopping = EarlyStopping::Never;
        assert!(!h.is_done(-9.0, 3), "-9/10 at the length limit beats -1");
        assert!(h.is_done(-11.0, 3));
    }

    #[test]
    fn candidates_are_best_first_with_ties_by_beam_then_token() {
        let beams = vec![
            Beam {
                tokens: vec![],
                sum_log_probs: 0.0,
            };
            2
        ];
        let logits = [0.0, 1.0, 1.0, 0.0, 1.0, 1.0];
        let picked: Vec<(usize, u32)> = best_candidates(&beams, &logits, 3)
            .iter()
            .map(|c| (c.beam, c.token))
            .collect();
        assert_eq!(picked, [(0, 1), (0, 2), (1, 1)]);
    }
}
