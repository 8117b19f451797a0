//! Reading a family's `config.json`: values under the names transformers writes and the
//! names published checkpoints' own code uses, activations, and where in the checkpoint the
//! encoder's tensors start.

use crate::encoder::kernels::math::Activation;
use candle_core::{bail, Result};
use candle_nn::VarBuilder;
use serde_json::Value;

/// A `config.json`, read by key with aliases.
pub struct Config<'a>(pub &'a Value);

impl Config<'_> {
    fn first(&self, keys: &[&str]) -> Option<&Value> {
        keys.iter()
            .filter_map(|k| self.0.get(*k))
            .find(|v| !v.is_null())
    }

    /// A count under the first of `keys` present; an error naming `keys[0]` otherwise.
    pub fn usize(&self, keys: &[&str]) -> Result<usize> {
        match self.first(keys) {
            Some(v) => match v.as_u64() {
                Some(n) => Ok(n as usize),
                None => bail!(
                    "config.json: `{}` must be a whole number, found {v}",
                    keys[0]
                ),
            },
            None => bail!("config.json has no `{}`", keys[0]),
        }
    }

    /// A count, or `default` when no key is present.
    pub fn usize_or(&self, keys: &[&str], default: usize) -> Result<usize> {
        match self.first(keys) {
            Some(_) => self.usize(keys),
            None => Ok(default),
        }
    }

    /// A number, or `default` when no key is present.
    pub fn f64_or(&self, keys: &[&str], default: f64) -> Result<f64> {
        match self.first(keys) {
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Ok(x),
                _ => bail!("config.json: `{}` must be a number, found {v}", keys[0]),
            },
            None => Ok(default),
        }
    }

    /// A flag, or `default` when no key is present.
    pub fn bool_or(&self, keys: &[&str], default: bool) -> Result<bool> {
        match self.first(keys) {
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => bail!(
                "config.json: `{}` must be true or false, found {v}",
                keys[0]
            ),
            None => Ok(default),
        }
    }

    /// A string, or `default` when no key is present.
    pub fn str_or<'v>(&'v self, keys: &[&str], default: &'v str) -> Result<&'v str> {
        match self.first(keys) {
            Some(Value::String(s)) => Ok(s),
            Some(v) => bail!("config.json: `{}` must be a string, found {v}", keys[0]),
            None => Ok(default),
        }
    }

    /// A value as given, if present.
    pub fn get(&self, keys: &[&str]) -> Option<&Value> {
        self.first(keys)
    }

    /// The rotary base: `rope_theta`, or transformers 5's `rope_parameters.rope_theta`
    /// (`rope_parameters[layer_type]` for models with several kinds of layers).
    pub fn rope_theta(
        &self,
        layer_type: Option<&str>,
        legacy: &[&str],
        default: f64,
    ) -> Result<f64> {
        let parameters = self.0.get("rope_parameters").filter(|v| v.is_object());
        let nested = match (parameters, layer_type) {
            (Some(p), Some(kind)) => p.get(kind),
            (Some(p), None) => Some(p),
            (None, _) => None,
        };
        if let Some(theta) = nested.and_then(|p| p.get("rope_theta")) {
            return theta.as_f64().filter(|t| *t > 0.0).ok_or_else(|| {
                candle_core::Error::Msg(format!("config.json: bad rope_theta {theta}"))
            });
        }
        let theta = self.f64_or(legacy, default)?;
        if theta <= 0.0 {
            bail!(
                "config.json: `{}` must be positive, found {theta}",
                legacy[0]
            );
        }
        Ok(theta)
    }

    /// Refuses rotary scaling (`rope_scaling`, or a `rope_type` other than "default" in
    /// `rope_parameters`, flat or per layer kind): every family but GTE runs plain RoPE.
    pub fn refuse_rope_scaling(&self) -> Result<()> {
        if let Some(v) = self.first(&["rope_scaling"]) {
            bail!("config.json asks for rotary scaling {v}, which this family does not run");
        }
        let Some(parameters) = self.0.get("rope_parameters").and_then(Value::as_object) else {
            return Ok(());
        };
        let nested = parameters.values().filter(|v| v.is_object());
        for kind in std::iter::once(&Value::Object(parameters.clone()))
            .chain(nested)
            .filter_map(|p| p.get("rope_type"))
        {
            if kind != "default" {
                bail!("config.json asks for rotary scaling {kind}, which this family does not run");
            }
        }
        Ok(())
    }
}

/// The activation a config names (`hidden_act`, `hidden_activation`, `activation`).
pub fn activation(name: &str) -> Result<Activation> {
    Ok(match name {
        "gelu" => Activation::GeluErf,
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
        "relu" => Activation::Relu,
        "silu" | "swish" => Activation::Silu,
        other => bail!(
            "config.json: activation `{other}` is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu, silu)"
        ),
    })
}

/// The checkpoint's encoder: `vb` itself when `probe` is there (sentence-transformers saves
/// the bare model), else the first of `prefixes` under which it is (models saved with a
/// head keep the encoder under `bert.`, `roberta.`, `model.`…).
pub fn root<'a>(vb: VarBuilder<'a>, probe: &str, prefixes: &[&str]) -> Result<VarBuilder<'a>> {
    if vb.contains_tensor(probe) {
        return Ok(vb);
    }
    match prefixes
        .iter()
        .find(|p| vb.contains_tensor(&format!("{p}.{probe}")))
    {
        Some(prefix) => Ok(vb.pp(*prefix)),
        None => bail!(
            "cannot find tensor {probe} (nor under {})",
            prefixes
                .iter()
                .map(|p| format!("{p}."))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
