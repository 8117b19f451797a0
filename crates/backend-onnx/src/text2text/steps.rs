//! An export as `model-manager-generate` sees it: an [`EncoderDecoder`] whose prompts give a
//! [`StepDecoder`], one generation's rows over its prompt's encoder output. With
//! `decoder_with_past_model.onnx` each step feeds one token per row and the cache of every
//! layer; without one, each step feeds every row's whole prefix again (what an export
//! without a cache allows).

use super::graphs::{run_error, Encoded};
use super::Graphs;
use model_manager_core::Result;
use model_manager_generate::{EncoderDecoder, SpecialTokens, StepDecoder};
use ort::value::{DynValue, Tensor};

/// One prompt's decoder.
pub struct OnnxSteps<'a> {
    graphs: &'a Graphs,
    encoded: Encoded,
}

impl EncoderDecoder for Graphs {
    type Steps<'a> = OnnxSteps<'a>;

    fn encode(&self, ids: &[u32]) -> Result<OnnxSteps<'_>> {
        Ok(OnnxSteps {
            graphs: self,
            encoded: self.encoder.encode(ids)?,
        })
    }

    fn special_tokens(&self) -> SpecialTokens {
        self.special
    }

    fn vocab_size(&self) -> Option<usize> {
        self.decoder.vocab
    }

    /// The cache with a past graph, else the logits of every position that each step of
    /// the full-prefix decoder returns.
    fn bytes_per_row_token(&self) -> u64 {
        match &self.decoder_with_past {
            Some(with_past) => with_past.cache_bytes_per_token.unwrap_or(0),
            None => self.decoder.vocab.unwrap_or(0) as u64 * 4,
        }
    }
}

/// One generation's rows.
pub struct Rows {
    /// Every token fed to each row so far (the start token first).
    history: Vec<Vec<u32>>,
    /// The encoder output repeated for every row, `[rows, tokens, width]`.
    hidden: DynValue,
    /// The cache (`past_key_values.*` by name), empty before the first step or without one.
    cache: Vec<(String, DynValue)>,
}

impl StepDecoder for OnnxSteps<'_> {
    type Rows = Rows;

    fn start(&self, rows: usize) -> Result<Rows> {
        let e = &self.encoded;
        let data: Vec<f32> = (0..rows).flat_map(|_| e.hidden.iter().copied()).collect();
        let hidden = Tensor::from_array(([rows, e.tokens, e.width], data))
            .map_err(run_error)?
            .into_dyn();
        Ok(Rows {
            history: vec![Vec::new(); rows],
            hidden,
            cache: Vec::new(),
        })
    }

    fn step(&self, rows: &mut Rows, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.len() != rows.history.len() {
            return Err(run_error(format!(
                "{} tokens for {} rows",
                tokens.len(),
                rows.history.len()
            )));
        }
        for (history, token) in rows.history.iter_mut().zip(tokens) {
            history.push(*token);
        }
        let count = tokens.len();
        let encoder_tokens = self.encoded.tokens;
        let output = match (&self.graphs.decoder_with_past, rows.cache.is_empty()) {
            (Some(with_past), false) => {
                with_past.run(tokens, count, &rows.hidden, encoder_tokens, &rows.cache)?
            }
            (Some(_), true) => {
                self.graphs
                    .decoder
                    .run(tokens, count, &rows.hidden, encoder_tokens, &[])?
            }
            (None, _) => {
                let prefixes: Vec<u32> = rows.history.concat();
                self.graphs
                    .decoder
                    .run(&prefixes, count, &rows.hidden, encoder_tokens, &[])?
            }
        };
        if self.graphs.decoder_with_past.is_some() {
            for (name, value) in output.presents {
                match rows.cache.iter_mut().find(|(n, _)| *n == name) {
                    Some(entry) => entry.1 = value,
                    None => rows.cache.push((name, value)),
                }
            }
        }
        Ok(output.logits)
    }

    fn reorder(&self, rows: &mut Rows, parents: &[u32]) -> Result<()> {
        if parents.iter().enumerate().all(|(i, p)| *p as usize == i) {
            return Ok(());
        }
        if parents.len() != rows.history.len()
            || parents.iter().any(|p| *p as usize >= rows.history.len())
        {
            return Err(run_error(format!(
                "parents {parents:?} for {} rows",
                rows.history.len()
            )));
        }
        rows.history = parents
            .iter()
            .map(|p| rows.history[*p as usize].clone())
            .collect();
        for entry in &mut rows.cache {
            entry.1 = gather_rows(&entry.1, parents)?;
        }
        Ok(())
    }
}

/// Rows `parents` of a `[rows, ...]` f32 tensor, in that order.
fn gather_rows(value: &DynValue, parents: &[u32]) -> Result<DynValue> {
    let (shape, data) = value.try_extract_tensor::<f32>().map_err(run_error)?;
    let dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    let row = dims.iter().skip(1).product::<usize>();
    if dims.first() != Some(&parents.len()) || data.len() != row * parents.len() {
        return Err(run_error(format!(
            "a cache entry of shape {dims:?} for {} rows",
            parents.len()
        )));
    }
    let gathered: Vec<f32> = parents
        .iter()
        .flat_map(|p| {
            data[*p as usize * row..(*p as usize + 1) * row]
                .iter()
                .copied()
        })
        .collect();
    Ok(Tensor::from_array((dims, gathered))
        .map_err(run_error)?
        .into_dyn())
}
