//! `dinoadapt-dev bench pathology`: tissue detection + tiling + tile read/decode/resample/normalise
//! throughput (tiles/s) over slides, the work `bench/openslide_tiles.py` does with
//! openslide-python, numpy and PIL.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use dinoadapt_core::backend::peak_rss_mib;
use dinoadapt_pathology::source::push_normalized;
use dinoadapt_pathology::tiling::{plan_tiles, read_tiles, TilingConfig};
use dinoadapt_pathology::tissue::{detect_tissue, TissueConfig};
use dinoadapt_pathology::Slide;
use serde_json::json;

#[derive(Args, Debug)]
pub struct BenchPathologyArgs {
    /// Slide files.
    #[arg(required = true)]
    pub slides: Vec<PathBuf>,
    #[arg(long, default_value_t = 0.5)]
    pub target_mpp: f64,
    #[arg(long, default_value_t = 224)]
    pub size: u32,
    /// Tissue fraction a tile needs.
    #[arg(long, default_value_t = 0.25)]
    pub min_tissue: f64,
    /// Process every slide this many times.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(args: BenchPathologyArgs) -> anyhow::Result<serde_json::Value> {
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()?;
    }
    let cfg = TilingConfig {
        target_mpp: args.target_mpp,
        size: args.size,
        stride: args.size,
        min_tissue: args.min_tissue,
        ..TilingConfig::default()
    };
    let mean = [0.485, 0.456, 0.406];
    let std = [0.229, 0.224, 0.225];
    let t0 = Instant::now();
    let (mut tiles, mut checksum) = (0usize, 0f64);
    for _ in 0..args.repeat {
        for path in &args.slides {
            let slide = Slide::open(path)?;
            let mask = detect_tissue(&slide, &TissueConfig::default())?.mask;
            let plan = plan_tiles(&slide, Some(&mask), &cfg)?;
            for chunk in plan.tiles.chunks(64) {
                let images = read_tiles(&slide, chunk, &cfg)?;
                let mut pixels =
                    Vec::with_capacity(images.len() * 3 * (cfg.size * cfg.size) as usize);
                for img in &images {
                    push_normalized(img, mean, std, &mut pixels);
                }
                checksum += pixels.first().copied().unwrap_or(0.0) as f64;
                tiles += images.len();
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(json!({
        "impl": "dinoadapt",
        "slides": args.slides.len() * args.repeat,
        "tiles": tiles,
        "seconds": secs,
        "tiles_per_s": tiles as f64 / secs,
        "threads": rayon::current_num_threads(),
        "mpp": args.target_mpp,
        "size": args.size,
        "peak_rss_mib": peak_rss_mib(),
        "checksum": checksum,
    }))
}
