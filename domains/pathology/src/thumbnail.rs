//! The whole slide at a downsample: read from the closest finer pyramid level in chunks (so a
//! single-level gigapixel scan is never held at full resolution) and area-averaged down.

use image::RgbImage;
use rayon::prelude::*;

use crate::error::Result;
use crate::resample::{read_resampled, Resample};
use crate::slide::Slide;

/// Largest source window read at once, in level pixels per side.
const MAX_WINDOW: f64 = 4096.0;

/// The slide at `downsample` level-0 pixels per output pixel: `ceil(width / downsample)` x
/// `ceil(height / downsample)` pixels; output pixel (i, j) covers level-0
/// `[i * downsample, (i + 1) * downsample)` (the part of the last row/column past the slide's
/// edge repeats the edge).
pub fn read_downsampled(slide: &Slide, downsample: f64) -> Result<RgbImage> {
    let downsample = downsample.max(1.0);
    let (w0, h0) = slide.dimensions();
    let out_w = ((w0 as f64 / downsample).ceil() as u32).max(1);
    let out_h = ((h0 as f64 / downsample).ceil() as u32).max(1);
    let level = slide.level_for_downsample(downsample);
    let factor = downsample / slide.levels()[level as usize].downsample;
    // Cells of at most 128 output px: even a small slide's thumbnail is read by every thread.
    let chunk = ((MAX_WINDOW / factor).floor() as u32).clamp(16, 128);
    let mut cells = Vec::new();
    for y in (0..out_h).step_by(chunk as usize) {
        for x in (0..out_w).step_by(chunk as usize) {
            cells.push((x, y, chunk.min(out_w - x), chunk.min(out_h - y)));
        }
    }
    let parts: Vec<(u32, u32, RgbImage)> = cells
        .into_par_iter()
        .map(|(x, y, w, h)| {
            let rect0 = [
                f64::from(x) * downsample,
                f64::from(y) * downsample,
                f64::from(w) * downsample,
                f64::from(h) * downsample,
            ];
            read_resampled(slide, level, rect0, w, h, Resample::Bilinear).map(|img| (x, y, img))
        })
        .collect::<Result<_>>()?;
    let mut out = RgbImage::new(out_w, out_h);
    for (x, y, img) in parts {
        image::imageops::replace(&mut out, &img, i64::from(x), i64::from(y));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uniform_slide_downsamples_to_uniform_with_white_margin() {
        let img = RgbImage::from_pixel(100, 60, image::Rgb([200, 100, 150]));
        let slide = Slide::from_image("mem", img, Some(0.5));
        let t = read_downsampled(&slide, 8.0).unwrap();
        assert_eq!(t.dimensions(), (13, 8));
        assert_eq!(t.get_pixel(5, 3).0, [200, 100, 150]);
        // The last column covers level-0 96..104, half outside: the edge repeats.
        assert_eq!(t.get_pixel(12, 7).0, [200, 100, 150]);
    }
}
