//! The survival head folder: head.safetensors + head.json, and the attention files.

use std::collections::HashMap;
use std::path::Path;

use super::bags::Coords;
use super::clinical::CovariateScale;
use super::TASK;
use anyhow::Context;
use burn::tensor::backend::Backend;
use dinoadapt_core::checkpoint::safetensors_io::{
    read_safetensors, write_atomic, write_safetensors,
};
use dinoadapt_core::checkpoint::NamedTensors;
use dinoadapt_core::train::named::restore;
use dinoadapt_datasets::column as col;
use dinoadapt_datasets::write_parquet;
use dinoadapt_heads::survival::{Abmil, SurvivalLoss, SurvivalTrainConfig};
use polars::prelude::{DataFrame, IntoColumn, NamedFrom, Series};
use serde_json::{json, Value};

pub(super) struct Head<B: Backend> {
    pub(super) model: Abmil<B>,
    pub(super) config: SurvivalTrainConfig,
    pub(super) scale: CovariateScale,
}

pub(super) fn save_head(
    dir: &Path,
    weights: &NamedTensors,
    dim: usize,
    config: &SurvivalTrainConfig,
    scale: &CovariateScale,
    extra: Value,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let meta = HashMap::from([
        ("dinoadapt.head".to_string(), "abmil".to_string()),
        ("task".to_string(), TASK.to_string()),
        ("config".to_string(), serde_json::to_string(config)?),
    ]);
    write_safetensors(&dir.join("head.safetensors"), weights, meta)?;
    let bins = match &config.loss {
        SurvivalLoss::Nll { bins, .. } => Some(bins.edges.clone()),
        SurvivalLoss::Cox => None,
    };
    let info = json!({
        "task": TASK,
        "head": "abmil",
        "loss": config.loss.name(),
        "dim": dim,
        "outputs": config.loss.outputs(),
        "bin_edges": bins,
        "time_unit": "the clinical table's",
        "risk": match config.loss {
            SurvivalLoss::Cox => "the log relative hazard",
            SurvivalLoss::Nll { .. } => "minus the sum of the survival curve over the bins (MCAT)",
        },
        "covariates": scale,
        "config": config,
        "dinoadapt_version": env!("CARGO_PKG_VERSION"),
        "training": extra,
    });
    write_atomic(
        &dir.join("head.json"),
        serde_json::to_string_pretty(&info)?.as_bytes(),
    )?;
    Ok(())
}

pub(super) fn load_head<B: Backend>(dir: &Path, device: &B::Device) -> anyhow::Result<Head<B>> {
    let path = dir.join("head.json");
    let info: Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .with_context(|| format!("{}: not a head folder (no head.json)", dir.display()))?,
    )
    .with_context(|| format!("{}: not JSON", path.display()))?;
    let bad = |what: &str| {
        format!(
            "{}: {what} (was it written by `heads train --task survival`?)",
            path.display()
        )
    };
    let config: SurvivalTrainConfig = serde_json::from_value(info["config"].clone())
        .with_context(|| bad("no usable `config`"))?;
    let scale: CovariateScale = serde_json::from_value(info["covariates"].clone())
        .with_context(|| bad("no usable `covariates`"))?;
    let dim = info["dim"].as_u64().with_context(|| bad("no `dim`"))? as usize;
    let model = config.abmil(dim, scale.names.len()).init::<B>(device);
    let weights = dir.join("head.safetensors");
    let (tensors, _) = read_safetensors(&weights)?;
    let tensors: HashMap<_, _> = tensors.into_iter().collect();
    let model = restore(model, &tensors, device)
        .with_context(|| format!("{}: does not fit head.json", weights.display()))?;
    Ok(Head {
        model,
        config,
        scale,
    })
}

// ---------------------------------------------------------------------------------------------
// Outputs

/// `attention/{slide}.parquet`: tile (feature row), x, y (level-0 px; null when the bag has no
/// coordinates) and attention (sums to 1 over the slide).
pub(super) fn write_attention(
    dir: &Path,
    id: &str,
    attention: &[f32],
    coords: &Coords,
) -> anyhow::Result<()> {
    let n = attention.len();
    let xy = |k: usize| -> Vec<Option<i64>> {
        (0..n).map(|i| coords.as_ref().map(|c| c[i][k])).collect()
    };
    let mut df = DataFrame::new(
        n,
        vec![
            col::<u64>("tile", (0..n as u64).collect()),
            Series::new("x".into(), xy(0)).into_column(),
            Series::new("y".into(), xy(1)).into_column(),
            col::<f32>("attention", attention.to_vec()),
        ],
    )?;
    write_parquet(&dir.join(format!("{id}.parquet")), &mut df)?;
    Ok(())
}

/// Covariate names of the head, so the cohort is read with them.
pub(super) fn head_covariates(head: &Path) -> anyhow::Result<Vec<String>> {
    let info: Value = serde_json::from_str(
        &std::fs::read_to_string(head.join("head.json"))
            .with_context(|| format!("{}: not a head folder (no head.json)", head.display()))?,
    )?;
    Ok(serde_json::from_value(info["covariates"]["names"].clone()).unwrap_or_default())
}
