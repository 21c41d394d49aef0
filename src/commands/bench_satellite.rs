//! `dinoadapt bench satellite`: stitched tiled inference throughput (megapixels/s) and peak
//! memory, on a raster or on a VRT mosaic of N×N copies of it — a raster far larger than memory
//! would hold if it were loaded whole, at no disk cost.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use dinoadapt_core::backend::DeviceSpec;
use dinoadapt_satellite::Raster;
use serde_json::json;

use super::satellite::{predict_config, predict_with_head, ChipArgs, HeadChoice};
use crate::device::peak_rss_mib;
use crate::model_args::ModelArgs;

#[derive(Args, Debug)]
pub struct BenchSatelliteArgs {
    /// The raster to tile (e.g. ../shared/data/satellite/rgbn.tif).
    #[arg(long)]
    pub raster: PathBuf,
    /// Mosaic N×N copies of the raster in a VRT (1: the raster itself).
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// `band:N` (stitching alone) or `pca` (the backbone + PCA head).
    #[arg(long, default_value = "band:1")]
    pub head: String,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub chips: ChipArgs,
    #[arg(long, default_value = "cosine")]
    pub blend: String,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Working folder (the VRT and the output GeoTIFF; the output is deleted afterwards).
    #[arg(long, default_value = "out/bench_satellite")]
    pub out: PathBuf,
    /// Keep the output GeoTIFF.
    #[arg(long)]
    pub keep: bool,
}

fn gdal_type(numpy: &str) -> anyhow::Result<&'static str> {
    Ok(match numpy {
        "uint8" => "Byte",
        "uint16" => "UInt16",
        "int16" => "Int16",
        "uint32" => "UInt32",
        "int32" => "Int32",
        "float32" => "Float32",
        "float64" => "Float64",
        other => anyhow::bail!("no VRT type for {other}"),
    })
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A VRT placing `n`×`n` copies of `raster` side by side (same pixel size, origin of the
/// original).
pub fn write_mosaic(raster: &Raster, n: usize, path: &Path) -> anyhow::Result<()> {
    let info = raster.info();
    let gt = info.require_geotransform()?;
    let src = std::fs::canonicalize(raster.path())?;
    let (w, h) = (info.width, info.height);
    let mut xml = String::new();
    writeln!(
        xml,
        r#"<VRTDataset rasterXSize="{}" rasterYSize="{}">"#,
        w * n,
        h * n
    )?;
    if let Some(crs) = &info.crs {
        writeln!(xml, "  <SRS>{}</SRS>", escape(&crs.wkt))?;
    }
    let g = gt.0;
    writeln!(
        xml,
        "  <GeoTransform>{:e}, {:e}, {:e}, {:e}, {:e}, {:e}</GeoTransform>",
        g[0], g[1], g[2], g[3], g[4], g[5]
    )?;
    for b in 1..=info.count() {
        writeln!(
            xml,
            r#"  <VRTRasterBand dataType="{}" band="{b}">"#,
            gdal_type(info.dtypes[b - 1])?
        )?;
        if let Some(nd) = info.nodata[b - 1] {
            writeln!(xml, "    <NoDataValue>{nd}</NoDataValue>")?;
        }
        for j in 0..n {
            for i in 0..n {
                writeln!(
                    xml,
                    r#"    <SimpleSource><SourceFilename relativeToVRT="0">{}</SourceFilename><SourceBand>{b}</SourceBand><SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/><DstRect xOff="{}" yOff="{}" xSize="{w}" ySize="{h}"/></SimpleSource>"#,
                    escape(&src.display().to_string()),
                    i * w,
                    j * h
                )?;
            }
        }
        writeln!(xml, "  </VRTRasterBand>")?;
    }
    writeln!(xml, "</VRTDataset>")?;
    std::fs::write(path, xml).with_context(|| format!("writing {}", path.display()))
}

pub fn run(args: BenchSatelliteArgs) -> anyhow::Result<serde_json::Value> {
    std::fs::create_dir_all(&args.out)?;
    let src = Raster::open(&args.raster)?;
    let raster = if args.repeat > 1 {
        let vrt = args
            .out
            .join(format!("mosaic_{}x{}.vrt", args.repeat, args.repeat));
        write_mosaic(&src, args.repeat, &vrt)?;
        Raster::open(&vrt)?
    } else {
        src
    };
    let info = raster.info().clone();
    let cfg = predict_config(&args.chips, &args.blend, args.batch_size, None, false)?;
    let whole_f32_gib =
        (info.width * info.height * cfg.bands.len() * 4) as f64 / (1u64 << 30) as f64;
    eprintln!(
        "bench satellite: {} x {} px ({:.1} Mpx, {} bands selected: {:.1} GiB as f32 if loaded \
         whole), head {}, chips {}/{}",
        info.width,
        info.height,
        (info.width * info.height) as f64 / 1e6,
        cfg.bands.len(),
        whole_f32_gib,
        args.head,
        cfg.chip_size,
        cfg.stride
    );
    let out = args.out.join("prediction.tif");
    let s = predict_with_head(
        &raster,
        &out,
        &cfg,
        &HeadChoice {
            head: &args.head,
            model: &args.model,
            normalize: "imagenet",
            device: args.device,
            tf32: false,
            quiet: true,
        },
    )?;
    let out_bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    if !args.keep {
        let _ = std::fs::remove_file(&out);
    }
    Ok(json!({
        "raster": args.raster,
        "repeat": args.repeat,
        "width": info.width,
        "height": info.height,
        "megapixels": s.megapixels,
        "whole_raster_f32_gib": whole_f32_gib,
        "head": args.head,
        "chip_size": cfg.chip_size,
        "stride": cfg.stride,
        "chips": s.chips,
        "seconds": s.seconds,
        "megapixels_per_s": s.megapixels / s.seconds.max(1e-9),
        "peak_rss_mib": peak_rss_mib(),
        "output_bytes": out_bytes,
        "threads": rayon::current_num_threads(),
        "device": args.device.to_string(),
    }))
}
