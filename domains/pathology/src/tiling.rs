//! Tiles at a target pixel size: each tile covers exactly `size × target_mpp` um per side, read
//! from the coarsest pyramid level that is not coarser than the target (never upsampling unless
//! the scan itself is coarser — then [`TilePlan::warning`] says so) and resampled to exactly
//! `size × size` (Lanczos3 by default). Tiles with too little tissue are dropped.
//!
//! Nothing is written here: the plan is a list the program stores (Parquet) and
//! [`crate::source::TileSource`] reads.

use image::RgbImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{PathologyError, Result};
use crate::mpp::Mpp;
use crate::resample::{read_resampled, Resample};
use crate::slide::Slide;
use crate::tissue::TissueMask;

/// How to cut tiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TilingConfig {
    /// Pixel size of the tiles in um (0.5 ≈ 20x, 0.25 ≈ 40x, 1.0 ≈ 10x).
    pub target_mpp: f64,
    /// Tile side in pixels at the target pixel size.
    pub size: u32,
    /// Step between tiles in pixels at the target pixel size (`size` = no overlap).
    pub stride: u32,
    /// Tiles whose tissue fraction (from the mask) is below this are dropped.
    pub min_tissue: f64,
    pub resample: Resample,
}

impl Default for TilingConfig {
    fn default() -> Self {
        TilingConfig {
            target_mpp: 0.5,
            size: 224,
            stride: 224,
            min_tissue: 0.5,
            resample: Resample::Lanczos3,
        }
    }
}

/// One tile, in level-0 pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tile {
    /// Position in the full grid, row-major (`row * cols + col`): stable whatever is dropped.
    pub index: usize,
    pub col: u32,
    pub row: u32,
    /// Top-left corner, level-0 pixels.
    pub x: i64,
    pub y: i64,
    /// Extent in level-0 pixels (fractional: exactly `size × target_mpp / mpp`).
    pub width: f64,
    pub height: f64,
    /// The pyramid level the pixels are read from.
    pub level: u32,
    /// Fraction of the tile covered by tissue (1.0 without a mask).
    pub tissue_fraction: f64,
}

impl Tile {
    /// The level-0 rectangle (x, y, w, h).
    pub fn rect0(&self) -> [f64; 4] {
        [self.x as f64, self.y as f64, self.width, self.height]
    }
}

/// The tiles of one slide and how they were chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TilePlan {
    pub config: TilingConfig,
    /// The slide's level-0 pixel size used.
    pub mpp: Mpp,
    /// The level read for every tile, and its downsample.
    pub level: u32,
    pub level_downsample: f64,
    /// Grid size (columns, rows) before filtering.
    pub grid: (u32, u32),
    /// The kept tiles, in grid order.
    pub tiles: Vec<Tile>,
    /// Set when the slide is coarser than the target (tiles are upsampled).
    pub warning: Option<String>,
}

impl TilePlan {
    /// How many grid positions were considered.
    pub fn considered(&self) -> usize {
        self.grid.0 as usize * self.grid.1 as usize
    }
}

fn check(slide: &Slide, cfg: &TilingConfig) -> Result<()> {
    let bad = |what: String| Err(PathologyError::invalid(slide.path(), what));
    if !cfg.target_mpp.is_finite() || cfg.target_mpp <= 0.0 {
        return bad(format!("target mpp {} must be positive", cfg.target_mpp));
    }
    if cfg.size == 0 || cfg.stride == 0 {
        return bad(format!(
            "tile size {} and stride {} must be positive",
            cfg.size, cfg.stride
        ));
    }
    if !(0.0..=1.0).contains(&cfg.min_tissue) {
        return bad(format!("min tissue {} must lie in 0..1", cfg.min_tissue));
    }
    Ok(())
}

/// Number of whole tiles of extent `tile` stepping by `stride` inside `len`.
fn count(len: f64, tile: f64, stride: f64) -> u32 {
    if len + 1e-9 < tile {
        0
    } else {
        ((len - tile) / stride + 1e-9).floor() as u32 + 1
    }
}

/// The grid of whole tiles inside the slide, with their tissue fractions from `mask` (every
/// tile when `mask` is None), keeping those with at least `min_tissue`.
pub fn plan_tiles(
    slide: &Slide,
    mask: Option<&TissueMask>,
    cfg: &TilingConfig,
) -> Result<TilePlan> {
    check(slide, cfg)?;
    let mpp = slide.mpp()?;
    let (level, upsample) = slide.level_for_mpp(cfg.target_mpp)?;
    let warning = upsample.map(|f| {
        format!(
            "the slide's pixels ({:.4} um) are coarser than the target {} um: tiles are \
             upsampled {f:.2}x and hold no more detail than the scan",
            mpp.mean(),
            cfg.target_mpp
        )
    });
    let (w0, h0) = slide.dimensions();
    let um = f64::from(cfg.size) * cfg.target_mpp;
    let step_um = f64::from(cfg.stride) * cfg.target_mpp;
    let (tw, th) = (um / mpp.x, um / mpp.y);
    let (sx, sy) = (step_um / mpp.x, step_um / mpp.y);
    let cols = count(w0 as f64, tw, sx);
    let rows = count(h0 as f64, th, sy);
    let mut tiles = Vec::new();
    for row in 0..rows {
        for col in 0..cols {
            let (x, y) = (
                (f64::from(col) * sx).floor() as i64,
                (f64::from(row) * sy).floor() as i64,
            );
            let rect = [x as f64, y as f64, tw, th];
            let tissue_fraction = mask.map_or(1.0, |m| m.fraction_in(rect));
            if tissue_fraction + 1e-12 < cfg.min_tissue {
                continue;
            }
            tiles.push(Tile {
                index: row as usize * cols as usize + col as usize,
                col,
                row,
                x,
                y,
                width: tw,
                height: th,
                level,
                tissue_fraction,
            });
        }
    }
    Ok(TilePlan {
        config: cfg.clone(),
        mpp,
        level,
        level_downsample: slide.levels()[level as usize].downsample,
        grid: (cols, rows),
        tiles,
        warning,
    })
}

/// The pixels of one tile: `size × size` RGB.
pub fn read_tile(slide: &Slide, tile: &Tile, cfg: &TilingConfig) -> Result<RgbImage> {
    read_resampled(
        slide,
        tile.level,
        tile.rect0(),
        cfg.size,
        cfg.size,
        cfg.resample,
    )
}

/// The pixels of several tiles, read and resampled in parallel, in order.
pub fn read_tiles(slide: &Slide, tiles: &[Tile], cfg: &TilingConfig) -> Result<Vec<RgbImage>> {
    tiles.par_iter().map(|t| read_tile(slide, t, cfg)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn half_tissue() -> Slide {
        // 100x60 px at 1 um/px: left half pink, right half white.
        let img = RgbImage::from_fn(100, 60, |x, _| {
            image::Rgb(if x < 50 { [220, 120, 180] } else { [255; 3] })
        });
        Slide::from_image("mem", img, Some(1.0))
    }

    fn left_half_mask() -> TissueMask {
        let mask =
            image::GrayImage::from_fn(25, 15, |x, _| image::Luma([if x < 12 { 255 } else { 0 }]));
        TissueMask {
            mask,
            downsample: 4.0,
        }
    }

    #[test]
    fn grid_counts_whole_tiles_with_overlap() {
        assert_eq!(count(100.0, 20.0, 20.0), 5);
        assert_eq!(count(100.0, 20.0, 10.0), 9);
        assert_eq!(count(19.0, 20.0, 20.0), 0);
    }

    #[test]
    fn tiles_cover_the_target_extent_and_drop_background() {
        let slide = half_tissue();
        let cfg = TilingConfig {
            target_mpp: 2.0,
            size: 10,
            stride: 10,
            min_tissue: 0.5,
            resample: Resample::Bilinear,
        };
        let mask = left_half_mask();
        let plan = plan_tiles(&slide, Some(&mask), &cfg).unwrap();
        assert_eq!(plan.grid, (5, 3));
        assert_eq!(plan.level, 0);
        assert!(plan.warning.is_none());
        assert!(plan.tiles.iter().all(|t| t.width == 20.0 && t.x + 20 <= 48));
        assert_eq!(plan.tiles.len(), 6);
        let img = read_tile(&slide, &plan.tiles[0], &cfg).unwrap();
        assert_eq!(img.dimensions(), (10, 10));
        assert_eq!(img.get_pixel(5, 5).0, [220, 120, 180]);
        let all = plan_tiles(&slide, None, &cfg).unwrap();
        assert_eq!(all.tiles.len(), 15);
    }

    #[test]
    fn coarse_slides_warn_about_upsampling() {
        let slide = half_tissue();
        let cfg = TilingConfig {
            target_mpp: 0.5,
            size: 8,
            stride: 8,
            min_tissue: 0.0,
            resample: Resample::Lanczos3,
        };
        let plan = plan_tiles(&slide, None, &cfg).unwrap();
        assert!(plan.warning.as_deref().unwrap().contains("upsampled 2.00x"));
        assert_eq!(plan.tiles[0].width, 4.0);
        let bad = TilingConfig { size: 0, ..cfg };
        assert!(plan_tiles(&slide, None, &bad).is_err());
    }
}
