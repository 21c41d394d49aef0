//! H&E augmentation for pre-training: stain jitter in HED space (Ruifrok & Johnston colour
//! deconvolution with scikit-image's `rgb_from_hed` matrix; Tellez et al. 2018), 90° rotations
//! and flips. Every draw comes from the caller's seeded generator.
//!
//! HED values are scikit-image's units: `stains = log(rgb) / log(1e-6) · hed_from_rgb` with rgb in
//! (0, 1]; a strongly stained nucleus is about 0.05–0.15 in H. Unlike `skimage.color.rgb2hed`
//! negative stain values are not clipped, so `hed_to_rgb(rgb_to_hed(c)) == c` for every colour.

use image::RgbImage;
use nalgebra::Matrix3;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// scikit-image's `rgb_from_hed`: rows are the optical-density vectors of haematoxylin, eosin
/// and DAB.
pub const RGB_FROM_HED: [[f64; 3]; 3] =
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]];

const LOG_ADJUST: f64 = -13.815510557964274; // ln(1e-6)

/// scikit-image's `hed_from_rgb`: the inverse of [`RGB_FROM_HED`].
fn hed_from_rgb() -> [[f64; 3]; 3] {
    let inv = Matrix3::from_fn(|r, c| RGB_FROM_HED[r][c])
        .try_inverse()
        .expect("rgb_from_hed is invertible");
    std::array::from_fn(|r| std::array::from_fn(|c| inv[(r, c)]))
}

/// Row vector times matrix.
fn vm(v: [f64; 3], m: &[[f64; 3]; 3]) -> [f64; 3] {
    [0, 1, 2].map(|j| v[0] * m[0][j] + v[1] * m[1][j] + v[2] * m[2][j])
}

/// RGB (0..255) to HED stain amounts (scikit-image units, unclipped).
pub fn rgb_to_hed(p: [u8; 3], hed_from_rgb: &[[f64; 3]; 3]) -> [f64; 3] {
    let od = p.map(|c| (f64::from(c) / 255.0).max(1e-6).ln() / LOG_ADJUST);
    vm(od, hed_from_rgb)
}

/// HED stain amounts back to RGB (0..255, rounded and clipped).
pub fn hed_to_rgb(hed: [f64; 3]) -> [u8; 3] {
    let log_rgb = vm(hed.map(|s| s * LOG_ADJUST), &RGB_FROM_HED);
    log_rgb.map(|l| (l.exp() * 255.0).round().clamp(0.0, 255.0) as u8)
}

/// Per-channel stain jitter: `s' = s · α + β` with α ~ U(1 − alpha, 1 + alpha) and
/// β ~ U(−beta, beta) drawn per image and channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HedJitter {
    pub alpha: f64,
    pub beta: f64,
}

impl Default for HedJitter {
    fn default() -> Self {
        HedJitter {
            alpha: 0.05,
            beta: 0.01,
        }
    }
}

impl HedJitter {
    /// Applies one random draw to every pixel of `img`.
    pub fn apply<R: Rng + ?Sized>(&self, img: &RgbImage, rng: &mut R) -> RgbImage {
        let mut draw = |r: f64| {
            if r > 0.0 {
                rng.random_range(-r..r)
            } else {
                0.0
            }
        };
        let alpha = [0; 3].map(|_| 1.0 + draw(self.alpha));
        let beta = [0; 3].map(|_| draw(self.beta));
        let inv = hed_from_rgb();
        let mut out = img.clone();
        for p in out.pixels_mut() {
            let hed = rgb_to_hed(p.0, &inv);
            p.0 = hed_to_rgb([0, 1, 2].map(|c| hed[c] * alpha[c] + beta[c]));
        }
        out
    }
}

/// The pre-training augmentation for H&E tiles.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeAugment {
    /// Stain jitter (None: colours untouched).
    pub hed: Option<HedJitter>,
    /// A random multiple of 90° (tissue has no "up").
    pub rotate90: bool,
    /// A random horizontal flip (with the rotations: all 8 symmetries of the square).
    pub flip: bool,
}

impl Default for HeAugment {
    fn default() -> Self {
        HeAugment {
            hed: Some(HedJitter::default()),
            rotate90: true,
            flip: true,
        }
    }
}

impl HeAugment {
    /// No augmentation at all.
    pub fn none() -> HeAugment {
        HeAugment {
            hed: None,
            rotate90: false,
            flip: false,
        }
    }

    /// Stain jitter, then rotation, then flip; draws only from `rng`.
    pub fn apply<R: Rng + ?Sized>(&self, img: &RgbImage, rng: &mut R) -> RgbImage {
        let mut out = match &self.hed {
            Some(j) => j.apply(img, rng),
            None => img.clone(),
        };
        if self.rotate90 {
            out = match rng.random_range(0..4u8) {
                1 => image::imageops::rotate90(&out),
                2 => image::imageops::rotate180(&out),
                3 => image::imageops::rotate270(&out),
                _ => out,
            };
        }
        if self.flip && rng.random_bool(0.5) {
            out = image::imageops::flip_horizontal(&out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn tile() -> RgbImage {
        RgbImage::from_fn(16, 16, |x, y| {
            image::Rgb([200 - (x * 5) as u8, 100 + (y * 3) as u8, 180])
        })
    }

    #[test]
    fn matrix_inverse_is_an_inverse() {
        let inv = hed_from_rgb();
        for (i, m) in RGB_FROM_HED.iter().enumerate() {
            let row = vm(*m, &inv);
            for (j, v) in row.iter().enumerate() {
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        // hed_from_rgb[0] = inv(rgb_from_hed)[0], worked out by hand with the adjugate.
        assert!((inv[0][0] - 1.877_982_74).abs() < 1e-7);
        assert!((inv[0][1] + 1.007_678_69).abs() < 1e-7);
        assert!((inv[0][2] + 0.556_115_82).abs() < 1e-7);
    }

    #[test]
    fn hed_round_trips_and_white_is_stain_free() {
        let inv = hed_from_rgb();
        assert!(rgb_to_hed([255; 3], &inv).iter().all(|v| v.abs() < 1e-12));
        for c in [[200, 100, 180], [30, 40, 50], [255, 0, 128], [1, 1, 1]] {
            assert_eq!(hed_to_rgb(rgb_to_hed(c, &inv)), c);
        }
    }

    #[test]
    fn zero_jitter_is_identity_and_seeds_repeat() {
        let img = tile();
        let mut rng = StdRng::seed_from_u64(1);
        let none = HedJitter {
            alpha: 0.0,
            beta: 0.0,
        };
        assert_eq!(none.apply(&img, &mut rng), img);
        let aug = HeAugment::default();
        let a = aug.apply(&img, &mut StdRng::seed_from_u64(7));
        let b = aug.apply(&img, &mut StdRng::seed_from_u64(7));
        assert_eq!(a, b);
        let differ = (0..8).any(|s| aug.apply(&img, &mut StdRng::seed_from_u64(s)) != a);
        assert!(differ);
    }

    #[test]
    fn geometry_only_permutes_pixels() {
        let img = tile();
        let aug = HeAugment {
            hed: None,
            ..HeAugment::default()
        };
        let sum = |i: &RgbImage| i.pixels().map(|p| u64::from(p.0[0])).sum::<u64>();
        let s0 = sum(&img);
        for seed in 0..8 {
            let out = aug.apply(&img, &mut StdRng::seed_from_u64(seed));
            assert_eq!(sum(&out), s0);
        }
    }
}
