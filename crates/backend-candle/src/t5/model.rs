//! The T5 encoder-decoder: an encoder pass per prompt, then one decoder step at a time over
//! a batch of rows (the beams) with a KV cache that follows the rows when beams are reordered.

use super::buckets::bucket_grid;
use super::config::T5Config;
use super::layers::{project, Attention, FeedForward, LayerNorm};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};

struct EncoderBlock {
    attention_norm: LayerNorm,
    attention: Attention,
    feed_forward_norm: LayerNorm,
    feed_forward: FeedForward,
}

struct DecoderBlock {
    self_attention_norm: LayerNorm,
    self_attention: Attention,
    cross_attention_norm: LayerNorm,
    cross_attention: Attention,
    feed_forward_norm: LayerNorm,
    feed_forward: FeedForward,
}

/// A T5 / T5 v1.1 / FLAN-T5 encoder-decoder read from Hugging Face safetensors names.
pub struct T5Model {
    shared: Embedding,
    encoder: Vec<EncoderBlock>,
    encoder_norm: LayerNorm,
    decoder: Vec<DecoderBlock>,
    decoder_norm: LayerNorm,
    lm_head: Linear,
    /// `d_model ** -0.5` with tied embeddings (Hugging Face's rescaling before the lm head).
    output_scale: Option<f64>,
    config: T5Config,
    device: Device,
}

/// The decoder's state for one generation: the cached keys and values of every row.
pub struct DecoderState {
    /// Per decoder block: self-attention keys and values so far, `[rows, heads, steps, d_kv]`.
    self_kv: Vec<Option<(Tensor, Tensor)>>,
    /// Per decoder block: keys and values of the encoder output, `[1, heads, input, d_kv]`,
    /// shared by every row.
    cross_kv: Vec<(Tensor, Tensor)>,
    /// Position of the next decoder input.
    position: usize,
    rows: usize,
}

impl DecoderState {
    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Makes row `i` continue from row `parents[i]` (beam search keeps the best children,
    /// which may share a parent); the encoder's keys are the same for every row.
    pub fn reorder(&mut self, parents: &[u32]) -> Result<()> {
        if parents.len() != self.rows {
            candle_core::bail!("{} parents for {} rows", parents.len(), self.rows);
        }
        if parents.iter().enumerate().all(|(i, p)| *p as usize == i) {
            return Ok(());
        }
        for kv in self.self_kv.iter_mut().flatten() {
            let index = Tensor::from_slice(parents, parents.len(), kv.0.device())?;
            *kv = (kv.0.index_select(&index, 0)?, kv.1.index_select(&index, 0)?);
        }
        Ok(())
    }
}

impl T5Model {
    /// Reads the weights named as Hugging Face's `T5ForConditionalGeneration` saves them.
    pub fn load(vb: VarBuilder, config: &T5Config) -> Result<Self> {
        config.validate().map_err(candle_core::Error::Msg)?;
        let kind = config.feed_forward().map_err(candle_core::Error::Msg)?;
        // Some exports store the tied embedding only under a stack's name.
        let shared_name = ["encoder.embed_tokens", "decoder.embed_tokens"]
            .into_iter()
            .find(|name| {
                !vb.contains_tensor("shared.weight")
                    && vb.contains_tensor(&format!("{name}.weight"))
            })
            .unwrap_or("shared");
        let shared = candle_nn::embedding(config.vocab_size, config.d_model, vb.pp(shared_name))?;
        let encoder = (0..config.num_layers)
            .map(|i| {
                let layer = vb.pp(format!("encoder.block.{i}.layer"));
                Ok(EncoderBlock {
                    attention_norm: LayerNorm::load(layer.pp("0.layer_norm"), config)?,
                    attention: Attention::load(layer.pp("0.SelfAttention"), config, i == 0)?,
                    feed_forward_norm: LayerNorm::load(layer.pp("1.layer_norm"), config)?,
                    feed_forward: FeedForward::load(layer.pp("1.DenseReluDense"), config, kind)?,
                })
            })
            .collect::<Result<_>>()?;
        let decoder = (0..config.decoder_layers())
            .map(|i| {
                let layer = vb.pp(format!("decoder.block.{i}.layer"));
                Ok(DecoderBlock {
                    self_attention_norm: LayerNorm::load(layer.pp("0.layer_norm"), config)?,
                    self_attention: Attention::load(layer.pp("0.SelfAttention"), config, i == 0)?,
                    cross_attention_norm: LayerNorm::load(layer.pp("1.layer_norm"), config)?,
                    cross_attention: Attention::load(layer.pp("1.EncDecAttention"), config, false)?,
                    feed_forward_norm: LayerNorm::load(layer.pp("2.layer_norm"), config)?,
                    feed_forward: FeedForward::load(layer.pp("2.DenseReluDense"), config, kind)?,
                })
            })
            .collect::<Result<_>>()?;
        let (lm_head, output_scale) = if config.tie_word_embeddings {
            let scale = (config.d_model as f64).powf(-0.5);
            (Linear::new(shared.embeddings().clone(), None), Some(scale))
        } else {
            let head =
                candle_nn::linear_no_bias(config.d_model, config.vocab_size, vb.pp("lm_head"))?;
            (head, None)
        };
        Ok(Self {
            shared,
            encoder,
            encoder_norm: LayerNorm::load(vb.pp("encoder.final_layer_norm"), config)?,
            decoder,
            decoder_norm: LayerNorm::load(vb.pp("decoder.final_layer_norm"), config)?,
            lm_head,
            output_scale,
            config: config.clone(),
            device: vb.device().clone(),
        })
    }

    /// Bytes the decoder's KV cache holds per row and generated token.
    pub fn kv_bytes_per_row_token(&self) -> u64 {
        let element = self.shared.embeddings().dtype().size_in_bytes() as u64;
        (self.config.decoder_layers() * 2 * self.config.inner_dim()) as u64 * element
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &T5Config {
        &self.config
    }

    /// The encoder's output `[1, input, d_model]` for one prompt's token ids.
    pub fn encode(&self, ids: &[u32]) -> Result<Tensor> {
        if ids.is_empty() {
            candle_core::bail!("the encoder needs at least one token");
        }
        let n = ids.len();
        let mut x = self
            .shared
            .forward(&Tensor::from_slice(ids, (1, n), &self.device)?)?;
        let c = &self.config;
        let buckets = bucket_grid(
            0,
            n,
            n,
            true,
            c.relative_attention_num_buckets,
            c.relative_attention_max_distance,
        );
        let bias = self.encoder[0].attention.position_bias(&buckets, n, n)?;
        for block in &self.encoder {
            let h = block.attention_norm.forward(&x)?;
            let (keys, values) = block.attention.keys_values(&h)?;
            let queries = block.attention.queries(&h)?;
            x = (x + block
                .attention
                .attend(&queries, &keys, &values, Some(&bias))?)?;
            x = (&x
                + block
                    .feed_forward
                    .forward(&block.feed_forward_norm.forward(&x)?)?)?;
        }
        self.encoder_norm.forward(&x)
    }

    /// A decoder state of `rows` rows over one prompt's encoder output.
    pub fn start(&self, encoder_output: &Tensor, rows: usize) -> Result<DecoderState> {
        if rows == 0 {
            candle_core::bail!("a decoder state needs at least one row");
        }
        let cross_kv = self
            .decoder
            .iter()
            .map(|block| block.cross_attention.keys_values(encoder_output))
            .collect::<Result<_>>()?;
        Ok(DecoderState {
            self_kv: self.decoder.iter().map(|_| None).collect(),
            cross_kv,
            position: 0,
            rows,
        })
    }

    /// Feeds one token per row and returns the next-token logits, `[rows, vocab]` in f32.
    pub fn step(&self, state: &mut DecoderState, tokens: &[u32]) -> Result<Tensor> {
        if tokens.len() != state.rows {
            candle_core::bail!("{} tokens for {} rows", tokens.len(), state.rows);
        }
        let c = &self.config;
        let position = state.position;
        let mut x = self.shared.forward(&Tensor::from_slice(
            tokens,
            (tokens.len(), 1),
            &self.device,
        )?)?;
        // One query (this position) over the keys of every position so far, one-way.
        let buckets = bucket_grid(
            position,
            1,
            position + 1,
            false,
            c.relative_attention_num_buckets,
            c.relative_attention_max_distance,
        );
        let bias = self.decoder[0]
            .self_attention
            .position_bias(&buckets, 1, position + 1)?;
        for (block, (cache, cross)) in self
            .decoder
            .iter()
            .zip(state.self_kv.iter_mut().zip(&state.cross_kv))
        {
            let h = block.self_attention_norm.forward(&x)?;
            let queries = block.self_attention.queries(&h)?;
            let (k, v) = block.self_attention.keys_values(&h)?;
            let (keys, values) = match cache.take() {
                Some((k0, v0)) => (Tensor::cat(&[&k0, &k], 2)?, Tensor::cat(&[&v0, &v], 2)?),
                None => (k, v),
            };
            x = (x + block
                .self_attention
                .attend(&queries, &keys, &values, Some(&bias))?)?;
            *cache = Some((keys, values));
            let h = block.cross_attention_norm.forward(&x)?;
            let queries = block.cross_attention.queries(&h)?;
            x = (&x
                + block
                    .cross_attention
                    .attend_shared(&queries, &cross.0, &cross.1)?)?;
            x = (&x
                + block
                    .feed_forward
                    .forward(&block.feed_forward_norm.forward(&x)?)?)?;
        }
        state.position += 1;
        let mut out = self.decoder_norm.forward(&x)?;
        if let Some(scale) = self.output_scale {
            out = (out * scale)?;
        }
        project(&self.lm_head, &out)?
            .squeeze(1)?
            .to_dtype(DType::F32)
    }
}
