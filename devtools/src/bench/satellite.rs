//! `dinoadapt-dev bench satellite`: stitched tiled inference throughput (megapixels/s) and peak
//! memory, on a raster or on a VRT mosaic of N×N copies of it — a raster far larger than memory
//! would hold if it were loaded whole, at no disk cost. The heads are the library's: `band:N`
//! (stitching alone) and `pca` (a backbone and its patch tokens' principal components).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use clap::Args;
use dinoadapt_core::backend::{
    batch_chunks, matmul_precision, on_device, peak_rss_mib, BackendJob, DeviceSpec,
};
use dinoadapt_satellite::predict::{
    predict_raster, BandPassthrough, PredictConfig, PredictSummary,
};
use dinoadapt_satellite::{Blend, Normalization, PcaHead, Raster};
use serde_json::json;

use crate::model_args::ModelArgs;

/// The chip options of `dinoadapt satellite predict`.
#[derive(Args, Debug, Clone)]
pub struct ChipArgs {
    /// Chip size in pixels.
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Chip stride in pixels (default: the size, no overlap).
    #[arg(long)]
    pub stride: Option<usize>,
    /// Bands to use, 1-based, in model channel order (e.g. 1,2,3 or 3,2,1).
    #[arg(long, default_value = "1,2,3", value_delimiter = ',')]
    pub bands: Vec<usize>,
    /// Skip chips with a larger nodata fraction (0..1).
    #[arg(long, default_value_t = 0.5)]
    pub max_nodata: f64,
}

/// The prediction settings, as `dinoadapt satellite predict` makes them.
fn predict_config(chips: &ChipArgs, blend: &str, batch: usize) -> anyhow::Result<PredictConfig> {
    if !(0.0..=1.0).contains(&chips.max_nodata) {
        bail!("--max-nodata {} must be within 0..1", chips.max_nodata);
    }
    let blend = Blend::parse(blend)
        .with_context(|| format!("--blend `{blend}`: cosine, gaussian or uniform"))?;
    Ok(PredictConfig {
        bands: chips.bands.clone(),
        chip_size: chips.size,
        stride: chips.stride.unwrap_or(chips.size),
        blend,
        batch_size: batch.max(1),
        nodata: None,
        cog: false,
    })
}

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

/// The backbone and its pca head over the raster.
struct PcaJob<'a> {
    model: &'a ModelArgs,
    device: DeviceSpec,
    raster: &'a Raster,
    out: &'a Path,
    cfg: &'a PredictConfig,
    norm: Normalization,
}

impl BackendJob for PcaJob<'_> {
    type Output = anyhow::Result<PredictSummary>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let ck = self.model.load()?;
        let precision = matmul_precision(self.device, false);
        let model = ck.build::<B>(&device)?.with_precision(precision);
        let mut head = PcaHead::fit(
            model,
            device,
            self.norm,
            self.raster,
            self.cfg,
            batch_chunks(self.device),
        )?;
        Ok(predict_raster(
            self.raster,
            self.out,
            self.cfg,
            &mut head,
            &mut |_, _| {},
        )?)
    }
}

/// Tiled inference of `raster` into `out` with the head `--head` names.
fn predict(
    args: &BenchSatelliteArgs,
    raster: &Raster,
    out: &Path,
    cfg: &PredictConfig,
) -> anyhow::Result<PredictSummary> {
    if let Some(mut band) = BandPassthrough::parse(&args.head, &cfg.bands)? {
        return Ok(predict_raster(raster, out, cfg, &mut band, &mut |_, _| {})?);
    }
    if args.head != "pca" {
        bail!("--head `{}`: pca or band:N", args.head);
    }
    let norm = Normalization::preset("imagenet", &[raster], &cfg.bands)?;
    let job = PcaJob {
        model: &args.model,
        device: args.device,
        raster,
        out,
        cfg,
        norm,
    };
    on_device(args.device, job)?
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
    let cfg = predict_config(&args.chips, &args.blend, args.batch_size)?;
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
    let s = predict(&args, &raster, &out, &cfg)?;
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
