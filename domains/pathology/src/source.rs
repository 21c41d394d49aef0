//! One slide's kept tiles as a [`RegionSource`]: the program embeds them like any other domain's
//! regions. A batch's tiles are read and resampled in parallel, then normalised with the
//! ImageNet mean/std into `[3][size][size]`.
//!
//! `Region.source` is the slide id the caller chooses (a pseudonym, an accession hash), never
//! the file path; bounds are the tile's level-0 extent in micrometres (`crs = "um"`).

use std::collections::HashMap;
use std::sync::Arc;

use dinoadapt_datasets::transforms::{IMAGENET_MEAN, IMAGENET_STD};
use dinoadapt_datasets::{Region, RegionBatch, RegionSource};
use image::RgbImage;

use crate::error::Result;
use crate::slide::Slide;
use crate::tiling::{read_tiles, Tile, TilePlan};

/// Writes `img` normalised as `[3][h][w]` onto the end of `out`.
pub fn push_normalized(img: &RgbImage, mean: [f32; 3], std: [f32; 3], out: &mut Vec<f32>) {
    let plane = (img.width() * img.height()) as usize;
    let start = out.len();
    out.resize(start + 3 * plane, 0.0);
    for (i, p) in img.pixels().enumerate() {
        for (c, &v) in p.0.iter().enumerate() {
            out[start + c * plane + i] = (f32::from(v) / 255.0 - mean[c]) / std[c];
        }
    }
}

/// The kept tiles of one slide, batch by batch.
pub struct TileSource {
    slide: Arc<Slide>,
    slide_id: String,
    plan: TilePlan,
    mean: [f32; 3],
    std: [f32; 3],
    cursor: usize,
}

impl TileSource {
    /// A source over `plan`'s tiles of `slide`, reported under `slide_id`.
    pub fn new(slide: Arc<Slide>, slide_id: impl Into<String>, plan: TilePlan) -> TileSource {
        TileSource {
            slide,
            slide_id: slide_id.into(),
            plan,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            cursor: 0,
        }
    }

    /// Uses another normalisation than ImageNet's (e.g. a pathology model's own statistics).
    pub fn with_normalization(mut self, mean: [f32; 3], std: [f32; 3]) -> TileSource {
        self.mean = mean;
        self.std = std;
        self
    }

    /// The plan being read.
    pub fn plan(&self) -> &TilePlan {
        &self.plan
    }

    /// The region describing `tile`.
    pub fn region(&self, tile: &Tile) -> Region {
        let mpp = self.plan.mpp;
        let (x, y) = (tile.x as f64, tile.y as f64);
        Region {
            source: self.slide_id.clone(),
            index: tile.index,
            col: tile.x,
            row: tile.y,
            width: tile.width.round() as usize,
            height: tile.height.round() as usize,
            bounds: [
                x * mpp.x,
                y * mpp.y,
                (x + tile.width) * mpp.x,
                (y + tile.height) * mpp.y,
            ],
            crs: "um".into(),
            valid_fraction: tile.tissue_fraction,
        }
    }

    /// The next batch of at most `max` tiles.
    pub fn read_batch(&mut self, max: usize) -> Result<Option<RegionBatch>> {
        let end = (self.cursor + max.max(1)).min(self.plan.tiles.len());
        if self.cursor >= end {
            return Ok(None);
        }
        let tiles = &self.plan.tiles[self.cursor..end];
        let images = read_tiles(&self.slide, tiles, &self.plan.config)?;
        let size = self.plan.config.size as usize;
        let mut pixels = Vec::with_capacity(tiles.len() * 3 * size * size);
        for img in &images {
            push_normalized(img, self.mean, self.std, &mut pixels);
        }
        let regions = tiles.iter().map(|t| self.region(t)).collect();
        self.cursor = end;
        Ok(Some(RegionBatch {
            regions,
            pixels,
            size: (size, size),
            skipped: Vec::new(),
        }))
    }
}

impl RegionSource for TileSource {
    fn size(&self) -> (usize, usize) {
        let s = self.plan.config.size as usize;
        (s, s)
    }

    fn max_regions(&self) -> usize {
        self.plan.tiles.len()
    }

    fn next_batch(&mut self, max: usize) -> std::result::Result<Option<RegionBatch>, String> {
        self.read_batch(max).map_err(|e| e.to_string())
    }

    fn metadata(&self) -> HashMap<String, String> {
        let cfg = &self.plan.config;
        let info = self.slide.info();
        let mut m = HashMap::from([
            ("domain".into(), "pathology".into()),
            ("slide_id".into(), self.slide_id.clone()),
            ("format".into(), info.format.clone()),
            ("slide_mpp_x".into(), self.plan.mpp.x.to_string()),
            ("slide_mpp_y".into(), self.plan.mpp.y.to_string()),
            (
                "slide_mpp_source".into(),
                serde_json::to_string(&self.plan.mpp.source)
                    .unwrap_or_default()
                    .trim_matches('"')
                    .to_string(),
            ),
            ("target_mpp".into(), cfg.target_mpp.to_string()),
            ("tile_size".into(), cfg.size.to_string()),
            ("tile_stride".into(), cfg.stride.to_string()),
            ("min_tissue".into(), cfg.min_tissue.to_string()),
            ("level".into(), self.plan.level.to_string()),
            (
                "level_downsample".into(),
                self.plan.level_downsample.to_string(),
            ),
            (
                "resample".into(),
                format!("{:?}", cfg.resample).to_lowercase(),
            ),
            (
                "normalization".into(),
                format!("mean={:?} std={:?}", self.mean, self.std),
            ),
            (
                "tiling".into(),
                serde_json::to_string(cfg).unwrap_or_default(),
            ),
            (
                "normalization_mean".into(),
                serde_json::to_string(&self.mean).unwrap_or_default(),
            ),
            (
                "normalization_std".into(),
                serde_json::to_string(&self.std).unwrap_or_default(),
            ),
            ("tiles_kept".into(), self.plan.tiles.len().to_string()),
            (
                "tiles_considered".into(),
                self.plan.considered().to_string(),
            ),
        ]);
        if let Some(w) = &self.plan.warning {
            m.insert("warning".into(), w.clone());
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiling::{plan_tiles, TilingConfig};

    #[test]
    fn batches_are_normalized_planes_with_micron_bounds() {
        let img = RgbImage::from_pixel(64, 40, image::Rgb([255, 0, 128]));
        let slide = Arc::new(Slide::from_image("/secret/patient.png", img, Some(0.5)));
        let cfg = TilingConfig {
            target_mpp: 1.0,
            size: 8,
            stride: 8,
            min_tissue: 0.0,
            ..TilingConfig::default()
        };
        let plan = plan_tiles(&slide, None, &cfg).unwrap();
        assert_eq!(plan.tiles.len(), 4 * 2);
        let mut src = TileSource::new(slide, "case-7", plan);
        assert_eq!(src.max_regions(), 8);
        let b = src.next_batch(5).unwrap().unwrap();
        assert_eq!(b.regions.len(), 5);
        assert_eq!(b.pixels.len(), 5 * 3 * 64);
        let r = &b.regions[1];
        assert_eq!(r.source, "case-7");
        assert_eq!((r.col, r.row, r.width), (16, 0, 16));
        assert_eq!(r.bounds, [8.0, 0.0, 16.0, 8.0]);
        assert_eq!(r.crs, "um");
        let red = (1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0];
        assert!((b.pixels[0] - red).abs() < 1e-6);
        let green = (0.0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1];
        assert!((b.pixels[64] - green).abs() < 1e-6);
        assert_eq!(src.next_batch(5).unwrap().unwrap().regions.len(), 3);
        assert!(src.next_batch(5).unwrap().is_none());
        let meta = src.metadata();
        assert_eq!(meta["slide_mpp_source"], "override");
        assert!(meta.values().all(|v| !v.contains("secret")));
    }
}
