//! `dinoadapt inspect MODEL [--json]`.

use std::process::ExitCode;

use clap::Args;
use dinoadapt_core::checkpoint::LoadedCheckpoint;
use dinoadapt_core::vit::{VitConfig, PRESETS};
use serde_json::json;

use crate::model_args::ModelArgs;

#[derive(Args, Debug)]
pub struct InspectArgs {
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

pub fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
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
