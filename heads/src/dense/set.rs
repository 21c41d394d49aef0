//! Frozen features with per-pixel targets, in memory: what dense heads train and are measured on.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::error::{DenseError, DenseResult};

/// Per-pixel targets of every sample, `[n, height, width]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum DenseTargets {
    /// Class indices in `0..classes`; `ignore_index` marks pixels without a label.
    Classes {
        values: Vec<u32>,
        classes: usize,
        ignore_index: u32,
    },
    /// Heights (metres); NaN marks pixels without a measurement.
    Heights(Vec<f32>),
}

/// `n` samples: tokens `[n, layers, 1 + patches, dim]` (class token then patches, row-major on
/// `grid`) and targets at pixel resolution `size` = (height, width).
#[derive(Debug, Clone)]
pub struct DenseSet {
    pub features: Vec<f32>,
    pub n: usize,
    pub layers: usize,
    pub dim: usize,
    pub grid: (usize, usize),
    pub size: (usize, usize),
    pub targets: DenseTargets,
}

impl DenseSet {
    /// Checks that the lengths fit the shapes and the class values the classes.
    pub fn new(
        features: Vec<f32>,
        (n, layers, dim): (usize, usize, usize),
        grid: (usize, usize),
        size: (usize, usize),
        targets: DenseTargets,
    ) -> DenseResult<Self> {
        let tokens = 1 + grid.0 * grid.1;
        if features.len() != n * layers * tokens * dim {
            return Err(DenseError::Shape(format!(
                "{} feature values for {n} samples of {layers} layers x {tokens} tokens x {dim}",
                features.len()
            )));
        }
        let plane = size.0 * size.1;
        let len = match &targets {
            DenseTargets::Classes {
                values,
                classes,
                ignore_index,
            } => {
                if let Some(&bad) = values
                    .iter()
                    .find(|&&v| v != *ignore_index && v as usize >= *classes)
                {
                    return Err(crate::segmentation_metrics::OutOfRange {
                        value: bad,
                        classes: *classes,
                    }
                    .into());
                }
                values.len()
            }
            DenseTargets::Heights(h) => h.len(),
        };
        if len != n * plane {
            return Err(DenseError::Shape(format!(
                "{len} target pixels for {n} samples of {}x{} px",
                size.0, size.1
            )));
        }
        Ok(DenseSet {
            features,
            n,
            layers,
            dim,
            grid,
            size,
            targets,
        })
    }

    pub fn tokens(&self) -> usize {
        1 + self.grid.0 * self.grid.1
    }

    /// Pixels with a valid target.
    pub fn valid_pixels(&self) -> usize {
        match &self.targets {
            DenseTargets::Classes {
                values,
                ignore_index,
                ..
            } => values.iter().filter(|&&v| v != *ignore_index).count(),
            DenseTargets::Heights(h) => h.iter().filter(|v| v.is_finite()).count(),
        }
    }

    /// The tokens of samples `idx` on `device`: [idx.len(), layers, tokens, dim].
    pub fn tokens_of<B: Backend>(&self, idx: &[usize], device: &B::Device) -> Tensor<B, 4> {
        let per = self.layers * self.tokens() * self.dim;
        let data: Vec<f32> = idx
            .iter()
            .flat_map(|&i| self.features[i * per..(i + 1) * per].iter().copied())
            .collect();
        Tensor::from_data(
            TensorData::new(data, [idx.len(), self.layers, self.tokens(), self.dim]),
            device,
        )
    }

    /// Targets of samples `idx`, host side, `[idx.len(), height, width]`.
    pub fn targets_of(&self, idx: &[usize]) -> DenseTargets {
        let plane = self.size.0 * self.size.1;
        let pick = |i: usize| i * plane..(i + 1) * plane;
        match &self.targets {
            DenseTargets::Classes {
                values,
                classes,
                ignore_index,
            } => DenseTargets::Classes {
                values: idx
                    .iter()
                    .flat_map(|&i| values[pick(i)].iter().copied())
                    .collect(),
                classes: *classes,
                ignore_index: *ignore_index,
            },
            DenseTargets::Heights(h) => DenseTargets::Heights(
                idx.iter()
                    .flat_map(|&i| h[pick(i)].iter().copied())
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_lengths_and_class_values() {
        let f = vec![0.0; 2 * 5 * 3];
        let t = |v: Vec<u32>| DenseTargets::Classes {
            values: v,
            classes: 2,
            ignore_index: 255,
        };
        let ok = DenseSet::new(f.clone(), (2, 1, 3), (2, 2), (1, 2), t(vec![0, 1, 255, 1]));
        assert_eq!(ok.unwrap().valid_pixels(), 3);
        assert!(DenseSet::new(f.clone(), (2, 1, 3), (2, 2), (1, 2), t(vec![0, 1, 2, 1])).is_err());
        assert!(DenseSet::new(f.clone(), (2, 1, 3), (2, 2), (1, 2), t(vec![0, 1])).is_err());
        assert!(DenseSet::new(f, (2, 2, 3), (2, 2), (1, 2), t(vec![0, 1, 0, 1])).is_err());
    }
}
