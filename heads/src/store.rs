//! The head folder every task writes and reads: one layout, one writer, one reader, one
//! backbone check.
//!
//! A head folder holds
//! - `head.json`: the task, the backbone the head's features came from ([`Backbone`], absent
//!   when the features recorded none), the version of the program, and the task's own record
//!   ([`TaskRecord`]: its configuration, its inputs, its summary) beside them;
//! - `head.safetensors`: the weights, with the task, the backbone's checkpoint sha256 and the
//!   task's own keys as metadata;
//! - `metrics.parquet`: one row per measured split (or fold), in the task's columns;
//! - `training.parquet` and `training.png`: the training record and its curve, where the task
//!   has them;
//! - anything else the task writes beside them (predictions, plots, attention maps).
//!
//! Every file is written to a temporary name and renamed, `head.json` last: a folder with a
//! `head.json` is a whole head.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};

use dinoadapt_core::checkpoint::safetensors_io::{
    read_safetensors, write_atomic, write_safetensors,
};
use dinoadapt_core::checkpoint::{CheckpointError, HostTensor, NamedTensors};
use dinoadapt_datasets::plot::PlotError;
use dinoadapt_datasets::{write_parquet, ManifestError};
use polars::prelude::{DataFrame, PolarsError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use crate::backbone::Backbone;

/// The head's description.
pub const HEAD_JSON: &str = "head.json";
/// The head's weights.
pub const HEAD_TENSORS: &str = "head.safetensors";
/// One row per measured split or fold.
pub const METRICS: &str = "metrics.parquet";
/// The training record.
pub const TRAINING: &str = "training.parquet";
/// The training curve.
pub const TRAINING_PLOT: &str = "training.png";

/// What can go wrong reading, checking or writing a head folder.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: not a head folder (no head.json)", dir.display())]
    NotAHead {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a head description (no `task`)", path.display())]
    NoTask {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} holds a {task} head, not {want}", dir.display())]
    WrongTask {
        dir: PathBuf,
        task: String,
        want: String,
    },
    #[error("{}: not a usable {task} head description", path.display())]
    Record {
        path: PathBuf,
        task: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: reading head.safetensors", dir.display())]
    Tensors {
        dir: PathBuf,
        #[source]
        source: Box<CheckpointError>,
    },
    #[error("{}: head.safetensors has no `{name}`", dir.display())]
    MissingTensor { dir: PathBuf, name: String },
    #[error(
        "{}: the head was trained on the backbone {model} (checkpoint sha256 {want}); {given} \
         comes from a backbone with sha256 {sha256}",
        dir.display()
    )]
    WrongBackbone {
        dir: PathBuf,
        model: String,
        want: String,
        given: String,
        sha256: String,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Checkpoint(Box<CheckpointError>),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Table(#[from] PolarsError),
    #[error(transparent)]
    Parquet(#[from] ManifestError),
    #[error(transparent)]
    Plot(#[from] PlotError),
}

impl From<CheckpointError> for StoreError {
    fn from(e: CheckpointError) -> Self {
        StoreError::Checkpoint(Box::new(e))
    }
}

/// What a task records in `head.json` besides the task and the backbone.
pub trait TaskRecord: Serialize + DeserializeOwned {
    /// The tasks whose heads hold this record (`classify`; `segment`, `canopy`; `survival`).
    const TASKS: &'static [&'static str];

    /// Keys of `head.safetensors`' metadata besides `task` and `checkpoint_sha256`.
    fn tensor_metadata(&self) -> serde_json::Result<Vec<(&'static str, String)>>;
}

/// `head.json`: the task, the backbone, the version of the program, and the task's record
/// (written beside them, so `info.record.x` reads as `info.x`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeadInfo<R> {
    pub task: String,
    /// The backbone of the features the head was trained on; `None` when they recorded none
    /// (bags of other tools).
    #[serde(default)]
    pub backbone: Option<Backbone>,
    /// The dinoadapt version that trained the head.
    #[serde(default)]
    pub dinoadapt_version: String,
    #[serde(flatten)]
    pub record: R,
}

impl<R> HeadInfo<R> {
    /// The description of a head of `task` trained now on features of `backbone`.
    pub fn new(task: impl Into<String>, backbone: Option<Backbone>, record: R) -> Self {
        HeadInfo {
            task: task.into(),
            backbone,
            dinoadapt_version: env!("CARGO_PKG_VERSION").to_string(),
            record,
        }
    }
}

impl<R> Deref for HeadInfo<R> {
    type Target = R;
    fn deref(&self) -> &R {
        &self.record
    }
}

impl<R> DerefMut for HeadInfo<R> {
    fn deref_mut(&mut self) -> &mut R {
        &mut self.record
    }
}

/// A head folder read from disk.
#[derive(Debug, Clone)]
pub struct HeadFolder<R> {
    pub dir: PathBuf,
    pub info: HeadInfo<R>,
    pub tensors: NamedTensors,
}

/// Whether `dir` holds a `head.json`.
pub fn is_head_folder(dir: &Path) -> bool {
    dir.join(HEAD_JSON).is_file()
}

fn read_head_json(dir: &Path) -> Result<String, StoreError> {
    std::fs::read_to_string(dir.join(HEAD_JSON)).map_err(|source| StoreError::NotAHead {
        dir: dir.to_path_buf(),
        source,
    })
}

/// The task of the head folder `dir` (its `head.json`'s `task`).
pub fn task_of(dir: &Path) -> Result<String, StoreError> {
    #[derive(Deserialize)]
    struct Task {
        task: String,
    }
    let text = read_head_json(dir)?;
    let t: Task = serde_json::from_str(&text).map_err(|source| StoreError::NoTask {
        path: dir.join(HEAD_JSON),
        source,
    })?;
    Ok(t.task)
}

/// `dir`'s task, refused unless it is one of `tasks`.
pub fn expect_task(dir: &Path, tasks: &[&str]) -> Result<String, StoreError> {
    let task = task_of(dir)?;
    if !tasks.contains(&task.as_str()) {
        return Err(StoreError::WrongTask {
            dir: dir.to_path_buf(),
            task,
            want: tasks.join(" or "),
        });
    }
    Ok(task)
}

impl<R: TaskRecord> HeadFolder<R> {
    /// Reads the head folder `dir`, refusing a folder without `head.json` and a head of a task
    /// other than `R`'s.
    pub fn load(dir: &Path) -> Result<Self, StoreError> {
        let task = expect_task(dir, R::TASKS)?;
        let path = dir.join(HEAD_JSON);
        let info: HeadInfo<R> = serde_json::from_str(&read_head_json(dir)?)
            .map_err(|source| StoreError::Record { path, task, source })?;
        let (tensors, _) =
            read_safetensors(&dir.join(HEAD_TENSORS)).map_err(|source| StoreError::Tensors {
                dir: dir.to_path_buf(),
                source: Box::new(source),
            })?;
        Ok(HeadFolder {
            dir: dir.to_path_buf(),
            info,
            tensors,
        })
    }
}

impl<R> HeadFolder<R> {
    /// The weight tensor `name`.
    pub fn tensor(&self, name: &str) -> Result<&HostTensor, StoreError> {
        self.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| StoreError::MissingTensor {
                dir: self.dir.clone(),
                name: name.to_string(),
            })
    }

    /// Refuses a backbone (`given` names it: a checkpoint, a feature file) whose checkpoint
    /// sha256 differs from the head's; a head that records no backbone takes any.
    pub fn check_backbone(&self, sha256: &str, given: &str) -> Result<(), StoreError> {
        check_backbone(&self.dir, self.info.backbone.as_ref(), sha256, given)
    }

    /// Refuses features (from `path`) that record a backbone other than the head's; features
    /// that record none are taken.
    pub fn check_features(
        &self,
        backbone: Option<&Backbone>,
        path: &Path,
    ) -> Result<(), StoreError> {
        check_features(&self.dir, self.info.backbone.as_ref(), backbone, path)
    }
}

/// Refuses a backbone (`given` names it: a checkpoint, a feature file) whose checkpoint sha256
/// differs from `head`'s, the backbone of the head in `dir`; a head that records no backbone
/// takes any.
pub fn check_backbone(
    dir: &Path,
    head: Option<&Backbone>,
    sha256: &str,
    given: &str,
) -> Result<(), StoreError> {
    match head {
        Some(b) if b.checkpoint_sha256 != sha256 => Err(StoreError::WrongBackbone {
            dir: dir.to_path_buf(),
            model: b.model.clone(),
            want: b.checkpoint_sha256.clone(),
            given: given.to_string(),
            sha256: sha256.to_string(),
        }),
        _ => Ok(()),
    }
}

/// [`check_backbone`] for features of `path` that record `features` (taken when they record
/// none).
pub fn check_features(
    dir: &Path,
    head: Option<&Backbone>,
    features: Option<&Backbone>,
    path: &Path,
) -> Result<(), StoreError> {
    match features {
        Some(b) => check_backbone(dir, head, &b.checkpoint_sha256, &path.display().to_string()),
        None => Ok(()),
    }
}

/// What a head folder holds besides `head.json`.
pub struct HeadFiles<'a> {
    pub tensors: &'a NamedTensors,
    /// `metrics.parquet`.
    pub metrics: Option<DataFrame>,
    /// `training.parquet`.
    pub training: Option<DataFrame>,
    /// Draws `training.png`.
    pub plot: Option<DrawPlot<'a>>,
}

/// Draws a plot at the path it is given.
pub type DrawPlot<'a> = &'a dyn Fn(&Path) -> Result<(), PlotError>;

/// A temporary name for `name` in `dir` that keeps its extension (the plot's format follows it).
fn part_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".part.{}.{name}", std::process::id()))
}

/// Writes the head folder `out` (created): `head.safetensors`, the tables and the plot of
/// `files`, then `head.json`; each through a temporary file renamed when whole.
/// `report.html` of a trained head folder `dir`: the task and backbone of `head.json`, the
/// training's `facts`, every picture of the folder (training curves, Kaplan–Meier, error
/// histograms) and its tables (`metrics.parquet`, `confusion.parquet`, `training.parquet`).
pub fn write_report(
    dir: &Path,
    task: &str,
    facts: &[(String, String)],
) -> Result<PathBuf, StoreError> {
    use dinoadapt_datasets::report::{Report, Section};
    let mut r = Report::new(format!("heads train --task {task}"));
    if let Ok(json) = std::fs::read_to_string(dir.join(HEAD_JSON)) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&json) {
            for key in ["model", "checkpoint_sha256", "layout"] {
                if let Some(x) = v["backbone"][key].as_str() {
                    r = r.fact(format!("backbone {key}"), x);
                }
            }
        }
    }
    for (k, v) in facts {
        r = r.fact(k.clone(), v);
    }
    let mut section = Section::new("Head").images_in(dir, 8);
    for (caption, file) in [
        ("metrics", "metrics.parquet"),
        (
            "confusion (linear probe, validation split)",
            "confusion.parquet",
        ),
        ("training", "training.parquet"),
    ] {
        section = section.parquet(caption, &dir.join(file));
    }
    r.section(section)
        .write(&dir.join("report.html"))
        .map_err(|e| StoreError::Write {
            path: dir.join("report.html"),
            source: std::io::Error::other(e.to_string()),
        })
}

pub fn write<R: TaskRecord>(
    out: &Path,
    info: &HeadInfo<R>,
    files: HeadFiles,
) -> Result<(), StoreError> {
    std::fs::create_dir_all(out).map_err(|source| StoreError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let mut meta: HashMap<String, String> = info
        .record
        .tensor_metadata()?
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    meta.insert("task".into(), info.task.clone());
    if let Some(b) = &info.backbone {
        meta.insert("checkpoint_sha256".into(), b.checkpoint_sha256.clone());
    }
    write_safetensors(&out.join(HEAD_TENSORS), files.tensors, meta)?;
    for (name, table) in [(METRICS, files.metrics), (TRAINING, files.training)] {
        if let Some(mut df) = table {
            write_parquet(&out.join(name), &mut df)?;
        }
    }
    if let Some(plot) = files.plot {
        let (part, path) = (part_path(out, TRAINING_PLOT), out.join(TRAINING_PLOT));
        plot(&part)?;
        std::fs::rename(&part, &path).map_err(|source| StoreError::Write { path, source })?;
    }
    write_atomic(
        &out.join(HEAD_JSON),
        serde_json::to_string_pretty(info)?.as_bytes(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dinoadapt_datasets::column as col;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Toy {
        head: String,
        scale: f64,
    }

    impl TaskRecord for Toy {
        const TASKS: &'static [&'static str] = &["toy", "toy2"];
        fn tensor_metadata(&self) -> serde_json::Result<Vec<(&'static str, String)>> {
            Ok(vec![("dinoadapt.head", self.head.clone())])
        }
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Other {
        classes: Vec<String>,
    }

    impl TaskRecord for Other {
        const TASKS: &'static [&'static str] = &["other"];
        fn tensor_metadata(&self) -> serde_json::Result<Vec<(&'static str, String)>> {
            Ok(Vec::new())
        }
    }

    fn backbone(sha: &str) -> Backbone {
        Backbone {
            model: "m.safetensors".into(),
            checkpoint_sha256: sha.into(),
            layout: "huggingface".into(),
            architecture: serde_json::json!({"depth": 2}),
        }
    }

    fn toy_folder(dir: &Path) -> HeadInfo<Toy> {
        let info = HeadInfo::new(
            "toy2",
            Some(backbone("abc")),
            Toy {
                head: "scale".into(),
                scale: 0.5,
            },
        );
        let tensors = vec![("w".to_string(), HostTensor::new(vec![2], vec![1.0, 2.0]))];
        let metrics =
            DataFrame::new(1, vec![col::<String>("split", vec!["train".into()])]).unwrap();
        let plot = |p: &Path| -> Result<(), PlotError> {
            std::fs::write(p, b"png").unwrap();
            Ok(())
        };
        write(
            dir,
            &info,
            HeadFiles {
                tensors: &tensors,
                metrics: Some(metrics),
                training: None,
                plot: Some(&plot),
            },
        )
        .unwrap();
        info
    }

    #[test]
    fn a_head_folder_reads_back_as_written() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("head");
        let info = toy_folder(&dir);
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [HEAD_JSON, HEAD_TENSORS, METRICS, TRAINING_PLOT],
            "no temporary file is left"
        );
        let head = HeadFolder::<Toy>::load(&dir).unwrap();
        assert_eq!(head.info.task, "toy2");
        assert_eq!(head.info.record, info.record);
        assert_eq!(
            head.info.scale, 0.5,
            "the record reads through the description"
        );
        assert_eq!(head.info.backbone, Some(backbone("abc")));
        assert_eq!(head.info.dinoadapt_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(head.tensor("w").unwrap().data, [1.0, 2.0]);
        assert!(matches!(
            head.tensor("b"),
            Err(StoreError::MissingTensor { .. })
        ));
        // The record sits beside the task and the backbone in head.json.
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(HEAD_JSON)).unwrap()).unwrap();
        assert_eq!(json["task"], "toy2");
        assert_eq!(json["head"], "scale");
        assert_eq!(json["backbone"]["checkpoint_sha256"], "abc");
        let (_, meta) = read_safetensors(&dir.join(HEAD_TENSORS)).unwrap();
        assert_eq!(meta["task"], "toy2");
        assert_eq!(meta["checkpoint_sha256"], "abc");
        assert_eq!(meta["dinoadapt.head"], "scale");
        assert!(is_head_folder(&dir));
    }

    #[test]
    fn a_head_of_another_task_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        toy_folder(tmp.path());
        let e = HeadFolder::<Other>::load(tmp.path()).unwrap_err();
        assert!(matches!(e, StoreError::WrongTask { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            format!("{} holds a toy2 head, not other", tmp.path().display())
        );
        assert_eq!(expect_task(tmp.path(), &["toy", "toy2"]).unwrap(), "toy2");
    }

    #[test]
    fn a_folder_without_a_head_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(!is_head_folder(tmp.path()));
        let e = HeadFolder::<Toy>::load(tmp.path()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: not a head folder (no head.json)", tmp.path().display())
        );
        std::fs::write(tmp.path().join(HEAD_JSON), "{\"classes\": []}").unwrap();
        let e = task_of(tmp.path()).unwrap_err();
        assert!(matches!(e, StoreError::NoTask { .. }), "{e}");
        // The right task with a record that is not the task's.
        std::fs::write(tmp.path().join(HEAD_JSON), "{\"task\": \"toy\"}").unwrap();
        let e = HeadFolder::<Toy>::load(tmp.path()).unwrap_err();
        assert!(matches!(e, StoreError::Record { .. }), "{e}");
    }

    #[test]
    fn features_of_another_backbone_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        toy_folder(tmp.path());
        let head = HeadFolder::<Toy>::load(tmp.path()).unwrap();
        let feats = Path::new("f.safetensors");
        head.check_features(Some(&backbone("abc")), feats).unwrap();
        head.check_features(None, feats).unwrap();
        let e = head
            .check_features(Some(&backbone("xyz")), feats)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: the head was trained on the backbone m.safetensors (checkpoint sha256 abc); \
                 f.safetensors comes from a backbone with sha256 xyz",
                tmp.path().display()
            )
        );
        // A head that records no backbone takes any.
        let anon = HeadFolder {
            info: HeadInfo {
                backbone: None,
                ..head.info.clone()
            },
            ..head
        };
        anon.check_backbone("xyz", "ck").unwrap();
    }
}
