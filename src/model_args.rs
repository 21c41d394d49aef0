//! The command-line arguments that say which model to load and how.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use dinoadapt_core::checkpoint::infer::ArchOverrides;
use dinoadapt_core::checkpoint::load::read_arch_file;
use dinoadapt_core::checkpoint::{load_checkpoint, LoadOptions, LoadedCheckpoint};
use dinoadapt_core::vit::{MatmulPrecision, PosEmbedInterpolation};
use dinoadapt_datasets::embedding::EmbedSettings;
use dinoadapt_datasets::Provenance;

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
    /// cpu or cuda:N (CUDA needs a `--features cuda` build).
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

    /// The matmul precision of this run's device.
    pub fn precision(&self) -> MatmulPrecision {
        matmul_precision(self.device, self.tf32)
    }

    /// What every output of `ck` run this way records.
    pub fn provenance(&self, ck: &LoadedCheckpoint) -> Provenance {
        Provenance::new(ck, self.device, self.precision())
    }

    /// How `ck` embeds in this run: the layers kept, the device's precision and batch slicing,
    /// and the provenance every feature file carries.
    pub fn embed_settings(
        &self,
        ck: &LoadedCheckpoint,
        layers: Vec<usize>,
        norm_layers: bool,
    ) -> EmbedSettings {
        EmbedSettings {
            layers,
            norm_layers,
            batch_size: self.batch_size,
            precision: self.precision(),
            chunks: batch_chunks(self.device),
            metadata: self.provenance(ck).metadata(),
        }
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
