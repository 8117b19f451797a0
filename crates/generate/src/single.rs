//! One-row decoding: greedy, or sampled by a seeded sampler.

use super::{Run, StepDecoder};
use model_manager_core::Result;

impl<D: StepDecoder> Run<'_, D> {
    /// Greedy or sampled decoding: `pick` chooses each next token from one row's logits.
    pub(crate) fn one_row(&self, mut pick: impl FnMut(&[f32]) -> Result<u32>) -> Result<Vec<u32>> {
        let mut state = self.start_rows(1)?;
        let mut tokens = Vec::new();
        let mut last = self.tokens.start;
        while tokens.len() < self.tokens.max_length {
            let next = pick(&self.step(&mut state, &[last])?)?;
            if next == self.tokens.eos {
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
}
