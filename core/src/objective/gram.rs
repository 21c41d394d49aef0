//! Gram anchoring (DINOv3 §4.2, `dinov3/loss/gram_loss.py`): a loss keeping the student's
//! patch-to-patch similarity (Gram) matrix close to that of a *Gram teacher*, an earlier
//! snapshot of the EMA teacher, so that dense features do not degrade in long runs.
//!
//! For patch features S (student) and G (Gram teacher) of one image, each [N, D] and
//! L2-normalised per patch, the loss is the mean squared difference of S Sᵀ and G Gᵀ over all
//! N² entries and all images (`img_level`), or of the [BN, BN] matrices of the whole batch.
//! Negative similarities may be clipped to zero first (`remove_neg`, both matrices; or
//! `remove_only_teacher_neg`: the teacher's, and the student's where both are negative).
//! The Gram teacher is loaded from the EMA teacher at `start_iteration` and refreshed every
//! `update_every` iterations after it (DINOv3's `it_load_ema_teacher`, `update_frequency`);
//! it may see the global crops at a higher resolution (`teacher_scale`), its patch features
//! then resampled to the student's grid with bicubic interpolation (DINOv3's
//! `gram_teacher_crops_size` and `global_teacher_resize_method`; DINOv3 cuts the Gram teacher's
//! crops from the source image at the larger size, here the global crops are resampled).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::vit::pos_embed::axis_matrix_cached;
use crate::vit::PosEmbedInterpolation;

/// Which negative similarities are set to zero before the matrices are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GramNegatives {
    /// Keep every similarity.
    Keep,
    /// Zero the negative entries of both matrices (DINOv3's `remove_neg`).
    #[default]
    RemoveBoth,
    /// Zero the teacher's negative entries, and the student's where both are negative
    /// (`remove_only_teacher_neg`).
    RemoveTeacherOnly,
}

/// The Gram anchoring term of the objective (`[loss.gram]` in a recipe); off while `weight` is 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GramConfig {
    /// Weight of the term in the total loss (DINOv3: 2.0 in the Gram stage); 0 turns it off.
    pub weight: f64,
    /// Iteration at which the Gram teacher is first loaded from the EMA teacher; the term
    /// counts from then on.
    pub start_iteration: usize,
    /// Refresh the Gram teacher from the EMA teacher every this many iterations after the
    /// start (0: keep the first snapshot).
    pub update_every: usize,
    /// L2-normalise each patch feature first (cosine similarities).
    pub normalize: bool,
    /// One Gram matrix per image (true) or one over the whole batch's patches.
    pub img_level: bool,
    pub negatives: GramNegatives,
    /// The Gram teacher sees the global crops resampled by this factor (DINOv3's high-resolution
    /// Gram teacher); its patch features are then resampled back to the student's grid.
    pub teacher_scale: f64,
}

impl Default for GramConfig {
    fn default() -> Self {
        GramConfig {
            weight: 0.0,
            start_iteration: 0,
            update_every: 0,
            normalize: true,
            img_level: true,
            negatives: GramNegatives::RemoveBoth,
            teacher_scale: 1.0,
        }
    }
}

impl GramConfig {
    pub fn enabled(&self) -> bool {
        self.weight > 0.0
    }

    /// Whether the Gram teacher is (re)loaded from the EMA teacher before `iteration`.
    pub fn refresh_at(&self, iteration: usize) -> bool {
        if !self.enabled() || iteration < self.start_iteration {
            return false;
        }
        let since = iteration - self.start_iteration;
        since == 0 || (self.update_every > 0 && since.is_multiple_of(self.update_every))
    }

    /// Why the settings cannot be used, if they cannot.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.weight >= 0.0 && self.weight.is_finite()) {
            return Err(format!(
                "loss.gram.weight must be ≥ 0 (got {})",
                self.weight
            ));
        }
        if !(self.teacher_scale >= 1.0 && self.teacher_scale <= 4.0) {
            return Err(format!(
                "loss.gram.teacher_scale must be in [1, 4] (got {})",
                self.teacher_scale
            ));
        }
        Ok(())
    }
}

fn l2_normalize<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    // F.normalize: x / max(||x||, 1e-12).
    let norm = x
        .clone()
        .powf_scalar(2.0)
        .sum_dim(D - 1)
        .sqrt()
        .clamp_min(1e-12);
    x / norm
}

/// The Gram loss between student patch features and the Gram teacher's, both [B, N, D].
pub fn gram_loss<B: Backend>(
    student: Tensor<B, 3>,
    teacher: Tensor<B, 3>,
    cfg: &GramConfig,
) -> Tensor<B, 1> {
    let (student, teacher) = if cfg.normalize {
        (l2_normalize(student), l2_normalize(teacher))
    } else {
        (student, teacher)
    };
    let (student, teacher) = if cfg.img_level {
        (student, teacher)
    } else {
        let [b, n, d] = student.dims();
        (
            student.reshape([1, b * n, d]),
            teacher.reshape([1, b * n, d]),
        )
    };
    let s = student.clone().matmul(student.swap_dims(1, 2));
    let t = teacher.clone().matmul(teacher.swap_dims(1, 2));
    let (s, t) = match cfg.negatives {
        GramNegatives::Keep => (s, t),
        GramNegatives::RemoveBoth => (s.clamp_min(0.0), t.clamp_min(0.0)),
        GramNegatives::RemoveTeacherOnly => {
            let both = s
                .clone()
                .lower_elem(0.0)
                .bool_and(t.clone().lower_elem(0.0));
            (s.mask_fill(both, 0.0), t.clamp_min(0.0))
        }
    };
    (s - t).powf_scalar(2.0).mean()
}

/// Features [B, h w, D] on a `from` = (h, w) grid resampled to a `to` grid, as PyTorch's
/// `F.interpolate(size=to, mode="bicubic", align_corners=False)` (with `antialias` when
/// downsampling) resamples them: the width first, then the height, each a matrix product.
/// Used for the Gram teacher's patch features and for its higher-resolution crops (D = the
/// image's channels).
pub fn resample_grid<B: Backend>(
    x: Tensor<B, 3>,
    from: (usize, usize),
    to: (usize, usize),
    antialias: bool,
) -> Tensor<B, 3> {
    if from == to {
        return x;
    }
    let [b, n, d] = x.dims();
    assert_eq!(n, from.0 * from.1, "features on a {from:?} grid");
    let device = x.device();
    let mode = if antialias {
        PosEmbedInterpolation::BicubicAntialias
    } else {
        PosEmbedInterpolation::Bicubic
    };
    let matrix = |input: usize, output: usize| {
        Tensor::<B, 2>::from_data(
            TensorData::new(
                axis_matrix_cached(mode, input, output).to_vec(),
                [output, input],
            ),
            &device,
        )
    };
    let (h, w) = from;
    let (oh, ow) = to;
    let wide = matrix(w, ow)
        .unsqueeze_dim::<3>(0)
        .expand([b * h, ow, w])
        .matmul(x.reshape([b * h, w, d]));
    matrix(h, oh)
        .unsqueeze_dim::<3>(0)
        .expand([b, oh, h])
        .matmul(wide.reshape([b, h, ow * d]))
        .reshape([b, oh * ow, d])
}

/// Images [B, C, H, W] resampled to `to` = (H', W') pixels (bicubic, antialiased when
/// downsampling), for the Gram teacher's higher-resolution view of the global crops.
pub fn resample_images<B: Backend>(images: Tensor<B, 4>, to: (usize, usize)) -> Tensor<B, 4> {
    let [b, c, h, w] = images.dims();
    if (h, w) == to {
        return images;
    }
    let down = to.0 < h || to.1 < w;
    let x = images.reshape([b, c, h * w]).swap_dims(1, 2);
    resample_grid(x, (h, w), to, down)
        .swap_dims(1, 2)
        .reshape([b, c, to.0, to.1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, ElementConversion};

    type AB = Autodiff<Flex>;

    fn random(shape: [usize; 3], seed: u64) -> Tensor<Flex, 3> {
        Flex::seed(&Default::default(), seed);
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    fn value<B: Backend>(t: Tensor<B, 1>) -> f64 {
        t.into_scalar().elem::<f64>()
    }

    #[test]
    fn zero_against_itself_in_every_setting() {
        let x = random([2, 5, 4], 1);
        for negatives in [
            GramNegatives::Keep,
            GramNegatives::RemoveBoth,
            GramNegatives::RemoveTeacherOnly,
        ] {
            for img_level in [true, false] {
                let cfg = GramConfig {
                    weight: 1.0,
                    img_level,
                    negatives,
                    ..GramConfig::default()
                };
                assert_eq!(value(gram_loss(x.clone(), x.clone(), &cfg)), 0.0);
            }
        }
    }

    /// The loss by hand for one image of two patches: cosine 0 against cosine 1.
    #[test]
    fn matches_the_definition_on_a_small_case() {
        let dev = Default::default();
        let s =
            Tensor::<Flex, 3>::from_data(TensorData::new(vec![1f32, 0., 0., 2.], [1, 2, 2]), &dev);
        let t =
            Tensor::<Flex, 3>::from_data(TensorData::new(vec![1f32, 0., 3., 0.], [1, 2, 2]), &dev);
        // Student Gram [[1,0],[0,1]], teacher [[1,1],[1,1]]: two entries differ by 1.
        let cfg = GramConfig {
            weight: 1.0,
            ..GramConfig::default()
        };
        assert!((value(gram_loss(s, t, &cfg)) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn negative_similarities_are_removed_as_configured() {
        let dev = Default::default();
        // Student patches opposite (cosine -1), teacher patches opposite too.
        let s =
            Tensor::<Flex, 3>::from_data(TensorData::new(vec![1f32, 0., -1., 0.], [1, 2, 2]), &dev);
        let t =
            Tensor::<Flex, 3>::from_data(TensorData::new(vec![0f32, 1., 1., 0.], [1, 2, 2]), &dev);
        let loss = |negatives| {
            let cfg = GramConfig {
                weight: 1.0,
                negatives,
                ..GramConfig::default()
            };
            value(gram_loss(s.clone(), t.clone(), &cfg))
        };
        // Keep: off-diagonal -1 against 0 -> 2 / 4.
        assert!((loss(GramNegatives::Keep) - 0.5).abs() < 1e-6);
        // Both clipped: -1 becomes 0, equal to the teacher's 0.
        assert!(loss(GramNegatives::RemoveBoth).abs() < 1e-6);
        // Teacher-only: the teacher's 0 is not negative, so the student's -1 stays.
        assert!((loss(GramNegatives::RemoveTeacherOnly) - 0.5).abs() < 1e-6);
    }

    /// The autodiff gradient against central differences, entry by entry.
    #[test]
    fn gradient_matches_finite_differences() {
        let s0 = random([2, 4, 3], 7);
        let t = random([2, 4, 3], 8);
        for (img_level, negatives) in [
            (true, GramNegatives::Keep),
            (false, GramNegatives::RemoveBoth),
        ] {
            let cfg = GramConfig {
                weight: 1.0,
                img_level,
                negatives,
                ..GramConfig::default()
            };
            let s = Tensor::<AB, 3>::from_inner(s0.clone()).require_grad();
            let loss = gram_loss(s.clone(), Tensor::from_inner(t.clone()), &cfg);
            let grads = loss.backward();
            let g: Vec<f32> = s.grad(&grads).unwrap().into_data().to_vec().unwrap();
            let base: Vec<f32> = s0.clone().into_data().to_vec().unwrap();
            let eps = 1e-3f32;
            let at = |v: Vec<f32>| {
                let x = Tensor::<Flex, 3>::from_data(
                    TensorData::new(v, [2, 4, 3]),
                    &Default::default(),
                );
                value(gram_loss(x, t.clone(), &cfg))
            };
            for i in 0..base.len() {
                let (mut up, mut down) = (base.clone(), base.clone());
                up[i] += eps;
                down[i] -= eps;
                let numeric = (at(up) - at(down)) / (2.0 * f64::from(eps));
                assert!(
                    (numeric - f64::from(g[i])).abs() < 2e-3 + 2e-2 * numeric.abs(),
                    "entry {i} ({img_level}, {negatives:?}): autodiff {} numeric {numeric}",
                    g[i]
                );
            }
        }
    }

    #[test]
    fn resampling_keeps_a_constant_field_and_the_shape() {
        let dev = Default::default();
        let x = Tensor::<Flex, 3>::ones([2, 36, 3], &dev).mul_scalar(0.5);
        let y = resample_grid(x, (6, 6), (3, 3), true);
        assert_eq!(y.dims(), [2, 9, 3]);
        let v: Vec<f32> = y.into_data().to_vec().unwrap();
        assert!(v.iter().all(|a| (a - 0.5).abs() < 1e-5));
    }

    #[test]
    fn the_teacher_is_loaded_at_the_start_and_refreshed_on_schedule() {
        let cfg = GramConfig {
            weight: 1.0,
            start_iteration: 10,
            update_every: 5,
            ..GramConfig::default()
        };
        let at: Vec<usize> = (0..30).filter(|&i| cfg.refresh_at(i)).collect();
        assert_eq!(at, vec![10, 15, 20, 25]);
        assert!(!GramConfig::default().refresh_at(0));
    }
}
