//! `dinoadapt pathology tissue|tile|embed`: whole-slide images in batches.
//!
//! Every stage runs the ones before it: `tissue` writes the tissue GeoJSON (QuPath, level-0
//! coordinates) and a QC thumbnail; `tile` adds the tile table at a target mpp; `embed` adds
//! the slide's feature bag (safetensors, and `.h5` with `features` and `coords` as CLAM and
//! TRIDENT read it). The batch runner (`dinoadapt_datasets::batch`) writes one status file per
//! slide last, so a rerun skips finished slides and redoes the rest; `manifest.parquet` merges
//! every slide's status (all shards). The slide work is `dinoadapt_pathology::batch`.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::backend::Backend;
use clap::{Args, Subcommand};
use dinoadapt_core::checkpoint::LoadedCheckpoint;
use dinoadapt_datasets::embedding::RegionEmbedder;
use dinoadapt_datasets::run_batch;
use dinoadapt_pathology::batch::{SlideBatch, SlideEmbedding, Stage};
use dinoadapt_pathology::slide_list::collect_slides;
use dinoadapt_pathology::tiling::TilingConfig;
use dinoadapt_pathology::tissue::TissueConfig;

use crate::batch_args::{print_summary, ResumeDefault, ShardArgs};
use crate::device::{on_devices, DevicesJob};
use crate::model_args::{EmbedRunArgs, LayerArgs, ModelArgs};
use crate::progress::Bar;

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
    #[command(flatten)]
    pub shards: ShardArgs,
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
    /// Also write each tile as a PNG: tile_images/<slide>/<row>_x<x>_y<y>.png.
    #[arg(long)]
    pub images: bool,
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
    pub run: EmbedRunArgs,
    /// Do not write the .h5 copy of each feature bag.
    #[arg(long)]
    pub no_h5: bool,
}

fn tissue_config(b: &BatchArgs) -> TissueConfig {
    TissueConfig {
        filter_pen: !b.keep_pen,
        min_area_um2: b.min_area_um2,
        ..TissueConfig::default()
    }
}

/// Run `stage` over the batch (this shard's slides; finished ones skipped unless
/// `--overwrite`); the exit status says whether any slide attempted succeeded.
fn run_stage<B: Backend>(
    args: &BatchArgs,
    quiet: bool,
    stage: Stage,
    tiling: Option<TilingConfig>,
    tile_images: bool,
    embedding: Option<&SlideEmbedding<B>>,
) -> anyhow::Result<ExitCode> {
    let slides = collect_slides(&args.slides)?;
    let cfg = args.shards.config(&args.out, ResumeDefault::Resume)?;
    let mut job = SlideBatch {
        out: args.out.clone(),
        stage,
        mpp: args.mpp,
        tissue: tissue_config(args),
        tiling,
        tile_images,
        embedding,
    };
    let run = run_batch(
        &cfg,
        &slides,
        &mut job,
        "slides",
        &mut Bar::new("slides", quiet),
    )?;
    print_summary(&format!("{stage:?}"), "slides", &run);
    Ok(run.exit_code())
}

struct PathologyEmbedJob {
    args: EmbedArgs,
    ck: LoadedCheckpoint,
    layers: Vec<usize>,
    tiling: TilingConfig,
}

impl DevicesJob for PathologyEmbedJob {
    type Output = ExitCode;

    fn run<B: Backend>(self, devices: Vec<B::Device>) -> anyhow::Result<ExitCode> {
        let a = &self.args;
        let provenance = a.run.provenance(&self.ck)?;
        let embedder = RegionEmbedder::<B>::on_devices(
            &self.ck,
            devices,
            a.run
                .embed_settings(&self.ck, self.layers.clone(), a.layers.norm)?,
        )?;
        let embedding = SlideEmbedding {
            embedder,
            provenance,
            h5: !a.no_h5,
        };
        run_stage(
            &a.batch,
            a.run.quiet,
            Stage::Embed,
            Some(self.tiling),
            false,
            Some(&embedding),
        )
    }
}

pub fn run(cmd: PathologyCommand) -> anyhow::Result<ExitCode> {
    type Cpu = dinoadapt_core::backend::CpuBackend;
    match cmd {
        PathologyCommand::Tissue(a) => {
            run_stage::<Cpu>(&a.batch, a.quiet, Stage::Tissue, None, false, None)
        }
        PathologyCommand::Tile(a) => {
            let cfg = a.tiling.config()?;
            run_stage::<Cpu>(&a.batch, a.quiet, Stage::Tile, Some(cfg), a.images, None)
        }
        PathologyCommand::Embed(a) => {
            let tiling = a.tiling.config()?;
            let ck = a.model.load()?;
            let layers = a.layers.resolve(ck.config.depth)?;
            let devices = a.run.device_list()?;
            on_devices(
                &devices,
                PathologyEmbedJob {
                    args: *a,
                    ck,
                    layers,
                    tiling,
                },
            )
        }
    }
}
