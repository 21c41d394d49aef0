//! The linear probe: multinomial logistic regression on frozen features, trained full-batch
//! with AdamW (decoupled weight decay on the weights, not the bias). Features are
//! standardised with the training set's mean and std, which are stored with the head.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinearProbeConfig {
    pub lr: f64,
    pub weight_decay: f64,
    pub epochs: usize,
    pub seed: u64,
}

impl Default for LinearProbeConfig {
    fn default() -> Self {
        LinearProbeConfig {
            lr: 1e-2,
            weight_decay: 1e-4,
            epochs: 300,
            seed: 0,
        }
    }
}

/// A trained linear head: `scores = softmax(W · standardise(x) + b)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearProbe {
    pub dim: usize,
    pub classes: usize,
    /// [classes, dim]
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub config: LinearProbeConfig,
}

fn softmax_in_place(row: &mut [f64]) {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut s = 0.0;
    for v in row.iter_mut() {
        *v = (*v - m).exp();
        s += *v;
    }
    row.iter_mut().for_each(|v| *v /= s);
}

impl LinearProbe {
    fn standardised(&self, x: &[f32]) -> Vec<f32> {
        x.chunks(self.dim)
            .flat_map(|r| {
                r.iter()
                    .zip(&self.mean)
                    .zip(&self.std)
                    .map(|((v, m), s)| (v - m) / s)
            })
            .collect()
    }

    fn logits(&self, xs: &[f32]) -> Vec<f64> {
        let (d, c) = (self.dim, self.classes);
        xs.par_chunks(d)
            .flat_map_iter(|x| {
                (0..c).map(move |k| {
                    let w = &self.weight[k * d..(k + 1) * d];
                    self.bias[k] as f64
                        + w.iter().zip(x).map(|(a, b)| (*a * *b) as f64).sum::<f64>()
                })
            })
            .collect()
    }

    /// Class probabilities of `x` ([n, dim]): [n, classes].
    pub fn predict_proba(&self, x: &[f32]) -> Vec<f64> {
        let mut p = self.logits(&self.standardised(x));
        p.chunks_mut(self.classes).for_each(softmax_in_place);
        p
    }

    /// Train on `x` ([n, dim]) with `labels` in `0..classes`.
    pub fn train(
        x: &[f32],
        labels: &[usize],
        dim: usize,
        classes: usize,
        cfg: LinearProbeConfig,
    ) -> Self {
        let n = labels.len().max(1);
        let mut mean = vec![0f32; dim];
        let mut var = vec![0f32; dim];
        for r in x.chunks(dim) {
            mean.iter_mut().zip(r).for_each(|(m, v)| *m += v / n as f32);
        }
        for r in x.chunks(dim) {
            var.iter_mut()
                .zip(r.iter().zip(&mean))
                .for_each(|(s, (v, m))| *s += (v - m) * (v - m) / n as f32);
        }
        let std: Vec<f32> = var.iter().map(|v| v.sqrt().max(1e-6)).collect();
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let mut probe = LinearProbe {
            dim,
            classes,
            weight: (0..classes * dim)
                .map(|_| rng.random_range(-1.0f32..1.0) * 0.01)
                .collect(),
            bias: vec![0.0; classes],
            mean,
            std,
            config: cfg,
        };
        let xs = probe.standardised(x);
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let mut m = vec![0f64; classes * dim + classes];
        let mut v = vec![0f64; classes * dim + classes];
        for t in 1..=cfg.epochs {
            // Gradient of the mean cross-entropy.
            let mut p = probe.logits(&xs);
            p.chunks_mut(classes).for_each(softmax_in_place);
            for (row, &l) in p.chunks_mut(classes).zip(labels) {
                row[l] -= 1.0;
            }
            let grad: Vec<f64> = (0..classes)
                .into_par_iter()
                .flat_map_iter(|k| {
                    let mut g = vec![0f64; dim];
                    for (xr, pr) in xs.chunks(dim).zip(p.chunks(classes)) {
                        let e = pr[k];
                        g.iter_mut().zip(xr).for_each(|(a, b)| *a += e * *b as f64);
                    }
                    g.into_iter().map(|a| a / n as f64)
                })
                .chain(
                    (0..classes)
                        .into_par_iter()
                        .map(|k| p.chunks(classes).map(|r| r[k]).sum::<f64>() / n as f64),
                )
                .collect();
            let (c1, c2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
            for (i, g) in grad.iter().enumerate() {
                m[i] = b1 * m[i] + (1.0 - b1) * g;
                v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                let step = cfg.lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
                if i < classes * dim {
                    let w = &mut probe.weight[i];
                    *w = (*w as f64 * (1.0 - cfg.lr * cfg.weight_decay) - step) as f32;
                } else {
                    let b = &mut probe.bias[i - classes * dim];
                    *b = (*b as f64 - step) as f32;
                }
            }
        }
        probe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_gaussian_blobs() {
        let mut rng = StdRng::seed_from_u64(1);
        let (dim, classes) = (8, 3);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..300 {
            let c = i % classes;
            y.push(c);
            x.extend(
                (0..dim).map(|d| if d == c { 3.0 } else { 0.0 } + rng.random_range(-1.0f32..1.0)),
            );
        }
        let probe = LinearProbe::train(&x, &y, dim, classes, LinearProbeConfig::default());
        let p = probe.predict_proba(&x);
        let right = p
            .chunks(classes)
            .zip(&y)
            .filter(|(r, &l)| r.iter().enumerate().all(|(c, &v)| c == l || v < r[l]))
            .count();
        assert!(right as f64 / 300.0 > 0.95, "{right}");
        assert!(p
            .chunks(classes)
            .all(|r| (r.iter().sum::<f64>() - 1.0).abs() < 1e-9));
    }
}
