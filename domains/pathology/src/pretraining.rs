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
//!
//! With `tiles = "curated.parquet"` (a curated tile manifest, see [`crate::curated_tiles`]) the
//! pool is instead exactly the manifest's kept tiles, each read at its recorded level-0 region
//! and resampled to `tile_size`; `paths` then only finds the slides by id (leave it out when the
//! manifest's `slide` column holds paths), and `mpp` and `tiles_per_epoch` do not apply.

use std::path::PathBuf;
use std::sync::Arc;

use dinoadapt_datasets::{DomainError, ImageError, ImageSource, SourceOptions};
use image::DynamicImage;
use serde::Deserialize;

use crate::curated_tiles::CuratedTiles;
use crate::sampler::{RandomTileSampler, SamplerConfig, SamplerSlide};
use crate::slide_list::collect_slides;
use crate::tissue::{detect_tissue, TissueConfig};
use crate::{OpenOptions, Slide};

/// The `[data.source]` keys of the pathology domain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlideTilesConfig {
    /// Whole-slide images: files, folders (recursive) or CSV lists.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// A curated tile manifest (`curate --pool` of a `pathology embed` folder): the pool is
    /// then its kept tiles.
    #[serde(default)]
    pub tiles: Option<PathBuf>,
    /// Resolutions (µm/px) tiles are sampled at, one drawn per tile (empty: [0.5]).
    #[serde(default)]
    pub mpp: Vec<f64>,
    /// Tile side in pixels at that resolution.
    #[serde(default = "default_tile_size")]
    pub tile_size: u32,
    /// Tiles that make one epoch (default 10000).
    #[serde(default)]
    pub tiles_per_epoch: Option<usize>,
}

impl SlideTilesConfig {
    /// The `[data.source]` table of `source`, its `paths` and `tiles` taken from the recipe's
    /// folder.
    pub fn from_source(source: &SourceOptions) -> Result<SlideTilesConfig, DomainError> {
        let mut cfg: SlideTilesConfig =
            source.parse_anchored("pathology", |c: &mut SlideTilesConfig| &mut c.paths)?;
        cfg.tiles = cfg.tiles.map(|t| source.anchor(&t));
        Ok(cfg)
    }
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

/// Random tissue tiles of a set of slides, or the kept tiles of a curated manifest, as a
/// pre-training image pool.
pub struct SlideTiles {
    pool: Pool,
}

enum Pool {
    Random {
        sampler: Box<RandomTileSampler>,
        len: usize,
        slides: usize,
        mpps: Vec<f64>,
    },
    Curated(CuratedTiles),
}

impl SlideTiles {
    /// Open the slides and find their tissue; or, with `tiles`, read the curated manifest and
    /// open the slides of its kept tiles.
    pub fn open(cfg: &SlideTilesConfig, seed: u64) -> Result<SlideTiles, DomainError> {
        let options = |message: &str| DomainError::Options {
            domain: "pathology",
            message: message.into(),
        };
        if let Some(manifest) = &cfg.tiles {
            if !cfg.mpp.is_empty() || cfg.tiles_per_epoch.is_some() {
                return Err(options(
                    "with `tiles` the pool is the manifest's kept tiles at their recorded \
                     regions: leave out `mpp` and `tiles_per_epoch`",
                ));
            }
            return Ok(SlideTiles {
                pool: Pool::Curated(CuratedTiles::open(manifest, &cfg.paths, cfg.tile_size)?),
            });
        }
        if cfg.paths.is_empty() {
            return Err(options(
                "give `paths` (slide files, folders or CSV lists) to draw random tiles from, or \
                 `tiles` (a curated tile manifest)",
            ));
        }
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
            pool: Pool::Random {
                sampler: Box::new(
                    RandomTileSampler::new(slides, sampler_cfg, seed)
                        .map_err(|e| input(e.to_string()))?,
                ),
                len: cfg
                    .tiles_per_epoch
                    .unwrap_or_else(default_tiles_per_epoch)
                    .max(1),
                slides: n,
                mpps,
            },
        })
    }
}

impl ImageSource for SlideTiles {
    fn len(&self) -> usize {
        match &self.pool {
            Pool::Random { len, .. } => *len,
            Pool::Curated(c) => c.len(),
        }
    }

    fn image(&self, index: usize, seed: u64) -> Result<DynamicImage, ImageError> {
        let sampler = match &self.pool {
            Pool::Random { sampler, .. } => sampler,
            Pool::Curated(c) => return c.image(index, seed),
        };
        let tile = sampler
            .sample_one(seed ^ (index as u64).rotate_left(32))
            .map_err(|e| ImageError::Decode {
                path: format!("tile {index} of the recipe's slides").into(),
                reason: e.to_string(),
            })?;
        Ok(DynamicImage::ImageRgb8(tile.image))
    }

    fn describe(&self) -> String {
        match &self.pool {
            Pool::Random {
                len, slides, mpps, ..
            } => format!(
                "random tissue tiles of {slides} slides at {mpps:?} µm/px ({len} per epoch)"
            ),
            Pool::Curated(c) => c.describe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(options: serde_json::Value) -> Result<SlideTilesConfig, DomainError> {
        SlideTilesConfig::from_source(&SourceOptions {
            options,
            base: Path::new("/recipes"),
            seed: 0,
            scratch: Path::new("/tmp"),
        })
    }

    #[test]
    fn a_tile_manifest_is_anchored_at_the_recipe_and_takes_no_sampling_keys() {
        let cfg = config(serde_json::json!({"tiles": "curated.parquet"})).unwrap();
        assert_eq!(
            cfg.tiles.as_deref(),
            Some(Path::new("/recipes/curated.parquet"))
        );
        assert!(cfg.paths.is_empty());
        let cfg = config(serde_json::json!({"tiles": "/abs/c.parquet", "mpp": [0.5]})).unwrap();
        assert_eq!(cfg.tiles.as_deref(), Some(Path::new("/abs/c.parquet")));
        let err = SlideTiles::open(&cfg, 0).err().unwrap().to_string();
        assert!(err.contains("leave out `mpp`"), "{err}");
        // Neither slides nor tiles: say what to give.
        let cfg = config(serde_json::json!({})).unwrap();
        let err = SlideTiles::open(&cfg, 0).err().unwrap().to_string();
        assert!(err.contains("`paths`") && err.contains("`tiles`"), "{err}");
    }
}
