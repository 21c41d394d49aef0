//! Batches of slides through the stages tissue → tile → embed, run by the shared batch runner
//! (`dinoadapt_datasets::batch`): each slide's status (`status/<slide_id>.json`, written last)
//! and `manifest.parquet`, merged from every status file in the output folder (all shards, all
//! runs).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::backend::Backend;
use dinoadapt_datasets::batch::{BatchError, BatchJob, StatusFiles};
use dinoadapt_datasets::column as col;
use dinoadapt_datasets::embedding::{EmbedError, RegionEmbedder, Silent};
use dinoadapt_datasets::manifest::ManifestError;
use dinoadapt_datasets::report::{Report, Section};
use dinoadapt_datasets::{write_parquet, Provenance};
use polars::prelude::{DataFrame, IntoColumn, NamedFrom, PolarsError, Series};
use serde::{Deserialize, Serialize};

use crate::h5_bag::{self, H5BagError};
use crate::slide_list::SlideEntry;
use crate::source::TileSource;
use crate::tiling::{plan_tiles, read_tiles, TilePlan, TilingConfig};
use crate::tissue::{detect_tissue, TissueConfig};
use crate::{OpenOptions, PathologyError, Slide};

/// Why one slide (or the manifest) could not be done.
#[derive(Debug, thiserror::Error)]
pub enum SlideBatchError {
    #[error(transparent)]
    Slide(#[from] PathologyError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    H5(#[from] H5BagError),
    #[error(transparent)]
    Table(#[from] ManifestError),
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("building a table: {0}")]
    Polars(#[from] PolarsError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What happened to one slide (`status/<slide_id>.json`, the last thing written for it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlideStatus {
    pub slide_id: String,
    /// "done" or "failed".
    pub status: String,
    /// The last stage run: "tissue", "tile" or "embed".
    #[serde(default)]
    pub stage: String,
    pub error: String,
    pub format: String,
    pub mpp: Option<f64>,
    pub mpp_source: String,
    pub width: u64,
    pub height: u64,
    pub tiles: u64,
    pub tissue_fraction: f64,
    pub seconds: f64,
    /// Files written for the slide, relative to the output folder.
    pub outputs: Vec<String>,
}

/// The stages in order; each runs the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Tissue,
    Tile,
    Embed,
}

impl Stage {
    /// The stage's name in status files.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Tissue => "tissue",
            Stage::Tile => "tile",
            Stage::Embed => "embed",
        }
    }

    fn of(name: &str) -> Option<Stage> {
        [Stage::Tissue, Stage::Tile, Stage::Embed]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

/// The model side of the embed stage, built once for the batch.
pub struct SlideEmbedding<B: Backend> {
    pub embedder: RegionEmbedder<B>,
    /// Written into each `.h5` bag.
    pub provenance: Provenance,
    /// Also write each bag as `.h5` (CLAM / TRIDENT layout).
    pub h5: bool,
}

/// A batch of slides through the stages up to `stage`, for [`dinoadapt_datasets::run_batch`].
pub struct SlideBatch<'a, B: Backend> {
    /// The output folder.
    pub out: PathBuf,
    pub stage: Stage,
    /// Level-0 µm/px for slides that record none (a list's per-slide `mpp` wins).
    pub mpp: Option<f64>,
    pub tissue: TissueConfig,
    /// The tiling of the tile and embed stages.
    pub tiling: Option<TilingConfig>,
    /// Also write every tile's pixels as a PNG (`tile_images/<slide>/`, for labelling tools,
    /// other trainers and image-folder monitors).
    pub tile_images: bool,
    /// The model of the embed stage.
    pub embedding: Option<&'a SlideEmbedding<B>>,
}

impl<B: Backend> BatchJob for SlideBatch<'_, B> {
    type Item = SlideEntry;
    type Status = SlideStatus;
    type Error = SlideBatchError;

    fn id(&self, entry: &SlideEntry) -> String {
        entry.slide_id.clone()
    }

    fn run(&mut self, entry: &SlideEntry) -> Result<SlideStatus, SlideBatchError> {
        self.process(entry)
    }

    fn failed(&self, entry: &SlideEntry, error: &SlideBatchError) -> SlideStatus {
        let error = scrub(&format!("{error}"), entry);
        tracing::warn!("{error}");
        SlideStatus {
            slide_id: entry.slide_id.clone(),
            status: "failed".into(),
            stage: self.stage.name().into(),
            error,
            ..Default::default()
        }
    }

    /// Done at this run's stage or a later one (with its tile images when they are asked for).
    fn finished(&self, s: &SlideStatus) -> bool {
        s.status == "done"
            && Stage::of(&s.stage).is_some_and(|st| st >= self.stage)
            && (!self.tile_images || s.outputs.iter().any(|o| o.starts_with("tile_images/")))
    }

    fn outputs(&self, s: &SlideStatus) -> Vec<String> {
        s.outputs.clone()
    }

    /// `manifest.parquet` from every status file in `out/status` (all shards and runs so far,
    /// slides of other lists included), sorted by slide id.
    fn write_manifest(&mut self, _: &[&SlideStatus]) -> Result<PathBuf, SlideBatchError> {
        Ok(write_manifest(&self.out)?.0)
    }

    fn item_path(&self, entry: &SlideEntry) -> Option<PathBuf> {
        Some(entry.path.clone())
    }

    /// `pathology tissue|tile|embed`: the tissue QC thumbnails (the first 24 slides) and, when
    /// embedding, the model.
    fn report(&self) -> Option<Report> {
        let mut r = Report::new(format!("pathology {}", self.stage.name()));
        if let Some(e) = self.embedding {
            for (k, v) in e.provenance.pairs() {
                r = r.fact(k, v);
            }
        }
        Some(r.section(
            Section::new("Tissue")
                .text("The tissue found on each slide (QC thumbnails: the tissue outline in green).")
                .images_in(&self.out.join("tissue"), 24),
        ))
    }
}

impl<B: Backend> SlideBatch<'_, B> {
    /// One slide through the stages; its status when every stage succeeded.
    fn process(&self, entry: &SlideEntry) -> Result<SlideStatus, SlideBatchError> {
        let t0 = Instant::now();
        let id = &entry.slide_id;
        let mut status = SlideStatus {
            slide_id: id.clone(),
            ..Default::default()
        };
        let slide = Slide::open_with(
            &entry.path,
            &OpenOptions {
                mpp_override: entry.mpp.or(self.mpp),
            },
        )?;
        let info = slide.info().clone();
        status.format = info.format.clone();
        status.width = info.width;
        status.height = info.height;
        if let Some(m) = info.mpp {
            status.mpp = Some(m.mean());
            status.mpp_source = serde_json::to_value(m.source)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
        }
        let out = &self.out;
        let mkdir = |name: &str| {
            let dir = out.join(name);
            std::fs::create_dir_all(&dir)
                .map_err(|source| SlideBatchError::Io { path: dir, source })
        };
        mkdir("tissue")?;
        let detection = detect_tissue(&slide, &self.tissue)?;
        detection.write_geojson(&out.join(format!("tissue/{id}.geojson")))?;
        detection.write_qc_png(&out.join(format!("tissue/{id}.png")))?;
        status.tissue_fraction = detection.mask.fraction();
        status.outputs = vec![format!("tissue/{id}.geojson"), format!("tissue/{id}.png")];
        status.stage = Stage::Tissue.name().into();
        if let Some(cfg) = &self.tiling {
            let plan = plan_tiles(&slide, Some(&detection.mask), cfg)?;
            mkdir("tiles")?;
            write_parquet(
                &out.join(format!("tiles/{id}.parquet")),
                &mut tiles_table(&plan)?,
            )?;
            status.outputs.push(format!("tiles/{id}.parquet"));
            status.tiles = plan.tiles.len() as u64;
            if self.tile_images {
                let dir = format!("tile_images/{id}");
                mkdir(&dir)?;
                write_tile_images(&slide, &plan, &out.join(&dir))?;
                status.outputs.push(dir);
            }
            if let Some(w) = &plan.warning {
                tracing::warn!("{id}: {w}");
            }
            status.stage = Stage::Tile.name().into();
            if let (Some(e), false) = (self.embedding, plan.tiles.is_empty()) {
                let coords: Vec<[i64; 2]> = plan.tiles.iter().map(|t| [t.x, t.y]).collect();
                let extent = plan.tiles[0].width;
                let mpp = plan.mpp.mean();
                mkdir("features")?;
                let features = out.join(format!("features/{id}.safetensors"));
                let source = TileSource::new(Arc::new(slide), id.clone(), plan);
                let embedded = e.embedder.embed(source, &features, &mut Silent)?;
                status.outputs.push(format!("features/{id}.safetensors"));
                if e.h5 {
                    mkdir("h5")?;
                    h5_bag::write_bag(
                        &out.join(format!("h5/{id}.h5")),
                        &embedded.cls,
                        embedded.cls.len() / coords.len(),
                        &coords,
                        &h5_bag::TileAttrs {
                            patch_size: cfg.size as u64,
                            patch_size_level0: extent,
                            target_mpp: cfg.target_mpp,
                            slide_mpp: mpp,
                            level0_width: info.width,
                            level0_height: info.height,
                        },
                        &std::iter::once(("slide_id", id.clone()))
                            .chain(e.provenance.pairs())
                            .collect::<Vec<_>>(),
                    )?;
                    status.outputs.push(format!("h5/{id}.h5"));
                }
            }
            if self.embedding.is_some() {
                // A slide without tissue tiles is finished with an empty bag (no feature file).
                status.stage = Stage::Embed.name().into();
                if status.tiles == 0 {
                    status.error = "no tile reaches the tissue threshold; no features".into();
                }
            }
        }
        status.status = "done".into();
        status.seconds = t0.elapsed().as_secs_f64();
        Ok(status)
    }
}

/// Every tile of `plan` as `<feature_row>_x<x>_y<y>.png` in `dir` (level-0 coordinates, the
/// tile table's row order), read in blocks so that memory stays bounded on large slides.
fn write_tile_images(slide: &Slide, plan: &TilePlan, dir: &Path) -> Result<(), SlideBatchError> {
    const BLOCK: usize = 64;
    for (b, block) in plan.tiles.chunks(BLOCK).enumerate() {
        let images = read_tiles(slide, block, &plan.config)?;
        for (i, (t, img)) in block.iter().zip(images).enumerate() {
            let path = dir.join(format!("{:06}_x{}_y{}.png", b * BLOCK + i, t.x, t.y));
            img.save(&path).map_err(|e| SlideBatchError::Io {
                path,
                source: std::io::Error::other(e),
            })?;
        }
    }
    Ok(())
}

/// The tile table of a plan: feature row n = tile n, level-0 coordinates.
pub fn tiles_table(plan: &TilePlan) -> Result<DataFrame, PolarsError> {
    let t = &plan.tiles;
    DataFrame::new(
        t.len(),
        vec![
            col::<u64>("feature_row", (0..t.len() as u64).collect()),
            col::<u64>("tile_index", t.iter().map(|x| x.index as u64).collect()),
            col::<u32>("col", t.iter().map(|x| x.col).collect()),
            col::<u32>("row", t.iter().map(|x| x.row).collect()),
            col::<i64>("x", t.iter().map(|x| x.x).collect()),
            col::<i64>("y", t.iter().map(|x| x.y).collect()),
            col::<f64>("width", t.iter().map(|x| x.width).collect()),
            col::<f64>("height", t.iter().map(|x| x.height).collect()),
            col::<u32>("level", t.iter().map(|x| x.level).collect()),
            col::<f64>(
                "tissue_fraction",
                t.iter().map(|x| x.tissue_fraction).collect(),
            ),
        ],
    )
}

/// An error message with the slide's path replaced by its id (file and folder names can carry
/// patient names; outputs are keyed by the id the user controls).
fn scrub(message: &str, entry: &SlideEntry) -> String {
    let id = format!("slide {}", entry.slide_id);
    let mut m = message.replace(&entry.path.display().to_string(), &id);
    if let Ok(abs) = std::fs::canonicalize(&entry.path) {
        m = m.replace(&abs.display().to_string(), &id);
    }
    m
}

/// `manifest.parquet` from every status file in `out/status` (all shards so far), sorted by
/// slide id; its path and rows.
pub fn write_manifest(out: &Path) -> Result<(PathBuf, Vec<SlideStatus>), SlideBatchError> {
    let mut rows: Vec<SlideStatus> = StatusFiles::new(out).read_all()?;
    rows.sort_by(|a, b| a.slide_id.cmp(&b.slide_id));
    let s = |g: fn(&SlideStatus) -> &String| rows.iter().map(|r| g(r).clone()).collect::<Vec<_>>();
    let mut df = DataFrame::new(
        rows.len(),
        vec![
            col::<String>("slide_id", s(|r| &r.slide_id)),
            col::<String>("status", s(|r| &r.status)),
            col::<String>("stage", s(|r| &r.stage)),
            col::<String>("error", s(|r| &r.error)),
            col::<String>("format", s(|r| &r.format)),
            Series::new("mpp".into(), rows.iter().map(|r| r.mpp).collect::<Vec<_>>()).into_column(),
            col::<String>("mpp_source", s(|r| &r.mpp_source)),
            col::<u64>("width", rows.iter().map(|r| r.width).collect()),
            col::<u64>("height", rows.iter().map(|r| r.height).collect()),
            col::<u64>("tiles", rows.iter().map(|r| r.tiles).collect()),
            col::<f64>(
                "tissue_fraction",
                rows.iter().map(|r| r.tissue_fraction).collect(),
            ),
            col::<f64>("seconds", rows.iter().map(|r| r.seconds).collect()),
            col::<String>(
                "outputs",
                rows.iter().map(|r| r.outputs.join(";")).collect(),
            ),
        ],
    )?;
    let path = out.join("manifest.parquet");
    write_parquet(&path, &mut df)?;
    Ok((path, rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dinoadapt_core::backend::CpuBackend;

    fn tissue_batch(out: &Path, stage: Stage) -> SlideBatch<'static, CpuBackend> {
        SlideBatch {
            out: out.to_path_buf(),
            stage,
            mpp: None,
            tissue: TissueConfig::default(),
            tiling: None,
            tile_images: false,
            embedding: None,
        }
    }

    #[test]
    fn a_finished_slide_is_done_at_its_stage_or_later() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let mut s = SlideStatus {
            slide_id: "A".into(),
            status: "done".into(),
            stage: "tile".into(),
            outputs: vec!["tiles/A.parquet".into()],
            ..Default::default()
        };
        assert!(tissue_batch(out, Stage::Tile).finished(&s));
        assert!(tissue_batch(out, Stage::Tissue).finished(&s));
        assert!(
            !tissue_batch(out, Stage::Embed).finished(&s),
            "a later stage is not finished"
        );
        s.status = "failed".into();
        assert!(!tissue_batch(out, Stage::Tissue).finished(&s));
        StatusFiles::new(out).write("A", &s).unwrap();
        let (_, rows) = write_manifest(out).unwrap();
        assert_eq!(rows, vec![s]);
    }
}
