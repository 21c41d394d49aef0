//! The satellite domain's pre-training image pool: random chips of the recipe's rasters read
//! online, window by window (a raster is never read whole), each chip determined by its draw
//! seed so that a resumed run sees the same chips. Values become 8-bit RGB as `satellite embed`
//! scales them to [0, 1]: 8-bit bands as they are, other types stretched between their 2nd and
//! 98th percentiles; the recipe's `crops.mean/std` then apply as for any image.
//!
//! ```toml
//! [data.source]
//! domain = "satellite"
//! paths = ["scene.tif"]     # GeoTIFF, COG, anything GDAL opens
//! bands = [1, 2, 3]         # three bands, 1-based, in RGB order (default 1, 2, 3)
//! chip_size = 224           # default 224
//! chips_per_epoch = 10000   # default 10000
//! ```

use std::path::PathBuf;

use dinoadapt_datasets::{DomainError, ImageError, ImageSource};
use image::{DynamicImage, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use crate::normalize::Normalization;
use crate::{Raster, Window};

/// The `[data.source]` keys of the satellite domain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RasterChipsConfig {
    /// Rasters (GeoTIFF, COG, ...).
    pub paths: Vec<PathBuf>,
    /// The three bands of a chip, 1-based, in RGB order.
    #[serde(default = "default_bands")]
    pub bands: Vec<usize>,
    /// Chip side in pixels.
    #[serde(default = "default_chip_size")]
    pub chip_size: usize,
    /// Chips that make one epoch.
    #[serde(default = "default_chips_per_epoch")]
    pub chips_per_epoch: usize,
}

fn default_bands() -> Vec<usize> {
    vec![1, 2, 3]
}

fn default_chip_size() -> usize {
    224
}

fn default_chips_per_epoch() -> usize {
    10_000
}

/// Draws until a chip has at least this fraction of valid pixels.
const MIN_VALID: f64 = 0.5;
const DRAWS: usize = 16;

/// Random chips of a set of rasters, as a pre-training image pool.
pub struct RasterChips {
    paths: Vec<PathBuf>,
    /// (width, height) of each raster.
    sizes: Vec<(usize, usize)>,
    /// Cumulative chip positions: a raster is drawn in proportion to its area.
    cumulative: Vec<f64>,
    bands: Vec<usize>,
    size: usize,
    /// To [0, 1] (mean 0, std 1).
    scale: Normalization,
    len: usize,
}

impl RasterChips {
    /// Open the rasters and measure their value ranges.
    pub fn open(cfg: &RasterChipsConfig) -> Result<RasterChips, DomainError> {
        let bad = |message: String| DomainError::Options {
            domain: "satellite",
            message,
        };
        let bands = cfg.bands.clone();
        if bands.len() != 3 {
            return Err(bad(format!(
                "bands: three bands (RGB order), not {bands:?}"
            )));
        }
        let size = cfg.chip_size;
        let input = |e: crate::SatelliteError| DomainError::Input(e.to_string());
        let rasters = cfg
            .paths
            .iter()
            .map(|p| Raster::open(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(input)?;
        let mut sizes = Vec::new();
        let mut cumulative = Vec::new();
        let mut total = 0.0;
        for r in &rasters {
            let info = r.info();
            if info.width < size || info.height < size {
                return Err(DomainError::Input(format!(
                    "{}: {}x{} px, smaller than chip_size {size}",
                    r.path().display(),
                    info.width,
                    info.height
                )));
            }
            sizes.push((info.width, info.height));
            total += ((info.width - size + 1) * (info.height - size + 1)) as f64;
            cumulative.push(total);
        }
        let refs: Vec<&Raster> = rasters.iter().collect();
        let mut scale = Normalization::preset("imagenet", &refs, &bands).map_err(input)?;
        scale.mean = vec![0.0; 3];
        scale.std = vec![1.0; 3];
        Ok(RasterChips {
            paths: cfg.paths.clone(),
            sizes,
            cumulative,
            bands,
            size,
            scale,
            len: cfg.chips_per_epoch.max(1),
        })
    }

    fn chip(&self, rng: &mut StdRng) -> Result<(RgbImage, f64), String> {
        let total = *self.cumulative.last().unwrap_or(&0.0);
        let at = rng.random_range(0.0..total.max(f64::MIN_POSITIVE));
        let i = self
            .cumulative
            .iter()
            .position(|&c| at < c)
            .unwrap_or(self.paths.len() - 1);
        let (w, h) = self.sizes[i];
        let col = rng.random_range(0..=w - self.size);
        let row = rng.random_range(0..=h - self.size);
        let raster = Raster::open(&self.paths[i]).map_err(|e| e.to_string())?;
        let mut px = raster
            .read_window(
                &self.bands,
                Window {
                    col: col as i64,
                    row: row as i64,
                    width: self.size,
                    height: self.size,
                },
            )
            .map_err(|e| e.to_string())?;
        let valid = px.valid_fraction();
        self.scale.apply(&mut px.data, &px.valid);
        let plane = self.size * self.size;
        let mut rgb = vec![0u8; 3 * plane];
        for (p, o) in rgb.chunks_exact_mut(3).enumerate() {
            for (c, v) in o.iter_mut().enumerate() {
                *v = (px.data[c * plane + p].clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
        let size = self.size as u32;
        Ok((
            RgbImage::from_raw(size, size, rgb).expect("sized above"),
            valid,
        ))
    }
}

impl ImageSource for RasterChips {
    fn len(&self) -> usize {
        self.len
    }

    fn image(&self, index: usize, seed: u64) -> Result<DynamicImage, ImageError> {
        let mut rng = StdRng::seed_from_u64(seed ^ (index as u64).rotate_left(32));
        let fail = |reason: String| ImageError::Decode {
            path: format!("chip {index} of the recipe's rasters").into(),
            reason,
        };
        let mut best: Option<(RgbImage, f64)> = None;
        for _ in 0..DRAWS {
            let (img, valid) = self.chip(&mut rng).map_err(fail)?;
            if valid >= MIN_VALID {
                return Ok(DynamicImage::ImageRgb8(img));
            }
            if best.as_ref().is_none_or(|b| valid > b.1) {
                best = Some((img, valid));
            }
        }
        Ok(DynamicImage::ImageRgb8(best.expect("DRAWS > 0").0))
    }

    fn describe(&self) -> String {
        format!(
            "random {}-px chips (bands {:?}) of {} rasters ({} per epoch)",
            self.size,
            self.bands,
            self.paths.len(),
            self.len
        )
    }
}
