//! `dinoadapt pretrain --recipe FILE.toml [--resume] [--set KEY=VALUE ...]`: DINOv2 pre-training
//! (fresh or continued from a checkpoint) from a recipe.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use burn::backend::Autodiff;
use clap::Args;
use dinoadapt_core::backend::{CpuBackend, DeviceSpec};
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
    let recipe = Recipe::load(&args.recipe, &overrides)?;
    let spec: DeviceSpec = recipe
        .train
        .device
        .parse()
        .map_err(|e: String| anyhow::anyhow!("train.device: {e}"))?;
    let options = RunOptions {
        resume: args.resume,
        progress: !args.quiet && std::io::stderr().is_terminal(),
        images: domain_images(&recipe)?,
        batch_chunks: crate::device::batch_chunks(spec),
    };
    let summary: RunSummary = match spec {
        DeviceSpec::Cpu => run::<Autodiff<CpuBackend>>(&recipe, &options, &Default::default())?,
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(i) => run::<Autodiff<dinoadapt_core::backend::CudaBackend>>(
            &recipe,
            &options,
            &burn::backend::cuda::CudaDevice::new(i),
        )?,
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => anyhow::bail!(
            "this dinoadapt was built without CUDA; rebuild with `cargo build --release \
             --features cuda` or use --device cpu"
        ),
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
