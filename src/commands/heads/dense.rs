//! `heads train|eval|predict` for the dense heads: not built yet.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use super::Common;

/// `heads train` flags of the dense task(s).
#[derive(Args, Debug)]
pub struct DenseTrainArgs {}

/// `heads eval` flags of the dense task(s).
#[derive(Args, Debug)]
pub struct DenseEvalArgs {}

/// `heads predict` flags of the dense task(s).
#[derive(Args, Debug)]
pub struct DensePredictArgs {}

pub fn train(
    task: super::Task,
    _args: &DenseTrainArgs,
    _common: &Common,
) -> anyhow::Result<ExitCode> {
    anyhow::bail!("--task {}: not built yet", task.name())
}

pub fn eval(_head: &Path, _args: &DenseEvalArgs, _common: &Common) -> anyhow::Result<ExitCode> {
    anyhow::bail!("dense heads: not built yet")
}

pub fn predict(
    _head: &Path,
    _args: &DensePredictArgs,
    _common: &Common,
) -> anyhow::Result<ExitCode> {
    anyhow::bail!("dense heads: not built yet")
}
