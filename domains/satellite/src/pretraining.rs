//! The satellite domain's pre-training image pool: random chips of the recipe's rasters read
//! online, window by window (a raster is never read whole), each chip determined by its draw
//! seed so that a resumed run sees the same chips. Values are scaled to [0, 1] as `satellite
//! embed` scales them: 8-bit bands as they are, other types stretched between their 2nd and
//! 98th percentiles; the recipe's `crops.mean/std` then apply as for any image. Three bands
//! make RGB chips (8-bit, as image files); any other number (a model with `model.in_chans` =
//! that number, e.g. 4 for RGB + near-infrared) gives every band, unquantised.
//!
//! ```toml
//! [data.source]
//! domain = "satellite"
//! paths = ["scene.tif"]     # GeoTIFF, COG, anything GDAL opens
//! bands = [1, 2, 3]         # bands, 1-based: three in RGB order (default), or any number
//! chip_size = 224           # default 224
//! chips_per_epoch = 10000   # default 10000
//! ```

use std::path::PathBuf;

use dinoadapt_datasets::{DomainError, ImageError, ImageSource, MultiBandImage};
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
    /// The bands of a chip, 1-based: three in RGB order, or as many as the model's channels.
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
        if bands.is_empty() || bands.contains(&0) {
            return Err(bad(format!(
                "bands: 1-based band numbers (three in RGB order for an RGB model), not \
                 {bands:?}"
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
        let scale = Normalization::preset("unit", &refs, &bands).map_err(input)?;
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

    /// A random chip's bands scaled to [0, 1] (band-major), and its valid fraction.
    fn chip(&self, rng: &mut StdRng) -> Result<(Vec<f32>, f64), String> {
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
        px.data.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
        Ok((px.data, valid))
    }

    /// The chip of draw `index` with `seed`: the first of [`DRAWS`] random chips with at least
    /// [`MIN_VALID`] valid pixels, or the most valid of them.
    fn drawn(&self, index: usize, seed: u64) -> Result<Vec<f32>, ImageError> {
        let mut rng = StdRng::seed_from_u64(seed ^ (index as u64).rotate_left(32));
        let fail = |reason: String| ImageError::Decode {
            path: format!("chip {index} of the recipe's rasters").into(),
            reason,
        };
        let mut best: Option<(Vec<f32>, f64)> = None;
        for _ in 0..DRAWS {
            let (chip, valid) = self.chip(&mut rng).map_err(fail)?;
            if valid >= MIN_VALID {
                return Ok(chip);
            }
            if best.as_ref().is_none_or(|b| valid > b.1) {
                best = Some((chip, valid));
            }
        }
        Ok(best.expect("DRAWS > 0").0)
    }
}

impl ImageSource for RasterChips {
    fn len(&self) -> usize {
        self.len
    }

    fn image(&self, index: usize, seed: u64) -> Result<DynamicImage, ImageError> {
        if self.bands.len() != 3 {
            return Err(ImageError::Decode {
                path: format!("chip {index} of the recipe's rasters").into(),
                reason: format!(
                    "an RGB model takes three bands, the source has {} (set model.in_chans = \
                     {} to train on all of them)",
                    self.bands.len(),
                    self.bands.len()
                ),
            });
        }
        let data = self.drawn(index, seed)?;
        let plane = self.size * self.size;
        let mut rgb = vec![0u8; 3 * plane];
        for (p, o) in rgb.chunks_exact_mut(3).enumerate() {
            for (c, v) in o.iter_mut().enumerate() {
                *v = (data[c * plane + p] * 255.0).round() as u8;
            }
        }
        let size = self.size as u32;
        let img = RgbImage::from_raw(size, size, rgb).expect("sized above");
        Ok(DynamicImage::ImageRgb8(img))
    }

    fn bands(&self, index: usize, seed: u64) -> Result<MultiBandImage, ImageError> {
        let data = self.drawn(index, seed)?;
        let plane = self.size * self.size;
        Ok(MultiBandImage {
            width: self.size as u32,
            height: self.size as u32,
            bands: data.chunks_exact(plane).map(<[f32]>::to_vec).collect(),
        })
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
