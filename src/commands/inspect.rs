//! `dinoadapt inspect PATH [--json]`: a checkpoint, or any file a domain reads (the domains
//! describe their own files).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use dinoadapt_core::checkpoint::LoadedCheckpoint;
use dinoadapt_core::vit::{VitConfig, PRESETS};
use dinoadapt_datasets::claiming_domain;
use serde_json::json;

use crate::model_args::ModelArgs;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A raster (GeoTIFF, COG, VRT, JP2, … anything GDAL opens), a volume (NIfTI .nii/.nii.gz,
    /// a DICOM file or a folder of DICOM series) or a checkpoint (same as --model).
    pub path: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The built-in preset this architecture is, if any (ignoring the stored grid size).
pub fn matching_preset(cfg: &VitConfig) -> Option<&'static str> {
    PRESETS.iter().copied().find(|p| {
        let mut preset = VitConfig::preset(p).expect("listed presets exist");
        preset.pos_grid = cfg.pos_grid;
        preset.layer_scale_init = cfg.layer_scale_init;
        preset.mask_token = cfg.mask_token;
        preset.interpolation = cfg.interpolation;
        preset.interpolation_skip = cfg.interpolation_skip;
        preset == *cfg
    })
}

pub fn describe(ck: &LoadedCheckpoint) -> serde_json::Value {
    let c = &ck.config;
    json!({
        "path": ck.path,
        "config_file": ck.config_path,
        "file_format": ck.file_format.name(),
        "layout": ck.layout.short(),
        "architecture": c,
        "preset": matching_preset(c),
        "num_params": ck.num_params(),
        "num_tensors": ck.state.len(),
        "num_heads_source": ck.heads_source.describe(),
        "interpolation": c.interpolation.name(),
        "native_image_size": c.pos_grid * c.patch_size,
        "dropped_keys": ck.dropped,
        "sha256": ck.sha256,
    })
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}

/// Checkpoints are .safetensors/.pth/.pt/.bin files or folders holding one.
fn is_checkpoint(path: &Path) -> bool {
    if path.is_dir() {
        return std::fs::read_dir(path).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let p = e.path();
                p.file_name().is_some_and(|n| n == "config.json")
                    || matches!(
                        extension(&p).as_deref(),
                        Some("safetensors" | "pth" | "bin")
                    )
            })
        });
    }
    matches!(
        extension(path).as_deref(),
        Some("safetensors" | "pth" | "pt" | "bin")
    )
}

/// What the domain that claims `path` says of it (slides, volumes, rasters: see
/// `dinoadapt_datasets::FileClaim`).
fn inspect_file(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let domains = crate::domains::all();
    let domain = claiming_domain(&domains, path)
        .with_context(|| format!("{}: not a file any domain reads", path.display()))?;
    let d = domain.describe_file(path)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&d.json)?);
    } else {
        for line in d.text {
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(mut args: InspectArgs) -> anyhow::Result<ExitCode> {
    if let Some(path) = args.path.take() {
        if !is_checkpoint(&path) {
            return inspect_file(&path, args.json);
        }
        if args.model.model.is_some() {
            anyhow::bail!("give the checkpoint either as PATH or with --model, not both");
        }
        args.model.model = Some(path);
    }
    let ck = args.model.load()?;
    let d = describe(&ck);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(ExitCode::SUCCESS);
    }
    let c = &ck.config;
    println!("checkpoint    {}", ck.path.display());
    if let Some(p) = &ck.config_path {
        println!("config        {}", p.display());
    }
    println!(
        "format        {} ({})",
        ck.layout.name(),
        ck.file_format.name()
    );
    println!(
        "architecture  ViT D={} depth={} heads={} ({}) patch={} registers={}",
        c.embed_dim,
        c.depth,
        c.num_heads,
        ck.heads_source.describe(),
        c.patch_size,
        c.num_register_tokens
    );
    println!("preset        {}", matching_preset(c).unwrap_or("(none)"));
    println!("ffn           {:?}", c.ffn);
    println!(
        "layer scale   {}   mask token {}   qkv bias {}",
        c.layer_scale, c.mask_token, c.qkv_bias
    );
    println!(
        "pos embed     {}x{} grid ({} px native), prefix rows {:?}, interpolation {}",
        c.pos_grid,
        c.pos_grid,
        c.pos_grid * c.patch_size,
        c.pos_embed_prefix,
        c.interpolation.name()
    );
    println!(
        "parameters    {} ({:.2} M)",
        ck.num_params(),
        ck.num_params() as f64 / 1e6
    );
    if !ck.dropped.is_empty() {
        println!("left out      {} non-backbone weights", ck.dropped.len());
    }
    println!("sha256        {}", ck.sha256);
    Ok(ExitCode::SUCCESS)
}
