//! The classification protocol on frozen features: the linear probe's learning-rate ×
//! weight-decay sweep chosen on a validation split, and few-shot subsets (the kNN probe is
//! `dinoadapt_core::eval::knn::knn_votes`).

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::linear::{LinearProbe, LinearProbeConfig};
use crate::metrics::ClassificationMetrics;

/// One point of the linear sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    pub lr: f64,
    pub weight_decay: f64,
    pub val: ClassificationMetrics,
}

/// What a probe gave on one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub method: String,
    pub split: String,
    pub metrics: ClassificationMetrics,
}

/// Train a linear probe for every (lr, wd) of the grid on `train`, score each on `val`, and
/// return the sweep and the best probe (highest validation accuracy; ties to the first).
#[allow(clippy::too_many_arguments)]
pub fn sweep_linear(
    train: &[f32],
    train_labels: &[usize],
    val: &[f32],
    val_labels: &[usize],
    dim: usize,
    classes: usize,
    lrs: &[f64],
    wds: &[f64],
    epochs: usize,
    seed: u64,
) -> (Vec<SweepPoint>, LinearProbe) {
    let mut points = Vec::new();
    let mut best: Option<(f64, LinearProbe)> = None;
    for &lr in lrs {
        for &wd in wds {
            let cfg = LinearProbeConfig {
                lr,
                weight_decay: wd,
                epochs,
                seed,
            };
            let probe = LinearProbe::train(train, train_labels, dim, classes, cfg);
            let m = ClassificationMetrics::compute(val_labels, &probe.predict_proba(val), classes);
            if best.as_ref().is_none_or(|(a, _)| m.accuracy > *a) {
                best = Some((m.accuracy, probe));
            }
            points.push(SweepPoint {
                lr,
                weight_decay: wd,
                val: m,
            });
        }
    }
    (points, best.expect("a non-empty grid").1)
}

/// Indices of `k` samples per class (fewer when a class has fewer), seeded.
pub fn few_shot(labels: &[usize], classes: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for c in 0..classes {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        idx.shuffle(&mut rng);
        out.extend(idx.into_iter().take(k));
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_shot_takes_k_per_class() {
        let labels = [0, 1, 0, 1, 0, 2, 1, 0];
        let pick = few_shot(&labels, 3, 2, 7);
        assert_eq!(pick.len(), 5);
        for c in 0..3 {
            let n = pick.iter().filter(|&&i| labels[i] == c).count();
            assert_eq!(n, if c == 2 { 1 } else { 2 });
        }
        assert_eq!(pick, few_shot(&labels, 3, 2, 7));
    }
}
