//! The heads on top of a family's body: sequence classification (cross-encoders and
//! classifiers: BERT's pooler, RoBERTa's classification head, DistilBERT's, ModernBERT's)
//! and the masked-language-model head that SPLADE pools (BERT, DistilBERT). They run on the
//! packed hidden states, one row per sequence out.

use super::config::{activation, Config};
use super::Family;
use crate::encoder::kernels::math::Activation;
use crate::encoder::linear::Linear;
use crate::encoder::norm::Norm;
use candle_core::{bail, DType, Result, Tensor, D};
use candle_nn::VarBuilder;
use model_manager_text::SpladePooling;
use serde_json::Value;

/// Rows of token logits computed at once by the masked-LM head: `[rows, vocab]` floats.
const MLM_ROWS: usize = 256;

/// What the model is loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Sequence classification (`rerank` and `classifier`): `labels` logits a sequence.
    Classify {
        /// Logits per sequence.
        labels: usize,
    },
    /// SPLADE over the masked-LM head's logits.
    Sparse(SpladePooling),
}

/// Which token a sequence-classification head reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pick {
    First,
    Mean,
}

enum Kind {
    /// `act(first(x) W1 + b1) W2 + b2` (BERT: pooler + tanh; RoBERTa: dense + tanh;
    /// DistilBERT: pre-classifier + relu).
    TwoLayers {
        dense: Linear,
        act: Activation,
        out: Linear,
    },
    /// ModernBERT: `classifier(norm(act(dense(pick(x)))))`.
    Normed {
        pick: Pick,
        dense: Linear,
        act: Activation,
        norm: Norm,
        out: Linear,
    },
    /// Masked-LM logits `norm(act(x W + b)) E^T + bias`, pooled by SPLADE.
    MaskedLm {
        dense: Linear,
        act: Activation,
        norm: Norm,
        /// `[hidden, vocab]`.
        decoder: Tensor,
        bias: Tensor,
        pooling: SpladePooling,
    },
}

/// A head and the width of its rows.
pub struct Head {
    kind: Kind,
    width: usize,
}

fn weight_of(vb: &VarBuilder, names: &[&str], shape: (usize, usize)) -> Result<Tensor> {
    for name in names {
        if vb.contains_tensor(name) {
            return vb.get(shape, name);
        }
    }
    vb.get(shape, names[0])
}

impl Head {
    /// The head of `family`'s checkpoint for `task` (`vb` at the checkpoint's root).
    pub fn load(family: Family, config: &Value, vb: VarBuilder, task: Task) -> Result<Self> {
        let c = Config(config);
        let hidden = c.usize(&["hidden_size", "dim", "n_embd"])?;
        match task {
            Task::Classify { labels } => Self::classifier(family, &c, &vb, hidden, labels),
            Task::Sparse(pooling) => Self::masked_lm(family, &c, &vb, hidden, pooling),
        }
    }

    fn classifier(
        family: Family,
        c: &Config,
        vb: &VarBuilder,
        hidden: usize,
        labels: usize,
    ) -> Result<Self> {
        let linear =
            |name: &str, inputs, outputs, bias| Linear::load(vb, &[name], inputs, outputs, bias);
        let kind = match family {
            Family::Bert => Kind::TwoLayers {
                // A body saved on its own (sentence-transformers) has no `bert.` prefix.
                dense: match vb.contains_tensor("bert.pooler.dense.weight") {
                    true => linear("bert.pooler.dense", hidden, hidden, true)?,
                    false => linear("pooler.dense", hidden, hidden, true)?,
                },
                act: Activation::Tanh,
                out: linear("classifier", hidden, labels, true)?,
            },
            Family::XlmRoberta => Kind::TwoLayers {
                dense: linear("classifier.dense", hidden, hidden, true)?,
                act: Activation::Tanh,
                out: linear("classifier.out_proj", hidden, labels, true)?,
            },
            Family::DistilBert => Kind::TwoLayers {
                dense: linear("pre_classifier", hidden, hidden, true)?,
                act: Activation::Relu,
                out: linear("classifier", hidden, labels, true)?,
            },
            Family::ModernBert => {
                let pick = match c.str_or(&["classifier_pooling"], "cls")? {
                    "cls" => Pick::First,
                    "mean" => Pick::Mean,
                    other => bail!("config.json: classifier_pooling `{other}` is not supported (cls, mean)"),
                };
                let norm_bias = c.bool_or(&["norm_bias"], false)?;
                Kind::Normed {
                    pick,
                    dense: linear("head.dense", hidden, hidden, c.bool_or(&["classifier_bias"], false)?)?,
                    act: activation(c.str_or(&["classifier_activation"], "gelu")?)?,
                    norm: Norm::layer(vb.pp("head.norm"), hidden, c.f64_or(&["norm_eps"], 1e-5)?, norm_bias)?,
                    out: linear("classifier", hidden, labels, true)?,
                }
            }
            other => bail!("no sequence-classification head for the {} family (bert, xlm-roberta, distilbert, modernbert)", other.name()),
        };
        Ok(Self {
            kind,
            width: labels,
        })
    }

    fn masked_lm(
        family: Family,
        c: &Config,
        vb: &VarBuilder,
        hidden: usize,
        pooling: SpladePooling,
    ) -> Result<Self> {
        let vocab = pooling.vocab;
        let (dense, norm, decoder, bias, embeddings, act, eps) = match family {
            Family::Bert => (
                "cls.predictions.transform.dense",
                "cls.predictions.transform.LayerNorm",
                "cls.predictions.decoder.weight",
                ["cls.predictions.bias", "cls.predictions.decoder.bias"],
                [
                    "bert.embeddings.word_embeddings.weight",
                    "embeddings.word_embeddings.weight",
                ],
                c.str_or(&["hidden_act"], "gelu")?,
                c.f64_or(&["layer_norm_eps"], 1e-12)?,
            ),
            Family::DistilBert => (
                "vocab_transform",
                "vocab_layer_norm",
                "vocab_projector.weight",
                ["vocab_projector.bias", "vocab_projector.bias"],
                [
                    "distilbert.embeddings.word_embeddings.weight",
                    "embeddings.word_embeddings.weight",
                ],
                c.str_or(&["activation", "hidden_act"], "gelu")?,
                1e-12,
            ),
            other => bail!(
                "no masked-LM head for the {} family (bert, distilbert)",
                other.name()
            ),
        };
        // The decoder is tied to the word embeddings when the checkpoint does not keep it.
        let mut decoder_names = vec![decoder];
        decoder_names.extend(embeddings);
        let decoder = weight_of(vb, &decoder_names, (vocab, hidden))?;
        let bias = match vb.contains_tensor(bias[0]) {
            true => vb.get(vocab, bias[0])?,
            false => vb.get(vocab, bias[1])?,
        };
        Ok(Self {
            kind: Kind::MaskedLm {
                dense: Linear::load(vb, &[dense], hidden, hidden, true)?,
                act: activation(act)?,
                norm: Norm::layer(vb.pp(norm), hidden, eps, true)?,
                decoder: decoder.t()?.contiguous()?,
                bias,
                pooling,
            },
            width: vocab,
        })
    }

    /// Values per sequence out.
    pub fn width(&self) -> usize {
        self.width
    }

    /// What the head reads, for status.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::TwoLayers { .. } => "first token, classification head".into(),
            Kind::Normed {
                pick: Pick::First, ..
            } => "first token, classification head".into(),
            Kind::Normed {
                pick: Pick::Mean, ..
            } => "mean, classification head".into(),
            Kind::MaskedLm { pooling, .. } => format!(
                "splade {} of {}",
                if pooling.sum { "sum" } else { "max" },
                if pooling.double_log {
                    "log1p(log1p(relu))"
                } else {
                    "log1p(relu)"
                }
            ),
        }
    }

    /// One row per sequence of `hidden` (`[tokens, hidden]`, sequences of `lengths` laid
    /// end to end): `[sequences, width]`.
    pub fn forward(&self, hidden: &Tensor, lengths: &[usize], fused: bool) -> Result<Tensor> {
        match &self.kind {
            Kind::TwoLayers { dense, act, out } => {
                let x = pick(hidden, lengths, Pick::First)?;
                out.forward(
                    &dense.forward(&x, *act, fused)?,
                    Activation::Identity,
                    fused,
                )
            }
            Kind::Normed {
                pick: how,
                dense,
                act,
                norm,
                out,
            } => {
                let x = pick(hidden, lengths, *how)?;
                let x = norm.forward(&dense.forward(&x, *act, fused)?, fused)?;
                out.forward(&x, Activation::Identity, fused)
            }
            Kind::MaskedLm {
                dense,
                act,
                norm,
                decoder,
                bias,
                pooling,
            } => {
                let mut rows = Vec::with_capacity(lengths.len());
                let mut start = 0;
                for &len in lengths {
                    let mut pooled: Option<Tensor> = None;
                    // A long sequence's logits in pieces: [tokens, vocab] at once would be
                    // gigabytes for a full batch.
                    for at in (0..len).step_by(MLM_ROWS) {
                        let n = MLM_ROWS.min(len - at);
                        let x = hidden.narrow(0, start + at, n)?;
                        let x = norm.forward(&dense.forward(&x, *act, fused)?, fused)?;
                        let logits = x.matmul(decoder)?.broadcast_add(bias)?;
                        let part = splade(&logits, pooling)?;
                        pooled = Some(match pooled {
                            None => part,
                            Some(p) if pooling.sum => (p + part)?,
                            Some(p) => p.maximum(&part)?,
                        });
                    }
                    rows.push(match pooled {
                        Some(p) => p,
                        None => Tensor::zeros(self.width, hidden.dtype(), hidden.device())?,
                    });
                    start += len;
                }
                Tensor::stack(&rows, 0)
            }
        }
    }
}

/// SPLADE over some rows of one sequence's logits: `[rows, vocab]` to `[vocab]`.
fn splade(logits: &Tensor, pooling: &SpladePooling) -> Result<Tensor> {
    let log1p = |x: Tensor| (x + 1.0)?.log();
    let mut x = log1p(logits.to_dtype(DType::F32)?.relu()?)?;
    if pooling.double_log {
        x = log1p(x)?;
    }
    match pooling.sum {
        true => x.sum(0),
        false => x.max(0),
    }
}

/// One row per sequence: its first token, or the mean of its tokens.
fn pick(hidden: &Tensor, lengths: &[usize], how: Pick) -> Result<Tensor> {
    let mut rows = Vec::with_capacity(lengths.len());
    let mut start = 0;
    for &len in lengths {
        rows.push(match (how, len) {
            (_, 0) => Tensor::zeros(hidden.dim(D::Minus1)?, hidden.dtype(), hidden.device())?,
            (Pick::First, _) => hidden.get(start)?,
            (Pick::Mean, _) => hidden.narrow(0, start, len)?.mean(0)?,
        });
        start += len;
    }
    Tensor::stack(&rows, 0)
}
