//! Resampling a level-0 rectangle with fractional corners to an exact output size.
//!
//! A tile at 0.5 um/px of a 0.499 um/px scan spans 224.449 level-0 pixels; rounding that to 224
//! would make every tile 0.2 % too small. Here the source rectangle keeps its fractional origin
//! and extent: each output pixel centre maps to an exact source position and a separable kernel
//! (Lanczos3 or bilinear) is evaluated there, its support widened by the reduction factor when
//! downsampling (antialiasing, as PIL's `resize` does), so a tile covers exactly the extent asked.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::slide::Slide;

/// The resampling kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resample {
    /// Windowed sinc, radius 3 (sharp; the default for tiles).
    #[default]
    Lanczos3,
    /// Triangle, radius 1; with widened support when downsampling this is an area-like average
    /// (used for masks and thumbnails).
    Bilinear,
}

impl Resample {
    fn radius(self) -> f64 {
        match self {
            Resample::Lanczos3 => 3.0,
            Resample::Bilinear => 1.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Resample::Lanczos3 => {
                if x < 1e-9 {
                    1.0
                } else if x < 3.0 {
                    let px = std::f64::consts::PI * x;
                    3.0 * px.sin() * (px / 3.0).sin() / (px * px)
                } else {
                    0.0
                }
            }
            Resample::Bilinear => (1.0 - x).max(0.0),
        }
    }
}

/// Per output index: the first source index and the normalised weights.
fn weights(filter: Resample, start: f64, extent: f64, n_out: u32) -> Vec<(i64, Vec<f32>)> {
    let scale = extent / f64::from(n_out);
    let stretch = scale.max(1.0);
    let support = filter.radius() * stretch;
    (0..n_out)
        .map(|i| {
            let c = start + (f64::from(i) + 0.5) * scale;
            let lo = (c - support - 0.5).floor() as i64;
            let hi = (c + support - 0.5).ceil() as i64;
            let mut w: Vec<f64> = (lo..=hi)
                .map(|j| filter.weight((j as f64 + 0.5 - c) / stretch))
                .collect();
            let sum: f64 = w.iter().sum();
            if sum.abs() > 1e-12 {
                w.iter_mut().for_each(|v| *v /= sum);
            }
            (lo, w.into_iter().map(|v| v as f32).collect())
        })
        .collect()
}

/// Resamples the rectangle (`x`, `y`, `w`, `h`) of `src` (fractional, in `src` pixels) to
/// `out_w` x `out_h`. Source pixels beyond the image edge repeat the edge pixel.
pub fn resample_rect(
    src: &RgbImage,
    rect: [f64; 4],
    out_w: u32,
    out_h: u32,
    filter: Resample,
) -> RgbImage {
    let (sw, sh) = src.dimensions();
    let wx = weights(filter, rect[0], rect[2], out_w);
    let wy = weights(filter, rect[1], rect[3], out_h);
    let clamp = |j: i64, n: u32| j.clamp(0, i64::from(n) - 1) as usize;
    let raw = src.as_raw();
    // Horizontal pass: out_w x sh, f32.
    let mut tmp = vec![0f32; out_w as usize * sh as usize * 3];
    for y in 0..sh as usize {
        let row = &raw[y * sw as usize * 3..(y + 1) * sw as usize * 3];
        for (i, (lo, w)) in wx.iter().enumerate() {
            let mut acc = [0f32; 3];
            for (k, &wk) in w.iter().enumerate() {
                let j = clamp(lo + k as i64, sw) * 3;
                for (a, &s) in acc.iter_mut().zip(&row[j..j + 3]) {
                    *a += wk * f32::from(s);
                }
            }
            tmp[(y * out_w as usize + i) * 3..][..3].copy_from_slice(&acc);
        }
    }
    // Vertical pass.
    let mut out = RgbImage::new(out_w, out_h);
    let buf: &mut [u8] = &mut out;
    for (o, (lo, w)) in wy.iter().enumerate() {
        for i in 0..out_w as usize {
            let mut acc = [0f32; 3];
            for (k, &wk) in w.iter().enumerate() {
                let y = clamp(lo + k as i64, sh);
                let t = &tmp[(y * out_w as usize + i) * 3..][..3];
                for (a, &v) in acc.iter_mut().zip(t) {
                    *a += wk * v;
                }
            }
            let px = &mut buf[(o * out_w as usize + i) * 3..][..3];
            for (b, a) in px.iter_mut().zip(acc) {
                *b = a.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// Reads the level-0 rectangle `rect0` = (x, y, w, h) (fractional, level-0 px) from `level` and
/// resamples it to exactly `out_w` x `out_h`. Kernel tails that reach past the slide's edge
/// repeat the edge pixels (so the border tiles are not tinted by a white margin); a rectangle
/// wholly outside the slide reads white.
pub fn read_resampled(
    slide: &Slide,
    level: u32,
    rect0: [f64; 4],
    out_w: u32,
    out_h: u32,
    filter: Resample,
) -> Result<RgbImage> {
    let ds = slide.levels()[level as usize].downsample;
    let l = [rect0[0] / ds, rect0[1] / ds, rect0[2] / ds, rect0[3] / ds];
    let stretch = (l[2] / f64::from(out_w))
        .max(l[3] / f64::from(out_h))
        .max(1.0);
    let pad = (filter.radius() * stretch).ceil() as i64 + 1;
    let info = slide.levels()[level as usize];
    let (lw, lh) = (info.width as i64, info.height as i64);
    // The padded window, clipped to the level when that leaves something to read.
    let clip = |lo: i64, hi: i64, n: i64| {
        let (a, b) = (lo.max(0), hi.min(n));
        if b > a {
            (a, b)
        } else {
            (lo, hi)
        }
    };
    let (x, x1) = clip(
        l[0].floor() as i64 - pad,
        (l[0] + l[2]).ceil() as i64 + pad,
        lw,
    );
    let (y, y1) = clip(
        l[1].floor() as i64 - pad,
        (l[1] + l[3]).ceil() as i64 + pad,
        lh,
    );
    let (w, h) = ((x1 - x) as u32, (y1 - y) as u32);
    let to0 = |v: i64| (v as f64 * ds).round() as i64;
    let window = slide.read_region(level, to0(x), to0(y), w, h)?;
    let rect = [l[0] - x as f64, l[1] - y as f64, l[2], l[3]];
    Ok(resample_rect(&window, rect, out_w, out_h, filter))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 10) as u8, (y * 10) as u8, 100])
        })
    }

    #[test]
    fn identity_rect_is_identity() {
        let src = ramp(12, 9);
        for f in [Resample::Lanczos3, Resample::Bilinear] {
            let out = resample_rect(&src, [0.0, 0.0, 12.0, 9.0], 12, 9, f);
            assert_eq!(out, src, "{f:?}");
        }
    }

    #[test]
    fn integer_crop_is_a_crop() {
        let src = ramp(12, 9);
        let out = resample_rect(&src, [3.0, 2.0, 5.0, 4.0], 5, 4, Resample::Lanczos3);
        assert_eq!(out.get_pixel(0, 0).0, [30, 20, 100]);
        assert_eq!(out.get_pixel(4, 3).0, [70, 50, 100]);
    }

    #[test]
    fn halving_averages_a_linear_ramp() {
        let src = ramp(20, 20);
        let out = resample_rect(&src, [4.0, 4.0, 8.0, 8.0], 4, 4, Resample::Bilinear);
        // Output pixel 0 covers source pixels 4 and 5 (values 40, 50) → 45.
        assert_eq!(out.get_pixel(0, 0).0, [45, 45, 100]);
        assert_eq!(out.get_pixel(3, 0).0, [105, 45, 100]);
    }

    #[test]
    fn uniform_stays_uniform() {
        let src = RgbImage::from_pixel(30, 30, image::Rgb([200, 120, 180]));
        let out = resample_rect(&src, [1.3, 2.7, 22.449, 22.449], 7, 7, Resample::Lanczos3);
        assert!(out.pixels().all(|p| p.0 == [200, 120, 180]));
    }

    #[test]
    fn read_resampled_reads_the_exact_rectangle() {
        let slide = Slide::from_image("mem", ramp(24, 24), Some(0.5));
        let out =
            read_resampled(&slide, 0, [2.0, 3.0, 4.0, 4.0], 4, 4, Resample::Lanczos3).unwrap();
        assert_eq!(out.get_pixel(0, 0).0, [20, 30, 100]);
        assert_eq!(out.get_pixel(3, 3).0, [50, 60, 100]);
    }
}
