//! A BERT encoder that runs packed batches: the tokens of all sequences of a batch are one
//! `[tokens, hidden]` matrix for every dense step (embeddings, one fused QKV matmul, the
//! output projection, the feed-forward, the layer norms), and only attention looks at
//! sequence boundaries. No padding is computed, so a batch costs the sum of its lengths
//! (plus attention's per-sequence `len^2`) instead of `rows x longest`.
//!
//! On the CPU in f32 the dense layers carry their bias and activation, residual + layer norm
//! is one in-place pass and attention one kernel over the QKV matrix ([`ops`]); on other
//! devices and dtypes the same computation runs on stock candle ops. Semantics follow HF `BertModel` (post-norm layers, the
//! config's activation and `layer_norm_eps`, positions restarting at 0 per sequence).

mod attention;
mod direct;
mod kernels;
mod layout;
mod ops;

use attention::attention_ops;
use candle_core::{bail, DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};
use kernels::Activation;
use layout::Heads;
use ops::{AddLayerNorm, Dense, PackedAttention};

/// A dense layer with its weight stored `[in, out]`, the layout the matmul reads fastest.
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn load(vb: &VarBuilder, names: &[&str], inputs: usize, outputs: usize) -> Result<Self> {
        // Several names (query, key, value) become one layer with their outputs side by
        // side: one matmul instead of three.
        let weights = names
            .iter()
            .map(|n| vb.get((outputs, inputs), &format!("{n}.weight")))
            .collect::<Result<Vec<_>>>()?;
        let biases = names
            .iter()
            .map(|n| vb.get(outputs, &format!("{n}.bias")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            weight: Tensor::cat(&weights, 0)?.t()?.contiguous()?,
            bias: Tensor::cat(&biases, 0)?,
        })
    }

    /// `act(x W + b)`.
    fn forward(&self, x: &Tensor, act: Activation, fused: bool) -> Result<Tensor> {
        if fused {
            return x.apply_op3_no_bwd(&self.weight, &self.bias, &Dense(act));
        }
        let y = x.matmul(&self.weight)?.broadcast_add(&self.bias)?;
        match act {
            Activation::GeluErf => y.gelu_erf(),
            Activation::GeluTanh => y.gelu(),
            Activation::Relu => y.relu(),
            Activation::Identity => Ok(y),
        }
    }
}

/// `layer_norm(y + residual)`.
struct AddNorm {
    gamma: Tensor,
    beta: Tensor,
    /// `[gamma; beta]` for the fused kernel.
    params: Tensor,
    eps: f64,
}

impl AddNorm {
    fn load(vb: VarBuilder, hidden: usize, eps: f64) -> Result<Self> {
        let gamma = vb.get(hidden, "weight")?;
        let beta = vb.get(hidden, "bias")?;
        let params = Tensor::stack(&[&gamma, &beta], 0)?;
        Ok(Self {
            gamma,
            beta,
            params,
            eps,
        })
    }

    fn forward(&self, y: Tensor, residual: &Tensor, fused: bool) -> Result<Tensor> {
        if fused {
            let op = AddLayerNorm {
                eps: self.eps as f32,
            };
            y.inplace_op3(residual, &self.params, &op)?;
            return Ok(y);
        }
        candle_nn::ops::layer_norm(&(y + residual)?, &self.gamma, &self.beta, self.eps as f32)
    }
}

struct Layer {
    qkv: Linear,
    output: Linear,
    attention_norm: AddNorm,
    intermediate: Linear,
    ffn_output: Linear,
    ffn_norm: AddNorm,
}

impl Layer {
    fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let eps = config.layer_norm_eps;
        let attention = vb.pp("attention");
        Ok(Self {
            qkv: Linear::load(&attention.pp("self"), &["query", "key", "value"], h, h)?,
            output: Linear::load(&attention.pp("output"), &["dense"], h, h)?,
            attention_norm: AddNorm::load(attention.pp("output.LayerNorm"), h, eps)?,
            intermediate: Linear::load(&vb.pp("intermediate"), &["dense"], h, i)?,
            ffn_output: Linear::load(&vb.pp("output"), &["dense"], i, h)?,
            ffn_norm: AddNorm::load(vb.pp("output.LayerNorm"), h, eps)?,
        })
    }

    fn forward(&self, x: &Tensor, lengths: &[usize], model: &PackedBert) -> Result<Tensor> {
        let fused = model.fused;
        let qkv = self.qkv.forward(x, Activation::Identity, fused)?;
        let context = if fused {
            qkv.apply_op1_no_bwd(&PackedAttention {
                lengths,
                heads: model.heads,
            })?
        } else {
            attention_ops(&qkv, lengths, model.heads)?
        };
        let projected = self.output.forward(&context, Activation::Identity, fused)?;
        let x = self.attention_norm.forward(projected, x, fused)?;
        let inner = self.intermediate.forward(&x, model.activation, fused)?;
        let out = self
            .ffn_output
            .forward(&inner, Activation::Identity, fused)?;
        self.ffn_norm.forward(out, &x, fused)
    }
}

struct Embeddings {
    word: candle_nn::Embedding,
    position: candle_nn::Embedding,
    token_type: candle_nn::Embedding,
    norm: AddNorm,
}

impl Embeddings {
    fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let h = config.hidden_size;
        let table = |rows: usize, name: &str| candle_nn::embedding(rows, h, vb.pp(name));
        Ok(Self {
            word: table(config.vocab_size, "word_embeddings")?,
            position: table(config.max_position_embeddings, "position_embeddings")?,
            token_type: table(config.type_vocab_size, "token_type_embeddings")?,
            norm: AddNorm::load(vb.pp("LayerNorm"), h, config.layer_norm_eps)?,
        })
    }

    fn forward(&self, batch: &Packed, fused: bool) -> Result<Tensor> {
        let words = self.word.forward(&batch.ids)?;
        let types = self.token_type.forward(&batch.type_ids)?;
        let positions = self.position.forward(&batch.positions)?;
        self.norm.forward((words + types)?, &positions, fused)
    }
}

/// The id tensors of one packed batch.
struct Packed {
    ids: Tensor,
    type_ids: Tensor,
    /// 0..len for each sequence, as HF numbers positions of an unpadded sequence.
    positions: Tensor,
}

/// A BERT-family encoder over packed batches (see the module docs).
pub struct PackedBert {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    heads: Heads,
    activation: Activation,
    /// Sizes of the word, position and token type tables, to refuse ids past them.
    tables: [usize; 3],
    fused: bool,
    device: Device,
}

impl PackedBert {
    /// Loads the weights of an HF `BertModel` checkpoint (with or without a `bert.` prefix).
    /// The fused kernels are used where they apply: CPU and f32.
    pub fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size,
                config.num_attention_heads
            );
        }
        let vb = model_root(vb, config);
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::load(vb.pp(format!("encoder.layer.{i}")), config))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings: Embeddings::load(vb.pp("embeddings"), config)?,
            layers,
            heads: Heads {
                heads: config.num_attention_heads,
                head_dim: config.hidden_size / config.num_attention_heads,
            },
            activation: match config.hidden_act {
                HiddenAct::Gelu => Activation::GeluErf,
                HiddenAct::GeluApproximate => Activation::GeluTanh,
                HiddenAct::Relu => Activation::Relu,
            },
            tables: [
                config.vocab_size,
                config.max_position_embeddings,
                config.type_vocab_size,
            ],
            fused: vb.device().is_cpu() && vb.dtype() == DType::F32,
            device: vb.device().clone(),
        })
    }

    /// Uses the fused CPU kernels (`true`, only possible on the CPU in f32) or stock candle
    /// ops (`false`); returns whether the fused kernels are now in use.
    pub fn set_fused(&mut self, fused: bool) -> bool {
        let dtype = self.embeddings.norm.gamma.dtype();
        self.fused = fused && self.device.is_cpu() && dtype == DType::F32;
        self.fused
    }

    /// Hidden size of the outputs.
    pub fn hidden_size(&self) -> usize {
        self.heads.hidden()
    }

    /// The last hidden state of a packed batch: `[sum(lengths), hidden]` in the model's
    /// dtype, row `t` the `t`-th token of the concatenated sequences.
    pub fn forward(&self, ids: &[u32], type_ids: &[u32], lengths: &[usize]) -> Result<Tensor> {
        let batch = self.pack(ids, type_ids, lengths)?;
        if ids.is_empty() {
            let dtype = self.embeddings.norm.gamma.dtype();
            return Tensor::zeros((0, self.hidden_size()), dtype, &self.device);
        }
        let mut x = self.embeddings.forward(&batch, self.fused)?;
        for layer in &self.layers {
            x = layer.forward(&x, lengths, self)?;
        }
        Ok(x)
    }

    fn pack(&self, ids: &[u32], type_ids: &[u32], lengths: &[usize]) -> Result<Packed> {
        let tokens: usize = lengths.iter().sum();
        if ids.len() != tokens || type_ids.len() != tokens {
            bail!(
                "packed batch of {} ids and {} type ids for lengths summing to {tokens}",
                ids.len(),
                type_ids.len()
            );
        }
        let [vocab, positions, types] = self.tables;
        if let Some(len) = lengths.iter().find(|&&n| n > positions) {
            bail!("a sequence of {len} tokens is longer than the model's {positions} positions");
        }
        // candle checks indices on the CPU only: refuse them here for every device.
        if let Some(id) = ids.iter().find(|&&id| id as usize >= vocab) {
            bail!("token id {id} is outside the vocabulary of {vocab}");
        }
        if let Some(id) = type_ids.iter().find(|&&id| id as usize >= types) {
            bail!("token type id {id} is outside the model's {types} types");
        }
        let positions: Vec<u32> = lengths.iter().flat_map(|&n| 0..n as u32).collect();
        let tensor = |data: &[u32]| Tensor::from_slice(data, tokens, &self.device);
        Ok(Packed {
            ids: tensor(ids)?,
            type_ids: tensor(type_ids)?,
            positions: tensor(&positions)?,
        })
    }
}

/// The prefix under which the checkpoint keeps the encoder: none (sentence-transformers),
/// `bert.` (pre-training heads), or the config's `model_type`.
fn model_root<'a>(vb: VarBuilder<'a>, config: &Config) -> VarBuilder<'a> {
    let probe = "embeddings.word_embeddings.weight";
    if vb.contains_tensor(probe) {
        return vb;
    }
    let model_type = config.model_type.as_deref().unwrap_or("bert");
    ["bert", model_type]
        .into_iter()
        .find(|prefix| vb.contains_tensor(&format!("{prefix}.{probe}")))
        .map_or(vb.clone(), |prefix| vb.pp(prefix))
}
