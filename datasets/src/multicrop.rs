//! DINOv2 multi-crop augmentation (`DataAugmentationDINO`): two global crops and N local crops
//! per image, with random resized crops, flips and the DINOv2 photometric augmentations
//! (colour jitter, grayscale, Gaussian blur, solarisation). Seeded: the same seed and image give
//! the same crops.

use image::imageops::{self, FilterType};
use image::{DynamicImage, Rgb32FImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::transforms::{IMAGENET_MEAN, IMAGENET_STD};

/// The settings of `DataAugmentationDINO` (official defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct MultiCropConfig {
    pub global_size: u32,
    pub global_scale: (f64, f64),
    pub local_size: u32,
    pub local_scale: (f64, f64),
    pub local_crops: usize,
    /// Per channel (three for RGB images; one per band for [`crate::bands`]).
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Default for MultiCropConfig {
    fn default() -> Self {
        MultiCropConfig {
            global_size: 224,
            global_scale: (0.32, 1.0),
            local_size: 98,
            local_scale: (0.05, 0.32),
            local_crops: 8,
            mean: IMAGENET_MEAN.to_vec(),
            std: IMAGENET_STD.to_vec(),
        }
    }
}

/// The crops of one image, CHW f32 normalised.
#[derive(Debug, Clone)]
pub struct Crops {
    pub global: Vec<Vec<f32>>,
    pub local: Vec<Vec<f32>>,
}

/// torchvision `RandomResizedCrop.get_params`: area fraction in `scale`, log-uniform aspect in
/// [3/4, 4/3], ten tries, then a centre crop clamped to the allowed ratio.
pub(crate) fn resized_crop_box(
    rng: &mut StdRng,
    w: u32,
    h: u32,
    scale: (f64, f64),
) -> (u32, u32, u32, u32) {
    let area = (w * h) as f64;
    let (lr0, lr1) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale.0..=scale.1);
        let ratio = rng.random_range(lr0..=lr1).exp();
        let cw = (target * ratio).sqrt().round() as u32;
        let ch = (target / ratio).sqrt().round() as u32;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            let x = rng.random_range(0..=w - cw);
            let y = rng.random_range(0..=h - ch);
            return (x, y, cw, ch);
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (cw, ch) = if in_ratio < 3.0 / 4.0 {
        (w, (w as f64 / (3.0 / 4.0)).round() as u32)
    } else if in_ratio > 4.0 / 3.0 {
        ((h as f64 * 4.0 / 3.0).round() as u32, h)
    } else {
        (w, h)
    };
    (
        (w - cw.min(w)) / 2,
        (h - ch.min(h)) / 2,
        cw.min(w),
        ch.min(h),
    )
}

fn luminance(p: &[f32; 3]) -> f32 {
    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

fn rgb_to_hsv(p: [f32; 3]) -> [f32; 3] {
    let max = p[0].max(p[1]).max(p[2]);
    let min = p[0].min(p[1]).min(p[2]);
    let d = max - min;
    let h = if d == 0.0 {
        0.0
    } else if max == p[0] {
        ((p[1] - p[2]) / d).rem_euclid(6.0) / 6.0
    } else if max == p[1] {
        ((p[2] - p[0]) / d + 2.0) / 6.0
    } else {
        ((p[0] - p[1]) / d + 4.0) / 6.0
    };
    let s = if max == 0.0 { 0.0 } else { d / max };
    [h, s, max]
}

fn hsv_to_rgb(p: [f32; 3]) -> [f32; 3] {
    let [h, s, v] = p;
    let h6 = h.rem_euclid(1.0) * 6.0;
    let i = h6.floor();
    let f = h6 - i;
    let (a, b, c) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match i as u32 % 6 {
        0 => [v, c, a],
        1 => [b, v, a],
        2 => [a, v, c],
        3 => [a, b, v],
        4 => [c, a, v],
        _ => [v, a, b],
    }
}

/// torchvision `ColorJitter(0.4, 0.4, 0.2, 0.1)` with its random order of the four adjustments.
fn color_jitter(rng: &mut StdRng, img: &mut Rgb32FImage) {
    let brightness = rng.random_range(0.6f32..=1.4);
    let contrast = rng.random_range(0.6f32..=1.4);
    let saturation = rng.random_range(0.8f32..=1.2);
    let hue = rng.random_range(-0.1f32..=0.1);
    let mut order = [0usize, 1, 2, 3];
    for i in (1..4).rev() {
        let j = rng.random_range(0..=i);
        order.swap(i, j);
    }
    for op in order {
        match op {
            0 => img
                .pixels_mut()
                .for_each(|p| p.0 = p.0.map(|c| (c * brightness).clamp(0.0, 1.0))),
            1 => {
                let n = (img.width() * img.height()) as f32;
                let mean = img.pixels().map(|p| luminance(&p.0)).sum::<f32>() / n;
                img.pixels_mut().for_each(|p| {
                    p.0 =
                        p.0.map(|c| (contrast * c + (1.0 - contrast) * mean).clamp(0.0, 1.0))
                });
            }
            2 => img.pixels_mut().for_each(|p| {
                let g = luminance(&p.0);
                p.0 =
                    p.0.map(|c| (saturation * c + (1.0 - saturation) * g).clamp(0.0, 1.0));
            }),
            _ => img.pixels_mut().for_each(|p| {
                let mut hsv = rgb_to_hsv(p.0);
                hsv[0] += hue;
                p.0 = hsv_to_rgb(hsv);
            }),
        }
    }
}

fn grayscale(img: &mut Rgb32FImage) {
    img.pixels_mut().for_each(|p| {
        let g = luminance(&p.0);
        p.0 = [g; 3];
    });
}

fn solarize(img: &mut Rgb32FImage) {
    let t = 128.0 / 255.0;
    img.pixels_mut()
        .for_each(|p| p.0 = p.0.map(|c| if c >= t { 1.0 - c } else { c }));
}

fn to_chw(img: &Rgb32FImage, mean: &[f32], std: &[f32]) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0f32; 3 * w * h];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * w * h + i] = (p.0[c] - mean[c]) / std[c];
        }
    }
    out
}

/// One crop: resized crop, flip (p 0.5), colour jitter (p 0.8), grayscale (p 0.2), blur (p
/// `blur`, sigma in [0.1, 2]), solarise (p `solar`), normalise.
fn crop(
    rng: &mut StdRng,
    img: &Rgb32FImage,
    size: u32,
    scale: (f64, f64),
    blur: f64,
    solar: f64,
    cfg: &MultiCropConfig,
) -> Vec<f32> {
    let (x, y, w, h) = resized_crop_box(rng, img.width(), img.height(), scale);
    let view = imageops::crop_imm(img, x, y, w, h).to_image();
    let mut c = imageops::resize(&view, size, size, FilterType::CatmullRom);
    if rng.random_bool(0.5) {
        imageops::flip_horizontal_in_place(&mut c);
    }
    if rng.random_bool(0.8) {
        color_jitter(rng, &mut c);
    }
    if rng.random_bool(0.2) {
        grayscale(&mut c);
    }
    if rng.random_bool(blur) {
        let sigma = rng.random_range(0.1f32..=2.0);
        c = imageops::blur(&c, sigma);
    }
    if rng.random_bool(solar) {
        solarize(&mut c);
    }
    to_chw(&c, &cfg.mean, &cfg.std)
}

/// The DINOv2 crops of one RGB image for `seed`.
pub fn multi_crop(img: &DynamicImage, cfg: &MultiCropConfig, seed: u64) -> Crops {
    assert_eq!(cfg.mean.len(), 3, "RGB crops take three means");
    let mut rng = StdRng::seed_from_u64(seed);
    let rgb = img.to_rgb32f();
    let g = (cfg.global_size, cfg.global_scale);
    let global = vec![
        crop(&mut rng, &rgb, g.0, g.1, 1.0, 0.0, cfg),
        crop(&mut rng, &rgb, g.0, g.1, 0.1, 0.2, cfg),
    ];
    let local = (0..cfg.local_crops)
        .map(|_| {
            crop(
                &mut rng,
                &rgb,
                cfg.local_size,
                cfg.local_scale,
                0.5,
                0.0,
                cfg,
            )
        })
        .collect();
    Crops { global, local }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> DynamicImage {
        DynamicImage::ImageRgb8(image::RgbImage::from_fn(120, 90, |x, y| {
            image::Rgb([(x * 2) as u8, (y * 2) as u8, ((x + y) % 256) as u8])
        }))
    }

    #[test]
    fn makes_two_global_and_n_local_crops_reproducibly() {
        let cfg = MultiCropConfig {
            global_size: 32,
            local_size: 16,
            local_crops: 3,
            ..Default::default()
        };
        let a = multi_crop(&image(), &cfg, 7);
        assert_eq!(a.global.len(), 2);
        assert_eq!(a.local.len(), 3);
        assert!(a.global.iter().all(|c| c.len() == 3 * 32 * 32));
        assert!(a.local.iter().all(|c| c.len() == 3 * 16 * 16));
        assert!(a
            .global
            .iter()
            .chain(&a.local)
            .flatten()
            .all(|v| v.is_finite()));
        let b = multi_crop(&image(), &cfg, 7);
        assert_eq!(a.global, b.global);
        assert_eq!(a.local, b.local);
        let c = multi_crop(&image(), &cfg, 8);
        assert_ne!(a.global, c.global);
    }

    #[test]
    fn crop_boxes_respect_the_scale_range_and_the_image() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..200 {
            let (x, y, w, h) = resized_crop_box(&mut rng, 200, 100, (0.05, 0.32));
            assert!(x + w <= 200 && y + h <= 100 && w > 0 && h > 0);
            let frac = (w * h) as f64 / 20_000.0;
            assert!(frac < 0.4, "{frac}");
        }
    }

    #[test]
    fn hsv_round_trips() {
        for p in [
            [0.2f32, 0.5, 0.9],
            [1.0, 0.0, 0.0],
            [0.3, 0.3, 0.3],
            [0.9, 0.8, 0.1],
        ] {
            let q = hsv_to_rgb(rgb_to_hsv(p));
            for c in 0..3 {
                assert!((p[c] - q[c]).abs() < 1e-5, "{p:?} {q:?}");
            }
        }
    }
}
