//! The command-line arguments that say which model to load and how.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use dinoadapt_core::checkpoint::infer::ArchOverrides;
use dinoadapt_core::checkpoint::load::read_arch_file;
use dinoadapt_core::checkpoint::{load_checkpoint, LoadOptions, LoadedCheckpoint};
use dinoadapt_core::vit::PosEmbedInterpolation;
use dinoadapt_datasets::embedding::EmbedSettings;
use dinoadapt_datasets::Provenance;

use dinoadapt_core::backend::{device_list, DeviceSpec};

use crate::device::{batch_chunks, matmul_precision};

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Checkpoint file or folder (Hugging Face safetensors + config.json, torch-hub .pth,
    /// timm pytorch_model.bin / .safetensors, dinoadapt native).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// No checkpoint: fresh random weights for --preset / --arch-file (for tests and benchmarks).
    #[arg(long, conflicts_with = "model")]
    pub random_init: bool,
    /// Seed of --random-init.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use a built-in architecture instead of inferring it (vits14, vitb14, vitl14, vitg14,
    /// their _reg forms, uni, uni2h).
    #[arg(long)]
    pub preset: Option<String>,
    /// Architecture file (JSON, the schema in README) for checkpoints shapes cannot describe.
    #[arg(long)]
    pub arch_file: Option<PathBuf>,
    /// Attention head count (the one thing shapes cannot tell; default embed_dim / 64).
    #[arg(long)]
    pub num_heads: Option<usize>,
    /// Position-embedding resampling: offset-bicubic[:OFFSET], bicubic, bicubic-antialias
    /// (default: what the checkpoint's own library does).
    #[arg(long, value_parser = parse_interpolation)]
    pub interpolation: Option<PosEmbedInterpolation>,
}

fn parse_interpolation(s: &str) -> Result<PosEmbedInterpolation, String> {
    PosEmbedInterpolation::parse(s).ok_or_else(|| {
        format!("unknown interpolation `{s}`: use offset-bicubic[:OFFSET], bicubic or bicubic-antialias")
    })
}

impl ModelArgs {
    pub fn load(&self) -> anyhow::Result<LoadedCheckpoint> {
        let arch = match &self.arch_file {
            Some(p) => Some(read_arch_file(p)?),
            None => None,
        };
        let options = LoadOptions {
            overrides: ArchOverrides {
                preset: self.preset.clone(),
                arch,
                num_heads: self.num_heads,
                interpolation: self.interpolation,
            },
        };
        match &self.model {
            Some(path) => load_checkpoint(path, &options)
                .with_context(|| format!("loading the model {}", path.display())),
            None if self.random_init => self.random(&options.overrides),
            None => anyhow::bail!(
                "no model: give --model PATH (or --random-init with --preset for tests and benchmarks)"
            ),
        }
    }

    /// A checkpoint of seeded random weights for the architecture given.
    fn random(&self, overrides: &ArchOverrides) -> anyhow::Result<LoadedCheckpoint> {
        LoadedCheckpoint::random(overrides, self.seed).map_err(anyhow::Error::msg)
    }
}

/// How a command runs a backbone: batch size, device, matmul precision, progress.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// cpu, cuda:N or wgpu:N (CUDA needs a `--features cuda` build, wgpu `--features wgpu`).
    #[arg(long, default_value = "cpu")]
    pub device: dinoadapt_core::backend::DeviceSpec,
    /// On CUDA, let matmuls run in TF32 instead of f32-accurate split products.
    #[arg(long)]
    pub tf32: bool,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl RunArgs {
    /// The batch size, refusing 0.
    pub fn batch(&self) -> anyhow::Result<usize> {
        anyhow::ensure!(self.batch_size > 0, "--batch-size must be at least 1");
        Ok(self.batch_size)
    }
}

/// How a batch embedding runs its backbone: [`RunArgs`] plus the devices it shares the work
/// among (one copy of the backbone per device).
#[derive(Args, Debug, Clone)]
pub struct EmbedRunArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Embed on several devices at once, one copy of the backbone per device, the batches of
    /// every slide / volume / raster / image set shared among them as they come:
    /// `cuda:0,cuda:1`, a count (`4`: cuda:0..3 with --device cuda), or `all` (every CUDA
    /// device). Default: --device alone.
    #[arg(long)]
    pub devices: Option<String>,
}

impl std::ops::Deref for EmbedRunArgs {
    type Target = RunArgs;

    fn deref(&self) -> &RunArgs {
        &self.run
    }
}

impl EmbedRunArgs {
    /// The devices of this run: --devices, else --device.
    pub fn device_list(&self) -> anyhow::Result<Vec<DeviceSpec>> {
        match &self.devices {
            Some(list) => device_list(list, self.run.device).map_err(anyhow::Error::msg),
            None => Ok(vec![self.run.device]),
        }
    }

    /// What every output of `ck` run this way records (the devices, comma-separated).
    pub fn provenance(&self, ck: &LoadedCheckpoint) -> anyhow::Result<Provenance> {
        let devices = self.device_list()?;
        let names: Vec<String> = devices.iter().map(|d| d.to_string()).collect();
        Ok(Provenance::new(
            ck,
            names.join(","),
            matmul_precision(devices[0], self.run.tf32),
        ))
    }

    /// As [`RunArgs::embed_settings`], for the devices of this run.
    pub fn embed_settings(
        &self,
        ck: &LoadedCheckpoint,
        layers: Vec<usize>,
        norm_layers: bool,
    ) -> anyhow::Result<EmbedSettings> {
        let devices = self.device_list()?;
        Ok(EmbedSettings {
            layers,
            norm_layers,
            batch_size: self.run.batch()?,
            precision: matmul_precision(devices[0], self.run.tf32),
            chunks: batch_chunks(devices[0]),
            metadata: self.provenance(ck)?.metadata(),
        })
    }
}

/// Which intermediate blocks to keep beside the final tokens.
#[derive(Args, Debug, Clone, Default)]
pub struct LayerArgs {
    /// Intermediate blocks to keep as `layer.{i}`: indices `8,9,10,11` or `last:4`.
    #[arg(long = "layers")]
    pub spec: Option<String>,
    /// Apply the final norm to the intermediate layers (as get_intermediate_layers(norm=True)).
    #[arg(long = "norm-layers")]
    pub norm: bool,
}

impl LayerArgs {
    /// The block indices for a model of `depth` blocks.
    pub fn resolve(&self, depth: usize) -> anyhow::Result<Vec<usize>> {
        match &self.spec {
            Some(s) => dinoadapt_datasets::embedding::parse_layers(s, depth)
                .map_err(|e| anyhow::anyhow!("--layers {e}")),
            None => Ok(Vec::new()),
        }
    }
}
