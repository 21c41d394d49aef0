//! The pathology domain's pre-training image pool: random tissue tiles of the recipe's slides
//! drawn online (at one of the configured µm/px, with H&E augmentation), each determined by its
//! draw seed so that a resumed run sees the same tiles.
//!
//! ```toml
//! [data.source]
//! domain = "pathology"
//! paths = ["slides/", "cohort.csv"]   # files, folders, CSV lists (path, slide_id, mpp)
//! mpp = [0.5, 1.0]                    # default [0.5]
//! tile_size = 224                     # default 224
//! tiles_per_epoch = 10000             # default 10000
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use dinoadapt_datasets::{DomainError, ImageError, ImageSource};
use image::DynamicImage;
use serde::Deserialize;

use crate::sampler::{RandomTileSampler, SamplerConfig, SamplerSlide};
use crate::slide_list::collect_slides;
use crate::tissue::{detect_tissue, TissueConfig};
use crate::{OpenOptions, Slide};

/// The `[data.source]` keys of the pathology domain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlideTilesConfig {
    /// Whole-slide images: files, folders (recursive) or CSV lists.
    pub paths: Vec<PathBuf>,
    /// Resolutions (µm/px) tiles are sampled at, one drawn per tile.
    #[serde(default = "default_mpp")]
    pub mpp: Vec<f64>,
    /// Tile side in pixels at that resolution.
    #[serde(default = "default_tile_size")]
    pub tile_size: u32,
    /// Tiles that make one epoch.
    #[serde(default = "default_tiles_per_epoch")]
    pub tiles_per_epoch: usize,
}

fn default_mpp() -> Vec<f64> {
    vec![0.5]
}

fn default_tile_size() -> u32 {
    224
}

fn default_tiles_per_epoch() -> usize {
    10_000
}

/// Random tissue tiles of a set of slides, as a pre-training image pool.
pub struct SlideTiles {
    sampler: RandomTileSampler,
    len: usize,
    slides: usize,
    mpps: Vec<f64>,
}

impl SlideTiles {
    /// Open the slides and find their tissue.
    pub fn open(cfg: &SlideTilesConfig, seed: u64) -> Result<SlideTiles, DomainError> {
        let input = |e: String| DomainError::Input(e);
        let mut slides = Vec::new();
        for entry in collect_slides(&cfg.paths).map_err(|e| input(e.to_string()))? {
            let slide = Slide::open_with(
                &entry.path,
                &OpenOptions {
                    mpp_override: entry.mpp,
                },
            )
            .map_err(|e| input(e.to_string()))?;
            let mask = detect_tissue(&slide, &TissueConfig::default())
                .map_err(|e| input(e.to_string()))?
                .mask;
            slides.push(SamplerSlide {
                id: entry.slide_id,
                slide: Arc::new(slide),
                mask,
            });
        }
        let mpps = if cfg.mpp.is_empty() {
            default_mpp()
        } else {
            cfg.mpp.clone()
        };
        let n = slides.len();
        let sampler_cfg = SamplerConfig {
            size: cfg.tile_size,
            mpps: mpps.clone(),
            ..SamplerConfig::default()
        };
        Ok(SlideTiles {
            sampler: RandomTileSampler::new(slides, sampler_cfg, seed)
                .map_err(|e| input(e.to_string()))?,
            len: cfg.tiles_per_epoch.max(1),
            slides: n,
            mpps,
        })
    }
}

impl ImageSource for SlideTiles {
    fn len(&self) -> usize {
        self.len
    }

    fn image(&self, index: usize, seed: u64) -> Result<DynamicImage, ImageError> {
        let tile = self
            .sampler
            .sample_one(seed ^ (index as u64).rotate_left(32))
            .map_err(|e| ImageError::Decode {
                path: format!("tile {index} of the recipe's slides").into(),
                reason: e.to_string(),
            })?;
        Ok(DynamicImage::ImageRgb8(tile.image))
    }

    fn describe(&self) -> String {
        format!(
            "random tissue tiles of {} slides at {:?} µm/px ({} per epoch)",
            self.slides, self.mpps, self.len
        )
    }
}
