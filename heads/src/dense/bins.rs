//! Regression over bins, the output of Meta's high-resolution canopy-height model (Tolan et al.
//! 2024, `HighResCanopyHeight`, itself after AdaBins): the head predicts one score per height
//! bin, the scores become weights over the bins, and the height is the weighted mean of the bin
//! centres. Bins are `n` values linearly spaced over [min, max] metres, ends included.
//!
//! Weights: [`BinNorm::ReluEps`] (the default) is what Meta's model does (`relu(x) + eps`, then
//! divided by the sum over bins, eps = 0.1), so a head trained here has the same output
//! semantics as theirs and their weights could be loaded into it. Its floor of eps per bin keeps
//! every bin's gradient alive, and a height between two bins is reached by weighting two
//! neighbours without the winner-take-all push of a softmax. [`BinNorm::Softmax`] is there for
//! comparison.

use burn::tensor::activation::{relu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::error::{DenseError, DenseResult};

/// How bin scores become weights that sum to one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BinNorm {
    /// `(relu(x) + eps) / Σ (relu(x) + eps)`, Meta's choice (eps = 0.1).
    ReluEps { eps: f64 },
    /// `softmax(x)` over the bins.
    Softmax,
}

impl Default for BinNorm {
    fn default() -> Self {
        BinNorm::ReluEps { eps: 0.1 }
    }
}

/// `n` height bins over [min, max] and how their scores are normalised.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bins {
    pub n: usize,
    pub min: f64,
    pub max: f64,
    #[serde(default)]
    pub norm: BinNorm,
}

impl Bins {
    pub fn new(n: usize, min: f64, max: f64, norm: BinNorm) -> DenseResult<Self> {
        let b = Bins { n, min, max, norm };
        b.check()?;
        Ok(b)
    }

    pub fn check(&self) -> DenseResult<()> {
        if self.n < 2 {
            return Err(DenseError::Config(format!(
                "{} bins: at least 2 are needed",
                self.n
            )));
        }
        if !(self.min.is_finite() && self.max.is_finite() && self.min < self.max) {
            return Err(DenseError::Config(format!(
                "bin range [{}, {}]: min must be below max",
                self.min, self.max
            )));
        }
        if let BinNorm::ReluEps { eps } = self.norm {
            if eps.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
                return Err(DenseError::Config(format!("bin eps {eps} must be > 0")));
            }
        }
        Ok(())
    }

    /// The bin centres, `linspace(min, max, n)` (as `torch.linspace`).
    pub fn centres(&self) -> Vec<f32> {
        let step = (self.max - self.min) / (self.n - 1) as f64;
        (0..self.n)
            .map(|i| (self.min + step * i as f64) as f32)
            .collect()
    }

    /// Weights over the bins of `scores` [b, n, h, w], summing to one along dim 1.
    pub fn weights<B: Backend>(&self, scores: Tensor<B, 4>) -> Tensor<B, 4> {
        match self.norm {
            BinNorm::ReluEps { eps } => {
                let w = relu(scores).add_scalar(eps);
                let sum = w.clone().sum_dim(1);
                w / sum
            }
            BinNorm::Softmax => softmax(scores, 1),
        }
    }

    /// The expected height of `scores` [b, n, h, w]: [b, 1, h, w].
    pub fn expected<B: Backend>(&self, scores: Tensor<B, 4>) -> Tensor<B, 4> {
        let device = scores.device();
        let centres = Tensor::<B, 1>::from_data(TensorData::new(self.centres(), [self.n]), &device)
            .reshape([1, self.n, 1, 1]);
        (self.weights(scores) * centres).sum_dim(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn centres_are_linspace_and_expectations_are_weighted_means() {
        let b = Bins::new(5, 0.0, 40.0, BinNorm::default()).unwrap();
        assert_eq!(b.centres(), vec![0.0, 10.0, 20.0, 30.0, 40.0]);
        let device = Default::default();
        // All scores equal: uniform weights -> the midpoint, for both norms.
        let flat = Tensor::<Flex, 4>::zeros([1, 5, 1, 2], &device);
        for norm in [BinNorm::default(), BinNorm::Softmax] {
            let h = Bins { norm, ..b }.expected(flat.clone());
            let v = h.into_data().to_vec::<f32>().unwrap();
            assert!(v.iter().all(|x| (x - 20.0).abs() < 1e-4), "{v:?}");
        }
        // relu + eps: scores (0, 0, 0, 9.9, 0) -> weights (0.1, 0.1, 0.1, 10, 0.1) / 10.4.
        let s = Tensor::<Flex, 4>::from_data(
            TensorData::new(vec![0.0f32, 0.0, -3.0, 9.9, 0.0], [1, 5, 1, 1]),
            &device,
        );
        let h: f32 = b.expected(s).into_scalar();
        let want = (0.1 * (0.0 + 10.0 + 20.0 + 40.0) + 10.0 * 30.0) / 10.4;
        assert!((h - want as f32).abs() < 1e-4, "{h} vs {want}");
        assert!(Bins::new(1, 0.0, 1.0, BinNorm::Softmax).is_err());
        assert!(Bins::new(8, 3.0, 3.0, BinNorm::Softmax).is_err());
        assert!(Bins::new(8, 0.0, 3.0, BinNorm::ReluEps { eps: 0.0 }).is_err());
    }
}
