//! Trains the classifier on the digits data set (full-batch AdamW, seeded initialization).

use crate::classifier::{Classifier, WEIGHT_NAMES};
use crate::config::ClassifierConfig;
use crate::digits::Digit;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use std::collections::HashMap;

/// The digits classifier's config: 8x8 input, 64 hidden units, labels "0".."9".
pub fn digits_config() -> ClassifierConfig {
    ClassifierConfig {
        width: 8,
        height: 8,
        mean: 0.3,
        std: 0.4,
        hidden: 64,
        labels: (0..10).map(|d| d.to_string()).collect(),
    }
}

/// Uniform values in `-bound..bound` from a fixed-seed generator (xorshift), so training is
/// repeatable without depending on candle's RNG.
fn seeded_uniform(n: usize, bound: f32, seed: &mut u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            ((*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound
        })
        .collect()
}

fn batch(digits: &[Digit], config: &ClassifierConfig) -> candle_core::Result<(Tensor, Tensor)> {
    let pixels: Vec<f32> = digits
        .iter()
        .flat_map(|d| d.pixels.iter().map(|p| config.normalize(*p)))
        .collect();
    let labels: Vec<u32> = digits.iter().map(|d| d.label).collect();
    Ok((
        Tensor::from_vec(pixels, (digits.len(), config.inputs()), &Device::Cpu)?,
        Tensor::new(labels, &Device::Cpu)?,
    ))
}

/// Trains for `epochs` full-batch steps and returns the weights by name.
pub fn train(
    digits: &[Digit],
    config: &ClassifierConfig,
    epochs: usize,
) -> candle_core::Result<HashMap<String, Tensor>> {
    let (inputs, hidden, labels) = (config.inputs(), config.hidden, config.labels.len());
    let mut seed = 0x5eed_u64;
    let var = |shape: &[usize], fan_in: usize, seed: &mut u64| {
        let n = shape.iter().product();
        let values = seeded_uniform(n, 1.0 / (fan_in as f32).sqrt(), seed);
        Var::from_tensor(&Tensor::from_vec(values, shape, &Device::Cpu)?)
    };
    let vars = [
        var(&[hidden, inputs], inputs, &mut seed)?,
        Var::from_tensor(&Tensor::zeros(hidden, DType::F32, &Device::Cpu)?)?,
        var(&[labels, hidden], hidden, &mut seed)?,
        Var::from_tensor(&Tensor::zeros(labels, DType::F32, &Device::Cpu)?)?,
    ];
    let params = ParamsAdamW {
        lr: 0.01,
        weight_decay: 1e-4,
        ..Default::default()
    };
    let mut optimizer = AdamW::new(vars.to_vec(), params)?;
    let (x, y) = batch(digits, config)?;
    for _ in 0..epochs {
        let model = weights_of(&vars);
        let classifier = Classifier::from_weights(model, config.clone())
            .map_err(|e| candle_core::Error::Msg(e.message))?;
        let (logits, _) = classifier.forward(&x)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        optimizer.backward_step(&loss)?;
    }
    Ok(weights_of(&vars))
}

fn weights_of(vars: &[Var; 4]) -> HashMap<String, Tensor> {
    WEIGHT_NAMES
        .iter()
        .zip(vars)
        .map(|(name, var)| ((*name).to_owned(), var.as_tensor().clone()))
        .collect()
}

/// Share of `digits` the classifier labels correctly.
pub fn accuracy(
    classifier: &Classifier,
    digits: &[Digit],
) -> Result<f64, model_manager_plugin::Error> {
    let inputs: Vec<Vec<f32>> = digits
        .iter()
        .map(|d| {
            d.pixels
                .iter()
                .map(|p| classifier.config.normalize(*p))
                .collect()
        })
        .collect();
    let prediction = classifier.predict(&inputs)?;
    let correct = prediction
        .probabilities
        .iter()
        .zip(digits)
        .filter(|(p, d)| crate::argmax(p) == d.label as usize)
        .count();
    Ok(correct as f64 / digits.len() as f64)
}
