//! `dinoadapt embed`: images (or a preprocessed pixel tensor) -> features.
//!
//! The images (or the tensor) are one more region source of the embedding engine
//! (`dinoadapt_datasets::embedding`); this command picks the preprocessing and writes the
//! manifest, one row per input.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;
use burn::tensor::backend::Backend;
use clap::Args;
use dinoadapt_core::checkpoint::LoadedCheckpoint;
use dinoadapt_datasets::embedding::{EmbedError, EmbedSettings, RegionEmbedder};
use dinoadapt_datasets::{
    collect_images, embed_manifest, open_image, write_parquet, EmbedRecord, ImageRegions,
    Preprocess, PreprocessOverrides, RegionSource, TensorRegions,
};

use crate::batch_args::ShardArgs;
use crate::commands::embed_source::{self, SourceEmbedJob};
use crate::device::{on_devices, DevicesJob};
use crate::model_args::{EmbedRunArgs, LayerArgs, ModelArgs};
use crate::progress::Bar;

#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Images: files (PNG, JPEG, TIFF), folders (searched recursively) or list files (one path
    /// per line, or a CSV whose first column is the path).
    pub inputs: Vec<PathBuf>,
    /// A recipe (or any TOML file) whose `[data.source]` table names a domain and its inputs
    /// (slides, volumes, rasters...): they are embedded on a regular grid into `--out`, one
    /// feature file and region table per source, as a batch (`--shard`, `--resume`).
    #[arg(long, conflicts_with_all = ["inputs", "pixels"], requires = "out")]
    pub source: Option<PathBuf>,
    /// The output folder of `--source`.
    #[arg(long, requires = "source")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub shards: ShardArgs,
    /// A safetensors file holding a preprocessed NCHW float32 tensor, fed straight to the
    /// backbone (no preprocessing).
    #[arg(long, conflicts_with = "inputs")]
    pub pixels: Option<PathBuf>,
    /// The tensor's name in --pixels (default: the only tensor).
    #[arg(long, requires = "pixels")]
    pub pixels_key: Option<String>,
    /// Output features (safetensors: cls, patch, reg, layer.{i}).
    #[arg(long, short, default_value = "features.safetensors")]
    pub output: PathBuf,
    /// Parquet manifest (default: the output path with .parquet).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Resize the shorter side to N px before cropping (0: no resize). Default: the model's
    /// preprocessing config, else 256.
    #[arg(long)]
    pub resize: Option<u32>,
    /// Centre crop: N or HxW (0: no crop). Default: the model's config, else 224.
    #[arg(long)]
    pub crop_size: Option<String>,
    /// Per-channel mean, e.g. 0.485,0.456,0.406.
    #[arg(long)]
    pub mean: Option<String>,
    /// Per-channel std, e.g. 0.229,0.224,0.225.
    #[arg(long)]
    pub std: Option<String>,
    /// Resize filter: bicubic, bilinear, nearest.
    #[arg(long)]
    pub filter: Option<String>,
    #[command(flatten)]
    pub layers: LayerArgs,
    #[command(flatten)]
    pub run: EmbedRunArgs,
}

/// The model's own preprocessing (HF preprocessor_config.json, timm pretrained_cfg), then flags.
fn preprocessing(args: &EmbedArgs, ck: &LoadedCheckpoint) -> anyhow::Result<Preprocess> {
    let mut p = Preprocess::of_checkpoint(&ck.path, ck.config_path.as_deref())
        .map_err(anyhow::Error::msg)?;
    p.override_with(&PreprocessOverrides {
        resize: args.resize,
        crop: args.crop_size.as_deref(),
        mean: args.mean.as_deref(),
        std: args.std.as_deref(),
        filter: args.filter.as_deref(),
    })
    .map_err(anyhow::Error::msg)?;
    Ok(p)
}

/// Embeds one source of images and turns what happened to each input into its manifest row.
struct ImageEmbedding<S: RegionSource + 'static> {
    ck: LoadedCheckpoint,
    source: S,
    settings: EmbedSettings,
    output: PathBuf,
    quiet: bool,
    /// Whether the rows record each input file's size (image files; not a pixel tensor).
    file_bytes: bool,
}

impl<S: RegionSource + 'static> DevicesJob for ImageEmbedding<S> {
    type Output = Vec<EmbedRecord>;

    fn run<B: Backend>(self, devices: Vec<B::Device>) -> anyhow::Result<Self::Output> {
        let n = self.source.max_regions();
        let (input_height, input_width) = self.source.size();
        let embedder = RegionEmbedder::<B>::on_devices(&self.ck, devices, self.settings)?;
        let e = match embedder.embed(
            self.source,
            &self.output,
            &mut Bar::new("embed", self.quiet),
        ) {
            Err(EmbedError::NothingEmbedded) => {
                bail!("none of the {n} inputs could be read (see the warnings above)")
            }
            r => r?,
        };
        let model = self.ck.path.display().to_string();
        Ok(e.records(
            (input_height, input_width),
            &model,
            &self.ck.sha256,
            self.file_bytes,
        ))
    }
}

pub fn run(args: EmbedArgs) -> anyhow::Result<ExitCode> {
    args.run.batch()?;
    let s = &args.shards;
    if (s.shard.is_some() || s.resume || s.overwrite || s.strict) && args.source.is_none() {
        bail!("--shard, --resume, --overwrite and --strict are for batches (--source)");
    }
    let devices = args.run.device_list()?;
    let ck = args.model.load()?;
    let layers = args.layers.resolve(ck.config.depth)?;
    if let (Some(recipe), Some(out)) = (&args.source, &args.out) {
        let (inputs, domain) = embed_source::source_inputs(recipe, out)?;
        let settings = args.run.embed_settings(&ck, layers, args.layers.norm)?;
        let job = SourceEmbedJob {
            ck,
            settings,
            inputs,
            domain,
            out: out.clone(),
            shards: args.shards.clone(),
            quiet: args.run.quiet,
        };
        return on_devices(&devices, job);
    }
    let manifest = args
        .manifest
        .clone()
        .unwrap_or_else(|| args.output.with_extension("parquet"));
    let settings = args.run.embed_settings(&ck, layers, args.layers.norm)?;
    let t0 = Instant::now();
    let records = if let Some(px) = &args.pixels {
        let source = TensorRegions::open(px, args.pixels_key.as_deref())?;
        on_devices(
            &devices,
            ImageEmbedding {
                ck,
                source,
                settings,
                output: args.output.clone(),
                quiet: args.run.quiet,
                file_bytes: false,
            },
        )?
    } else {
        if args.inputs.is_empty() {
            bail!("give images (files, folders or list files) or --pixels FILE");
        }
        let pre = preprocessing(&args, &ck)?;
        let paths = collect_images(&args.inputs)?;
        let size = match pre.crop {
            Some((h, w)) => (h as usize, w as usize),
            None => {
                let img = open_image(&paths[0])?;
                let (h, w) = pre.output_size(img.height(), img.width());
                (h as usize, w as usize)
            }
        };
        let source =
            ImageRegions::new(paths, pre, size).with_input_channels(ck.config.channels.as_ref());
        on_devices(
            &devices,
            ImageEmbedding {
                ck,
                source,
                settings,
                output: args.output.clone(),
                quiet: args.run.quiet,
                file_bytes: true,
            },
        )?
    };
    write_parquet(&manifest, &mut embed_manifest(&records))?;
    let failed = records.iter().filter(|r| !r.error.is_empty()).count();
    if failed > 0 {
        eprintln!("warning: {failed} inputs could not be read; the manifest says why");
    }
    eprintln!(
        "embedded {} inputs in {:.1} s -> {} (+ {})",
        records.len() - failed,
        t0.elapsed().as_secs_f64(),
        args.output.display(),
        manifest.display()
    );
    Ok(ExitCode::SUCCESS)
}
