//! The survival head folder: `head.safetensors` (the ABMIL weights) and `head.json` (task,
//! loss, feature dimension, time bins, covariate scaling, training settings and summary).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use dinoadapt_core::checkpoint::safetensors_io::{
    read_safetensors, write_atomic, write_safetensors,
};
use dinoadapt_core::checkpoint::NamedTensors;
use dinoadapt_core::train::named::restore;
use serde_json::{json, Value};

use super::clinical::CovariateScale;
use super::{Abmil, StudyError, SurvivalLoss, SurvivalTrainConfig};

/// The task name a survival head folder records.
pub const TASK: &str = "survival";

/// A trained head read back from its folder.
#[derive(Debug)]
pub struct SurvivalHead<B: Backend> {
    /// The folder it was read from.
    pub dir: PathBuf,
    pub model: Abmil<B>,
    pub config: SurvivalTrainConfig,
    pub scale: CovariateScale,
}

/// Write the head folder `dir`: the weights of a head on features of dimension `dim`, trained
/// with `config` on covariates scaled by `scale`; `training` is recorded as head.json's
/// `training` (the study's summary).
pub fn save_head(
    dir: &Path,
    weights: &NamedTensors,
    dim: usize,
    config: &SurvivalTrainConfig,
    scale: &CovariateScale,
    training: Value,
) -> Result<(), StudyError> {
    std::fs::create_dir_all(dir).map_err(|source| StudyError::Create {
        path: dir.to_path_buf(),
        source,
    })?;
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
        "training": training,
    });
    write_atomic(
        &dir.join("head.json"),
        serde_json::to_string_pretty(&info)?.as_bytes(),
    )?;
    Ok(())
}

fn head_json_text(dir: &Path) -> Result<String, StudyError> {
    std::fs::read_to_string(dir.join("head.json")).map_err(|source| StudyError::NotAHead {
        dir: dir.to_path_buf(),
        source,
    })
}

impl<B: Backend> SurvivalHead<B> {
    /// Read the head in `dir` onto `device`.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, StudyError> {
        let path = dir.join("head.json");
        let info: Value =
            serde_json::from_str(&head_json_text(dir)?).map_err(|source| StudyError::HeadJson {
                path: path.clone(),
                source,
            })?;
        let bad = |what: &'static str, source: Option<serde_json::Error>| StudyError::HeadRecord {
            path: path.clone(),
            what,
            source,
        };
        let config: SurvivalTrainConfig = serde_json::from_value(info["config"].clone())
            .map_err(|e| bad("no usable `config`", Some(e)))?;
        let scale: CovariateScale = serde_json::from_value(info["covariates"].clone())
            .map_err(|e| bad("no usable `covariates`", Some(e)))?;
        let dim = info["dim"].as_u64().ok_or_else(|| bad("no `dim`", None))? as usize;
        let model = config.abmil(dim, scale.names.len()).init::<B>(device);
        let weights = dir.join("head.safetensors");
        let (tensors, _) = read_safetensors(&weights)?;
        let tensors: HashMap<_, _> = tensors.into_iter().collect();
        let model = restore(model, &tensors, device).map_err(|source| StudyError::HeadWeights {
            path: weights,
            source,
        })?;
        Ok(SurvivalHead {
            dir: dir.to_path_buf(),
            model,
            config,
            scale,
        })
    }
}

/// Covariate names of the head in `dir`, so the cohort is read with them.
pub fn head_covariates(dir: &Path) -> Result<Vec<String>, StudyError> {
    let info: Value = serde_json::from_str(&head_json_text(dir)?)?;
    Ok(serde_json::from_value(info["covariates"]["names"].clone()).unwrap_or_default())
}
