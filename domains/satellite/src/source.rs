//! Chips of one or more rasters as a [`RegionSource`]: the program embeds them like any other
//! domain's regions, with each chip's bounds in the raster's CRS.

use std::collections::HashMap;

use dinoadapt_datasets::{Region, RegionBatch, RegionSource};

use crate::chips::{Chip, ChipGrid};
use crate::error::{Result, SatelliteError};
use crate::normalize::Normalization;
use crate::predict::read_batch;
use crate::raster::{Crs, Raster};

/// How chips are cut and prepared for a model.
#[derive(Debug, Clone)]
pub struct ChipConfig {
    pub bands: Vec<usize>,
    pub size: usize,
    pub stride: usize,
    /// Chips with a larger nodata fraction are skipped (1.0 keeps all but empty chips).
    pub max_nodata: f64,
}

/// A short name for a CRS: "EPSG:n" when it has a code, else its WKT name.
pub fn crs_label(crs: Option<&Crs>) -> String {
    match crs {
        Some(Crs {
            epsg: Some(code), ..
        }) => format!("EPSG:{code}"),
        Some(c) => c
            .wkt
            .split('"')
            .nth(1)
            .map(|n| n.to_string())
            .unwrap_or_else(|| "custom".into()),
        None => "none".into(),
    }
}

/// The region of `chip` of the raster at `path` (CRS label `crs`), `valid_fraction` of it valid.
pub fn chip_region(path: &std::path::Path, chip: &Chip, crs: &str, valid_fraction: f64) -> Region {
    Region {
        source: path.display().to_string(),
        index: chip.index,
        col: chip.window.col,
        row: chip.window.row,
        width: chip.window.width,
        height: chip.window.height,
        bounds: chip.bounds,
        crs: crs.to_string(),
        valid_fraction,
    }
}

/// Check that `raster` can give every chip `cfg` lays over it: its bands exist, it is
/// georeferenced, and every chip window of those bands reads (a truncated file opens but fails
/// on the blocks it lacks). Its number of chips.
pub fn check_chips(raster: &Raster, cfg: &ChipConfig) -> Result<usize> {
    raster.check_bands(&cfg.bands)?;
    let info = raster.info();
    let gt = info.require_geotransform()?;
    let chips = ChipGrid::new(info.width, info.height, cfg.size, cfg.stride)?.chips(&gt);
    for part in chips.chunks(64) {
        read_batch(raster, &cfg.bands, part, cfg.size)?;
    }
    Ok(chips.len())
}

/// Every chip of a list of rasters, normalised, in raster then row-major order.
pub struct ChipSource {
    rasters: Vec<(Raster, Vec<Chip>, String)>,
    cfg: ChipConfig,
    norm: Normalization,
    cursor: (usize, usize),
    skipped: usize,
}

impl ChipSource {
    pub fn new(rasters: Vec<Raster>, cfg: ChipConfig, norm: Normalization) -> Result<ChipSource> {
        if norm.mean.len() != cfg.bands.len() {
            return Err(SatelliteError::invalid(
                std::path::Path::new("--normalize"),
                format!(
                    "normalisation has {} channels for {} bands",
                    norm.mean.len(),
                    cfg.bands.len()
                ),
            ));
        }
        let mut all = Vec::with_capacity(rasters.len());
        for r in rasters {
            r.check_bands(&cfg.bands)?;
            let info = r.info();
            let gt = info.require_geotransform()?;
            let chips = ChipGrid::new(info.width, info.height, cfg.size, cfg.stride)?.chips(&gt);
            let label = crs_label(info.crs.as_ref());
            all.push((r, chips, label));
        }
        Ok(ChipSource {
            rasters: all,
            cfg,
            norm,
            cursor: (0, 0),
            skipped: 0,
        })
    }

    /// Chips skipped so far for too much nodata.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    fn batch(&mut self, max: usize) -> Result<Option<RegionBatch>> {
        let plane = self.cfg.size * self.cfg.size;
        let c = self.cfg.bands.len();
        let mut regions = Vec::with_capacity(max);
        let mut pixels = Vec::with_capacity(max * c * plane);
        while regions.len() < max {
            let (ri, ci) = self.cursor;
            let Some((raster, chips, crs)) = self.rasters.get(ri) else {
                break;
            };
            if ci >= chips.len() {
                self.cursor = (ri + 1, 0);
                continue;
            }
            let take = (max - regions.len()).min(chips.len() - ci);
            let part = &chips[ci..ci + take];
            let batch = read_batch(raster, &self.cfg.bands, part, self.cfg.size)?;
            let x = batch.normalized(&self.norm);
            for (i, chip) in part.iter().enumerate() {
                let valid = &batch.valid[i * plane..(i + 1) * plane];
                let fraction = valid.iter().filter(|&&v| v).count() as f64 / plane as f64;
                if fraction == 0.0 || 1.0 - fraction > self.cfg.max_nodata {
                    self.skipped += 1;
                    continue;
                }
                pixels.extend_from_slice(&x[i * c * plane..(i + 1) * c * plane]);
                regions.push(chip_region(raster.path(), chip, crs, fraction));
            }
            self.cursor = (ri, ci + take);
        }
        if regions.is_empty() {
            return Ok(None);
        }
        Ok(Some(RegionBatch {
            regions,
            pixels,
            size: (self.cfg.size, self.cfg.size),
            skipped: Vec::new(),
        }))
    }
}

impl RegionSource for ChipSource {
    fn size(&self) -> (usize, usize) {
        (self.cfg.size, self.cfg.size)
    }

    fn max_regions(&self) -> usize {
        self.rasters.iter().map(|(_, c, _)| c.len()).sum()
    }

    /// One channel per selected band.
    fn channels(&self) -> usize {
        self.cfg.bands.len()
    }

    fn next_batch(&mut self, max: usize) -> std::result::Result<Option<RegionBatch>, String> {
        self.batch(max).map_err(|e| e.to_string())
    }

    fn metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            ("domain".into(), "satellite".into()),
            (
                "normalization".into(),
                serde_json::to_string(&self.norm).unwrap_or_default(),
            ),
            ("bands".into(), format!("{:?}", self.cfg.bands)),
            ("chip_size".into(), self.cfg.size.to_string()),
            ("chip_stride".into(), self.cfg.stride.to_string()),
            ("max_nodata".into(), self.cfg.max_nodata.to_string()),
            (
                "rasters".into(),
                serde_json::to_string(
                    &self
                        .rasters
                        .iter()
                        .map(|(r, _, crs)| (r.path().display().to_string(), crs.clone()))
                        .collect::<Vec<_>>(),
                )
                .unwrap_or_default(),
            ),
        ])
    }
}
