//! Tissue detection on a low-resolution view of the slide.
//!
//! Steps: the slide at about [`TissueConfig::mask_mpp`] um/px (at most `max_side` px long) →
//! HSV saturation → Otsu threshold (never below `min_saturation`, so a blank slide finds no
//! tissue) → optional pen-mark removal (strongly blue, green or black pixels) → median filter →
//! closing then opening → hole filling → connected components of at least `min_area_um2` →
//! contours in level-0 pixels (crack tracing + Douglas–Peucker), GeoJSON for QuPath and a QC
//! thumbnail with the contours drawn in green.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use dinoadapt_core::io::write_atomically;

use image::{GrayImage, Luma, Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::contours::{geojson, simplify_ring, trace_polygons, Polygon};
use crate::error::{PathologyError, Result};
use crate::morphology::Binary;
use crate::slide::Slide;
use crate::thumbnail::read_downsampled;

/// Tissue detection parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TissueConfig {
    /// Pixel size of the mask in um (8 um/px: 16x below a 20x scan).
    pub mask_mpp: f64,
    /// The mask's long side is at most this many pixels (coarser mask for huge slides).
    pub max_side: u32,
    /// Lowest saturation threshold (0..255) whatever Otsu says.
    pub min_saturation: u8,
    /// Median filter window in mask pixels (odd; 1 = none).
    pub median_size: usize,
    /// Radius in mask pixels of the closing then opening (0 = none).
    pub morph_radius: usize,
    /// Components smaller than this many um² are dropped.
    pub min_area_um2: f64,
    /// Enclosed background larger than this many um² stays a hole (None: fill every hole).
    pub max_hole_um2: Option<f64>,
    /// Remove strongly blue, green and black pixels (marker pen, dirt) before thresholding.
    pub filter_pen: bool,
    /// Douglas–Peucker tolerance in mask pixels.
    pub simplify_px: f64,
}

impl Default for TissueConfig {
    fn default() -> Self {
        TissueConfig {
            mask_mpp: 8.0,
            max_side: 2048,
            min_saturation: 20,
            median_size: 7,
            morph_radius: 2,
            min_area_um2: 10_000.0,
            max_hole_um2: None,
            filter_pen: true,
            simplify_px: 1.0,
        }
    }
}

/// A binary tissue mask over the whole slide.
#[derive(Debug, Clone, PartialEq)]
pub struct TissueMask {
    /// 255 = tissue, 0 = background.
    pub mask: GrayImage,
    /// Level-0 pixels per mask pixel: mask pixel (i, j) covers level-0
    /// `[i * downsample, (i + 1) * downsample)` x `[j * downsample, (j + 1) * downsample)`.
    pub downsample: f64,
}

impl TissueMask {
    /// A mask saying "all tissue" for a slide of level-0 size `width` x `height`.
    pub fn full(width: u64, height: u64, downsample: f64) -> TissueMask {
        let w = ((width as f64 / downsample).ceil() as u32).max(1);
        let h = ((height as f64 / downsample).ceil() as u32).max(1);
        TissueMask {
            mask: GrayImage::from_pixel(w, h, Luma([255])),
            downsample,
        }
    }

    /// Fraction of mask pixels that are tissue.
    pub fn fraction(&self) -> f64 {
        let n = self.mask.pixels().filter(|p| p.0[0] > 0).count();
        n as f64 / (self.mask.width() as f64 * self.mask.height() as f64)
    }

    /// Area-weighted tissue fraction of the level-0 rectangle (x, y, w, h).
    pub fn fraction_in(&self, rect0: [f64; 4]) -> f64 {
        let d = self.downsample;
        let (x0, y0) = (rect0[0] / d, rect0[1] / d);
        let (x1, y1) = ((rect0[0] + rect0[2]) / d, (rect0[1] + rect0[3]) / d);
        let (mw, mh) = (self.mask.width() as i64, self.mask.height() as i64);
        let area = (x1 - x0) * (y1 - y0);
        if area <= 0.0 {
            return 0.0;
        }
        let mut tissue = 0.0;
        for j in (y0.floor() as i64).max(0)..(y1.ceil() as i64).min(mh) {
            let oy = (y1.min(j as f64 + 1.0) - y0.max(j as f64)).max(0.0);
            for i in (x0.floor() as i64).max(0)..(x1.ceil() as i64).min(mw) {
                if self.mask.get_pixel(i as u32, j as u32).0[0] > 0 {
                    let ox = (x1.min(i as f64 + 1.0) - x0.max(i as f64)).max(0.0);
                    tissue += ox * oy;
                }
            }
        }
        tissue / area
    }
}

/// What tissue detection found.
#[derive(Debug, Clone)]
pub struct TissueDetection {
    pub mask: TissueMask,
    /// The slide at the mask's resolution (what was thresholded).
    pub thumbnail: RgbImage,
    /// One polygon per kept component, in level-0 pixel coordinates.
    pub polygons: Vec<Polygon>,
    /// The saturation threshold used (0..255).
    pub threshold: u8,
    /// The mask's pixel size in um.
    pub mask_mpp: f64,
}

impl TissueDetection {
    /// The contours as a GeoJSON FeatureCollection of "Tissue" annotations (QuPath imports it
    /// with File > Import objects; coordinates are level-0 pixels).
    pub fn geojson(&self) -> serde_json::Value {
        geojson(&self.polygons, "Tissue", [0, 200, 0])
    }

    /// Writes [`TissueDetection::geojson`] to `path` (atomically).
    pub fn write_geojson(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string(&self.geojson()).map_err(|e| PathologyError::Write {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        write_atomic(path, |w| w.write_all(text.as_bytes()))
    }

    /// The thumbnail with every contour drawn in green.
    pub fn qc_image(&self) -> RgbImage {
        let mut img = self.thumbnail.clone();
        let s = 1.0 / self.mask.downsample;
        for p in &self.polygons {
            for ring in std::iter::once(&p.exterior).chain(&p.holes) {
                for seg in ring.windows(2) {
                    draw_line(
                        &mut img,
                        [seg[0][0] * s, seg[0][1] * s],
                        [seg[1][0] * s, seg[1][1] * s],
                    );
                }
            }
        }
        img
    }

    /// Writes [`TissueDetection::qc_image`] as PNG to `path` (atomically).
    pub fn write_qc_png(&self, path: &Path) -> Result<()> {
        let img = self.qc_image();
        write_atomic(path, |w| {
            img.write_to(w, image::ImageFormat::Png)
                .map_err(std::io::Error::other)
        })
    }
}

/// Writes `path` whole or not at all (a temporary file beside it, renamed into place).
fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&mut File>) -> std::io::Result<()>,
) -> Result<()> {
    write_atomically(path, write).map_err(|e| PathologyError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn draw_line(img: &mut RgbImage, a: [f64; 2], b: [f64; 2]) {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let n = ((b[0] - a[0]).abs().max((b[1] - a[1]).abs()).ceil() as usize).max(1);
    for k in 0..=n {
        let t = k as f64 / n as f64;
        let x = (a[0] + t * (b[0] - a[0])).floor().clamp(0.0, w - 1.0);
        let y = (a[1] + t * (b[1] - a[1])).floor().clamp(0.0, h - 1.0);
        img.put_pixel(x as u32, y as u32, Rgb([0, 255, 0]));
    }
}

/// HSV saturation scaled to 0..255.
pub fn saturation(p: [u8; 3]) -> u8 {
    let max = p.iter().copied().max().unwrap_or(0);
    let min = p.iter().copied().min().unwrap_or(0);
    if max == 0 {
        0
    } else {
        ((u32::from(max - min) * 255 + u32::from(max) / 2) / u32::from(max)) as u8
    }
}

/// HSV hue in degrees (0..360).
fn hue(p: [u8; 3]) -> f64 {
    let [r, g, b] = p.map(f64::from);
    let max = r.max(g).max(b);
    let c = max - r.min(g).min(b);
    if c == 0.0 {
        return 0.0;
    }
    let h = if max == r {
        ((g - b) / c).rem_euclid(6.0)
    } else if max == g {
        (b - r) / c + 2.0
    } else {
        (r - g) / c + 4.0
    };
    60.0 * h
}

/// Whether a pixel looks like marker pen or dirt rather than H&E: strongly blue (hue 190–250°,
/// saturation > 0.4; hematoxylin sits at 260–300°), green (hue 90–180°, saturation > 0.3;
/// H&E has no green) or black (every channel < 50).
pub fn is_pen(p: [u8; 3]) -> bool {
    let s = f64::from(saturation(p)) / 255.0;
    let h = hue(p);
    p.iter().all(|&c| c < 50)
        || ((190.0..=250.0).contains(&h) && s > 0.4)
        || ((90.0..=180.0).contains(&h) && s > 0.3)
}

/// Otsu's threshold of a 256-bin histogram: pixels `> t` form the upper class.
pub fn otsu(hist: &[u64; 256]) -> u8 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 0;
    }
    let sum_all: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &n)| i as f64 * n as f64)
        .sum();
    let (mut w0, mut sum0, mut best, mut best_t) = (0f64, 0f64, -1f64, 0u8);
    for (t, &n) in hist.iter().enumerate() {
        w0 += n as f64;
        sum0 += t as f64 * n as f64;
        let w1 = total as f64 - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let (m0, m1) = (sum0 / w0, (sum_all - sum0) / w1);
        let between = w0 * w1 * (m0 - m1) * (m0 - m1);
        if between > best {
            (best, best_t) = (between, t as u8);
        }
    }
    best_t
}

/// Detects tissue on `slide` (which needs a pixel size: areas are in um²).
pub fn detect_tissue(slide: &Slide, cfg: &TissueConfig) -> Result<TissueDetection> {
    if cfg.mask_mpp.is_nan() || cfg.mask_mpp <= 0.0 || cfg.max_side == 0 {
        return Err(PathologyError::invalid(
            slide.path(),
            "tissue detection needs a positive mask pixel size and maximum side",
        ));
    }
    let mpp = slide.mpp()?;
    let (w0, h0) = slide.dimensions();
    let downsample = (cfg.mask_mpp / mpp.mean())
        .max(w0.max(h0) as f64 / f64::from(cfg.max_side))
        .max(1.0);
    let thumbnail = read_downsampled(slide, downsample)?;
    let (w, h) = (thumbnail.width() as usize, thumbnail.height() as usize);

    let sat: Vec<u8> = thumbnail.pixels().map(|p| saturation(p.0)).collect();
    let pen: Vec<bool> = if cfg.filter_pen {
        thumbnail.pixels().map(|p| is_pen(p.0)).collect()
    } else {
        vec![false; w * h]
    };
    let mut hist = [0u64; 256];
    for (&s, &p) in sat.iter().zip(&pen) {
        if !p {
            hist[s as usize] += 1;
        }
    }
    let threshold = otsu(&hist).max(cfg.min_saturation);
    let raw = Binary {
        width: w,
        height: h,
        data: sat
            .iter()
            .zip(&pen)
            .map(|(&s, &p)| s > threshold && !p)
            .collect(),
    };
    let px_um2 = (downsample * mpp.x) * (downsample * mpp.y);
    let max_hole = cfg.max_hole_um2.map(|a| (a / px_um2).floor() as usize);
    let cleaned = raw
        .median(cfg.median_size)
        .close(cfg.morph_radius)
        .open(cfg.morph_radius)
        .fill_holes(max_hole);
    let (labels, sizes) = cleaned.components();
    let min_px = cfg.min_area_um2 / px_um2;
    let keep: Vec<bool> = sizes.iter().map(|&n| n as f64 >= min_px).collect();
    let mut kept = Binary::new(w, h);
    for (i, &l) in labels.iter().enumerate() {
        kept.data[i] = l > 0 && keep[l as usize];
    }
    let polygons = trace_polygons(&kept, &labels)
        .into_iter()
        .map(|(_, p)| {
            let simple = Polygon {
                exterior: simplify_ring(&p.exterior, cfg.simplify_px),
                holes: p
                    .holes
                    .iter()
                    .map(|r| simplify_ring(r, cfg.simplify_px))
                    .collect(),
            };
            clamp_polygon(simple.scaled(downsample, downsample), w0 as f64, h0 as f64)
        })
        .collect();
    let mask = GrayImage::from_fn(w as u32, h as u32, |x, y| {
        Luma([if kept.get(x as usize, y as usize) {
            255
        } else {
            0
        }])
    });
    Ok(TissueDetection {
        mask: TissueMask { mask, downsample },
        thumbnail,
        polygons,
        threshold,
        mask_mpp: downsample * mpp.mean(),
    })
}

/// Keeps level-0 coordinates inside the slide (the last mask pixel may reach past its edge).
fn clamp_polygon(p: Polygon, w: f64, h: f64) -> Polygon {
    let c = |r: Vec<[f64; 2]>| r.into_iter().map(|q| [q[0].min(w), q[1].min(h)]).collect();
    Polygon {
        exterior: c(p.exterior),
        holes: p.holes.into_iter().map(c).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturation_and_pen_colours() {
        assert_eq!(saturation([255, 255, 255]), 0);
        assert_eq!(saturation([200, 100, 200]), 128);
        assert!(is_pen([40, 70, 160]), "blue marker");
        assert!(is_pen([40, 150, 60]), "green marker");
        assert!(is_pen([20, 20, 30]), "black");
        assert!(!is_pen([120, 80, 170]), "hematoxylin");
        assert!(!is_pen([230, 150, 200]), "eosin");
    }

    #[test]
    fn otsu_splits_two_modes() {
        let mut h = [0u64; 256];
        h[10] = 100;
        h[200] = 50;
        let t = otsu(&h);
        assert!((10..200).contains(&t), "{t}");
    }

    #[test]
    fn a_pink_disc_on_white_is_found_with_its_area() {
        // 400x400 px at 1 um/px with a disc of radius 120 px; mask at 4 um/px.
        let img = RgbImage::from_fn(400, 400, |x, y| {
            let (dx, dy) = (x as f64 - 200.0, y as f64 - 200.0);
            if dx * dx + dy * dy < 120.0 * 120.0 {
                Rgb([220, 130, 190])
            } else {
                Rgb([245, 245, 245])
            }
        });
        let slide = Slide::from_image("mem", img, Some(1.0));
        let cfg = TissueConfig {
            mask_mpp: 4.0,
            ..TissueConfig::default()
        };
        let d = detect_tissue(&slide, &cfg).unwrap();
        assert_eq!(d.mask.downsample, 4.0);
        assert_eq!(d.polygons.len(), 1);
        let want = std::f64::consts::PI * 120.0 * 120.0;
        let got = d.polygons[0].area();
        assert!((got - want).abs() / want < 0.05, "{got} vs {want}");
        let f = d.mask.fraction();
        assert!((f - want / 160_000.0).abs() < 0.02, "{f}");
        assert!(d.mask.fraction_in([180.0, 180.0, 40.0, 40.0]) > 0.99);
        assert_eq!(d.mask.fraction_in([0.0, 0.0, 40.0, 40.0]), 0.0);
        let qc = d.qc_image();
        assert!(qc.pixels().any(|p| p.0 == [0, 255, 0]));
    }

    #[test]
    fn a_blank_slide_has_no_tissue() {
        let img = RgbImage::from_pixel(300, 200, Rgb([250, 250, 250]));
        let slide = Slide::from_image("mem", img, Some(0.5));
        let d = detect_tissue(&slide, &TissueConfig::default()).unwrap();
        assert!(d.polygons.is_empty());
        assert_eq!(d.mask.fraction(), 0.0);
    }
}
