//! `dinoadapt-dev bench train`: DINOv2 training iterations of a random-weight model on random
//! multi-crop batches (the same work as `bench/pytorch_train.py`): images/s and peak memory.

use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, Tensor};
use clap::Args;
use dinoadapt_core::backend::{
    batch_chunks, device_list, keep_freed_memory, on_training_devices, peak_rss_mib, DeviceSpec,
    TrainingJob,
};
use dinoadapt_core::objective::head::DinoHeadConfig;
use dinoadapt_core::objective::masking::{collate_masks, MaskingGenerator, PyRandom};
use dinoadapt_core::train::replicas::Replicas;
use dinoadapt_core::train::{
    CropBatch, CropForward, OptimConfig, SslLossConfig, SslModel, StepValues, Trainer,
};
use dinoadapt_core::vit::{DropPathForm, MatmulPrecision, VisionTransformer, VitConfig};
use serde_json::json;

#[derive(Args, Debug, Clone)]
pub struct BenchTrainArgs {
    /// Architecture preset.
    #[arg(long, default_value = "vits14")]
    pub arch: String,
    /// Source images per iteration.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 8)]
    pub local_crops: usize,
    #[arg(long, default_value_t = 224)]
    pub global_size: usize,
    #[arg(long, default_value_t = 98)]
    pub local_size: usize,
    #[arg(long, default_value_t = 65536)]
    pub prototypes: usize,
    /// A separate iBOT head (the official default shares the DINO head).
    #[arg(long)]
    pub separate_ibot_head: bool,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Data parallelism: one replica per device (`cuda:0,cuda:1`, a count, or `all`), each
    /// with `--batch` images, gradients averaged by burn-collective (feature `collective`);
    /// images/s counts the global batch.
    #[arg(long)]
    pub devices: Option<String>,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Student crops through the backbone: per-size (one forward per crop size) or packed (one
    /// sequence with block-diagonal attention); `both` times the two in one run.
    #[arg(long, default_value = "packed")]
    pub crop_forward: String,
    /// The backbone's products: backend (f32 on CPU, TF32 on CUDA), split or bf16 (mixed
    /// precision).
    #[arg(long, default_value = "backend")]
    pub precision: String,
    /// Chunks of the batch that go through the backbones at once (one per thread by default on
    /// the CPU, 1 on a GPU); a list (`1,2`) times each in one run.
    #[arg(long, value_delimiter = ',')]
    pub chunks: Vec<usize>,
    /// Stochastic depth rate (of the last block, rising linearly from 0, unless
    /// `--drop-path-uniform`).
    #[arg(long, default_value_t = 0.0)]
    pub drop_path: f64,
    /// The same rate in every block (the official DINOv2 configs; the paper's ViT-g drops 40%
    /// everywhere) instead of rising linearly from 0.
    #[arg(long)]
    pub drop_path_uniform: bool,
    /// Stochastic depth form: efficient (the dropped images' branches skipped), masked (computed
    /// and multiplied by 0) or both (timed in one run).
    #[arg(long, default_value = "efficient")]
    pub drop_path_form: String,
}

/// What one timed configuration runs.
#[derive(Debug, Clone, Copy)]
struct Setting {
    forward: CropForward,
    precision: MatmulPrecision,
    /// Chunks of the batch run at once (`Trainer::chunks`).
    chunks: usize,
    drop_path_form: DropPathForm,
}

/// One setting of the benchmark on the device `--device` names.
struct Bench<'a> {
    args: &'a BenchTrainArgs,
    cfg: &'a VitConfig,
    setting: Setting,
}

impl TrainingJob for Bench<'_> {
    type Output = serde_json::Value;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> serde_json::Value {
        if devices.len() == 1 {
            return bench::<B>(self.args, self.cfg, self.setting, &devices[0], None);
        }
        data_parallel::<B>(self, devices)
    }
}

/// One replica per device, each on its own thread and joined by burn-collective; rank 0's
/// figures, with images/s over the global batch.
#[cfg(feature = "collective")]
fn data_parallel<B: AutodiffBackend>(job: Bench<'_>, devices: Vec<B::Device>) -> serde_json::Value {
    use dinoadapt_core::train::replicas::collective::CollectivePeer;
    let world = devices.len();
    let mut runs: Vec<serde_json::Value> = std::thread::scope(|scope| {
        let threads: Vec<_> = devices
            .into_iter()
            .enumerate()
            .map(|(rank, device)| {
                let job = &job;
                scope.spawn(move || {
                    let peer = CollectivePeer::register::<B::InnerBackend>(rank, world, &device)
                        .unwrap_or_else(|e| panic!("{e}"));
                    let replicas: std::sync::Arc<dyn Replicas<B::InnerBackend>> =
                        std::sync::Arc::new(peer);
                    let out = bench::<B>(job.args, job.cfg, job.setting, &device, Some(replicas));
                    peer.finish::<B::InnerBackend>()
                        .unwrap_or_else(|e| panic!("{e}"));
                    out
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a replica panicked"))
            .collect()
    });
    let mut lead = runs.remove(0);
    let step = lead["step_s"].as_f64().unwrap_or(f64::NAN);
    let images = (job.args.batch * world) as f64;
    lead["devices"] = json!(world);
    lead["global_batch"] = json!(job.args.batch * world);
    lead["images_per_s"] = json!(images / step);
    lead["crops_per_s"] = json!(images * (2 + job.args.local_crops) as f64 / step);
    lead
}

#[cfg(not(feature = "collective"))]
fn data_parallel<B: AutodiffBackend>(_: Bench<'_>, _: Vec<B::Device>) -> serde_json::Value {
    unreachable!("run() refuses several devices without the `collective` feature")
}

fn bench<B: AutodiffBackend>(
    args: &BenchTrainArgs,
    cfg: &VitConfig,
    setting: Setting,
    device: &B::Device,
    replicas: Option<std::sync::Arc<dyn Replicas<B::InnerBackend>>>,
) -> serde_json::Value {
    let Setting {
        forward,
        precision,
        chunks,
        drop_path_form,
    } = setting;
    B::seed(device, 0);
    let head = DinoHeadConfig::new(cfg.embed_dim).with_num_prototypes(args.prototypes);
    let backbone = VisionTransformer::<B>::init(cfg, device)
        .with_precision(precision)
        .with_drop_path_form(drop_path_form);
    let student = SslModel::new(
        backbone,
        &head,
        args.separate_ibot_head.then_some(&head),
        device,
    );
    let mut trainer = Trainer::new(student, SslLossConfig::default(), OptimConfig::default());
    trainer.crop_forward = forward;
    trainer.chunks = chunks;
    trainer.replicas = replicas;
    let inner = trainer.teacher.backbone.device();
    let n = args.batch;
    let (g, l) = (args.global_size, args.local_size);
    let global = Tensor::<B::InnerBackend, 4>::random(
        [2 * n, 3, g, g],
        Distribution::Normal(0.0, 1.0),
        &inner,
    );
    let local = (args.local_crops > 0).then(|| {
        Tensor::<B::InnerBackend, 4>::random(
            [args.local_crops * n, 3, l, l],
            Distribution::Normal(0.0, 1.0),
            &inner,
        )
    });
    let masks = collate_masks(
        &mut PyRandom::seed(0),
        &MaskingGenerator::dinov2(g / cfg.patch_size),
        2 * n,
        0.5,
        (0.1, 0.5),
    );
    let batch = CropBatch {
        global,
        local,
        masks,
    };
    let values = StepValues {
        lr: 0.004 * (n as f64 / 1024.0).sqrt(),
        last_layer_lr: 0.0,
        wd: 0.04,
        momentum: 0.992,
        teacher_temp: 0.04,
        backbone_frozen: false,
    };
    let t_first = Instant::now();
    let first = trainer.step(&batch, values);
    eprintln!(
        "first iteration: {:.2} s, losses {:?}",
        t_first.elapsed().as_secs_f64(),
        first.loss
    );
    for _ in 1..args.warmup {
        trainer.step(&batch, values);
    }
    let mut times = Vec::with_capacity(args.steps);
    for _ in 0..args.steps {
        let t0 = Instant::now();
        trainer.step(&batch, values);
        times.push(t0.elapsed().as_secs_f64());
    }
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    json!({
        "impl": "dinoadapt",
        "backend": std::any::type_name::<B>().rsplit("::").next().unwrap_or("?"),
        "model": args.arch,
        "batch": n,
        "local_crops": args.local_crops,
        "crop_forward": forward,
        "precision": precision,
        "batch_chunks": chunks,
        "drop_path": args.drop_path,
        "drop_path_uniform": args.drop_path_uniform,
        "drop_path_form": drop_path_form,
        "threads": rayon::current_num_threads(),
        "device": args.device.to_string(),
        "devices": 1,
        "step_s": mean,
        "step_s_min": times.iter().copied().fold(f64::INFINITY, f64::min),
        "images_per_s": n as f64 / mean,
        "crops_per_s": (n * (2 + args.local_crops)) as f64 / mean,
        "peak_rss_mib": peak_rss_mib(),
    })
}

pub fn run(args: BenchTrainArgs) -> anyhow::Result<serde_json::Value> {
    keep_freed_memory();
    let mut cfg = VitConfig::preset(&args.arch)
        .ok_or_else(|| anyhow::anyhow!("unknown --arch `{}`", args.arch))?;
    anyhow::ensure!(
        (0.0..1.0).contains(&args.drop_path),
        "--drop-path must lie in [0, 1)"
    );
    cfg.drop_path_rate = args.drop_path;
    cfg.drop_path_uniform = args.drop_path_uniform;
    let forms = match args.drop_path_form.as_str() {
        "efficient" => vec![DropPathForm::Efficient],
        "masked" => vec![DropPathForm::Masked],
        "both" => vec![DropPathForm::Masked, DropPathForm::Efficient],
        o => anyhow::bail!("--drop-path-form `{o}`: efficient, masked or both"),
    };
    anyhow::ensure!(
        args.global_size.is_multiple_of(cfg.patch_size)
            && args.local_size.is_multiple_of(cfg.patch_size),
        "crop sizes must be multiples of the patch size {}",
        cfg.patch_size
    );
    eprintln!(
        "bench train: {} ({:.1} M params), batch {} x (2 x {} + {} x {}), {} prototypes, device {}, {} threads",
        args.arch,
        cfg.num_params() as f64 / 1e6,
        args.batch,
        args.global_size,
        args.local_crops,
        args.local_size,
        args.prototypes,
        args.device,
        rayon::current_num_threads()
    );
    let forwards = match args.crop_forward.as_str() {
        "per-size" => vec![CropForward::PerSize],
        "packed" => vec![CropForward::Packed],
        "both" => vec![CropForward::PerSize, CropForward::Packed],
        o => anyhow::bail!("--crop-forward `{o}`: per-size, packed or both"),
    };
    let precision: MatmulPrecision = serde_json::from_value(serde_json::Value::String(
        args.precision.clone(),
    ))
    .map_err(|_| anyhow::anyhow!("--precision `{}`: backend, split or bf16", args.precision))?;
    let chunks = if args.chunks.is_empty() {
        vec![batch_chunks(args.device)]
    } else {
        args.chunks.clone()
    };
    let settings = forwards.into_iter().flat_map(|forward| {
        let forms = forms.clone();
        chunks.iter().flat_map(move |&chunks| {
            forms
                .clone()
                .into_iter()
                .map(move |drop_path_form| Setting {
                    forward,
                    precision,
                    chunks: chunks.max(1),
                    drop_path_form,
                })
        })
    });
    let devices = match &args.devices {
        Some(list) => device_list(list, args.device).map_err(anyhow::Error::msg)?,
        None => vec![args.device],
    };
    anyhow::ensure!(
        devices.len() == 1 || cfg!(feature = "collective"),
        "--devices: several devices need the `collective` feature (`--features cuda,collective`)"
    );
    let mut runs = Vec::new();
    for setting in settings {
        let job = Bench {
            args: &args,
            cfg: &cfg,
            setting,
        };
        runs.push(on_training_devices(&devices, job)?);
    }
    Ok(if runs.len() == 1 {
        runs.remove(0)
    } else {
        serde_json::Value::Array(runs)
    })
}
