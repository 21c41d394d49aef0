//! `dinoadapt curate --pool FEATURES.safetensors --seeds SEEDS.safetensors --out curated.parquet`:
//! dedup, decontamination and retrieval (or hierarchical k-means sampling) over any feature
//! store; the manifest feeds `pretrain` recipes (`data.manifest`, or pathology's `tiles`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use dinoadapt_core::backend::DeviceSpec;
use dinoadapt_pretrain::curate::search::Metric;
use dinoadapt_pretrain::curate::{curate, write_outputs, CurateConfig, Mode};
use indicatif::{ProgressBar, ProgressStyle};

use crate::device::{on_device, BackendJob};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CurateMode {
    /// Each seed's nearest pool items (DINOv2 / LVD-142M), with a k-means fallback.
    Retrieval,
    /// Balanced sampling over a hierarchical k-means.
    Hierarchical,
    /// Only remove near duplicates and evaluation look-alikes.
    Dedup,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MetricArg {
    Cosine,
    L2,
}

#[derive(Args, Debug, Clone)]
pub struct CurateArgs {
    /// The pool: a feature store (an `embed` file, a domain embed's folder: rows `<group>:<i>`).
    #[arg(long)]
    pub pool: PathBuf,
    /// The curated seed set (a feature store, as --pool), for retrieval.
    #[arg(long)]
    pub seeds: Option<PathBuf>,
    /// An evaluation set (a feature store): pool items too close to it are removed.
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// The curated manifest (Parquet); a histogram PNG is written beside it.
    #[arg(long, short)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "retrieval")]
    pub mode: CurateMode,
    #[arg(long, value_enum, default_value = "cosine")]
    pub metric: MetricArg,
    /// Near-duplicate threshold (cosine similarity, or squared distance for l2); `none` disables.
    #[arg(long, default_value = "0.95")]
    pub dedup_threshold: String,
    #[arg(long, default_value_t = 8)]
    pub dedup_neighbours: usize,
    /// Evaluation-set threshold.
    #[arg(long, default_value_t = 0.95)]
    pub eval_threshold: f32,
    /// Pool items retrieved per seed.
    #[arg(long, default_value_t = 4)]
    pub neighbours: usize,
    /// Retrieved items must be at least this close to their seed.
    #[arg(long, default_value_t = 0.0)]
    pub floor: f32,
    /// k-means clusters for the retrieval fallback (0: none).
    #[arg(long, default_value_t = 0)]
    pub clusters: usize,
    /// Hierarchical mode: clusters per level, e.g. `64,8`.
    #[arg(long, default_value = "16,4")]
    pub levels: String,
    /// Hierarchical mode: rows to keep.
    #[arg(long, default_value_t = 1000)]
    pub budget: usize,
    #[arg(long, default_value_t = 10)]
    pub kmeans_iterations: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Feature tensor to curate on.
    #[arg(long, default_value = "cls")]
    pub key: String,
    /// Pool rows per block product.
    #[arg(long, default_value_t = 4096)]
    pub block_rows: usize,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
}

struct CurateJob(CurateArgs, CurateConfig);

impl BackendJob for CurateJob {
    type Output = serde_json::Value;

    fn run<B: burn::tensor::backend::Backend>(
        self,
        device: B::Device,
    ) -> anyhow::Result<Self::Output> {
        let CurateJob(args, cfg) = self;
        let bar = if std::io::stderr().is_terminal() {
            ProgressBar::new_spinner()
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {msg}",
        )?);
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        let curated = curate::<B>(
            &args.pool,
            args.seeds.as_deref(),
            args.eval.as_deref(),
            &cfg,
            &device,
            &mut |stage| bar.set_message(stage.to_string()),
        )?;
        bar.finish_and_clear();
        let png = write_outputs(&args.out, &curated, &cfg)?;
        eprintln!(
            "kept {} of {} ({} near duplicates, {} near the evaluation set); manifest {} , \
             histogram {}",
            curated.summary.kept,
            curated.summary.pool,
            curated.summary.duplicates_removed,
            curated.summary.contaminated_removed,
            args.out.display(),
            png.display()
        );
        Ok(serde_json::to_value(&curated.summary)?)
    }
}

pub fn run(args: CurateArgs) -> anyhow::Result<ExitCode> {
    crate::device::keep_freed_memory();
    let levels = args
        .levels
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--levels `{}`: {e}", args.levels))?;
    let cfg = CurateConfig {
        metric: match args.metric {
            MetricArg::Cosine => Metric::Cosine,
            MetricArg::L2 => Metric::L2,
        },
        dedup_threshold: match args.dedup_threshold.as_str() {
            "none" => None,
            t => Some(
                t.parse()
                    .map_err(|e| anyhow::anyhow!("--dedup-threshold `{t}`: {e}"))?,
            ),
        },
        dedup_neighbours: args.dedup_neighbours,
        eval_threshold: args.eval_threshold,
        mode: match args.mode {
            CurateMode::Retrieval => Mode::Retrieval {
                neighbours: args.neighbours,
                floor: args.floor,
                clusters: args.clusters,
            },
            CurateMode::Hierarchical => Mode::Hierarchical {
                levels,
                budget: args.budget,
            },
            CurateMode::Dedup => Mode::DedupOnly,
        },
        kmeans_iterations: args.kmeans_iterations,
        seed: args.seed,
        block_rows: args.block_rows,
        key: args.key.clone(),
    };
    let summary = on_device(args.device, CurateJob(args, cfg))?;
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}
