//! A trained dense head on disk: `head.json` (task, head configuration, the backbone it was
//! trained on, how the domain's pixels became model inputs, training and target records,
//! metrics), `head.safetensors`, `metrics.parquet`, `training.parquet` (one row per epoch) and
//! `training.png`.
//!
//! The preprocessing is the domain's own (tiling, slice options, chip normalisation): this
//! crate keeps it as the JSON object the domain wrote (its `domain` key names the domain) and
//! the program turns it into the domain's types.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use dinoadapt_core::checkpoint::safetensors_io::{read_safetensors, write_safetensors};
use dinoadapt_core::checkpoint::{CheckpointError, NamedTensors};
use dinoadapt_core::io::write_atomically;
use dinoadapt_datasets::plot::PlotError;
use dinoadapt_datasets::{write_parquet, ManifestError};
use polars::prelude::PolarsError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    evaluate, tables, DenseError, DenseHead, DenseHeadConfig, DenseMetrics, DenseSet,
    DenseTrainConfig, EpochLog, TokenSpec,
};
use crate::backbone::Backbone;

/// What can go wrong reading, checking or writing a dense head folder.
#[derive(Debug, thiserror::Error)]
pub enum HeadFolderError {
    #[error("{}: not a head folder (no head.json)", dir.display())]
    NotAHead {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a dense head (segment / canopy) description", path.display())]
    NotDense {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: reading head.safetensors", dir.display())]
    Tensors {
        dir: PathBuf,
        #[source]
        source: Box<CheckpointError>,
    },
    #[error("{}: head.safetensors", dir.display())]
    Restore {
        dir: PathBuf,
        #[source]
        source: DenseError,
    },
    #[error(
        "{}: the head was trained on the backbone {model} (checkpoint sha256 {want}); the \
         backbone given ({given}) has sha256 {sha256}. Give the head's backbone with --model \
         (or --random-init --preset ... --seed N for random-init-seed-N)",
        dir.display()
    )]
    WrongBackbone {
        dir: PathBuf,
        model: String,
        want: String,
        given: String,
        sha256: String,
    },
    #[error(transparent)]
    Dense(#[from] DenseError),
    #[error(transparent)]
    Checkpoint(Box<CheckpointError>),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Table(#[from] PolarsError),
    #[error(transparent)]
    Parquet(#[from] ManifestError),
    #[error(transparent)]
    Plot(#[from] PlotError),
}

impl From<CheckpointError> for HeadFolderError {
    fn from(e: CheckpointError) -> Self {
        HeadFolderError::Checkpoint(Box::new(e))
    }
}

/// `head.json` of a dense head folder (the fields prediction needs; the file holds more).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeadInfo {
    pub task: String,
    pub head: DenseHeadConfig,
    pub tokens: TokenSpec,
    pub backbone: Backbone,
    /// How the domain's pixels became model inputs: the domain's own JSON, tagged `domain`.
    pub preprocessing: Value,
    /// Class names (segment), in class-index order.
    #[serde(default)]
    pub class_names: Vec<String>,
}

impl HeadInfo {
    /// The domain of the preprocessing (`satellite`, `radiology`, `pathology`, ...).
    pub fn domain(&self) -> &str {
        self.preprocessing["domain"].as_str().unwrap_or("unknown")
    }
}

/// A head folder read from disk.
pub struct HeadFolder {
    pub dir: PathBuf,
    pub info: HeadInfo,
    /// The whole `head.json` (training, targets, metrics records besides [`HeadInfo`]).
    pub record: Value,
    pub tensors: NamedTensors,
}

/// Whether `dir` holds a `head.json`.
pub fn is_head_folder(dir: &Path) -> bool {
    dir.join("head.json").is_file()
}

/// Reads the dense head folder `dir`.
pub fn load(dir: &Path) -> Result<HeadFolder, HeadFolderError> {
    let path = dir.join("head.json");
    let text = std::fs::read_to_string(&path).map_err(|source| HeadFolderError::NotAHead {
        dir: dir.to_path_buf(),
        source,
    })?;
    let not_dense = |source| HeadFolderError::NotDense {
        path: path.clone(),
        source,
    };
    let info: HeadInfo = serde_json::from_str(&text).map_err(not_dense)?;
    let record: Value = serde_json::from_str(&text).map_err(not_dense)?;
    let (tensors, _) = read_safetensors(&dir.join("head.safetensors")).map_err(|source| {
        HeadFolderError::Tensors {
            dir: dir.to_path_buf(),
            source: Box::new(source),
        }
    })?;
    Ok(HeadFolder {
        dir: dir.to_path_buf(),
        info,
        record,
        tensors,
    })
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

    /// Refuses a backbone (`given` names it) whose checkpoint hash differs from the head's.
    pub fn check_backbone(&self, sha256: &str, given: &str) -> Result<(), HeadFolderError> {
        let want = &self.info.backbone.checkpoint_sha256;
        if sha256 != want {
            return Err(HeadFolderError::WrongBackbone {
                dir: self.dir.clone(),
                model: self.info.backbone.model.clone(),
                want: want.clone(),
                given: given.to_string(),
                sha256: sha256.to_string(),
            });
        }
        Ok(())
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
        self.record["targets"]["ignore_index"]
            .as_u64()
            .unwrap_or(255) as u32
    }

    /// The training configuration recorded (defaults where it cannot be read; the block side
    /// of the block-R² as recorded, 50 when none).
    pub fn training_config(&self) -> DenseTrainConfig {
        let training = &self.record["training"];
        let mut cfg: DenseTrainConfig =
            serde_json::from_value(training.clone()).unwrap_or_else(|_| DenseTrainConfig::new());
        cfg.block = training["block"].as_u64().unwrap_or(50) as usize;
        cfg
    }

    /// The head's metrics on `set` (on `device`).
    pub fn evaluate<B: Backend>(
        &self,
        set: &DenseSet,
        cfg: &DenseTrainConfig,
        device: &B::Device,
    ) -> Result<DenseMetrics, HeadFolderError> {
        let head = DenseHead::<B>::from_named(&self.info.head, self.tensors.clone(), device)?;
        Ok(evaluate(&head, &self.info.head, set, cfg, device)?.metrics)
    }
}

/// Everything a trained head folder records.
pub struct HeadRecord<'a> {
    pub info: &'a HeadInfo,
    pub training: &'a DenseTrainConfig,
    /// How the targets were made (the domain's record).
    pub targets: &'a Value,
    pub ignore_index: u32,
    /// The feature files trained on.
    pub features: &'a [PathBuf],
    /// `(split, metrics)`, `train` first.
    pub metrics: &'a [(String, DenseMetrics)],
    pub tensors: &'a NamedTensors,
    pub log: &'a [EpochLog],
    /// The validation metric's name in `training.png` (mIoU, R²).
    pub metric_name: &'a str,
}

/// Writes the head folder `out` (created): `head.safetensors`, `head.json` (atomically),
/// `metrics.parquet`, `training.parquet`, `training.png`. Returns the `head.json` record.
pub fn write(out: &Path, r: &HeadRecord) -> Result<Value, HeadFolderError> {
    std::fs::create_dir_all(out)?;
    let info = r.info;
    let mut record = serde_json::to_value(info)?;
    record["training"] = serde_json::to_value(r.training)?;
    record["targets"] = r.targets.clone();
    record["targets"]["ignore_index"] = json!(r.ignore_index);
    record["features"] = json!(r
        .features
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>());
    record["metrics"] = json!(r.metrics.iter().cloned().collect::<BTreeMap<_, _>>());
    record["dinoadapt_version"] = json!(env!("CARGO_PKG_VERSION"));
    let st_meta = HashMap::from([
        ("dinoadapt.head".to_string(), info.task.clone()),
        ("config".to_string(), serde_json::to_string(&info.head)?),
        (
            "checkpoint_sha256".to_string(),
            info.backbone.checkpoint_sha256.clone(),
        ),
    ]);
    write_safetensors(&out.join("head.safetensors"), r.tensors, st_meta)?;
    let json_path = out.join("head.json");
    let text = serde_json::to_string_pretty(&record)?;
    write_atomically(&json_path, |w| w.write_all(text.as_bytes()))?;
    write_parquet(
        &out.join("metrics.parquet"),
        &mut tables::metrics_table(r.metrics)?,
    )?;
    write_parquet(
        &out.join("training.parquet"),
        &mut tables::training_table(r.log)?,
    )?;
    tables::training_plot(&out.join("training.png"), r.log, r.metric_name)?;
    Ok(record)
}
