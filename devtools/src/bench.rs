//! `dinoadapt-dev bench embed|train|curate|satellite|pathology`: backbone inference and training
//! throughput with random weights, curation search / k-means throughput, stitched tiled inference
//! over rasters and slide tiling.

mod curate;
mod pathology;
mod satellite;
mod train;

use std::process::ExitCode;
use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use clap::{Args, Subcommand};
use dinoadapt_core::backend::{
    batch_chunks, device_list, matmul_precision, on_devices, peak_rss_mib, DeviceSpec, DevicesJob,
};
use dinoadapt_core::host::HostCpu;
use dinoadapt_core::vit::{VisionTransformer, VitConfig};
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Forward passes of a random-weight backbone: images/s and peak memory.
    Embed(BenchEmbedArgs),
    /// DINOv2 training iterations on random multi-crop batches: images/s and peak memory.
    Train(train::BenchTrainArgs),
    /// Exact top-k search and k-means over a synthetic embedding pool (compare with
    /// bench/faiss_curate.py on the same files).
    Curate(curate::BenchCurateArgs),
    /// Stitched tiled inference over a raster (or an N×N VRT mosaic of it): megapixels/s and
    /// peak memory.
    Satellite(Box<satellite::BenchSatelliteArgs>),
    /// Tissue + tiling + tile read/decode over slides: tiles/s (compare with
    /// bench/openslide_tiles.py).
    Pathology(pathology::BenchPathologyArgs),
}

#[derive(Args, Debug, Clone)]
pub struct BenchEmbedArgs {
    /// Architecture preset (vits14, vitb14, vitl14, vitg14, *_reg, uni, uni2h).
    #[arg(long, default_value = "vits14")]
    pub arch: String,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Square input resolution in pixels.
    #[arg(long, default_value_t = 224)]
    pub res: usize,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Several devices at once (`cuda:0,cuda:1`, a count, or `all`), one model per device,
    /// each running `--batch` images per step as `embed --devices` shares its batches;
    /// images/s counts them all.
    #[arg(long)]
    pub devices: Option<String>,
    /// Untimed batches first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed batches.
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// On CUDA, let matmuls run in TF32 instead of f32-accurate split products.
    #[arg(long)]
    pub tf32: bool,
    /// CPU threads (default: all cores, or RAYON_NUM_THREADS).
    #[arg(long)]
    pub threads: Option<usize>,
}

struct BenchEmbedJob(BenchEmbedArgs, VitConfig);

impl DevicesJob for BenchEmbedJob {
    type Output = serde_json::Value;

    fn run<B: Backend>(self, devices: Vec<B::Device>) -> serde_json::Value {
        let BenchEmbedJob(args, cfg) = self;
        let precision = matmul_precision(args.device, args.tf32);
        let chunks = batch_chunks(args.device);
        let world = devices.len();
        // Every device warms up, then all start the timed batches together.
        let start = std::sync::Barrier::new(world);
        let timings: Vec<(f64, f64)> = std::thread::scope(|scope| {
            let threads: Vec<_> = devices
                .into_iter()
                .map(|device| {
                    let (args, cfg, start) = (&args, &cfg, &start);
                    scope.spawn(move || {
                        let model =
                            VisionTransformer::<B>::init(cfg, &device).with_precision(precision);
                        let x = Tensor::<B, 4>::random(
                            [args.batch, 3, args.res, args.res],
                            Distribution::Normal(0.0, 1.0),
                            &device,
                        );
                        let step = |x: Tensor<B, 4>| {
                            let f = model.forward_features_chunked(x, &[], chunks);
                            // Reading the result back waits for the device.
                            let _ = f.tokens.into_data();
                        };
                        // The first batch includes kernel compilation and autotuning on GPU
                        // backends.
                        let t_first = Instant::now();
                        step(x.clone());
                        let first = t_first.elapsed().as_secs_f64();
                        for _ in 1..args.warmup {
                            step(x.clone());
                        }
                        start.wait();
                        let t0 = Instant::now();
                        for _ in 0..args.iters {
                            step(x.clone());
                        }
                        (first, t0.elapsed().as_secs_f64())
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("a device thread panicked"))
                .collect()
        });
        let first = timings.iter().map(|t| t.0).fold(0.0, f64::max);
        eprintln!("first batch (compile + tune): {first:.2} s");
        // The slowest device ends the step.
        let secs = timings.iter().map(|t| t.1).fold(0.0, f64::max) / args.iters.max(1) as f64;
        json!({
            "impl": "dinoadapt",
            "backend": std::any::type_name::<B>().rsplit("::").next().unwrap_or("?"),
            "arch": args.arch,
            "batch": args.batch,
            "res": args.res,
            "threads": rayon::current_num_threads(),
            "device": args.device.to_string(),
            "devices": world,
            "matmul_precision": format!("{precision:?}"),
            "images_per_s": (args.batch * world) as f64 / secs,
            "seconds_per_batch": secs,
            "first_batch_seconds": first,
            "peak_rss_mb": peak_rss_mib(),
        })
    }
}

/// Every figure with the host it was measured on (model, vendor, SIMD level, topology): a speed
/// claim names its CPU.
fn with_host(mut out: serde_json::Value) -> serde_json::Value {
    let host = HostCpu::detect();
    eprintln!("host: {}", host.summary());
    let host = serde_json::to_value(&host).unwrap_or_default();
    let runs = match &mut out {
        serde_json::Value::Array(runs) => runs.iter_mut().collect(),
        one => vec![one],
    };
    for run in runs {
        if let Some(fields) = run.as_object_mut() {
            fields.insert("host".into(), host.clone());
        }
    }
    out
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Pathology(args) => {
            let out = pathology::run(args)?;
            eprintln!(
                "{:.1} tiles/s ({} tiles in {:.2} s)",
                out["tiles_per_s"].as_f64().unwrap_or(0.0),
                out["tiles"],
                out["seconds"].as_f64().unwrap_or(0.0)
            );
            println!("{}", with_host(out));
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Satellite(args) => {
            let out = satellite::run(*args)?;
            eprintln!(
                "{:.2} Mpx/s ({:.1} Mpx in {:.1} s), peak RSS {:.0} MiB",
                out["megapixels_per_s"].as_f64().unwrap_or(0.0),
                out["megapixels"].as_f64().unwrap_or(0.0),
                out["seconds"].as_f64().unwrap_or(0.0),
                out["peak_rss_mib"].as_f64().unwrap_or(0.0)
            );
            println!("{}", with_host(out));
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Curate(args) => {
            let out = curate::run(args)?;
            eprintln!(
                "search {:.3} s ({:.0} queries/s), k-means {:.2} s",
                out["search_s_best"].as_f64().unwrap_or(0.0),
                out["queries_per_s"].as_f64().unwrap_or(0.0),
                out["kmeans_s"].as_f64().unwrap_or(0.0)
            );
            println!("{}", with_host(out));
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Train(args) => {
            let out = train::run(args)?;
            let runs = match &out {
                serde_json::Value::Array(runs) => runs.clone(),
                one => vec![one.clone()],
            };
            for r in &runs {
                eprintln!(
                    "{}: {:.3} images/s ({:.2} s/iteration), peak RSS {:.0} MiB",
                    r["crop_forward"].as_str().unwrap_or("?"),
                    r["images_per_s"].as_f64().unwrap_or(0.0),
                    r["step_s"].as_f64().unwrap_or(0.0),
                    r["peak_rss_mib"].as_f64().unwrap_or(0.0)
                );
            }
            println!("{}", with_host(out));
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Embed(args) => {
            if let Some(n) = args.threads {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build_global()?;
            }
            let cfg = VitConfig::preset(&args.arch)
                .ok_or_else(|| anyhow::anyhow!("unknown --arch `{}`", args.arch))?;
            eprintln!(
                "bench embed: {} ({:.1} M params), batch {}, {}x{}, device {}, {} threads",
                args.arch,
                cfg.num_params() as f64 / 1e6,
                args.batch,
                args.res,
                args.res,
                args.device,
                rayon::current_num_threads()
            );
            let devices = match &args.devices {
                Some(list) => device_list(list, args.device).map_err(anyhow::Error::msg)?,
                None => vec![args.device],
            };
            let out = on_devices(&devices, BenchEmbedJob(args.clone(), cfg))?;
            eprintln!(
                "{:.2} images/s ({:.3} s/batch), peak RSS {:.0} MiB",
                out["images_per_s"].as_f64().unwrap_or(0.0),
                out["seconds_per_batch"].as_f64().unwrap_or(0.0),
                out["peak_rss_mb"].as_f64().unwrap_or(0.0)
            );
            println!("{}", with_host(out));
            Ok(ExitCode::SUCCESS)
        }
    }
}
