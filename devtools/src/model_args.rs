//! The model options of `bench satellite`: the same flags, meaning and loading as the
//! `dinoadapt` program's (src/model_args.rs), so a benchmark runs the model a user would.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use dinoadapt_core::checkpoint::infer::ArchOverrides;
use dinoadapt_core::checkpoint::load::read_arch_file;
use dinoadapt_core::checkpoint::{load_checkpoint, LoadOptions, LoadedCheckpoint};
use dinoadapt_core::vit::PosEmbedInterpolation;

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
