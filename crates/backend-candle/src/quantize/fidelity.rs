//! How close quantized vectors stay to f32 ones: cosines and nearest-neighbour agreement.

use model_manager_core::Fidelity;

/// The gate: mean cosine, lowest cosine, neighbour agreement.
pub const GATE: (f64, f64, f64) = (0.999, 0.995, 0.95);
/// Neighbours compared per text.
pub const NEIGHBOURS: usize = 10;

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let norms = norm(a) * norm(b);
    // A NaN vector (or a zero one against a non-zero one) is as far as it gets.
    match norms > 0.0 {
        true => (dot / norms).clamp(-1.0, 1.0),
        false if norm(a) == norm(b) => 1.0,
        false => 0.0,
    }
}

/// `vectors` scaled to length 1 (zero and NaN vectors become zeros), for ranking.
fn unit(vectors: &[Vec<f32>]) -> Vec<Vec<f32>> {
    vectors
        .iter()
        .map(|v| {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            match norm > 0.0 && norm.is_finite() {
                true => v.iter().map(|x| x / norm).collect(),
                false => vec![0.0; v.len()],
            }
        })
        .collect()
}

/// The `NEIGHBOURS` texts nearest each text (itself left out), by cosine; rows across the
/// pool (a calibration file may hold thousands of texts).
fn neighbours(vectors: &[Vec<f32>]) -> Vec<Vec<usize>> {
    use rayon::prelude::*;
    let unit = unit(vectors);
    let k = NEIGHBOURS.min(vectors.len().saturating_sub(1));
    (0..unit.len())
        .into_par_iter()
        .map(|i| {
            let mut others: Vec<(f32, usize)> = (0..unit.len())
                .filter(|&j| j != i)
                .map(|j| (unit[i].iter().zip(&unit[j]).map(|(a, b)| a * b).sum(), j))
                .collect();
            others.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            others.into_iter().take(k).map(|(_, j)| j).collect()
        })
        .collect()
}

/// The f32 vectors of the calibration texts and their neighbours, computed once for every
/// plan measured against them.
pub struct Reference {
    vectors: Vec<Vec<f32>>,
    neighbours: Vec<Vec<usize>>,
}

impl Reference {
    /// The reference of `vectors`.
    pub fn new(vectors: Vec<Vec<f32>>) -> Self {
        let neighbours = neighbours(&vectors);
        Self {
            vectors,
            neighbours,
        }
    }
}

/// The figures of `quantized` against `reference` (the same texts, in order).
pub fn measure(reference: &Reference, quantized: &[Vec<f32>]) -> Fidelity {
    let cosines: Vec<f64> = reference
        .vectors
        .iter()
        .zip(quantized)
        .map(|(a, b)| cosine(a, b))
        .map(|c| if c.is_nan() { 0.0 } else { c })
        .collect();
    let texts = cosines.len();
    let mean_cosine = cosines.iter().sum::<f64>() / texts.max(1) as f64;
    let min_cosine = cosines.iter().copied().fold(1.0, f64::min);
    let (a, b) = (&reference.neighbours, neighbours(quantized));
    let kept: usize = a
        .iter()
        .zip(&b)
        .map(|(a, b)| a.iter().filter(|j| b.contains(j)).count())
        .sum();
    let compared: usize = a.iter().map(Vec::len).sum();
    let neighbour_agreement = kept as f64 / compared.max(1) as f64;
    Fidelity {
        texts,
        mean_cosine,
        min_cosine,
        neighbour_agreement,
        passed: mean_cosine >= GATE.0 && min_cosine >= GATE.1 && neighbour_agreement >= GATE.2,
    }
}

/// The figures in one line.
pub fn describe(f: &Fidelity) -> String {
    format!(
        "mean cosine {:.5} (gate {}), min {:.5} (gate {}), {}-nearest-neighbour agreement {:.3} (gate {}) over {} texts",
        f.mean_cosine, GATE.0, f.min_cosine, GATE.1, NEIGHBOURS, f.neighbour_agreement, GATE.2, f.texts
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors(n: usize, seed: f32) -> Vec<Vec<f32>> {
        (0..n)
            .map(|i| (0..8).map(|d| ((i * 8 + d) as f32 * seed).sin()).collect())
            .collect()
    }

    #[test]
    fn equal_vectors_pass_and_scrambled_ones_fail() {
        let a = vectors(20, 0.7);
        let same = measure(&Reference::new(a.clone()), &a);
        assert!(same.mean_cosine > 1.0 - 1e-12 && same.min_cosine > 1.0 - 1e-12);
        assert_eq!(same.neighbour_agreement, 1.0);
        assert!(same.passed);
        let mut b = a.clone();
        b.swap(3, 4);
        let swapped = measure(&Reference::new(a.clone()), &b);
        assert!(!swapped.passed && swapped.min_cosine < 0.9, "{swapped:?}");
        let noisy: Vec<Vec<f32>> = a
            .iter()
            .map(|v| v.iter().map(|x| x + 0.3).collect())
            .collect();
        assert!(!measure(&Reference::new(a.clone()), &noisy).passed);
    }

    #[test]
    fn nan_and_zero_vectors_count_as_far() {
        let a = vectors(12, 0.3);
        let mut b = a.clone();
        b[0] = vec![f32::NAN; 8];
        b[1] = vec![0.0; 8];
        let f = measure(&Reference::new(a.clone()), &b);
        assert_eq!(f.min_cosine, 0.0);
        assert!(!f.passed);
    }
}
