//! `dinoadapt inspect MODEL [--json]`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use dinoadapt_core::checkpoint::LoadedCheckpoint;
use dinoadapt_core::vit::{VitConfig, PRESETS};
use serde_json::json;

use crate::model_args::ModelArgs;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A raster (GeoTIFF, COG, VRT, JP2, … anything GDAL opens) or a checkpoint (same as
    /// --model).
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

/// Checkpoints are folders or .safetensors/.pth/.pt/.bin files; anything else is a data file.
fn is_checkpoint(path: &Path) -> bool {
    path.is_dir()
        || matches!(
            path.extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("safetensors" | "pth" | "pt" | "bin")
        )
}

fn inspect_raster(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let raster = dinoadapt_satellite::Raster::open(path)?;
    let r = dinoadapt_satellite::inspect::report(&raster, true)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("raster        {} ({})", r.path, r.driver);
    println!(
        "size          {} x {} px, {} bands {:?}",
        r.width, r.height, r.count, r.dtypes
    );
    println!("nodata        {:?}", r.nodatavals);
    match (&r.epsg, &r.crs_wkt) {
        (Some(code), _) => println!("crs           EPSG:{code}"),
        (None, Some(w)) => println!("crs           {}", w.split('"').nth(1).unwrap_or("custom")),
        (None, None) => println!("crs           none"),
    }
    if r.georeferenced {
        println!("geotransform  {:?}", r.geotransform_gdal);
        println!("bounds        {:?}", r.bounds);
    } else {
        println!("geotransform  none (not georeferenced)");
    }
    for (b, s) in r.band_stats_excluding_nodata.iter().enumerate() {
        println!(
            "band {}        min {} max {} mean {:.4} ({} valid px)",
            b + 1,
            s.min,
            s.max,
            s.mean,
            s.valid_pixels
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(mut args: InspectArgs) -> anyhow::Result<ExitCode> {
    if let Some(path) = args.path.take() {
        if !is_checkpoint(&path) {
            return inspect_raster(&path, args.json);
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
