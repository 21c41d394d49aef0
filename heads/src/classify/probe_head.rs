//! A trained classification head in the head store ([`crate::store`]): `head.json` holds the
//! task, the backbone and [`ClassifyRecord`] (classes, feature kind, dimension, the linear
//! probe's configuration); `head.safetensors` the weight, bias and the feature standardisation;
//! `metrics.parquet` one row per method × split, `training.parquet` one row per sweep point.

use std::path::Path;

use dinoadapt_core::checkpoint::HostTensor;
use polars::prelude::DataFrame;
use serde::{Deserialize, Serialize};

use super::{ClassifyError, FeatureKind, Unit};
use crate::backbone::Backbone;
use crate::linear::{LinearProbe, LinearProbeConfig};
use crate::store::{self, HeadFiles, HeadFolder, HeadInfo, TaskRecord};

/// The task name a classification head records.
pub const TASK: &str = "classify";

/// What a classification head records in `head.json` besides the task and the backbone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyRecord {
    /// The kind of head: `linear`.
    pub head: String,
    /// Class names, in class-index order.
    pub classes: Vec<String>,
    pub features: FeatureKind,
    /// Rows or groups of a store as samples (rows in heads written before it was recorded).
    #[serde(default)]
    pub unit: Unit,
    /// The feature dimension the probe takes.
    pub dim: usize,
    pub config: LinearProbeConfig,
}

impl TaskRecord for ClassifyRecord {
    const TASKS: &'static [&'static str] = &[TASK];

    fn tensor_metadata(&self) -> serde_json::Result<Vec<(&'static str, String)>> {
        Ok(vec![
            ("dinoadapt.head", self.head.clone()),
            ("classes", serde_json::to_string(&self.classes)?),
            ("features", self.features.as_str().to_string()),
            ("config", serde_json::to_string(&self.config)?),
        ])
    }
}

/// The linear probe a head folder holds, its class names, the features it reads and the
/// backbone they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeHead {
    pub probe: LinearProbe,
    /// Class names, in class-index order.
    pub classes: Vec<String>,
    pub features: FeatureKind,
    pub unit: Unit,
    /// The backbone of the training features (`None` when they recorded none).
    pub backbone: Option<Backbone>,
}

impl ProbeHead {
    /// The head's description.
    pub fn info(&self) -> HeadInfo<ClassifyRecord> {
        HeadInfo::new(
            TASK,
            self.backbone.clone(),
            ClassifyRecord {
                head: "linear".into(),
                classes: self.classes.clone(),
                features: self.features,
                unit: self.unit,
                dim: self.probe.dim,
                config: self.probe.config,
            },
        )
    }

    /// Writes the head folder `dir` with `metrics` (`metrics.parquet`, one row per method ×
    /// split) and `sweep` (`training.parquet`, one row per sweep point).
    pub fn save(
        &self,
        dir: &Path,
        metrics: DataFrame,
        sweep: DataFrame,
    ) -> Result<(), ClassifyError> {
        let probe = &self.probe;
        let (c, d) = (probe.classes, probe.dim);
        let host = |shape: Vec<usize>, data: &[f32]| HostTensor::new(shape, data.to_vec());
        let tensors = vec![
            ("weight".to_string(), host(vec![c, d], &probe.weight)),
            ("bias".to_string(), host(vec![c], &probe.bias)),
            ("feature_mean".to_string(), host(vec![d], &probe.mean)),
            ("feature_std".to_string(), host(vec![d], &probe.std)),
        ];
        store::write(
            dir,
            &self.info(),
            HeadFiles {
                tensors: &tensors,
                metrics: Some(metrics),
                training: Some(sweep),
                plot: None,
            },
        )?;
        Ok(())
    }

    /// The head of a classification head folder.
    pub fn from_folder(folder: &HeadFolder<ClassifyRecord>) -> Result<Self, ClassifyError> {
        let weight = folder.tensor("weight")?;
        let data = |n: &str| folder.tensor(n).map(|t| t.data.clone());
        let probe = LinearProbe {
            classes: weight.shape[0],
            dim: weight.shape[1],
            weight: weight.data.clone(),
            bias: data("bias")?,
            mean: data("feature_mean")?,
            std: data("feature_std")?,
            config: folder.info.config,
        };
        Ok(ProbeHead {
            probe,
            classes: folder.info.classes.clone(),
            features: folder.info.features,
            unit: folder.info.unit,
            backbone: folder.info.backbone.clone(),
        })
    }

    /// Reads the head folder `dir`.
    pub fn load(dir: &Path) -> Result<Self, ClassifyError> {
        Self::from_folder(&HeadFolder::load(dir)?)
    }
}
