//! `dinoadapt pretrain --recipe FILE.toml [--resume] [--set KEY=VALUE ...]`: DINOv2 pre-training
//! (fresh or continued from a checkpoint) from a recipe.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use dinoadapt_core::backend::{device_list, DeviceSpec};
use dinoadapt_datasets::{find_domain, ImageSource, SourceOptions};
use dinoadapt_pretrain::nodes::NodeLaunch;
use dinoadapt_pretrain::{pretrain_on, Recipe, RunOptions, RunSummary};

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
    let devices: Vec<DeviceSpec> = if recipe.train.devices.is_empty() {
        vec![single]
    } else {
        recipe
            .train
            .devices
            .iter()
            .map(|d| d.parse())
            .collect::<Result<_, String>>()
            .map_err(|e| anyhow::anyhow!("train.devices: {e}"))?
    };
    let launch = NodeLaunch::resolve(
        args.rank,
        args.world_size,
        args.coordinator.as_deref(),
        args.node_host.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    if let Some(l) = &launch {
        eprintln!(
            "process {} of {}: orchestrator at {}",
            l.node,
            l.nodes,
            l.orchestrator()
        );
    } else if devices.len() > 1 {
        eprintln!(
            "data-parallel run on {} devices: {}",
            devices.len(),
            recipe.train.devices.join(", ")
        );
    }
    let options = RunOptions {
        resume: args.resume,
        progress: !args.quiet && std::io::stderr().is_terminal(),
        images: domain_images(&recipe)?,
        batch_chunks: crate::device::batch_chunks(devices[0]),
    };
    let summary: RunSummary = pretrain_on(&recipe, &options, &devices, launch.as_ref())?;
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
