//! `dinoadapt satellite chips`: the table of every chip of a set of rasters (grid position,
//! world bounds, CRS, valid fraction, whether it passes the nodata limit) and, with a label
//! raster, that raster warped onto each raster's grid (`labels/<raster>.tif`) and each chip's
//! label coverage and mean, written to `chips.parquet`.

use std::path::{Path, PathBuf};

use dinoadapt_datasets::column as col;
use dinoadapt_datasets::{regions_table, write_parquet, Region};
use polars::prelude::{IntoColumn, NamedFrom, Series};

use crate::align::{warp_to_grid, LabelResampling};
use crate::chips::ChipGrid;
use crate::error::{Result, SatelliteError};
use crate::predict::read_batch;
use crate::raster::Raster;
use crate::source::{chip_region, crs_label, ChipConfig};

/// What [`chip_table`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ChipTable {
    pub chips: usize,
    /// Chips within the nodata limit.
    pub kept: usize,
    pub table: PathBuf,
}

/// Lays `cfg`'s chips over every raster of `rasters` and writes `out/chips.parquet` (and the
/// warped label rasters under `out/labels/` when `labels` is given).
pub fn chip_table(
    rasters: &[PathBuf],
    cfg: &ChipConfig,
    labels: Option<&Path>,
    resampling: LabelResampling,
    out: &Path,
) -> Result<ChipTable> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SatelliteError::Io { path, source }
    };
    let label = labels.map(Raster::open).transpose()?;
    let plane = cfg.size * cfg.size;
    let mut regions: Vec<Region> = Vec::new();
    let (mut kept, mut label_valid, mut label_mean, mut label_path) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for path in rasters {
        let raster = Raster::open(path)?;
        raster.check_bands(&cfg.bands)?;
        let info = raster.info().clone();
        let gt = info.require_geotransform()?;
        let aligned = match &label {
            Some(l) => {
                let stem = info.path.file_stem().unwrap_or_default().to_string_lossy();
                let dir = out.join("labels");
                std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                Some(warp_to_grid(
                    l,
                    &info,
                    &dir.join(format!("{stem}.tif")),
                    resampling,
                )?)
            }
            None => None,
        };
        let grid = ChipGrid::new(info.width, info.height, cfg.size, cfg.stride)?;
        let crs = crs_label(info.crs.as_ref());
        for part in grid.chips(&gt).chunks(64) {
            let batch = read_batch(&raster, &cfg.bands, part, cfg.size)?;
            let labels = match &aligned {
                Some(a) => Some(read_batch(a, &[1], part, cfg.size)?),
                None => None,
            };
            for (i, chip) in part.iter().enumerate() {
                let valid = &batch.valid[i * plane..(i + 1) * plane];
                let fraction = valid.iter().filter(|&&v| v).count() as f64 / plane as f64;
                kept.push(fraction > 0.0 && 1.0 - fraction <= cfg.max_nodata);
                let (lv, lm) = match &labels {
                    Some(l) => {
                        let (v, ok) = (
                            &l.raw[i * plane..(i + 1) * plane],
                            &l.valid[i * plane..(i + 1) * plane],
                        );
                        let n = ok.iter().filter(|&&o| o).count();
                        let sum: f64 = v
                            .iter()
                            .zip(ok)
                            .filter(|(_, &o)| o)
                            .map(|(&x, _)| x as f64)
                            .sum();
                        (
                            Some(n as f64 / plane as f64),
                            (n > 0).then(|| sum / n as f64),
                        )
                    }
                    None => (None, None),
                };
                label_valid.push(lv);
                label_mean.push(lm);
                label_path.push(aligned.as_ref().map(|a| a.path().display().to_string()));
                regions.push(chip_region(&info.path, chip, &crs, fraction));
            }
        }
    }
    let kept_n = kept.iter().filter(|&&k| k).count();
    let table = out.join("chips.parquet");
    let bad = |e: String| SatelliteError::invalid(&table, e);
    let mut df = regions_table(&regions)
        .drop("feature_row")
        .map_err(|e| bad(e.to_string()))?;
    let mut add =
        |c: polars::prelude::Column| df.with_column(c).map(drop).map_err(|e| bad(e.to_string()));
    add(col::<bool>("kept", kept))?;
    if label.is_some() {
        add(Series::new("label_valid_fraction".into(), label_valid).into_column())?;
        add(Series::new("label_mean".into(), label_mean).into_column())?;
        add(Series::new("label_raster".into(), label_path).into_column())?;
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    write_parquet(&table, &mut df).map_err(|e| bad(e.to_string()))?;
    Ok(ChipTable {
        chips: regions.len(),
        kept: kept_n,
        table,
    })
}
