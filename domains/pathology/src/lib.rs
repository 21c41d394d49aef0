//! dinoadapt-pathology: whole-slide images through OpenSlide (with a plain-image fallback),
//! pixel sizes you can trust, tissue masks with QuPath-readable contours, tiles at a target
//! microns-per-pixel, H&E augmentation, and tiles as a [`dinoadapt_datasets::RegionSource`].
//!
//! Privacy: label and macro images are never read, and no slide property outside a technical
//! whitelist (vendor, mpp, objective power, bounds, levels) is copied anywhere.

pub mod annotations;
pub mod augment;
pub mod batch;
pub mod contours;
pub mod curated_tiles;
pub mod demo;
pub mod demo_cohort;
pub mod dense;
pub mod dicom_wsi;
pub mod doctor;
pub mod embedding_inputs;
pub mod error;
pub mod h5_bag;
pub mod image_slide;
pub mod inspect;
pub mod morphology;
pub mod mpp;
pub mod openslide_slide;
pub mod plugin;
pub mod pretraining;
pub mod resample;
pub mod sampler;
pub mod slide;
pub mod slide_list;
pub mod source;
pub mod stitch;
pub mod thumbnail;
pub mod tiling;
pub mod tissue;

pub use annotations::Annotations;
pub use augment::{HeAugment, HedJitter};
pub use curated_tiles::{CuratedTile, CuratedTiles};
pub use error::{PathologyError, Result};
pub use mpp::{Mpp, MppSource};
pub use plugin::Pathology;
pub use pretraining::{SlideTiles, SlideTilesConfig};
pub use resample::Resample;
pub use sampler::{RandomTileSampler, SampledTile, SamplerConfig, SamplerSlide};
pub use slide::{LevelInfo, OpenOptions, Slide, SlideInfo};
pub use source::TileSource;
pub use stitch::{Stitcher, NOT_PREDICTED};
pub use tiling::{plan_tiles, read_tile, read_tiles, Tile, TilePlan, TilingConfig};
pub use tissue::{detect_tissue, TissueConfig, TissueDetection, TissueMask};
