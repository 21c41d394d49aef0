//! `dinoadapt satellite chips|embed|predict`: rasters through GDAL.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use clap::{Args, Subcommand};
use dinoadapt_datasets::{DensePredictOptions, Domain};
use dinoadapt_satellite::align::LabelResampling;
use dinoadapt_satellite::chip_table::chip_table;
use dinoadapt_satellite::predict::{
    predict_raster, BandPassthrough, ChipModel, PredictConfig, PredictSummary,
};
use dinoadapt_satellite::source::ChipConfig;
use dinoadapt_satellite::{Blend, Normalization, PcaHead, Raster, Satellite};
use indicatif::{ProgressBar, ProgressStyle};

use crate::batch_args::{print_summary, ResumeDefault, ShardArgs};
use crate::commands::heads::dense::folder::{self as dense_folder, is_head_folder};
use crate::commands::heads::dense::predict as dense_predict;
use crate::device::{
    batch_chunks, matmul_precision, on_device, on_devices, BackendJob, DevicesJob,
};
use crate::model_args::{EmbedRunArgs, LayerArgs, ModelArgs, RunArgs};
use crate::progress::Bar;
use dinoadapt_core::backend::DeviceSpec;
use dinoadapt_core::checkpoint::LoadedCheckpoint;
use dinoadapt_datasets::embedding::{EmbedSettings, Progress, RegionEmbedder, Silent};
use dinoadapt_datasets::run_batch;
use dinoadapt_satellite::embed_batch::{RasterEmbedBatch, RasterOutputs};

#[derive(Subcommand, Debug)]
pub enum SatelliteCommand {
    /// Lay chips over rasters (size, stride, nodata filter) -> chips.parquet; with --labels,
    /// warp a label raster onto each raster's grid and record label coverage per chip.
    Chips(ChipsArgs),
    /// Chips -> backbone features (safetensors) + a table of chips with world bounds (Parquet).
    Embed(Box<EmbedArgs>),
    /// Tiled inference stitched into a georeferenced float32 GeoTIFF/COG on the source grid.
    Predict(Box<PredictArgs>),
}

#[derive(Args, Debug, Clone)]
pub struct ChipArgs {
    /// Chip size in pixels.
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Chip stride in pixels (default: the size, no overlap).
    #[arg(long)]
    pub stride: Option<usize>,
    /// Bands to use, 1-based, in model channel order (e.g. 1,2,3 or 3,2,1).
    #[arg(long, default_value = "1,2,3", value_delimiter = ',')]
    pub bands: Vec<usize>,
    /// Skip chips with a larger nodata fraction (0..1).
    #[arg(long, default_value_t = 0.5)]
    pub max_nodata: f64,
}

impl ChipArgs {
    fn config(&self) -> anyhow::Result<ChipConfig> {
        if !(0.0..=1.0).contains(&self.max_nodata) {
            bail!("--max-nodata {} must be within 0..1", self.max_nodata);
        }
        Ok(ChipConfig {
            bands: self.bands.clone(),
            size: self.size,
            stride: self.stride.unwrap_or(self.size),
            max_nodata: self.max_nodata,
        })
    }
}

#[derive(Args, Debug)]
pub struct ChipsArgs {
    /// Rasters (any format GDAL opens).
    #[arg(required = true)]
    pub rasters: Vec<PathBuf>,
    #[command(flatten)]
    pub chips: ChipArgs,
    /// A label raster (canopy heights, classes) to warp onto each raster's grid.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Resampling of the label raster: nearest, bilinear, average, mode.
    #[arg(long, default_value = "nearest")]
    pub label_resampling: String,
    /// Output folder: chips.parquet, labels/<raster>.tif.
    #[arg(long, short)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(required = true)]
    pub rasters: Vec<PathBuf>,
    #[command(flatten)]
    pub chips: ChipArgs,
    /// imagenet, canopy (Meta's satellite mean/std), band-stats, unit, none, or model (the
    /// channels' mean/std a grown model records; its default, else imagenet). 8-bit imagery is
    /// divided by 255 first; other types are stretched between their 2nd and 98th percentiles.
    #[arg(long)]
    pub normalize: Option<String>,
    /// Output features (safetensors: cls, patch, reg, layer.{i}).
    #[arg(long, short, default_value = "chips.safetensors")]
    pub output: PathBuf,
    /// The chips table (default: the output path with .parquet).
    #[arg(long)]
    pub table: Option<PathBuf>,
    #[command(flatten)]
    pub layers: LayerArgs,
    #[command(flatten)]
    pub run: EmbedRunArgs,
    /// Without --shard or --resume: one features file for all rasters (a raster that fails is
    /// left out). With them: one per raster, normalised on its own, in the output path without
    /// its extension (`chips.safetensors` -> `chips/<raster stem>.safetensors` + `.parquet`,
    /// `status/`, `manifest.parquet`).
    #[command(flatten)]
    pub shards: ShardArgs,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    pub raster: PathBuf,
    /// `pca`: the backbone's patch features projected on their first 3 principal components
    /// (fitted on a sample of chips), a 3-band feature map. `band:N`: band N of the selection,
    /// unchanged (the check that stitching and georeferencing are exact). A folder from
    /// `heads train --task segment|canopy`: heights in metres, or a class map + per-class
    /// probabilities; its chip size, bands and normalisation are used, the stride is --stride
    /// when it is at most that chip size, else half of it, and the backbone (--model, or
    /// --random-init --preset, default: the head's recorded model) must be the one the head was
    /// trained on (same checkpoint sha256).
    #[arg(long, default_value = "pca")]
    pub head: String,
    #[command(flatten)]
    pub chips: ChipArgs,
    #[arg(long, default_value = "imagenet")]
    pub normalize: String,
    /// Blending of overlapping chips: cosine, gaussian, uniform.
    #[arg(long, default_value = "cosine")]
    pub blend: String,
    /// Output nodata value (default: the input's nodata, else NaN).
    #[arg(long)]
    pub nodata: Option<f64>,
    /// Write a Cloud-Optimised GeoTIFF.
    #[arg(long)]
    pub cog: bool,
    #[arg(long, short)]
    pub out: PathBuf,
    #[command(flatten)]
    pub run: RunArgs,
}

pub fn run(cmd: SatelliteCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SatelliteCommand::Chips(a) => chips(a),
        SatelliteCommand::Embed(a) => embed(*a),
        SatelliteCommand::Predict(a) => predict(*a),
    }
}

fn chips(args: ChipsArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.chips.config()?;
    let resampling = LabelResampling::parse(&args.label_resampling).with_context(|| {
        format!(
            "--label-resampling `{}`: nearest, bilinear, average or mode",
            args.label_resampling
        )
    })?;
    let labels = args.labels.as_deref();
    let t = chip_table(&args.rasters, &cfg, labels, resampling, &args.out)?;
    eprintln!(
        "{} chips ({} kept, {} over --max-nodata {}) from {} rasters -> {}",
        t.chips,
        t.kept,
        t.chips - t.kept,
        cfg.max_nodata,
        args.rasters.len(),
        t.table.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn embed(args: EmbedArgs) -> anyhow::Result<ExitCode> {
    args.run.batch()?;
    let chips = args.chips.config()?;
    let ck = args.model.load()?;
    let layers = args.layers.resolve(ck.config.depth)?;
    let settings = args.run.embed_settings(&ck, layers, args.layers.norm)?;
    on_devices(
        &args.run.device_list()?,
        SatelliteEmbedJob {
            args,
            ck,
            chips,
            settings,
        },
    )
}

struct SatelliteEmbedJob {
    args: EmbedArgs,
    ck: LoadedCheckpoint,
    chips: ChipConfig,
    settings: EmbedSettings,
}

impl DevicesJob for SatelliteEmbedJob {
    type Output = ExitCode;

    fn run<B: Backend>(self, devices: Vec<B::Device>) -> anyhow::Result<ExitCode> {
        let args = &self.args;
        let per_raster = args.shards.keeps_statuses(ResumeDefault::Overwrite)?;
        let folder = args.output.with_extension("");
        let outputs = if per_raster {
            RasterOutputs::PerRaster {
                folder: folder.clone(),
            }
        } else {
            RasterOutputs::OneFile {
                features: args.output.clone(),
                table: args
                    .table
                    .clone()
                    .unwrap_or_else(|| args.output.with_extension("parquet")),
            }
        };
        let embedder = RegionEmbedder::<B>::on_devices(&self.ck, devices, self.settings)?;
        let quiet = args.run.quiet;
        let mut job = RasterEmbedBatch::new(
            outputs,
            self.chips,
            args.normalize.clone(),
            &embedder,
            Box::new(move || -> Box<dyn Progress> { Box::new(Bar::new("embed", quiet)) }),
        );
        let items: Vec<(usize, PathBuf)> = args.rasters.iter().cloned().enumerate().collect();
        let out = if per_raster {
            folder
        } else {
            args.output
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf()
        };
        let cfg = args.shards.config(&out, ResumeDefault::Overwrite)?;
        let run = run_batch(&cfg, &items, &mut job, "rasters", &mut Silent)?;
        if let Some(j) = &job.joint {
            let table = args
                .table
                .clone()
                .unwrap_or_else(|| args.output.with_extension("parquet"));
            eprintln!(
                "embedded {} chips in {:.1} s -> {} (+ {})",
                j.chips,
                j.seconds,
                args.output.display(),
                table.display()
            );
        }
        if per_raster || run.failed > 0 {
            print_summary("embed", "rasters", &run);
        }
        Ok(run.exit_code())
    }
}

fn progress_bar(quiet: bool, what: &str) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:40}}] {{pos}}/{{len}} chips {{per_sec}} eta {{eta}}"
        ))
        .expect("static template")
        .progress_chars("=> "),
    );
    bar
}

fn report(s: &PredictSummary) {
    eprintln!(
        "{} chips ({} all-nodata skipped), {:.2} Mpx in {:.2} s ({:.2} Mpx/s) -> {}",
        s.chips,
        s.chips_skipped_nodata,
        s.megapixels,
        s.seconds,
        s.megapixels / s.seconds.max(1e-9),
        s.output.display()
    );
}

/// Run tiled inference with any chip model, with a progress bar unless `quiet`.
pub fn run_predict(
    raster: &Raster,
    out: &Path,
    cfg: &PredictConfig,
    model: &mut dyn ChipModel,
    quiet: bool,
) -> anyhow::Result<PredictSummary> {
    let bar = progress_bar(quiet, "predict");
    let s = predict_raster(raster, out, cfg, model, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    dinoadapt_satellite::quicklook::write_prediction_report(&s, None)?;
    Ok(s)
}

struct PcaPredictJob<'a> {
    model: &'a ModelArgs,
    device: DeviceSpec,
    tf32: bool,
    quiet: bool,
    raster: &'a Raster,
    out: &'a Path,
    cfg: &'a PredictConfig,
    norm: Normalization,
}

impl BackendJob for PcaPredictJob<'_> {
    type Output = PredictSummary;

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<PredictSummary> {
        let ck = self.model.load()?;
        let precision = matmul_precision(self.device, self.tf32);
        let model = ck.build::<B>(&device)?.with_precision(precision);
        let mut head = PcaHead::fit(
            model,
            device,
            self.norm,
            self.raster,
            self.cfg,
            batch_chunks(self.device),
        )?;
        run_predict(self.raster, self.out, self.cfg, &mut head, self.quiet)
    }
}

/// The model side of a prediction run.
pub struct HeadChoice<'a> {
    /// `pca` or `band:N`.
    pub head: &'a str,
    pub model: &'a ModelArgs,
    pub normalize: &'a str,
    pub device: DeviceSpec,
    pub tf32: bool,
    pub quiet: bool,
}

/// Tiled inference of `raster` with the chosen head into `out`.
pub fn predict_with_head(
    raster: &Raster,
    out: &Path,
    cfg: &PredictConfig,
    choice: &HeadChoice,
) -> anyhow::Result<PredictSummary> {
    if let Some(mut band) = BandPassthrough::parse(choice.head, &cfg.bands)? {
        return run_predict(raster, out, cfg, &mut band, choice.quiet);
    }
    if choice.head != "pca" {
        bail!(
            "--head `{}`: pca, band:N or a head folder from `heads train --task segment|canopy`",
            choice.head
        );
    }
    let norm = Normalization::preset(choice.normalize, &[raster], &cfg.bands)?;
    on_device(
        choice.device,
        PcaPredictJob {
            model: choice.model,
            device: choice.device,
            tf32: choice.tf32,
            quiet: choice.quiet,
            raster,
            out,
            cfg,
            norm,
        },
    )
}

/// The prediction settings of the command line.
pub fn predict_config(
    chips: &ChipArgs,
    blend: &str,
    batch: usize,
    nodata: Option<f64>,
    cog: bool,
) -> anyhow::Result<PredictConfig> {
    let chip = chips.config()?;
    let blend = Blend::parse(blend)
        .with_context(|| format!("--blend `{blend}`: cosine, gaussian or uniform"))?;
    Ok(PredictConfig {
        bands: chip.bands,
        chip_size: chip.size,
        stride: chip.stride,
        blend,
        batch_size: batch.max(1),
        nodata,
        cog,
    })
}

fn predict(args: PredictArgs) -> anyhow::Result<ExitCode> {
    let raster = Raster::open(&args.raster)?;
    let cfg = predict_config(
        &args.chips,
        &args.blend,
        args.run.batch_size,
        args.nodata,
        args.cog,
    )?;
    if is_head_folder(Path::new(&args.head)) {
        return predict_dense(&args, &cfg);
    }
    let summary = predict_with_head(
        &raster,
        &args.out,
        &cfg,
        &HeadChoice {
            head: &args.head,
            model: &args.model,
            normalize: &args.normalize,
            device: args.run.device,
            tf32: args.run.tf32,
            quiet: args.run.quiet,
        },
    )?;
    report(&summary);
    Ok(ExitCode::SUCCESS)
}

/// `--head DIR`: a dense head (segment / canopy) of satellite features over the raster, as
/// `heads predict` runs it; the stride is --stride (default --size) when it is at most the
/// head's chip size, else half of it.
fn predict_dense(args: &PredictArgs, cfg: &PredictConfig) -> anyhow::Result<ExitCode> {
    let dir = Path::new(&args.head);
    let (head, domain) = dense_folder::load(dir)?;
    if domain.name() != Satellite.name() {
        bail!(
            "{}: a {} head; predict with `dinoadapt heads predict --head {} --input ...`",
            args.head,
            domain.name(),
            args.head
        );
    }
    let options = DensePredictOptions {
        input: &args.raster,
        out: &args.out,
        preprocessing: &head.info.preprocessing,
        values: dense_folder::values(&head),
        class_names: &head.info.class_names,
        mpp: None,
        nodata: args.nodata,
        stride: Some(cfg.stride),
        blend: &args.blend,
        batch: cfg.batch_size,
        cog: args.cog,
    };
    let backbone = dense_predict::Backbone {
        model: &args.model,
        device: args.run.device,
        tf32: args.run.tf32,
        quiet: args.run.quiet,
    };
    let summary = dense_predict::run(&head, domain, &options, &backbone)?;
    report(&serde_json::from_value(summary)?);
    Ok(ExitCode::SUCCESS)
}
