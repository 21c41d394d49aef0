//! `dinoadapt heads train|eval|predict --task classify|segment|canopy|survival`: heads on
//! frozen features.
//!
//! Every task shares `--out`, `--epochs`, `--seed` and `--device`; the task's own flags are
//! named in its module and checked when the task runs. A trained head is a folder of the head
//! store ([`dinoadapt_heads::store`]: `head.json` with its task, backbone and configuration,
//! `head.safetensors`, `metrics.parquet`, ...); `eval` and `predict` read the task from it.

mod classify;
pub mod dense;
mod survival;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use dinoadapt_core::backend::DeviceSpec;

#[derive(Subcommand, Debug)]
pub enum HeadsCommand {
    /// Train a head on frozen features and report its metrics.
    Train(Box<TrainArgs>),
    /// Metrics of a trained head on labelled data.
    Eval(Box<EvalArgs>),
    /// Predictions of a trained head: Parquet tables, or the domain's own format for dense heads.
    Predict(Box<PredictArgs>),
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// kNN, linear and few-shot probes on class tokens.
    Classify,
    /// Per-pixel classes from patch tokens (linear or multi-layer linear head).
    Segment,
    /// Canopy height in metres from 4 intermediate layers (DPT head).
    Canopy,
    /// Survival from slide feature bags (gated-attention MIL).
    Survival,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Classify => "classify",
            Task::Segment => "segment",
            Task::Canopy => "canopy",
            Task::Survival => "survival",
        }
    }
}

/// Flags every task shares.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Output: the head folder (train) or the predictions (predict).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Training epochs (default: the task's own).
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// AdamW learning rate (default: the task's own; survival 2e-4, segment/canopy 1e-3).
    #[arg(long)]
    pub lr: Option<f64>,
    /// AdamW weight decay (default: the task's own; survival 1e-5, segment/canopy 1e-4).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Bins of a binned output: survival time bins (quantiles of the event times, default 4) or
    /// canopy height bins of the DPT output (default 256; 0 = plain regression).
    #[arg(long)]
    pub bins: Option<usize>,
    /// cpu or cuda:N (CUDA needs a `--features cuda` build).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[arg(long, value_enum)]
    pub task: Task,
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub classify: classify::ClassifyTrainArgs,
    #[command(flatten)]
    pub dense: dense::DenseTrainArgs,
    #[command(flatten)]
    pub survival: survival::SurvivalTrainArgs,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The folder `heads train` wrote.
    #[arg(long)]
    pub head: PathBuf,
    /// Check that the head is of this task (it is read from head.json).
    #[arg(long, value_enum)]
    pub task: Option<Task>,
    /// classify: labelled features (a feature file, or a domain embed's output folder).
    #[arg(long)]
    pub features: Option<PathBuf>,
    /// classify: labels, `folder`, `csv:FILE` or `targets:FILE` (as for train).
    #[arg(long, default_value = "folder")]
    pub labels: String,
    /// classify: only the rows of this split of the labels CSV (train, val, test).
    #[arg(long)]
    pub split: Option<String>,
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub dense: dense::DenseEvalArgs,
    #[command(flatten)]
    pub survival: survival::SurvivalEvalArgs,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// The folder `heads train` wrote.
    #[arg(long)]
    pub head: PathBuf,
    /// Check that the head is of this task (it is read from head.json).
    #[arg(long, value_enum)]
    pub task: Option<Task>,
    /// classify: features to classify (a feature file, or a domain embed's output folder).
    #[arg(long)]
    pub features: Option<PathBuf>,
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub dense: dense::DensePredictArgs,
    #[command(flatten)]
    pub survival: survival::SurvivalPredictArgs,
}

/// A flag the task needs.
pub fn required<'a, T>(value: &'a Option<T>, flag: &str, task: &str) -> anyhow::Result<&'a T> {
    value
        .as_ref()
        .with_context(|| format!("--task {task} needs {flag}"))
}

/// The task a head folder holds (its head.json `task`), checked against `--task` if given.
fn head_task(dir: &Path, expected: Option<Task>) -> anyhow::Result<Task> {
    let name = match expected {
        Some(e) => dinoadapt_heads::store::expect_task(dir, &[e.name()])?,
        None => dinoadapt_heads::store::task_of(dir)?,
    };
    Task::from_str(&name, true).map_err(|_| {
        anyhow::anyhow!(
            "{}: unknown task `{name}`",
            dir.join(dinoadapt_heads::store::HEAD_JSON).display()
        )
    })
}

pub fn run(cmd: HeadsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        HeadsCommand::Train(a) => match a.task {
            Task::Classify => classify::train(&a.classify, &a.common),
            Task::Segment | Task::Canopy => dense::train(a.task, &a.dense, &a.common),
            Task::Survival => survival::train(&a.survival, &a.common),
        },
        HeadsCommand::Eval(a) => match head_task(&a.head, a.task)? {
            Task::Classify => classify::eval(
                &a.head,
                required(&a.features, "--features", "classify")?,
                &a.labels,
                a.split.as_deref(),
            ),
            Task::Segment | Task::Canopy => dense::eval(&a.head, &a.dense, &a.common),
            Task::Survival => survival::eval(&a.head, &a.survival, &a.common),
        },
        HeadsCommand::Predict(a) => match head_task(&a.head, a.task)? {
            Task::Classify => classify::predict(
                &a.head,
                required(&a.features, "--features", "classify")?,
                required(&a.common.out, "--out", "classify")?,
            ),
            Task::Segment | Task::Canopy => dense::predict(&a.head, &a.dense, &a.common),
            Task::Survival => survival::predict(&a.head, &a.survival, &a.common),
        },
    }
}
