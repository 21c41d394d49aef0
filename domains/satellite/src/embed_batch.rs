//! Embedding rasters as a batch for the shared runner (`dinoadapt_datasets::batch`), one item
//! per raster (`dinoadapt satellite embed`), in one of two output modes:
//! - **one file** (the default): every raster is checked first (bands, georeferencing, every
//!   chip window read); the manifest step embeds the rasters that passed together into the one
//!   features file and chips table, normalised over them, as the command always did. A raster
//!   that fails is left out with a message instead of spoiling the file.
//! - **per raster** (with `--shard` or `--resume`): raster `<stem>` is embedded alone, normalised
//!   on its own, into `<folder>/<stem>.safetensors` + `<stem>.parquet` with
//!   `<folder>/status/<stem>.json` written last; `<folder>/manifest.parquet` lists every raster
//!   with a status (all shards so far). `<folder>` is the output path without its extension.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::Backend;
use dinoadapt_datasets::batch::BatchJob;
use dinoadapt_datasets::column as col;
use dinoadapt_datasets::embedding::{EmbedError, Progress, RegionEmbedder};
use dinoadapt_datasets::{regions_table, write_parquet, ManifestError};
use polars::prelude::{DataFrame, PolarsError};
use serde::{Deserialize, Serialize};

use crate::error::SatelliteError;
use crate::normalize::{default_preset, Normalization};
use crate::raster::Raster;
use crate::source::{check_chips, ChipConfig, ChipSource};

/// Why a raster (or the batch's output) could not be embedded.
#[derive(Debug, thiserror::Error)]
pub enum RasterBatchError {
    #[error(transparent)]
    Raster(#[from] SatelliteError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Table(#[from] ManifestError),
    #[error("building the manifest: {0}")]
    Polars(#[from] PolarsError),
}

/// What the one-file mode embedded.
#[derive(Debug, Clone, PartialEq)]
pub struct JointEmbedding {
    pub chips: usize,
    pub seconds: f64,
}

/// What happened to one raster (`status/<raster_id>.json` in per-raster mode).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RasterStatus {
    pub raster_id: String,
    pub raster: String,
    /// "done" (embedded, or checked in one-file mode) or "failed".
    pub status: String,
    pub error: String,
    /// Chips embedded (per raster) or laid over the raster (one file, before the nodata filter).
    pub chips: u64,
    pub seconds: f64,
    /// Files written for the raster, relative to the output folder.
    pub outputs: Vec<String>,
}

/// Where the features go.
pub enum RasterOutputs {
    /// One features file and its chips table for every raster.
    OneFile { features: PathBuf, table: PathBuf },
    /// A features file and a chips table per raster in this folder.
    PerRaster { folder: PathBuf },
}

/// A progress report for each embedding (one per raster, or the one joint file).
pub type ProgressFactory<'a> = Box<dyn FnMut() -> Box<dyn Progress> + 'a>;

/// Rasters through one backbone.
pub struct RasterEmbedBatch<'a, B: Backend> {
    pub outputs: RasterOutputs,
    pub chips: ChipConfig,
    /// The normalisation preset (`Normalization::for_model`; by default `default_preset` of
    /// the model).
    pub normalize: String,
    pub embedder: &'a RegionEmbedder<B>,
    pub progress: ProgressFactory<'a>,
    /// One-file mode: the rasters that passed their check, in item order.
    checked: Vec<Raster>,
    /// One-file mode: what the joint file holds, once written.
    pub joint: Option<JointEmbedding>,
}

impl<'a, B: Backend> RasterEmbedBatch<'a, B> {
    pub fn new(
        outputs: RasterOutputs,
        chips: ChipConfig,
        normalize: Option<String>,
        embedder: &'a RegionEmbedder<B>,
        progress: ProgressFactory<'a>,
    ) -> Self {
        let record = embedder.model.config.channels.as_ref();
        RasterEmbedBatch {
            outputs,
            chips,
            normalize: normalize.unwrap_or_else(|| default_preset(record).into()),
            embedder,
            progress,
            checked: Vec::new(),
            joint: None,
        }
    }
}

/// A raster's id: its file stem.
fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "raster".into())
}

impl<B: Backend> BatchJob for RasterEmbedBatch<'_, B> {
    /// The raster's position on the command line and its path.
    type Item = (usize, PathBuf);
    type Status = RasterStatus;
    type Error = RasterBatchError;

    /// The file stem per raster (two rasters sharing one are refused); the position in
    /// one-file mode, which writes no status.
    fn id(&self, (index, path): &(usize, PathBuf)) -> String {
        match self.outputs {
            RasterOutputs::OneFile { .. } => index.to_string(),
            RasterOutputs::PerRaster { .. } => stem(path),
        }
    }

    fn run(&mut self, (_, path): &(usize, PathBuf)) -> Result<RasterStatus, RasterBatchError> {
        let t0 = Instant::now();
        let raster = Raster::open(path)?;
        let mut status = RasterStatus {
            raster_id: stem(path),
            raster: path.display().to_string(),
            status: "done".into(),
            ..Default::default()
        };
        match &self.outputs {
            RasterOutputs::OneFile { .. } => {
                status.chips = check_chips(&raster, &self.chips)? as u64;
                self.checked.push(raster);
            }
            RasterOutputs::PerRaster { folder } => {
                let record = self.embedder.model.config.channels.as_ref();
                let norm = Normalization::for_model(
                    &self.normalize,
                    &[&raster],
                    &self.chips.bands,
                    record,
                )?;
                let source = ChipSource::new(vec![raster], self.chips.clone(), norm)?;
                let id = &status.raster_id;
                let features = format!("{id}.safetensors");
                let table = format!("{id}.parquet");
                let e = self.embedder.embed(
                    source,
                    &folder.join(&features),
                    &mut *(self.progress)(),
                )?;
                write_parquet(&folder.join(&table), &mut regions_table(&e.regions))?;
                status.chips = e.regions.len() as u64;
                status.outputs = vec![features, table];
            }
        }
        status.seconds = t0.elapsed().as_secs_f64();
        Ok(status)
    }

    fn failed(&self, (_, path): &(usize, PathBuf), error: &RasterBatchError) -> RasterStatus {
        tracing::warn!("raster left out: {error}");
        RasterStatus {
            raster_id: stem(path),
            raster: path.display().to_string(),
            status: "failed".into(),
            error: error.to_string(),
            ..Default::default()
        }
    }

    fn finished(&self, s: &RasterStatus) -> bool {
        s.status == "done"
    }

    fn outputs(&self, s: &RasterStatus) -> Vec<String> {
        s.outputs.clone()
    }

    /// One-file mode: embed the rasters that passed into the features file and its table.
    /// Per-raster mode: `manifest.parquet`, one row per raster with a status.
    fn write_manifest(&mut self, statuses: &[&RasterStatus]) -> Result<PathBuf, RasterBatchError> {
        match &self.outputs {
            RasterOutputs::OneFile { features, table } => {
                let rasters = std::mem::take(&mut self.checked);
                if rasters.is_empty() {
                    return Ok(features.clone());
                }
                let norm = Normalization::for_model(
                    &self.normalize,
                    &rasters.iter().collect::<Vec<_>>(),
                    &self.chips.bands,
                    self.embedder.model.config.channels.as_ref(),
                )?;
                let source = ChipSource::new(rasters, self.chips.clone(), norm)?;
                let e = self
                    .embedder
                    .embed(source, features, &mut *(self.progress)())?;
                write_parquet(table, &mut regions_table(&e.regions))?;
                self.joint = Some(JointEmbedding {
                    chips: e.regions.len(),
                    seconds: e.seconds,
                });
                Ok(features.clone())
            }
            RasterOutputs::PerRaster { folder } => {
                let path = folder.join("manifest.parquet");
                write_parquet(&path, &mut manifest(statuses)?)?;
                Ok(path)
            }
        }
    }
}

/// The per-raster manifest: one row per raster.
fn manifest(rows: &[&RasterStatus]) -> Result<DataFrame, PolarsError> {
    let s = |g: fn(&RasterStatus) -> &String| rows.iter().map(|r| g(r).clone()).collect::<Vec<_>>();
    DataFrame::new(
        rows.len(),
        vec![
            col::<String>("raster_id", s(|r| &r.raster_id)),
            col::<String>("raster", s(|r| &r.raster)),
            col::<String>("status", s(|r| &r.status)),
            col::<String>("error", s(|r| &r.error)),
            col::<u64>("chips", rows.iter().map(|r| r.chips).collect()),
            col::<f64>("seconds", rows.iter().map(|r| r.seconds).collect()),
            col::<String>(
                "outputs",
                rows.iter().map(|r| r.outputs.join(";")).collect(),
            ),
        ],
    )
}
