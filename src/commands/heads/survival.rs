//! `heads train|eval|predict` for the survival heads: not built yet.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use super::Common;

/// `heads train` flags of the survival task(s).
#[derive(Args, Debug)]
pub struct SurvivalTrainArgs {}

/// `heads eval` flags of the survival task(s).
#[derive(Args, Debug)]
pub struct SurvivalEvalArgs {}

/// `heads predict` flags of the survival task(s).
#[derive(Args, Debug)]
pub struct SurvivalPredictArgs {}

pub fn train(_args: &SurvivalTrainArgs, _common: &Common) -> anyhow::Result<ExitCode> {
    anyhow::bail!("--task survival: not built yet")
}

pub fn eval(_head: &Path, _args: &SurvivalEvalArgs, _common: &Common) -> anyhow::Result<ExitCode> {
    anyhow::bail!("survival heads: not built yet")
}

pub fn predict(
    _head: &Path,
    _args: &SurvivalPredictArgs,
    _common: &Common,
) -> anyhow::Result<ExitCode> {
    anyhow::bail!("survival heads: not built yet")
}
