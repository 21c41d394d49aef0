//! `dinoadapt radiology convert|slices|embed|predict`: DICOM series and NIfTI volumes.
//!
//! Every output is keyed by the volume's pseudonymous id; no path from the input tree and no
//! identifying DICOM value is written to a file or printed (folder names of exports often hold
//! patient names, so messages keep base names only).

mod kmeans_head;
pub(crate) mod volumes;

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::Context;
use burn::tensor::backend::Backend;
use clap::{Args, Subcommand};
use dinoadapt_core::vit::VitConfig;
use dinoadapt_datasets::batch::ALL_FAILED;
use dinoadapt_datasets::column as col;
use dinoadapt_datasets::embedding::Silent;
use dinoadapt_datasets::{run_batch, write_parquet};
use dinoadapt_radiology::embed_batch::VolumeEmbedBatch;
use dinoadapt_radiology::inputs::{Channels, InputSpec};
use dinoadapt_radiology::intensity::Intensity;
use dinoadapt_radiology::nifti::{write_nifti, NiftiWriteOptions};
use dinoadapt_radiology::slices::Axis;
use dinoadapt_radiology::source::SliceOptions;
use polars::prelude::DataFrame;

use crate::batch_args::{print_summary, ResumeDefault, ShardArgs};
use crate::device::{on_device, on_devices, DevicesJob};
use crate::model_args::{EmbedRunArgs, LayerArgs, ModelArgs, RunArgs};
use crate::progress::Bar;
use dinoadapt_datasets::embedding::RegionEmbedder;
use volumes::{for_each_sliced_volume, for_each_volume, VolumeItem, VolumeRow};

#[derive(Subcommand, Debug)]
pub enum RadiologyCommand {
    /// DICOM series / NIfTI volumes -> NIfTI (float32, source affine) named by pseudonymous id,
    /// with volumes.parquet (geometry, spacing checks, failures).
    Convert(ConvertArgs),
    /// Volumes -> model-input slices as PNG (axis, intensity window, 2.5D channels) and
    /// slices.parquet (slice index, LPS position).
    Slices(SlicesArgs),
    /// Volumes -> per-slice features (one feature file per volume) and pooled per-volume
    /// features (volumes.safetensors), with slice positions.
    Embed(Box<EmbedArgs>),
    /// Volumes -> a label map per volume, written as NIfTI on the source grid and affine.
    Predict(Box<PredictArgs>),
}

#[derive(Args, Debug, Clone)]
pub struct VolumeInputs {
    /// NIfTI files (.nii, .nii.gz), DICOM files, or folders of DICOM files (searched
    /// recursively, grouped by SeriesInstanceUID).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Salt of the pseudonymous ids (default: $DINOADAPT_ID_SALT, else "dinoadapt"). Keep it
    /// secret: with it, ids can be recomputed from UIDs.
    #[arg(long)]
    pub id_salt: Option<String>,
    /// JSON object mapping original Series/StudyInstanceUIDs to the ids to use.
    #[arg(long)]
    pub id_map: Option<PathBuf>,
}

impl VolumeInputs {
    pub fn config(&self) -> dinoadapt_radiology::volume_inputs::InputVolumes {
        dinoadapt_radiology::volume_inputs::InputVolumes {
            paths: self.inputs.clone(),
            id_salt: self.id_salt.clone(),
            id_map: self.id_map.clone(),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct SliceArgs {
    /// axial, coronal or sagittal (of the volume reoriented to RAS).
    #[arg(long, default_value = "axial")]
    pub axis: String,
    /// CT window (lung, mediastinum, abdomen, bone, brain, liver, window:LOW,HIGH), MR
    /// percentiles (mr, percentile:P1,P2), minmax or none.
    #[arg(long, default_value = "minmax")]
    pub intensity: String,
    /// The input channels: repeat, neighbours (slices k-1, k, k+1), windows:A;B;C (three
    /// intensity maps of one slice) or gray (one channel; the default of one-channel models).
    #[arg(long)]
    pub channels: Option<String>,
    /// Model input side in pixels.
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Every N-th slice.
    #[arg(long, default_value_t = 1)]
    pub step: usize,
    /// Leave out slices with no voxel above --background.
    #[arg(long)]
    pub skip_empty: bool,
    /// Background level (default: the volume's minimum), e.g. -1000 for CT air.
    #[arg(long, allow_hyphen_values = true)]
    pub background: Option<f32>,
    /// Stretch slices to the square input instead of keeping their physical aspect.
    #[arg(long)]
    pub stretch: bool,
}

impl SliceArgs {
    /// The slice options, fitted to `model`'s input channels where a model takes them.
    pub fn options(&self, model: Option<&VitConfig>) -> anyhow::Result<SliceOptions> {
        fn parsed<T: FromStr<Err: Display>>(f: &str, v: &str) -> anyhow::Result<T> {
            v.parse().map_err(|e| anyhow::anyhow!("{f} `{v}`: {e}"))
        }
        let axis: Axis = parsed("--axis", &self.axis)?;
        let intensity: Intensity = parsed("--intensity", &self.intensity)?;
        let channels: Channels =
            parsed("--channels", self.channels.as_deref().unwrap_or("repeat"))?;
        if self.step == 0 {
            anyhow::bail!("--step must be at least 1");
        }
        let input = InputSpec {
            intensity,
            channels,
            size: self.size,
            keep_aspect: !self.stretch,
            ..InputSpec::default()
        };
        Ok(SliceOptions {
            axis,
            input: match model {
                Some(c) => {
                    input.for_model(c.in_chans, c.channels.as_ref(), self.channels.is_some())?
                }
                None => input,
            },
            step: self.step,
            skip_empty: self.skip_empty,
            background: self.background,
        })
    }
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    #[command(flatten)]
    pub volumes: VolumeInputs,
    #[arg(long, short)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct SlicesArgs {
    #[command(flatten)]
    pub volumes: VolumeInputs,
    #[command(flatten)]
    pub slices: SliceArgs,
    #[arg(long, short)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub volumes: VolumeInputs,
    #[command(flatten)]
    pub slices: SliceArgs,
    #[arg(long, short)]
    pub out: PathBuf,
    #[command(flatten)]
    pub layers: LayerArgs,
    #[command(flatten)]
    pub run: EmbedRunArgs,
    /// Items of the batch are the inputs (a DICOM folder with all its series is one);
    /// with --shard or --resume each keeps `status/input-<id>.json`, and volumes.parquet and
    /// volumes.safetensors join every input with a status (all shards so far).
    #[command(flatten)]
    pub shards: ShardArgs,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub volumes: VolumeInputs,
    #[command(flatten)]
    pub slices: SliceArgs,
    /// `kmeans:K`: the backbone's patch tokens of the whole volume clustered into K groups
    /// (k-means++, cosine), a label map 1..K (0 = padding / no prediction).
    #[arg(long, default_value = "kmeans:4")]
    pub head: String,
    /// Seed of the k-means++ initialisation.
    #[arg(long, default_value_t = 0)]
    pub kmeans_seed: u64,
    #[arg(long, short)]
    pub out: PathBuf,
    #[command(flatten)]
    pub run: RunArgs,
}

pub fn run(cmd: RadiologyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RadiologyCommand::Convert(a) => convert(a),
        RadiologyCommand::Slices(a) => slices(a),
        RadiologyCommand::Embed(a) => embed(*a),
        RadiologyCommand::Predict(a) => predict(*a),
    }
}

/// Write the per-volume table and say how it went; failures leave a non-zero count.
pub(crate) fn finish(out: &Path, rows: &[VolumeRow], what: &str) -> anyhow::Result<ExitCode> {
    let table = out.join("volumes.parquet");
    write_parquet(&table, &mut volumes::table(rows))?;
    report(&table, rows, what);
    // The batch exit rule (dinoadapt_datasets::batch): every volume failed -> ALL_FAILED.
    if !rows.is_empty() && rows.iter().all(|r| r.status != "ok") {
        eprintln!("{what}: every volume failed (exit status {ALL_FAILED})");
        return Ok(ExitCode::from(ALL_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

/// How the volumes of `table` went, on stderr.
fn report(table: &Path, rows: &[VolumeRow], what: &str) {
    let failed = rows.iter().filter(|r| r.status != "ok").count();
    eprintln!(
        "{what}: {} volumes ok, {failed} failed -> {}",
        rows.len() - failed,
        table.display()
    );
    for r in rows.iter().filter(|r| r.status != "ok") {
        let input = format!("input #{}", r.input_index);
        match r.file.as_str() {
            // The reader's message names the input already.
            "" if r.error.starts_with(&input) => eprintln!("  {}", r.error),
            "" => eprintln!("  {input}: {}", r.error),
            file => eprintln!("  {input} {file}: {}", r.error),
        }
    }
}

fn convert(args: ConvertArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out)?;
    let mut rows = Vec::new();
    for_each_volume(&args.volumes, |item| {
        match item {
            VolumeItem::Failed(row) => rows.push(row),
            VolumeItem::Volume(volume, mut row) => {
                let name = format!("{}.nii.gz", volume.id);
                match write_nifti(&volume, args.out.join(&name), &NiftiWriteOptions::default()) {
                    Ok(()) => row.output = name,
                    Err(e) => row.fail(e.to_string()),
                }
                rows.push(row);
            }
        }
        Ok(())
    })?;
    finish(&args.out, &rows, "convert")
}

/// A model-input slice `[3][size][size]` back to RGB bytes (undoing the mean/std).
fn slices(args: SlicesArgs) -> anyhow::Result<ExitCode> {
    use dinoadapt_datasets::RegionSource;
    let options = args.slices.options(None)?;
    std::fs::create_dir_all(&args.out)?;
    let mut rows = Vec::new();
    let (mut ids, mut index, mut pos, mut valid, mut png) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for_each_sliced_volume(
        &args.volumes,
        options,
        &mut rows,
        |volume, mut source, row| {
            let dir = args.out.join(&volume.id);
            std::fs::create_dir_all(&dir)?;
            let records = source.records().to_vec();
            let mut n = 0;
            while let Some(batch) = source.next_batch(16).map_err(anyhow::Error::msg)? {
                let per = 3 * options.input.size * options.input.size;
                for (i, _) in batch.regions.iter().enumerate() {
                    let r = &records[n];
                    let name = format!("{}/{}_{:04}.png", volume.id, options.axis, r.slice_index);
                    let rgb = dinoadapt_radiology::inputs::to_rgb(
                        &batch.pixels[i * per..(i + 1) * per],
                        &options.input,
                    );
                    let size = options.input.size as u32;
                    image::RgbImage::from_raw(size, size, rgb)
                        .context("slice image")?
                        .save(args.out.join(&name))
                        .with_context(|| format!("writing {name}"))?;
                    ids.push(volume.id.clone());
                    index.push(r.slice_index as u64);
                    pos.push(r.position_lps);
                    valid.push(r.valid_fraction);
                    png.push(name);
                    n += 1;
                }
            }
            row.output = format!("{}/", volume.id);
            row.regions = n;
            Ok(())
        },
    )?;
    let mut df = DataFrame::new(
        ids.len(),
        vec![
            col::<String>("volume_id", ids),
            col::<String>("axis", vec![options.axis.to_string(); index.len()]),
            col::<u64>("slice_index", index),
            col::<f64>("x_lps", pos.iter().map(|p| p[0]).collect()),
            col::<f64>("y_lps", pos.iter().map(|p| p[1]).collect()),
            col::<f64>("z_lps", pos.iter().map(|p| p[2]).collect()),
            col::<f64>("valid_fraction", valid),
            col::<String>("png", png),
        ],
    )?;
    write_parquet(&args.out.join("slices.parquet"), &mut df)?;
    finish(&args.out, &rows, "slices")
}

struct RadiologyEmbedJob {
    args: EmbedArgs,
    options: SliceOptions,
    ck: dinoadapt_core::checkpoint::LoadedCheckpoint,
    layers: Vec<usize>,
}

impl DevicesJob for RadiologyEmbedJob {
    type Output = ExitCode;

    fn run<B: Backend>(self, devices: Vec<B::Device>) -> anyhow::Result<ExitCode> {
        let args = &self.args;
        let settings = args
            .run
            .embed_settings(&self.ck, self.layers.clone(), args.layers.norm)?;
        let mut metadata = settings.metadata.clone();
        metadata.insert("pooling".into(), "mean of the slices' cls tokens".into());
        metadata.insert("slices".into(), serde_json::to_string(&self.options)?);
        let embedder = RegionEmbedder::<B>::on_devices(&self.ck, devices, settings)?;
        let inputs = args.volumes.config();
        let items: Vec<(usize, PathBuf)> = inputs.paths.iter().cloned().enumerate().collect();
        let cfg = args.shards.config(&args.out, ResumeDefault::Overwrite)?;
        let mut bar = Bar::new("embed", args.run.quiet);
        let mut job = VolumeEmbedBatch {
            out: args.out.clone(),
            pseudo: inputs.pseudonymizer()?,
            options: self.options,
            embedder: &embedder,
            metadata,
            progress: &mut bar,
            rows: Vec::new(),
        };
        let run = run_batch(&cfg, &items, &mut job, "inputs", &mut Silent)?;
        report(&args.out.join("volumes.parquet"), &job.rows, "embed");
        if cfg.statuses {
            print_summary("embed", "inputs", &run);
        }
        Ok(run.exit_code())
    }
}

fn embed(args: EmbedArgs) -> anyhow::Result<ExitCode> {
    args.run.batch()?;
    let ck = args.model.load()?;
    let options = args.slices.options(Some(&ck.config))?;
    let layers = args.layers.resolve(ck.config.depth)?;
    on_devices(
        &args.run.device_list()?,
        RadiologyEmbedJob {
            args,
            options,
            ck,
            layers,
        },
    )
}

fn predict(args: PredictArgs) -> anyhow::Result<ExitCode> {
    let k: usize = args
        .head
        .strip_prefix("kmeans:")
        .and_then(|k| k.parse().ok())
        .filter(|&k| (1..=255).contains(&k))
        .with_context(|| format!("--head `{}`: kmeans:K with K in 1..=255", args.head))?;
    let ck = args.model.load()?;
    let options = args.slices.options(Some(&ck.config))?;
    on_device(
        args.run.device,
        kmeans_head::KmeansPredictJob {
            args,
            options,
            ck,
            k,
        },
    )
}
