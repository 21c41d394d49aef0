//! Losses of the dense heads, on valid pixels only.
//!
//! - segmentation: cross-entropy averaged over pixels whose truth is not the ignore index, plus
//!   optionally `dice_weight` × the soft Dice loss (1 − mean over classes of
//!   (2 Σ p·y + 1) / (Σ p + Σ y + 1) on valid pixels; smoothing 1 keeps absent classes at ~0 loss);
//! - heights: absolute (default) or squared error averaged over pixels with a finite target.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::set::DenseTargets;

/// The per-pixel error of height regression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RegressionLoss {
    /// Mean absolute error: robust to the outliers of lidar canopy models (the default).
    #[default]
    L1,
    /// Mean squared error.
    L2,
}

/// Targets of a batch on the device, as the losses need them.
pub enum LossTargets<B: Backend> {
    /// One-hot truth [b, classes, h, w] (all zero at ignored pixels) and the valid mask
    /// [b, 1, h, w].
    Classes {
        one_hot: Tensor<B, 4>,
        valid: Tensor<B, 4>,
    },
    /// Heights with invalid pixels set to 0, [b, 1, h, w], and the valid mask.
    Heights {
        values: Tensor<B, 4>,
        valid: Tensor<B, 4>,
    },
}

impl<B: Backend> LossTargets<B> {
    /// Upload `targets` of `n` samples of `size` pixels.
    pub fn new(targets: &DenseTargets, n: usize, size: (usize, usize), device: &B::Device) -> Self {
        let plane = size.0 * size.1;
        let t = |data: Vec<f32>, c: usize| {
            Tensor::<B, 4>::from_data(TensorData::new(data, [n, c, size.0, size.1]), device)
        };
        match targets {
            DenseTargets::Classes {
                values,
                classes,
                ignore_index,
            } => {
                let mut one_hot = vec![0f32; n * classes * plane];
                let mut valid = vec![0f32; n * plane];
                for (i, &v) in values.iter().enumerate() {
                    if v != *ignore_index {
                        let (s, p) = (i / plane, i % plane);
                        one_hot[(s * classes + v as usize) * plane + p] = 1.0;
                        valid[i] = 1.0;
                    }
                }
                LossTargets::Classes {
                    one_hot: t(one_hot, *classes),
                    valid: t(valid, 1),
                }
            }
            DenseTargets::Heights(h) => {
                let valid: Vec<f32> = h.iter().map(|v| v.is_finite() as u8 as f32).collect();
                let values = h
                    .iter()
                    .map(|&v| if v.is_finite() { v } else { 0.0 })
                    .collect();
                LossTargets::Heights {
                    values: t(values, 1),
                    valid: t(valid, 1),
                }
            }
        }
    }
}

/// Cross-entropy of `logits` [b, c, h, w] over valid pixels (+ `dice_weight` × soft Dice).
pub fn segmentation_loss<B: Backend>(
    logits: Tensor<B, 4>,
    one_hot: Tensor<B, 4>,
    valid: Tensor<B, 4>,
    dice_weight: f64,
) -> Tensor<B, 1> {
    let count = valid.clone().sum().clamp_min(1.0);
    let log_p = log_softmax(logits, 1);
    let ce = (log_p.clone() * one_hot.clone()).sum().neg() / count;
    if dice_weight <= 0.0 {
        return ce;
    }
    let p = log_p.exp() * valid;
    let classes = one_hot.dims()[1];
    let per_class = |t: Tensor<B, 4>| t.swap_dims(0, 1).reshape([classes as i32, -1]).sum_dim(1);
    let inter = per_class(p.clone() * one_hot.clone());
    let total = per_class(p) + per_class(one_hot);
    let dice = (inter.mul_scalar(2.0).add_scalar(1.0) / total.add_scalar(1.0)).mean();
    ce + dice.neg().add_scalar(1.0).mul_scalar(dice_weight)
}

/// Mean error of `heights` [b, 1, h, w] over valid pixels.
pub fn regression_loss<B: Backend>(
    heights: Tensor<B, 4>,
    values: Tensor<B, 4>,
    valid: Tensor<B, 4>,
    loss: RegressionLoss,
) -> Tensor<B, 1> {
    let count = valid.clone().sum().clamp_min(1.0);
    let d = (heights - values) * valid;
    let e = match loss {
        RegressionLoss::L1 => d.abs(),
        RegressionLoss::L2 => d.powi_scalar(2),
    };
    e.sum() / count
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn ignored_pixels_do_not_count() {
        let device = Default::default();
        // 1 sample, 2 classes, 1 x 3 px; truth 0, ignore, 1; logits favour class 0 everywhere.
        let targets = DenseTargets::Classes {
            values: vec![0, 255, 1],
            classes: 2,
            ignore_index: 255,
        };
        let LossTargets::Classes { one_hot, valid } =
            LossTargets::<Flex>::new(&targets, 1, (1, 3), &device)
        else {
            unreachable!()
        };
        let logits = Tensor::<Flex, 4>::from_data(
            TensorData::new(vec![2.0f32, 2.0, 2.0, 0.0, 0.0, 0.0], [1, 2, 1, 3]),
            &device,
        );
        let l: f32 =
            segmentation_loss(logits.clone(), one_hot.clone(), valid.clone(), 0.0).into_scalar();
        let (p0, p1) = (1.0 / (1.0 + (-2f64).exp()), 1.0 / (1.0 + 2f64.exp()));
        let want = -(p0.ln() + p1.ln()) / 2.0;
        assert!((l as f64 - want).abs() < 1e-5, "{l} vs {want}");
        let with_dice: f32 = segmentation_loss(logits, one_hot, valid, 0.5).into_scalar();
        assert!(with_dice > l);

        let h = DenseTargets::Heights(vec![1.0, f32::NAN, 3.0]);
        let LossTargets::Heights { values, valid } =
            LossTargets::<Flex>::new(&h, 1, (1, 3), &device)
        else {
            unreachable!()
        };
        let pred = Tensor::<Flex, 4>::from_data(
            TensorData::new(vec![2.0f32, 100.0, 3.0], [1, 1, 1, 3]),
            &device,
        );
        let l1: f32 = regression_loss(
            pred.clone(),
            values.clone(),
            valid.clone(),
            RegressionLoss::L1,
        )
        .into_scalar();
        let l2: f32 = regression_loss(pred, values, valid, RegressionLoss::L2).into_scalar();
        assert!(
            (l1 - 0.5).abs() < 1e-6 && (l2 - 0.5).abs() < 1e-6,
            "{l1} {l2}"
        );
    }
}
