//! Tiled inference: chips of a raster -> a model -> predictions blended into one georeferenced
//! float32 raster on the source grid, with nodata wherever the input was nodata.

use std::path::{Path, PathBuf};

use crate::chips::{Chip, ChipGrid};
use crate::error::{Result, SatelliteError};
use crate::normalize::Normalization;
use crate::raster::{Raster, Window};
use crate::stitch::{Blend, Stitcher};
use crate::writer::{GeoTiffWriter, OutputSpec};
use dinoadapt_datasets::class_planes::argmax_at;

/// A batch of chips as read from the raster.
pub struct ChipBatch {
    pub chips: Vec<Chip>,
    pub size: usize,
    /// Selected bands per chip.
    pub bands: usize,
    /// Raw band values: [chip][band][row][col].
    pub raw: Vec<f32>,
    /// [chip][row][col]: inside the raster and not nodata.
    pub valid: Vec<bool>,
}

impl ChipBatch {
    /// The chips at `keep` (indices into this batch).
    pub fn select(&self, keep: &[usize]) -> ChipBatch {
        let plane = self.size * self.size;
        let per = self.bands * plane;
        ChipBatch {
            chips: keep.iter().map(|&i| self.chips[i]).collect(),
            size: self.size,
            bands: self.bands,
            raw: keep
                .iter()
                .flat_map(|&i| self.raw[i * per..(i + 1) * per].iter().copied())
                .collect(),
            valid: keep
                .iter()
                .flat_map(|&i| self.valid[i * plane..(i + 1) * plane].iter().copied())
                .collect(),
        }
    }

    /// The chips normalised for a model: [chip][band][row][col].
    pub fn normalized(&self, norm: &Normalization) -> Vec<f32> {
        let mut x = self.raw.clone();
        let plane = self.size * self.size;
        for (chip, valid) in x
            .chunks_mut(self.bands * plane)
            .zip(self.valid.chunks(plane))
        {
            norm.apply(chip, valid);
        }
        x
    }
}

/// Anything that maps a batch of chips to per-pixel predictions
/// `[chip][channel][row][col]` at the chip's own resolution.
pub trait ChipModel {
    fn channels(&self) -> usize;
    fn predict(&mut self, batch: &ChipBatch) -> std::result::Result<Vec<f32>, String>;
}

/// The check "model": returns one input band unchanged. Stitching its output must reproduce the
/// band exactly, which proves the chip grid, the blending and the georeferencing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BandPassthrough {
    /// Index into the selected bands (0-based).
    pub band: usize,
}

/// A `band:N` head the selection does not have.
#[derive(Debug, thiserror::Error)]
pub enum BandHeadError {
    #[error("--head `{spec}`: band:N with N a number")]
    NotANumber {
        spec: String,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error("--head band:{band}: the selection --bands {bands:?} has bands 1..={}", bands.len())]
    OutOfRange { band: usize, bands: Vec<usize> },
}

impl BandPassthrough {
    /// The head `spec` names when it is `band:N`: band N (1-based) of the selection `bands`;
    /// `None` for any other head.
    pub fn parse(spec: &str, bands: &[usize]) -> std::result::Result<Option<Self>, BandHeadError> {
        let Some(n) = spec.strip_prefix("band:") else {
            return Ok(None);
        };
        let n: usize = n.parse().map_err(|source| BandHeadError::NotANumber {
            spec: spec.to_string(),
            source,
        })?;
        if n == 0 || n > bands.len() {
            return Err(BandHeadError::OutOfRange {
                band: n,
                bands: bands.to_vec(),
            });
        }
        Ok(Some(BandPassthrough { band: n - 1 }))
    }
}

impl ChipModel for BandPassthrough {
    fn channels(&self) -> usize {
        1
    }

    fn predict(&mut self, batch: &ChipBatch) -> std::result::Result<Vec<f32>, String> {
        let plane = batch.size * batch.size;
        Ok(batch
            .raw
            .chunks(batch.bands * plane)
            .flat_map(|chip| {
                chip[self.band * plane..(self.band + 1) * plane]
                    .iter()
                    .copied()
            })
            .collect())
    }
}

/// How to run tiled inference.
#[derive(Debug, Clone)]
pub struct PredictConfig {
    pub bands: Vec<usize>,
    pub chip_size: usize,
    pub stride: usize,
    pub blend: Blend,
    pub batch_size: usize,
    /// Output nodata value (default: the input band's nodata when it has one, else NaN).
    pub nodata: Option<f64>,
    pub cog: bool,
}

/// What a prediction run did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PredictSummary {
    pub output: PathBuf,
    pub chips: usize,
    pub chips_skipped_nodata: usize,
    pub megapixels: f64,
    pub seconds: f64,
}

/// Read the chips of one batch.
pub fn read_batch(
    raster: &Raster,
    bands: &[usize],
    chips: &[Chip],
    size: usize,
) -> Result<ChipBatch> {
    let plane = size * size;
    let mut batch = ChipBatch {
        chips: chips.to_vec(),
        size,
        bands: bands.len(),
        raw: Vec::with_capacity(chips.len() * bands.len() * plane),
        valid: Vec::with_capacity(chips.len() * plane),
    };
    for chip in chips {
        let px = raster.read_window(bands, chip.window)?;
        batch.raw.extend_from_slice(&px.data);
        batch.valid.extend_from_slice(&px.valid);
    }
    Ok(batch)
}

/// Tiled inference over `raster` into `output`; `progress` gets the number of chips done.
pub fn predict_raster(
    raster: &Raster,
    output: &Path,
    cfg: &PredictConfig,
    model: &mut dyn ChipModel,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PredictSummary> {
    let t0 = std::time::Instant::now();
    let info = raster.info();
    raster.check_bands(&cfg.bands)?;
    let gt = info.require_geotransform()?;
    let grid = ChipGrid::new(info.width, info.height, cfg.chip_size, cfg.stride)?;
    let nodata = cfg
        .nodata
        .or(info.nodata[cfg.bands[0] - 1])
        .unwrap_or(f64::NAN);
    let writer = GeoTiffWriter::create(
        output,
        OutputSpec {
            width: info.width,
            height: info.height,
            bands: model.channels(),
            geotransform: gt,
            crs: info.crs.clone(),
            nodata,
            cog: cfg.cog,
        },
    )?;
    let mut stitcher = Stitcher::new(writer, cfg.chip_size, cfg.blend);
    let chips = grid.chips(&gt);
    let total = chips.len();
    let (mut done, mut skipped) = (0usize, 0usize);
    let plane = cfg.chip_size * cfg.chip_size;
    let channels = model.channels();
    // One row of chips at a time: rows above it are final once it starts.
    let mut start = 0;
    while start < chips.len() {
        let row = chips[start].grid_row;
        let end = chips[start..]
            .iter()
            .position(|c| c.grid_row != row)
            .map_or(chips.len(), |p| start + p);
        stitcher.flush_before(chips[start].window.row.max(0) as usize)?;
        for part in chips[start..end].chunks(cfg.batch_size.max(1)) {
            let batch = read_batch(raster, &cfg.bands, part, cfg.chip_size)?;
            // Chips with no valid pixel are not predicted (they would add no weight anyway).
            let keep: Vec<usize> = (0..part.len())
                .filter(|&i| batch.valid[i * plane..(i + 1) * plane].iter().any(|&v| v))
                .collect();
            skipped += part.len() - keep.len();
            if !keep.is_empty() {
                let batch = if keep.len() == part.len() {
                    batch
                } else {
                    batch.select(&keep)
                };
                let pred = model
                    .predict(&batch)
                    .map_err(|e| SatelliteError::invalid(raster.path(), format!("model: {e}")))?;
                if pred.len() != batch.chips.len() * channels * plane {
                    return Err(SatelliteError::invalid(
                        raster.path(),
                        format!(
                            "model returned {} values for {} chips of {channels}x{}x{}",
                            pred.len(),
                            batch.chips.len(),
                            cfg.chip_size,
                            cfg.chip_size
                        ),
                    ));
                }
                for (i, chip) in batch.chips.iter().enumerate() {
                    stitcher.add(
                        chip.window,
                        &pred[i * channels * plane..(i + 1) * channels * plane],
                        &batch.valid[i * plane..(i + 1) * plane],
                    );
                }
            }
            done += part.len();
            progress(done, total);
        }
        start = end;
    }
    let output = stitcher.finish()?;
    Ok(PredictSummary {
        output,
        chips: total,
        chips_skipped_nodata: skipped,
        megapixels: (info.width * info.height) as f64 / 1e6,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The class map of a probabilities GeoTIFF (`probs`, one band per class) written to `out` on
/// its grid: band 1 the most probable class (nodata where the input was), bands 2.. the
/// probabilities.
pub fn class_map(probs: &Path, out: &Path, classes: usize, cog: bool) -> Result<PathBuf> {
    let src = Raster::open(probs)?;
    let info = src.info().clone();
    let mut writer = GeoTiffWriter::create(
        out,
        OutputSpec {
            width: info.width,
            height: info.height,
            bands: 1 + classes,
            geotransform: info.require_geotransform()?,
            crs: info.crs.clone(),
            nodata: f64::NAN,
            cog,
        },
    )?;
    let bands: Vec<usize> = (1..=classes).collect();
    let w = info.width;
    for row0 in (0..info.height).step_by(256) {
        let rows = 256.min(info.height - row0);
        let px = src.read_window(
            &bands,
            Window {
                col: 0,
                row: row0 as i64,
                width: w,
                height: rows,
            },
        )?;
        let plane = rows * w;
        let mut data = Vec::with_capacity((1 + classes) * plane);
        data.extend((0..plane).map(|p| {
            if px.valid[p] {
                argmax_at(&px.data, classes, plane, p) as f32
            } else {
                f32::NAN
            }
        }));
        data.extend_from_slice(&px.data);
        writer.write_rows(row0, rows, data)?;
    }
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_heads_name_a_band_of_the_selection() {
        let bands = [3, 2, 1];
        assert_eq!(
            BandPassthrough::parse("band:2", &bands)
                .unwrap()
                .unwrap()
                .band,
            1
        );
        assert!(BandPassthrough::parse("pca", &bands).unwrap().is_none());
        let err = BandPassthrough::parse("band:x", &bands).unwrap_err();
        assert_eq!(err.to_string(), "--head `band:x`: band:N with N a number");
        assert!(std::error::Error::source(&err).is_some());
        for bad in ["band:0", "band:4"] {
            let err = BandPassthrough::parse(bad, &bands).unwrap_err();
            assert!(
                err.to_string()
                    .ends_with("the selection --bands [3, 2, 1] has bands 1..=3"),
                "{err}"
            );
        }
    }
}
