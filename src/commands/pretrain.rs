//! `dinoadapt pretrain --recipe FILE.toml [--resume] [--set KEY=VALUE ...]`: DINOv2 pre-training
//! (fresh or continued from a checkpoint) from a recipe.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use burn::backend::Autodiff;
use clap::Args;
use dinoadapt_core::backend::{device_list, CpuBackend, DeviceSpec};
use dinoadapt_datasets::{find_domain, ImageSource, SourceOptions};
use dinoadapt_pretrain::{run, Recipe, RunOptions, RunSummary};

#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// The recipe (TOML); see recipes/.
    #[arg(long)]
    pub recipe: PathBuf,
    /// Continue the run in the recipe's output folder from its latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Override a recipe key, e.g. `--set optim.base_lr=0.001 --set train.max_steps=100`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Shorthand for `--set train.device=...` (cpu | cuda:N).
    #[arg(long)]
    pub device: Option<DeviceSpec>,
    /// Data parallelism: train on several devices at once, one replica per device
    /// (`cuda:0,cuda:1`, a count such as `4`, or `all` CUDA devices). Shorthand for
    /// `--set train.devices=[...]`; `data.batch_size` is the global batch, split evenly.
    #[arg(long)]
    pub devices: Option<String>,
    /// Shorthand for `--set train.output_dir=...`.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// The image source of a recipe whose data comes from a domain plugin (`[data.source]`),
/// sampled online; None for image files.
fn domain_images(recipe: &Recipe) -> anyhow::Result<Option<Arc<dyn ImageSource>>> {
    let Some(source) = &recipe.data.source else {
        return Ok(None);
    };
    let domain = find_domain(&crate::domains::all(), &source.domain)?;
    let options = SourceOptions {
        options: serde_json::to_value(&source.options)?,
        base: &source.base,
        seed: recipe.train.seed,
        scratch: &recipe.train.output_dir,
    };
    match domain.pretraining_images(&options) {
        Some(images) => Ok(Some(images?)),
        None => anyhow::bail!(
            "[data.source] domain `{}` does not supply pre-training images",
            source.domain
        ),
    }
}

pub fn run_command(args: PretrainArgs) -> anyhow::Result<ExitCode> {
    crate::device::keep_freed_memory();
    let mut overrides = args.set.clone();
    if let Some(d) = args.device {
        overrides.push(format!("train.device=\"{d}\""));
    }
    if let Some(o) = &args.output {
        let cwd = std::env::current_dir()?;
        let abs = cwd.join(o);
        overrides.push(format!("train.output_dir={:?}", abs.display().to_string()));
    }
    let single: DeviceSpec = Recipe::load(&args.recipe, &overrides)?
        .train
        .device
        .parse()
        .map_err(|e: String| anyhow::anyhow!("train.device: {e}"))?;
    if let Some(list) = &args.devices {
        let devices = device_list(list, single).map_err(|e| anyhow::anyhow!(e))?;
        let names: Vec<String> = devices
            .iter()
            .map(|d| format!("{:?}", d.to_string()))
            .collect();
        overrides.push(format!("train.devices=[{}]", names.join(", ")));
    }
    let recipe = Recipe::load(&args.recipe, &overrides)?;
    let spec = match recipe.train.devices.as_slice() {
        [one] => one
            .parse()
            .map_err(|e: String| anyhow::anyhow!("train.devices: {e}"))?,
        _ => single,
    };
    let options = RunOptions {
        resume: args.resume,
        progress: !args.quiet && std::io::stderr().is_terminal(),
        images: domain_images(&recipe)?,
        batch_chunks: crate::device::batch_chunks(spec),
    };
    let summary: RunSummary = if recipe.train.devices.len() > 1 {
        data_parallel(&recipe, &options)?
    } else {
        on_one_device(spec, &recipe, &options)?
    };
    for p in &summary.knn {
        eprintln!(
            "kNN accuracy at iteration {} ({}): {:.4}",
            p.step, p.when, p.accuracy
        );
    }
    eprintln!(
        "{} iterations, {:.2} images/s; teacher backbone in {}, metrics in {} and {}",
        summary.steps,
        summary.images_per_s,
        summary.teacher.display(),
        summary.metrics.display(),
        summary.plot.display()
    );
    println!("{}", serde_json::to_string(&summary)?);
    Ok(ExitCode::SUCCESS)
}

/// A run on one device.
fn on_one_device(
    spec: DeviceSpec,
    recipe: &Recipe,
    options: &RunOptions,
) -> anyhow::Result<RunSummary> {
    Ok(match spec {
        DeviceSpec::Cpu => run::<Autodiff<CpuBackend>>(recipe, options, &Default::default())?,
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(i) => run::<Autodiff<dinoadapt_core::backend::CudaBackend>>(
            recipe,
            options,
            &burn::backend::cuda::CudaDevice::new(i),
        )?,
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => anyhow::bail!(
            "this dinoadapt was built without CUDA; rebuild with `cargo build --release \
             --features cuda` or use --device cpu"
        ),
    })
}

/// A data-parallel run over `train.devices` (all of one kind), with burn-collective.
#[cfg(feature = "collective")]
fn data_parallel(recipe: &Recipe, options: &RunOptions) -> anyhow::Result<RunSummary> {
    use dinoadapt_pretrain::run_data_parallel;
    let devices = recipe
        .train
        .devices
        .iter()
        .map(|d| d.parse::<DeviceSpec>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("train.devices: {e}"))?;
    let n = devices.len();
    eprintln!(
        "data-parallel run on {n} devices: {}",
        recipe.train.devices.join(", ")
    );
    if devices.iter().all(|d| *d == DeviceSpec::Cpu) {
        // The replicas share the host's cores: each runs its shard in one pass.
        let options = RunOptions {
            batch_chunks: 1,
            ..options.clone()
        };
        return Ok(run_data_parallel::<Autodiff<CpuBackend>>(
            recipe,
            &options,
            vec![Default::default(); n],
        )?);
    }
    #[cfg(feature = "cuda")]
    {
        let ids = devices
            .iter()
            .map(|d| match d {
                DeviceSpec::Cuda(i) => Ok(burn::backend::cuda::CudaDevice::new(*i)),
                DeviceSpec::Cpu => Err(anyhow::anyhow!(
                    "train.devices: one run uses one kind of device (all `cpu` or all `cuda:N`)"
                )),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(run_data_parallel::<
            Autodiff<dinoadapt_core::backend::CudaBackend>,
        >(recipe, options, ids)?)
    }
    #[cfg(not(feature = "cuda"))]
    anyhow::bail!(
        "this dinoadapt was built without CUDA; rebuild with `cargo build --release --features \
         cuda` or train on `cpu` replicas"
    )
}

#[cfg(not(feature = "collective"))]
fn data_parallel(recipe: &Recipe, _options: &RunOptions) -> anyhow::Result<RunSummary> {
    anyhow::bail!(
        "train.devices names {} devices, and this dinoadapt was built without data \
         parallelism; rebuild with `cargo build --release --features collective` (with \
         `cuda` for GPUs)",
        recipe.train.devices.len()
    )
}
