//! Tile predictions stitched into a slide mask, a band of rows at a time.
//!
//! Each mask pixel takes the class with the largest sum of the probabilities of the tiles that
//! cover its centre. Tiles come in row order (top edges never decreasing, as `plan_tiles` lays
//! them out), so once a tile starting at mask row `r` arrives, no later tile reaches a row above
//! `r`: those rows are settled into labels and their sums dropped. Memory holds the labels (one
//! byte a pixel) and the sums of the rows the current tiles span, not classes × the whole mask.

use crate::contours::{geojson, trace_polygons};
use crate::morphology::Binary;
use crate::Tile;
use dinoadapt_datasets::class_planes::argmax_at;

/// Mask value where no tile was predicted.
pub const NOT_PREDICTED: u8 = 255;

/// Longest side of the stitched mask, in pixels.
const MASK_SIDE: f64 = 4096.0;

pub struct Stitcher {
    /// Level-0 pixels per mask pixel.
    pub downsample: f64,
    pub width: usize,
    pub height: usize,
    classes: usize,
    /// The class of each settled pixel ([`NOT_PREDICTED`] where no tile reached).
    labels: Vec<u8>,
    /// The first row not yet settled.
    band_start: usize,
    /// Probability sums of the unsettled rows, row by row, each `[classes, width]`.
    sums: Vec<f32>,
    /// Tiles that reached each unsettled pixel, row by row.
    counts: Vec<u32>,
}

impl Stitcher {
    /// A mask over a `slide_w` × `slide_h` slide, at the tiles' resolution (`tile_px0` level-0
    /// pixels per tile pixel) or coarser, so that its longest side is at most [`MASK_SIDE`].
    pub fn new(slide_w: u64, slide_h: u64, tile_px0: f64, classes: usize) -> Stitcher {
        let downsample = tile_px0.max(slide_w.max(slide_h) as f64 / MASK_SIDE);
        let width = (slide_w as f64 / downsample).ceil().max(1.0) as usize;
        let height = (slide_h as f64 / downsample).ceil().max(1.0) as usize;
        Stitcher {
            downsample,
            width,
            height,
            classes,
            labels: vec![NOT_PREDICTED; width * height],
            band_start: 0,
            sums: Vec::new(),
            counts: Vec::new(),
        }
    }

    /// Mask cells whose centres fall in [lo, lo + len) level-0 pixels.
    fn cells(&self, lo: f64, len: f64, max: usize) -> std::ops::Range<usize> {
        let ds = self.downsample;
        let a = ((lo / ds) - 0.5).ceil().max(0.0) as usize;
        let b = (((lo + len) / ds) - 0.5).ceil().max(0.0) as usize;
        a.min(max)..b.min(max)
    }

    /// Labels rows `band_start..end` and drops their sums.
    fn settle(&mut self, end: usize) {
        let end = end.min(self.height);
        if end <= self.band_start {
            return;
        }
        let (w, k) = (self.width, self.classes);
        let rows = (end - self.band_start).min(self.counts.len() / w);
        for r in 0..rows {
            let row = self.band_start + r;
            let sums = &self.sums[r * k * w..(r + 1) * k * w];
            for x in 0..w {
                if self.counts[r * w + x] > 0 {
                    self.labels[row * w + x] = argmax_at(sums, k, w, x) as u8;
                }
            }
        }
        self.sums.drain(..rows * k * w);
        self.counts.drain(..rows * w);
        self.band_start = end;
    }

    /// Adds a tile's `[classes, size, size]` probabilities to the mask pixels whose centres
    /// fall inside it. Tiles must come in row order.
    pub fn add(&mut self, tile: &Tile, probs: &[f32], size: usize) {
        let [x, y, w, h] = tile.rect0();
        let rows = self.cells(y, h, self.height);
        assert!(
            rows.start >= self.band_start || rows.is_empty(),
            "tiles must come in row order (a tile reaches row {}, rows above {} are settled)",
            rows.start,
            self.band_start
        );
        self.settle(rows.start);
        let (mw, k) = (self.width, self.classes);
        let needed = rows.end.saturating_sub(self.band_start);
        if self.counts.len() < needed * mw {
            self.sums.resize(needed * k * mw, 0.0);
            self.counts.resize(needed * mw, 0);
        }
        let ds = self.downsample;
        let columns = self.cells(x, w, self.width);
        for my in rows {
            let v = ((((my as f64 + 0.5) * ds - y) / h * size as f64) as usize).min(size - 1);
            let r = my - self.band_start;
            for mx in columns.clone() {
                let u = ((((mx as f64 + 0.5) * ds - x) / w * size as f64) as usize).min(size - 1);
                self.counts[r * mw + mx] += 1;
                for c in 0..k {
                    self.sums[(r * k + c) * mw + mx] += probs[c * size * size + v * size + u];
                }
            }
        }
    }

    /// The most probable class of every mask pixel ([`NOT_PREDICTED`] outside the tiles).
    pub fn labels(mut self) -> Vec<u8> {
        self.settle(self.height);
        self.labels
    }
}

const PALETTE: [[u8; 3]; 8] = [
    [200, 0, 0],
    [0, 160, 0],
    [0, 0, 200],
    [200, 140, 0],
    [160, 0, 160],
    [0, 160, 160],
    [120, 80, 40],
    [90, 90, 90],
];

/// The classes `1..classes` of a mask (class 0 is the background; one mask pixel per
/// `downsample` level-0 pixels) as one GeoJSON FeatureCollection of polygons in level-0 pixels,
/// named by `class_name`.
pub fn mask_geojson(
    labels: &[u8],
    width: usize,
    height: usize,
    downsample: f64,
    classes: usize,
    class_name: impl Fn(usize) -> String,
) -> serde_json::Value {
    let mut features = Vec::new();
    for k in 1..classes {
        let mask = Binary {
            width,
            height,
            data: labels.iter().map(|&l| l as usize == k).collect(),
        };
        if mask.count() == 0 {
            continue;
        }
        let (components, _) = mask.components();
        let polys: Vec<_> = trace_polygons(&mask, &components)
            .into_iter()
            .map(|(_, p)| p.scaled(downsample, downsample))
            .collect();
        let fc = geojson(&polys, &class_name(k), PALETTE[(k - 1) % PALETTE.len()]);
        if let serde_json::Value::Array(f) = &fc["features"] {
            features.extend(f.iter().cloned());
        }
    }
    serde_json::json!({ "type": "FeatureCollection", "features": features })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(x: i64, y: i64, side: f64) -> Tile {
        Tile {
            index: 0,
            col: 0,
            row: 0,
            x,
            y,
            width: side,
            height: side,
            level: 0,
            tissue_fraction: 1.0,
        }
    }

    /// The whole-mask stitching the band replaces: every pixel's sums held to the end.
    fn whole_mask(s: &Stitcher, tiles: &[(Tile, Vec<f32>)], size: usize) -> Vec<u8> {
        let (w, h, k, ds) = (s.width, s.height, s.classes, s.downsample);
        let plane = w * h;
        let (mut sums, mut counts) = (vec![0f32; k * plane], vec![0u32; plane]);
        for (t, probs) in tiles {
            let [x, y, tw, th] = t.rect0();
            for my in s.cells(y, th, h) {
                let v = ((((my as f64 + 0.5) * ds - y) / th * size as f64) as usize).min(size - 1);
                for mx in s.cells(x, tw, w) {
                    let u =
                        ((((mx as f64 + 0.5) * ds - x) / tw * size as f64) as usize).min(size - 1);
                    counts[my * w + mx] += 1;
                    for c in 0..k {
                        sums[c * plane + my * w + mx] += probs[c * size * size + v * size + u];
                    }
                }
            }
        }
        (0..plane)
            .map(|p| {
                if counts[p] == 0 {
                    NOT_PREDICTED
                } else {
                    argmax_at(&sums, k, plane, p) as u8
                }
            })
            .collect()
    }

    #[test]
    fn the_band_gives_the_whole_mask_with_overlapping_and_missing_tiles() {
        // A 1000 x 700 slide, tiles of 100 level-0 px (8 x 8 tile px) every 60 px, some left
        // out (no tissue), three classes with pseudo-random probabilities.
        let (size, classes) = (8, 3);
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 40) as f32 / (1u64 << 24) as f32
        };
        let mut tiles = Vec::new();
        for row in 0..11 {
            for col in 0..16 {
                if (row * 16 + col) % 7 == 3 {
                    continue;
                }
                let probs: Vec<f32> = (0..classes * size * size).map(|_| next()).collect();
                tiles.push((tile(col * 60, row * 60, 100.0), probs));
            }
        }
        for tile_px0 in [100.0 / 8.0, 40.0] {
            let mut band = Stitcher::new(1000, 700, tile_px0, classes);
            let expected = whole_mask(&band, &tiles, size);
            let most = tiles.iter().fold(0, |most, (t, probs)| {
                band.add(t, probs, size);
                most.max(band.counts.len())
            });
            assert!(
                most < band.width * band.height / 4,
                "the band held {most} of {} pixels",
                band.width * band.height
            );
            let labels = band.labels();
            assert_eq!(labels, expected, "{tile_px0} level-0 px per mask px");
            assert!(labels.contains(&NOT_PREDICTED) && labels.contains(&2));
        }
    }

    #[test]
    #[should_panic(expected = "row order")]
    fn a_tile_above_settled_rows_is_refused() {
        let mut s = Stitcher::new(400, 400, 10.0, 1);
        let probs = vec![1.0; 4];
        s.add(&tile(0, 200, 100.0), &probs, 2);
        s.add(&tile(0, 0, 100.0), &probs, 2);
    }
}
