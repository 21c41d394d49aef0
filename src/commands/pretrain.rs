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
use dinoadapt_pretrain::nodes::NodeLaunch;
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
    /// Across processes (by hand; under Slurm, `srun` sets it): this process's rank, 0-based.
    #[arg(long, requires = "world_size")]
    pub rank: Option<usize>,
    /// Across processes: how many processes the run has, one device each.
    #[arg(long, requires = "rank")]
    pub world_size: Option<usize>,
    /// Across processes: process 0's host and base port, HOST:PORT (default 127.0.0.1:29500).
    /// Process 0 serves burn-collective's orchestrator there; PORT + 1 and PORT + 2 + rank are
    /// used too.
    #[arg(long)]
    pub coordinator: Option<String>,
    /// Across processes: the host name the other processes reach this one at (default: this
    /// machine's name, or the coordinator's loopback address).
    #[arg(long)]
    pub node_host: Option<String>,
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
    let launch = node_launch(&args)?;
    let summary: RunSummary = if let Some(launch) = launch {
        if recipe.train.devices.len() > 1 {
            anyhow::bail!(
                "a run over processes uses one device per process (`train.device`); launch one \
                 process per GPU instead of naming several with train.devices"
            );
        }
        across_processes(spec, &recipe, &options, &launch)?
    } else if recipe.train.devices.len() > 1 {
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
        DeviceSpec::Cuda(_) => anyhow::bail!(dinoadapt_core::backend::DeviceUnavailable::NoCuda),
        #[cfg(feature = "wgpu")]
        DeviceSpec::Wgpu(i) => run::<Autodiff<dinoadapt_core::backend::WgpuBackend>>(
            recipe,
            options,
            &dinoadapt_core::backend::wgpu_device(i),
        )?,
        #[cfg(not(feature = "wgpu"))]
        DeviceSpec::Wgpu(_) => anyhow::bail!(dinoadapt_core::backend::DeviceUnavailable::NoWgpu),
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
                _ => Err(anyhow::anyhow!(
                    "train.devices: several GPUs are CUDA devices (`cuda:N`) in this build"
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

/// Where this process sits in a run over processes: `--rank`/`--world-size`, or Slurm's
/// environment under `srun` with more than one task; `None` for a run in this process alone.
fn node_launch(args: &PretrainArgs) -> anyhow::Result<Option<NodeLaunch>> {
    if let (Some(rank), Some(world)) = (args.rank, args.world_size) {
        let coordinator = args.coordinator.as_deref().unwrap_or("127.0.0.1:29500");
        return NodeLaunch::from_flags(rank, world, coordinator, args.node_host.as_deref())
            .map(Some)
            .map_err(|e| anyhow::anyhow!(e));
    }
    match NodeLaunch::from_slurm(|k| std::env::var(k).ok()) {
        Some(launch) => {
            let mut launch = launch.map_err(|e| anyhow::anyhow!(e))?;
            if let Some(c) = &args.coordinator {
                let (host, port) = c
                    .rsplit_once(':')
                    .ok_or_else(|| anyhow::anyhow!("--coordinator `{c}`: give HOST:PORT"))?;
                launch.coordinator = host.to_string();
                launch.port = port.parse()?;
            }
            if let Some(h) = &args.node_host {
                launch.host = h.clone();
            }
            Ok(Some(launch))
        }
        None => Ok(None),
    }
}

/// This process's part of a run over processes, on one device: under Slurm a CUDA run takes
/// GPU `SLURM_LOCALID` (or the only one `CUDA_VISIBLE_DEVICES` leaves it).
#[cfg(feature = "collective")]
fn across_processes(
    spec: DeviceSpec,
    recipe: &Recipe,
    options: &RunOptions,
    launch: &NodeLaunch,
) -> anyhow::Result<RunSummary> {
    use dinoadapt_pretrain::run_across_processes;
    eprintln!(
        "process {} of {}: orchestrator at {}",
        launch.node,
        launch.nodes,
        launch.orchestrator()
    );
    match spec {
        DeviceSpec::Cpu => Ok(run_across_processes::<Autodiff<CpuBackend>>(
            recipe,
            options,
            &Default::default(),
            launch,
        )?),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(i) => {
            let visible = std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default();
            let index = match launch.local_id {
                Some(_) if !visible.is_empty() && !visible.contains(',') => 0,
                Some(local) => local,
                None => i,
            };
            Ok(run_across_processes::<
                Autodiff<dinoadapt_core::backend::CudaBackend>,
            >(
                recipe,
                options,
                &burn::backend::cuda::CudaDevice::new(index),
                launch,
            )?)
        }
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => anyhow::bail!(dinoadapt_core::backend::DeviceUnavailable::NoCuda),
        DeviceSpec::Wgpu(_) => {
            anyhow::bail!("runs across processes use `cpu` or `cuda:N` devices in this build")
        }
    }
}

#[cfg(not(feature = "collective"))]
fn across_processes(
    _spec: DeviceSpec,
    _recipe: &Recipe,
    _options: &RunOptions,
    launch: &NodeLaunch,
) -> anyhow::Result<RunSummary> {
    anyhow::bail!(
        "process {} of {}: this dinoadapt was built without data parallelism; rebuild with \
         `cargo build --release --features collective`",
        launch.node,
        launch.nodes
    )
}
