//! `dinoadapt pathology tissue|tile|embed`: whole-slide images in batches.
//!
//! Every stage runs the ones before it: `tissue` writes the tissue GeoJSON (QuPath, level-0
//! coordinates) and a QC thumbnail; `tile` adds the tile table at a target mpp; `embed` adds
//! the slide's feature bag (safetensors, and `.h5` with `features` and `coords` as CLAM and
//! TRIDENT read it). One status file per slide is written last, so a rerun skips finished slides
//! and redoes the rest; `manifest.parquet` merges every slide's status (all shards).

mod batch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::backend::Backend;
use clap::{Args, Subcommand};
use dinoadapt_core::checkpoint::LoadedCheckpoint;
use dinoadapt_datasets::column as col;
use dinoadapt_datasets::{write_parquet, Provenance};
use dinoadapt_pathology::h5_bag;
use dinoadapt_pathology::source::TileSource;
use dinoadapt_pathology::tiling::{plan_tiles, TilePlan, TilingConfig};
use dinoadapt_pathology::tissue::{detect_tissue, TissueConfig};
use dinoadapt_pathology::{OpenOptions, Slide};
use indicatif::{ProgressBar, ProgressStyle};
use polars::prelude::DataFrame;

use crate::device::{on_device, BackendJob};
use crate::model_args::{LayerArgs, ModelArgs, RunArgs};
use batch::{
    collect_slides, finished, write_manifest, write_status, Shard, SlideEntry, SlideStatus,
};
use dinoadapt_datasets::embedding::{RegionEmbedder, Silent};

#[derive(Subcommand, Debug)]
pub enum PathologyCommand {
    /// Tissue masks: GeoJSON contours (QuPath, level-0 px) and QC thumbnails.
    Tissue(TissueArgs),
    /// Tissue, then tiles at a target mpp: tiles/<slide>.parquet (level-0 coordinates).
    Tile(TileArgs),
    /// Tissue, tiles, then a feature bag per slide (safetensors + .h5).
    Embed(Box<EmbedArgs>),
}

#[derive(Args, Debug, Clone)]
pub struct BatchArgs {
    /// Slides: files, folders (recursive) or CSV lists (columns path[, slide_id][, mpp]).
    #[arg(required = true)]
    pub slides: Vec<PathBuf>,
    /// Output folder.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Level-0 µm/px for slides that record none (a CSV `mpp` column wins).
    #[arg(long)]
    pub mpp: Option<f64>,
    /// Process shard i of n (`0/4`); default: SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT.
    #[arg(long)]
    pub shard: Option<String>,
    /// Redo slides that already finished.
    #[arg(long)]
    pub overwrite: bool,
    /// Keep marker-pen, dirt and black pixels in the tissue mask.
    #[arg(long)]
    pub keep_pen: bool,
    /// Smallest tissue piece kept, µm².
    #[arg(long, default_value_t = 10_000.0)]
    pub min_area_um2: f64,
}

#[derive(Args, Debug, Clone)]
pub struct TilingArgs {
    /// Tile pixel size in µm (0.5 ≈ 20x, 0.25 ≈ 40x).
    #[arg(long, default_value_t = 0.5)]
    pub target_mpp: f64,
    /// Tile side in pixels at the target mpp.
    #[arg(long, default_value_t = 224)]
    pub size: u32,
    /// Step between tiles in pixels (default: the size, no overlap).
    #[arg(long)]
    pub stride: Option<u32>,
    /// Keep tiles with at least this fraction of tissue.
    #[arg(long, default_value_t = 0.5)]
    pub min_tissue: f64,
}

impl TilingArgs {
    fn config(&self) -> anyhow::Result<TilingConfig> {
        anyhow::ensure!(self.target_mpp > 0.0, "--target-mpp must be positive");
        anyhow::ensure!(self.size > 0, "--size must be positive");
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.min_tissue),
            "--min-tissue must be within 0..1"
        );
        Ok(TilingConfig {
            target_mpp: self.target_mpp,
            size: self.size,
            stride: self.stride.unwrap_or(self.size).max(1),
            min_tissue: self.min_tissue,
            ..TilingConfig::default()
        })
    }
}

#[derive(Args, Debug)]
pub struct TissueArgs {
    #[command(flatten)]
    pub batch: BatchArgs,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct TileArgs {
    #[command(flatten)]
    pub batch: BatchArgs,
    #[command(flatten)]
    pub tiling: TilingArgs,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub batch: BatchArgs,
    #[command(flatten)]
    pub tiling: TilingArgs,
    #[command(flatten)]
    pub layers: LayerArgs,
    #[command(flatten)]
    pub run: RunArgs,
    /// Do not write the .h5 copy of each feature bag.
    #[arg(long)]
    pub no_h5: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Tissue,
    Tile,
    Embed,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Tissue => "tissue",
            Stage::Tile => "tile",
            Stage::Embed => "embed",
        }
    }
}

fn tissue_config(b: &BatchArgs) -> TissueConfig {
    TissueConfig {
        filter_pen: !b.keep_pen,
        min_area_um2: b.min_area_um2,
        ..TissueConfig::default()
    }
}

/// The tile table of a plan.
fn tiles_table(plan: &TilePlan) -> anyhow::Result<DataFrame> {
    let t = &plan.tiles;
    Ok(DataFrame::new(
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
    )?)
}

/// The model side of `embed`, built once for the batch.
struct Embedding<B: Backend> {
    embedder: RegionEmbedder<B>,
    provenance: Provenance,
    h5: bool,
}

/// One slide through the stages; the status says what happened (errors included).
fn process<B: Backend>(
    entry: &SlideEntry,
    args: &BatchArgs,
    tiling: Option<&TilingConfig>,
    embedding: Option<&Embedding<B>>,
) -> anyhow::Result<SlideStatus> {
    let t0 = Instant::now();
    let id = &entry.slide_id;
    let mut status = SlideStatus {
        slide_id: id.clone(),
        ..Default::default()
    };
    let slide = Slide::open_with(
        &entry.path,
        &OpenOptions {
            mpp_override: entry.mpp.or(args.mpp),
        },
    )?;
    let info = slide.info().clone();
    status.format = info.format.clone();
    status.width = info.width;
    status.height = info.height;
    if let Some(m) = info.mpp {
        status.mpp = Some(m.mean());
        status.mpp_source = serde_json::to_value(m.source)?
            .as_str()
            .unwrap_or_default()
            .to_string();
    }
    let out = &args.out;
    std::fs::create_dir_all(out.join("tissue"))?;
    let detection = detect_tissue(&slide, &tissue_config(args))?;
    detection.write_geojson(&out.join(format!("tissue/{id}.geojson")))?;
    detection.write_qc_png(&out.join(format!("tissue/{id}.png")))?;
    status.tissue_fraction = detection.mask.fraction();
    status.outputs = vec![format!("tissue/{id}.geojson"), format!("tissue/{id}.png")];
    status.stage = Stage::Tissue.name().into();
    if let Some(cfg) = tiling {
        let plan = plan_tiles(&slide, Some(&detection.mask), cfg)?;
        std::fs::create_dir_all(out.join("tiles"))?;
        write_parquet(
            &out.join(format!("tiles/{id}.parquet")),
            &mut tiles_table(&plan)?,
        )?;
        status.outputs.push(format!("tiles/{id}.parquet"));
        status.tiles = plan.tiles.len() as u64;
        if let Some(w) = &plan.warning {
            tracing::warn!("{id}: {w}");
        }
        status.stage = Stage::Tile.name().into();
        if let (Some(e), false) = (embedding, plan.tiles.is_empty()) {
            let coords: Vec<[i64; 2]> = plan.tiles.iter().map(|t| [t.x, t.y]).collect();
            let extent = plan.tiles[0].width;
            let mpp = plan.mpp.mean();
            std::fs::create_dir_all(out.join("features"))?;
            let features = out.join(format!("features/{id}.safetensors"));
            let source = TileSource::new(Arc::new(slide), id.clone(), plan);
            let embedded = e.embedder.embed(source, &features, &mut Silent)?;
            status.outputs.push(format!("features/{id}.safetensors"));
            if e.h5 {
                std::fs::create_dir_all(out.join("h5"))?;
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
        if embedding.is_some() {
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

/// Run `stage` over the batch: shard, skip finished slides, record every slide's status.
fn run_batch<B: Backend>(
    args: &BatchArgs,
    quiet: bool,
    stage: Stage,
    tiling: Option<&TilingConfig>,
    embedding: Option<&Embedding<B>>,
) -> anyhow::Result<ExitCode> {
    let all = collect_slides(&args.slides)?;
    let shard = Shard::resolve(args.shard.as_deref())?;
    let slides = shard.select(all);
    std::fs::create_dir_all(&args.out)?;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(slides.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} slides [{bar:40}] {pos}/{len} {msg} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let (mut done, mut skipped, mut failed) = (0, 0, 0);
    for entry in &slides {
        bar.set_message(entry.slide_id.clone());
        if !args.overwrite && finished(&args.out, &entry.slide_id, stage.name()) {
            skipped += 1;
            bar.inc(1);
            continue;
        }
        let status = match process(entry, args, tiling, embedding) {
            Ok(s) => {
                done += 1;
                s
            }
            Err(e) => {
                failed += 1;
                let error = scrub(&format!("{e:#}"), entry);
                tracing::warn!("{error}");
                SlideStatus {
                    slide_id: entry.slide_id.clone(),
                    status: "failed".into(),
                    stage: stage.name().into(),
                    error,
                    ..Default::default()
                }
            }
        };
        write_status(&args.out, &status)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let (manifest, _) = write_manifest(&args.out)?;
    eprintln!(
        "{stage:?}: {done} slides done, {skipped} already finished, {failed} failed (shard {}/{}) \
         -> {}",
        shard.index,
        shard.count,
        manifest.display()
    );
    Ok(ExitCode::SUCCESS)
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

struct EmbedJob {
    args: EmbedArgs,
    ck: LoadedCheckpoint,
    layers: Vec<usize>,
    tiling: TilingConfig,
}

impl BackendJob for EmbedJob {
    type Output = ExitCode;

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<ExitCode> {
        let a = &self.args;
        a.run.batch()?;
        let provenance = a.run.provenance(&self.ck);
        let embedder = RegionEmbedder::<B>::new(
            &self.ck,
            device,
            a.run
                .embed_settings(&self.ck, self.layers.clone(), a.layers.norm),
        )?;
        let embedding = Embedding {
            embedder,
            provenance,
            h5: !a.no_h5,
        };
        run_batch(
            &a.batch,
            a.run.quiet,
            Stage::Embed,
            Some(&self.tiling),
            Some(&embedding),
        )
    }
}

pub fn run(cmd: PathologyCommand) -> anyhow::Result<ExitCode> {
    type Cpu = dinoadapt_core::backend::CpuBackend;
    match cmd {
        PathologyCommand::Tissue(a) => {
            run_batch::<Cpu>(&a.batch, a.quiet, Stage::Tissue, None, None)
        }
        PathologyCommand::Tile(a) => {
            let cfg = a.tiling.config()?;
            run_batch::<Cpu>(&a.batch, a.quiet, Stage::Tile, Some(&cfg), None)
        }
        PathologyCommand::Embed(a) => {
            let tiling = a.tiling.config()?;
            let ck = a.model.load()?;
            let layers = a.layers.resolve(ck.config.depth)?;
            let device = a.run.device;
            on_device(
                device,
                EmbedJob {
                    args: *a,
                    ck,
                    layers,
                    tiling,
                },
            )
        }
    }
}
