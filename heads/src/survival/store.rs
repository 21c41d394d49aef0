//! The survival head in the head store ([`crate::store`]): `head.json` holds the task, the
//! backbone of the bags (when they record one) and [`SurvivalRecord`] (loss, feature dimension,
//! time bins, covariate scaling, training settings and the study's summary);
//! `head.safetensors` the ABMIL weights; `metrics.parquet` the C-index of each fold.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use dinoadapt_core::checkpoint::NamedTensors;
use dinoadapt_core::train::param_paths::restore;
use polars::prelude::DataFrame;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::clinical::CovariateScale;
use super::{Abmil, StudyError, SurvivalLoss, SurvivalTrainConfig};
use crate::backbone::Backbone;
use crate::store::{self, HeadFiles, HeadFolder, HeadInfo, TaskRecord};

/// The task name a survival head folder records.
pub const TASK: &str = "survival";

/// What a survival head records in `head.json` besides the task and the backbone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurvivalRecord {
    /// The kind of head: `abmil`.
    pub head: String,
    /// `cox` or `nll`.
    pub loss: String,
    /// The feature dimension of the bags.
    pub dim: usize,
    /// Outputs per slide: 1 (Cox) or the number of time bins (NLL).
    pub outputs: usize,
    /// The time bins' edges (NLL), in the clinical table's unit.
    pub bin_edges: Option<Vec<f64>>,
    pub time_unit: String,
    /// What the risk is.
    pub risk: String,
    pub covariates: CovariateScale,
    pub config: SurvivalTrainConfig,
    /// The study's summary.
    pub training: Value,
}

impl TaskRecord for SurvivalRecord {
    const TASKS: &'static [&'static str] = &[TASK];

    fn tensor_metadata(&self) -> serde_json::Result<Vec<(&'static str, String)>> {
        Ok(vec![
            ("dinoadapt.head", self.head.clone()),
            ("config", serde_json::to_string(&self.config)?),
        ])
    }
}

impl SurvivalRecord {
    /// The record of a head on features of dimension `dim`, trained with `config` on
    /// covariates scaled by `scale`; `training` is the study's summary.
    pub fn new(
        dim: usize,
        config: &SurvivalTrainConfig,
        scale: &CovariateScale,
        training: Value,
    ) -> Self {
        SurvivalRecord {
            head: "abmil".into(),
            loss: config.loss.name().into(),
            dim,
            outputs: config.loss.outputs(),
            bin_edges: match &config.loss {
                SurvivalLoss::Nll { bins, .. } => Some(bins.edges.clone()),
                SurvivalLoss::Cox => None,
            },
            time_unit: "the clinical table's".into(),
            risk: match config.loss {
                SurvivalLoss::Cox => "the log relative hazard",
                SurvivalLoss::Nll { .. } => {
                    "minus the sum of the survival curve over the bins (MCAT)"
                }
            }
            .into(),
            covariates: scale.clone(),
            config: config.clone(),
            training,
        }
    }
}

/// A trained head read back from its folder.
#[derive(Debug)]
pub struct SurvivalHead<B: Backend> {
    /// The folder it was read from.
    pub dir: PathBuf,
    pub model: Abmil<B>,
    pub config: SurvivalTrainConfig,
    pub scale: CovariateScale,
    /// The backbone of the bags it was trained on (`None` when they recorded none).
    pub backbone: Option<Backbone>,
}

/// Write the head folder `dir`: the weights and the description `info`, with `metrics` (one
/// row per fold) as `metrics.parquet`.
pub fn save_head(
    dir: &Path,
    weights: &NamedTensors,
    info: &HeadInfo<SurvivalRecord>,
    metrics: DataFrame,
) -> Result<(), StudyError> {
    store::write(
        dir,
        info,
        HeadFiles {
            tensors: weights,
            metrics: Some(metrics),
            training: None,
            plot: None,
        },
    )?;
    Ok(())
}

impl<B: Backend> SurvivalHead<B> {
    /// Read the head in `dir` onto `device`.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, StudyError> {
        let folder = HeadFolder::<SurvivalRecord>::load(dir)?;
        let info = &folder.info;
        let model = info
            .config
            .abmil(info.dim, info.covariates.names.len())
            .init::<B>(device);
        let tensors: HashMap<_, _> = folder.tensors.iter().cloned().collect();
        let model = restore(model, &tensors, device).map_err(|source| StudyError::HeadWeights {
            path: dir.join(store::HEAD_TENSORS),
            source,
        })?;
        Ok(SurvivalHead {
            dir: dir.to_path_buf(),
            model,
            config: info.config.clone(),
            scale: info.covariates.clone(),
            backbone: info.backbone.clone(),
        })
    }
}

/// Covariate names of the head in `dir`, so the cohort is read with them.
pub fn head_covariates(dir: &Path) -> Result<Vec<String>, StudyError> {
    Ok(HeadFolder::<SurvivalRecord>::load(dir)?
        .info
        .record
        .covariates
        .names)
}
