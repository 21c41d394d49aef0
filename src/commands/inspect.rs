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

/// NIfTI files, DICOM files (by extension or the `DICM` magic at byte 128) and folders that are
/// not checkpoints (DICOM trees).
fn is_volume(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with(".nii") || name.ends_with(".nii.gz") || name.ends_with(".dcm") {
        return true;
    }
    if path.is_dir() {
        return !is_checkpoint(path);
    }
    let mut magic = [0u8; 132];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|_| &magic[128..] == b"DICM")
}

/// Whole-slide formats by extension; a (pyramidal) TIFF is a slide when OpenSlide recognises it
/// and GDAL finds no georeferencing in it.
fn is_slide(path: &Path) -> bool {
    match extension(path).as_deref() {
        Some("dcm") => dinoadapt_pathology::dicom_wsi::is_wsi(path),
        Some("svs" | "ndpi" | "mrxs" | "scn" | "vms" | "vmu" | "bif" | "svslide") => true,
        Some("tif" | "tiff") => {
            dinoadapt_pathology::openslide_slide::detect_vendor(path).is_some()
                && dinoadapt_satellite::Raster::open(path)
                    .map(|r| r.info().geotransform.is_none())
                    .unwrap_or(true)
        }
        _ => false,
    }
}

fn inspect_slide(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    // DICOM slides are described from their tags (Debian's OpenSlide 3.4.1 cannot open them).
    let info = if extension(path).as_deref() == Some("dcm") {
        dinoadapt_pathology::dicom_wsi::describe(path)?
    } else {
        dinoadapt_pathology::Slide::open(path)?.info().clone()
    };
    let info = &info;
    let recorded = dinoadapt_pathology::mpp::recorded_mpp(path);
    // OpenSlide's own view: the mpp the file records (even an implausible 72 dpi), and
    // separately whether it is usable for tiling.
    let (mpp_x, mpp_y) = match (info.mpp, recorded) {
        (Some(m), _) if m.source != dinoadapt_pathology::MppSource::Override => {
            (Some(m.x), Some(m.y))
        }
        (_, Some((x, y))) => (Some(x), Some(y)),
        _ => (None, None),
    };
    let v = serde_json::json!({
        "kind": "slide",
        "path": path,
        "backend": info.backend,
        "vendor": info.format,
        "openslide_version": info.openslide_version,
        "dimensions": [info.width, info.height],
        "level_count": info.levels.len(),
        "level_dimensions": info.levels.iter().map(|l| [l.width, l.height]).collect::<Vec<_>>(),
        "level_downsamples": info.levels.iter().map(|l| l.downsample).collect::<Vec<_>>(),
        "mpp_x": mpp_x,
        "mpp_y": mpp_y,
        "mpp_usable": info.mpp.is_some(),
        "mpp_source": info.mpp.map(|m| m.source),
        "mpp_note": info.mpp_note,
        "objective_power": info.objective_power,
        "bounds": info.bounds,
        "associated_images": info.associated_images,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "slide         {} ({}, {})",
        path.display(),
        info.format,
        info.backend
    );
    println!(
        "size          {} x {} px, {} levels",
        info.width,
        info.height,
        info.levels.len()
    );
    for (i, l) in info.levels.iter().enumerate() {
        println!(
            "  level {i}     {} x {} (downsample {:.4})",
            l.width, l.height, l.downsample
        );
    }
    match (info.mpp, &info.mpp_note) {
        (Some(m), _) => println!(
            "mpp           {:.4} x {:.4} µm/px ({:?})",
            m.x, m.y, m.source
        ),
        (None, Some(note)) => println!("mpp           none usable: {note}"),
        (None, None) => println!("mpp           none"),
    }
    if let Some(p) = info.objective_power {
        println!("objective     {p}x");
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect_volume(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let salt = std::env::var("DINOADAPT_ID_SALT").unwrap_or_else(|_| "dinoadapt".into());
    let pseudo = dinoadapt_radiology::Pseudonymizer::new(salt);
    let reports = dinoadapt_radiology::inspect::inspect_path(path, &pseudo)?;
    if json {
        let v = if reports.len() == 1 {
            serde_json::to_value(&reports[0])?
        } else {
            serde_json::to_value(&reports)?
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    for r in &reports {
        println!("volume        {} ({})", r.id, r.kind);
        println!("modality      {}", r.modality.as_deref().unwrap_or("?"));
        if let (Some(d), Some(s)) = (r.dims, r.spacing) {
            println!(
                "grid          {} x {} x {} voxels, spacing {:.4} x {:.4} x {:.4} mm",
                d[0], d[1], d[2], s[0], s[1], s[2]
            );
        }
        if let Some(codes) = &r.axcodes {
            let c: Vec<&str> = codes.iter().map(|c| c.as_deref().unwrap_or("?")).collect();
            println!("orientation   {} (RAS+ axis codes)", c.concat());
        }
        if let Some(a) = &r.affine_lps {
            println!("affine (LPS)  {a:?}");
        }
        if let (Some(lo), Some(hi)) = (r.value_min, r.value_max) {
            println!("values        {lo} .. {hi}");
        }
    }
    Ok(ExitCode::SUCCESS)
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
        if is_slide(&path) {
            return inspect_slide(&path, args.json);
        }
        if is_volume(&path) {
            return inspect_volume(&path, args.json);
        }
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
