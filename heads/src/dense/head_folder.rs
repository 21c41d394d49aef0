//! A trained dense head in the head store ([`crate::store`]): `head.json` holds the task
//! (segment / canopy), the backbone, and [`DenseRecord`] (head configuration, the tokens read,
//! how the domain's pixels became model inputs, training and target records, features, metrics);
//! beside it `head.safetensors`, `metrics.parquet`, `training.parquet` (one row per epoch) and
//! `training.png`.
//!
//! The preprocessing is the domain's own (tiling, slice options, chip normalisation): this
//! crate keeps it as the JSON object the domain wrote (its `domain` key names the domain) and
//! the program turns it into the domain's types.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use dinoadapt_core::checkpoint::NamedTensors;
use polars::prelude::PolarsError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    evaluate, tables, DenseError, DenseHead, DenseHeadConfig, DenseMetrics, DenseSet,
    DenseTrainConfig, EpochLog, TokenSpec,
};
use crate::backbone::Backbone;
pub use crate::store::is_head_folder;
use crate::store::{self, HeadFiles, StoreError, TaskRecord};

/// What can go wrong reading, checking or writing a dense head folder.
#[derive(Debug, thiserror::Error)]
pub enum HeadFolderError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}: head.safetensors", dir.display())]
    Restore {
        dir: PathBuf,
        #[source]
        source: DenseError,
    },
    #[error(transparent)]
    Dense(#[from] DenseError),
    #[error(transparent)]
    Table(#[from] PolarsError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The error histogram could not be drawn or written.
    #[error("errors.png: {0}")]
    Plot(String),
}

/// What a dense head records in `head.json` besides the task and the backbone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DenseRecord {
    pub head: DenseHeadConfig,
    pub tokens: TokenSpec,
    /// How the domain's pixels became model inputs: the domain's own JSON, tagged `domain`.
    pub preprocessing: Value,
    /// Class names (segment), in class-index order.
    #[serde(default)]
    pub class_names: Vec<String>,
    pub training: DenseTrainConfig,
    /// How the targets were made (the domain's record), with the `ignore_index`.
    #[serde(default)]
    pub targets: Value,
    /// The feature files trained on.
    #[serde(default)]
    pub features: Vec<String>,
    /// The metrics of each split (`train`, `val`).
    #[serde(default)]
    pub metrics: Value,
}

impl TaskRecord for DenseRecord {
    const TASKS: &'static [&'static str] = &["segment", "canopy"];

    fn tensor_metadata(&self) -> serde_json::Result<Vec<(&'static str, String)>> {
        let kind = match self.head {
            DenseHeadConfig::Linear(_) => "linear",
            DenseHeadConfig::Dpt(_) => "dpt",
        };
        Ok(vec![
            ("dinoadapt.head", kind.to_string()),
            ("config", serde_json::to_string(&self.head)?),
        ])
    }
}

impl DenseRecord {
    /// The domain of the preprocessing (`satellite`, `radiology`, `pathology`, ...).
    pub fn domain(&self) -> &str {
        self.preprocessing["domain"].as_str().unwrap_or("unknown")
    }
}

/// `head.json` of a dense head folder.
pub type HeadInfo = store::HeadInfo<DenseRecord>;

/// A dense head folder read from disk.
pub type HeadFolder = store::HeadFolder<DenseRecord>;

/// Reads the dense head folder `dir` (refusing another task's head).
pub fn load(dir: &Path) -> Result<HeadFolder, HeadFolderError> {
    Ok(HeadFolder::load(dir)?)
}

impl HeadFolder {
    /// The head's class name of class `k` (its index when none was recorded).
    pub fn class_name(&self, k: usize) -> String {
        self.info
            .class_names
            .get(k)
            .cloned()
            .unwrap_or_else(|| format!("class {k}"))
    }

    /// The head with its weights on `device`.
    pub fn dense_head<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<DenseHead<B>, HeadFolderError> {
        DenseHead::<B>::from_named(&self.info.head, self.tensors.clone(), device).map_err(
            |source| HeadFolderError::Restore {
                dir: self.dir.clone(),
                source,
            },
        )
    }

    /// The ignore index recorded with the targets (255 when none).
    pub fn ignore_index(&self) -> u32 {
        self.info.targets["ignore_index"].as_u64().unwrap_or(255) as u32
    }

    /// The head's metrics on `set` (on `device`).
    pub fn evaluate<B: Backend>(
        &self,
        set: &DenseSet,
        cfg: &DenseTrainConfig,
        device: &B::Device,
    ) -> Result<DenseMetrics, HeadFolderError> {
        let head = self.dense_head::<B>(device)?;
        Ok(evaluate(&head, &self.info.head, set, cfg, device)?.metrics)
    }
}

/// What a trained dense head is, besides its description's record.
pub struct TrainedDense<'a> {
    /// `(split, metrics)`, `train` first.
    pub metrics: &'a [(String, DenseMetrics)],
    pub tensors: &'a NamedTensors,
    pub log: &'a [EpochLog],
    /// The validation metric's name in `training.png` (mIoU, R²).
    pub metric_name: &'a str,
    /// Heights: residuals of the last split measured, drawn as `errors.png`.
    pub residuals: &'a [f32],
}

/// The description of a dense head of `task` trained on features of `backbone`: `record`
/// with the metrics of `trained` and the targets' `ignore_index` recorded.
pub fn head_info(
    task: &str,
    backbone: Backbone,
    mut record: DenseRecord,
    ignore_index: u32,
    metrics: &[(String, DenseMetrics)],
) -> HeadInfo {
    record.targets["ignore_index"] = json!(ignore_index);
    record.metrics = json!(metrics.iter().cloned().collect::<BTreeMap<_, _>>());
    store::HeadInfo::new(task, Some(backbone), record)
}

/// Writes the head folder `out` (created): `head.safetensors`, `metrics.parquet`,
/// `training.parquet`, `training.png`, `errors.png` (heights: the histogram of residuals), then
/// `head.json`.
pub fn write(out: &Path, info: &HeadInfo, trained: &TrainedDense) -> Result<(), HeadFolderError> {
    if !trained.residuals.is_empty() {
        let r: Vec<f64> = trained.residuals.iter().map(|v| f64::from(*v)).collect();
        let mean = r.iter().sum::<f64>() / r.len() as f64;
        std::fs::create_dir_all(out).map_err(|e| HeadFolderError::Plot(e.to_string()))?;
        dinoadapt_datasets::plot::histogram_png(
            &out.join("errors.png"),
            "Height errors (prediction - target)",
            "metres",
            &r,
            60,
            &[("bias".to_string(), mean), ("0".to_string(), 0.0)],
        )
        .map_err(|e| HeadFolderError::Plot(e.to_string()))?;
    }
    let plot = |p: &Path| tables::training_plot(p, trained.log, trained.metric_name);
    store::write(
        out,
        info,
        HeadFiles {
            tensors: trained.tensors,
            metrics: Some(tables::metrics_table(trained.metrics)?),
            training: Some(tables::training_table(trained.log)?),
            plot: Some(&plot),
        },
    )?;
    store::write_report(out, &info.task, &[])?;
    Ok(())
}
