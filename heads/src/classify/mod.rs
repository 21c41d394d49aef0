//! The classification probes of DINOv2's evaluation run on feature files that `embed` wrote:
//! kNN (k = 20, T = 0.07), the linear probe with an lr × weight-decay sweep chosen on the
//! validation split, and optional few-shot subsets. Labels come from the image paths of the
//! manifest beside each feature file (the parent folder, ImageFolder style) or from a CSV.
//!
//! [`train`] writes a head folder in the head store ([`ProbeHead`]: `head.json`,
//! `head.safetensors`, `metrics.parquet` with one row per method × split and `training.parquet`
//! with one row per sweep point); [`eval`] gives a saved head's metrics on labelled features,
//! [`predict`] its class probabilities as a Parquet table. Features of another backbone than the
//! training features' are refused.

mod pooled_features;
mod probe_head;

/// The feature stores of every domain as probe inputs (moved to the datasets crate, which
/// owns the feature store; re-exported here for the callers of `heads::classify::stores`).
pub use dinoadapt_datasets::store_rows as stores;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use dinoadapt_core::checkpoint::CheckpointError;
use dinoadapt_core::eval::knn::knn_votes;
use dinoadapt_datasets::{column as col, write_parquet, Domain, ManifestError, StoreRowsError};
use polars::prelude::{DataFrame, IntoColumn, NamedFrom, PolarsError, Series};

pub use pooled_features::{encode, FeatureKind, Features, FileRows, Labels};
pub use probe_head::{ClassifyRecord, ProbeHead, TASK};
pub use stores::{RowKey, Unit};

use crate::linear::LinearProbe;
use crate::metrics::{argmax_rows, ClassificationMetrics};
use crate::probe::{few_shot, sweep_linear, ProbeResult, SweepPoint};
use crate::store::{HeadFolder, StoreError};

/// What can go wrong reading features, labels or a head folder, or writing the outputs.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error("--features `{0}`: cls or cls+avgpool")]
    UnknownFeatures(String),
    #[error("--labels `{0}`: folder, csv:FILE or targets:FILE")]
    UnknownLabels(String),
    #[error(
        "--unit `{0}`: rows (tiles, slices, chips, regions, images) or groups (slides, volumes, \
         rasters)"
    )]
    UnknownUnit(String),
    /// No row has a label (of the split asked for).
    #[error("no row has a label of split `{split}`")]
    NoLabelledRows { split: String },
    /// Dense labels are per pixel: pooled groups have no pixels.
    #[error("labels from a domain's dense targets need --unit rows (tiles, slices, chips)")]
    TargetsOfGroups,
    /// A domain could not give the dense labels of a feature file.
    #[error("{}: labels from the domain's targets: {reason}", path.display())]
    Targets { path: PathBuf, reason: String },
    /// A feature file without the tensor the feature kind needs.
    #[error("{}: no `{name}` features", path.display())]
    MissingFeatures { path: PathBuf, name: String },
    /// A feature file whose tensors are not what `embed` writes, or hold NaN/±Inf.
    #[error("{}: {reason}", path.display())]
    BadFeatures { path: PathBuf, reason: String },
    /// Features of a split whose width is not the training features'.
    #[error(
        "{}: {dim}-wide features; the training features are {train}-wide (made with another \
         backbone or feature kind?)",
        path.display()
    )]
    SplitDimension {
        path: PathBuf,
        dim: usize,
        train: usize,
    },
    /// The manifest beside a feature file lacks the columns `embed` writes.
    #[error("{}: {reason}", path.display())]
    ManifestTable { path: PathBuf, reason: String },
    #[error("{}: the manifest beside the features", path.display())]
    Manifest {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{0}` has no parent folder to name its class")]
    NoClassFolder(String),
    #[error("reading {}", path.display())]
    ReadLabels {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The labels CSV `path` has no row for the image `image`.
    #[error("{}: no label for `{image}`", path.display())]
    NoLabel { path: PathBuf, image: String },
    #[error("class `{class}` is not among the training classes {classes:?}")]
    UnknownClass { class: String, classes: Vec<String> },
    #[error("the training features have {0} class(es); a probe needs two or more")]
    TooFewClasses(usize),
    /// Features of a split made with another backbone than the training features.
    #[error(
        "{}: made with the backbone of sha256 {sha256}; the training features with {train}",
        path.display()
    )]
    OtherBackbone {
        path: PathBuf,
        sha256: String,
        train: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the features have dimension {features}, the head takes {head}")]
    Dimension { features: usize, head: usize },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Table(#[from] PolarsError),
    #[error(transparent)]
    Write(#[from] ManifestError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The store's errors as the probes have always reported them.
impl From<StoreRowsError> for ClassifyError {
    fn from(e: StoreRowsError) -> Self {
        match e {
            StoreRowsError::UnknownUnit(u) => ClassifyError::UnknownUnit(u),
            StoreRowsError::Table { path, reason } => ClassifyError::ManifestTable { path, reason },
            StoreRowsError::Manifest { path, source } => ClassifyError::Manifest { path, source },
            StoreRowsError::ReadDir { path, source } => ClassifyError::ReadLabels { path, source },
        }
    }
}

/// `heads train --task classify`: the splits, their features and labels, and the probes.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifyConfig {
    /// Training features (safetensors from `embed`, with its .parquet manifest).
    pub train: PathBuf,
    /// Validation features: the sweep is chosen on them.
    pub val: PathBuf,
    /// Test features: reported, never used for choices.
    pub test: Option<PathBuf>,
    pub features: FeatureKind,
    pub labels: Labels,
    /// Rows (tiles, slices, chips) or their groups (slides, volumes, rasters) as samples.
    pub unit: Unit,
    /// kNN neighbours and temperature.
    pub k: usize,
    pub temperature: f64,
    /// Learning rates and weight decays of the linear sweep.
    pub lrs: Vec<f64>,
    pub weight_decays: Vec<f64>,
    /// Few-shot probes with these many training samples per class.
    pub few_shot: Vec<usize>,
    /// Epochs of every linear probe.
    pub epochs: usize,
    pub seed: u64,
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        ClassifyConfig {
            train: PathBuf::new(),
            val: PathBuf::new(),
            test: None,
            features: FeatureKind::Cls,
            labels: Labels::Folder,
            unit: Unit::Rows,
            k: 20,
            temperature: 0.07,
            lrs: vec![0.001, 0.003, 0.01, 0.03, 0.1],
            weight_decays: vec![0.0, 0.0001, 0.001, 0.01],
            few_shot: Vec::new(),
            epochs: 300,
            seed: 0,
        }
    }
}

/// What [`train`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifyReport {
    /// Class names (sorted), in class-index order.
    pub classes: Vec<String>,
    /// Samples of the training and validation splits.
    pub train: usize,
    pub val: usize,
    /// The best probe of the sweep (its configuration holds the chosen lr and weight decay).
    pub best: LinearProbe,
    pub sweep: Vec<SweepPoint>,
    /// One per method × split, in `results.parquet` order.
    pub results: Vec<ProbeResult>,
}

impl ClassifyReport {
    /// What `heads train --task classify` prints: classes, split sizes, the chosen lr and
    /// weight decay, and every method's metrics on every split.
    pub fn summary(&self) -> serde_json::Value {
        let results: Vec<_> = self
            .results
            .iter()
            .map(|r| {
                let m = &r.metrics;
                serde_json::json!({"method": r.method, "split": r.split,
                    "accuracy": m.accuracy, "balanced_accuracy": m.balanced_accuracy,
                    "macro_f1": m.macro_f1, "auroc": m.auroc})
            })
            .collect();
        serde_json::json!({
            "classes": self.classes, "train": self.train, "val": self.val,
            "linear_lr": self.best.config.lr,
            "linear_weight_decay": self.best.config.weight_decay,
            "results": results,
        })
    }
}

/// Runs kNN, the linear sweep and the few-shot probes of `cfg`, and writes the head folder
/// `out` (`head.json`, `head.safetensors`, `metrics.parquet`, `training.parquet`, and
/// `confusion.parquet`: the linear probe's confusion on the validation split).
pub fn train(
    cfg: &ClassifyConfig,
    out: &Path,
    domains: &[&dyn Domain],
) -> Result<ClassifyReport, ClassifyError> {
    // One store may hold every split (a labels CSV with a `split` column): it is read once.
    let mut loaded: Vec<(PathBuf, Features)> = Vec::new();
    let mut split = |path: &Path, role: &str| -> Result<(Features, Vec<String>), ClassifyError> {
        let at = match loaded.iter().position(|(p, _)| p == path) {
            Some(i) => i,
            None => {
                let f = Features::load(path, cfg.features)?.in_unit(cfg.unit);
                loaded.push((path.to_path_buf(), f));
                loaded.len() - 1
            }
        };
        loaded[at].1.labelled(&cfg.labels, Some(role), domains)
    };
    let (tr, tr_names) = split(&cfg.train, "train")?;
    let (va, va_names) = split(&cfg.val, "val")?;
    same_backbone(&tr, &va, &cfg.val)?;
    same_width(&tr, &va, &cfg.val)?;
    let classes: Vec<String> = tr_names
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if classes.len() < 2 {
        return Err(ClassifyError::TooFewClasses(classes.len()));
    }
    let (c, dim) = (classes.len(), tr.dim);
    let ytr = encode(&tr_names, &classes)?;
    let yva = encode(&va_names, &classes)?;
    let test = match &cfg.test {
        Some(p) => {
            let (s, names) = split(p, "test")?;
            same_backbone(&tr, &s, p)?;
            same_width(&tr, &s, p)?;
            let y = encode(&names, &classes)?;
            Some((s, y))
        }
        None => None,
    };
    let mut rows: Vec<ProbeResult> = Vec::new();
    let mut push = |method: String, split: &str, metrics| {
        rows.push(ProbeResult {
            method,
            split: split.to_string(),
            metrics,
        })
    };
    let mut eval_splits: Vec<(&str, &[f32], &[usize])> = vec![("val", &va.x, &yva)];
    if let Some((s, y)) = &test {
        eval_splits.push(("test", &s.x, y));
    }
    // kNN.
    for (name, x, y) in &eval_splits {
        let s = knn_votes(&tr.x, &ytr, x, dim, c, cfg.k, cfg.temperature);
        push(
            format!("knn{}", cfg.k),
            name,
            ClassificationMetrics::compute(y, &s, c),
        );
    }
    // Linear sweep on val; the best probe reported on every split.
    let (sweep, best) = sweep_linear(
        &tr.x,
        &ytr,
        &va.x,
        &yva,
        dim,
        c,
        &cfg.lrs,
        &cfg.weight_decays,
        cfg.epochs,
        cfg.seed,
    );
    for (name, x, y) in &eval_splits {
        push(
            "linear".into(),
            name,
            ClassificationMetrics::compute(y, &best.predict_proba(x), c),
        );
    }
    // Few-shot: k samples per class from train, the best sweep settings.
    for &k in &cfg.few_shot {
        let pick = few_shot(&ytr, c, k, cfg.seed);
        let xs: Vec<f32> = pick
            .iter()
            .flat_map(|&i| tr.x[i * dim..(i + 1) * dim].iter().copied())
            .collect();
        let ys: Vec<usize> = pick.iter().map(|&i| ytr[i]).collect();
        let probe = LinearProbe::train(&xs, &ys, dim, c, best.config);
        for (name, x, y) in &eval_splits {
            push(
                format!("linear_{k}shot"),
                name,
                ClassificationMetrics::compute(y, &probe.predict_proba(x), c),
            );
            let s = knn_votes(
                &xs,
                &ys,
                x,
                dim,
                c,
                cfg.k.min(xs.len() / dim),
                cfg.temperature,
            );
            push(
                format!("knn_{k}shot"),
                name,
                ClassificationMetrics::compute(y, &s, c),
            );
        }
    }
    let head = ProbeHead {
        probe: best,
        classes,
        features: cfg.features,
        unit: cfg.unit,
        backbone: tr.backbone.clone(),
    };
    let (best_lr, best_wd) = (head.probe.config.lr, head.probe.config.weight_decay);
    head.save(out, results_table(&rows)?, sweep_table(&sweep)?)?;
    if let Some(r) = rows
        .iter()
        .find(|r| r.method == "linear" && r.split == "val")
    {
        let mut df = confusion_table(&head.classes, &r.metrics.confusion)?;
        write_parquet(&out.join("confusion.parquet"), &mut df)?;
    }
    let facts = [
        ("classes".to_string(), head.classes.join(", ")),
        (
            "features / unit".into(),
            format!("{} / {}", cfg.features, cfg.unit),
        ),
        (
            "samples train / val".into(),
            format!("{} / {}", ytr.len(), yva.len()),
        ),
        (
            "linear lr / weight decay".into(),
            format!("{} / {}", best_lr, best_wd),
        ),
        ("seed".into(), cfg.seed.to_string()),
    ];
    crate::store::write_report(out, TASK, &facts)?;
    Ok(ClassifyReport {
        classes: head.classes,
        train: ytr.len(),
        val: yva.len(),
        best: head.probe,
        sweep,
        results: rows,
    })
}

/// `metrics.parquet`: method, split, samples and the metrics of each probe on each split.
pub fn results_table(rows: &[ProbeResult]) -> Result<DataFrame, PolarsError> {
    DataFrame::new(
        rows.len(),
        vec![
            col::<String>("method", rows.iter().map(|r| r.method.clone()).collect()),
            col::<String>("split", rows.iter().map(|r| r.split.clone()).collect()),
            col::<u64>(
                "samples",
                rows.iter().map(|r| r.metrics.samples as u64).collect(),
            ),
            col::<f64>(
                "accuracy",
                rows.iter().map(|r| r.metrics.accuracy).collect(),
            ),
            col::<f64>(
                "balanced_accuracy",
                rows.iter().map(|r| r.metrics.balanced_accuracy).collect(),
            ),
            col::<f64>(
                "macro_f1",
                rows.iter().map(|r| r.metrics.macro_f1).collect(),
            ),
            Series::new(
                "auroc".into(),
                rows.iter().map(|r| r.metrics.auroc).collect::<Vec<_>>(),
            )
            .into_column(),
        ],
    )
}

/// `confusion.parquet`: one row per true class (`true`), one count column per predicted class.
pub fn confusion_table(
    classes: &[String],
    confusion: &[Vec<u64>],
) -> Result<DataFrame, PolarsError> {
    let mut columns = vec![col::<String>("true", classes.to_vec())];
    for (p, name) in classes.iter().enumerate() {
        columns.push(col::<u64>(
            &format!("predicted {name}"),
            confusion.iter().map(|row| row[p]).collect(),
        ));
    }
    DataFrame::new(classes.len(), columns)
}

/// `training.parquet`: lr, weight decay and the validation accuracies of each sweep point.
pub fn sweep_table(sweep: &[SweepPoint]) -> Result<DataFrame, PolarsError> {
    DataFrame::new(
        sweep.len(),
        vec![
            col::<f64>("lr", sweep.iter().map(|p| p.lr).collect()),
            col::<f64>(
                "weight_decay",
                sweep.iter().map(|p| p.weight_decay).collect(),
            ),
            col::<f64>(
                "val_accuracy",
                sweep.iter().map(|p| p.val.accuracy).collect(),
            ),
            col::<f64>(
                "val_balanced_accuracy",
                sweep.iter().map(|p| p.val.balanced_accuracy).collect(),
            ),
        ],
    )
}

/// Refuses the features `s` of `path` when they record another backbone than the training
/// features `tr`.
fn same_backbone(tr: &Features, s: &Features, path: &Path) -> Result<(), ClassifyError> {
    match (&tr.backbone, &s.backbone) {
        (Some(t), Some(b)) if t.checkpoint_sha256 != b.checkpoint_sha256 => {
            Err(ClassifyError::OtherBackbone {
                path: path.to_path_buf(),
                sha256: b.checkpoint_sha256.clone(),
                train: t.checkpoint_sha256.clone(),
            })
        }
        _ => Ok(()),
    }
}

/// Refuse the features of split `path` when their width is not the training features'.
fn same_width(train: &Features, split: &Features, path: &Path) -> Result<(), ClassifyError> {
    if split.dim != train.dim {
        return Err(ClassifyError::SplitDimension {
            path: path.to_path_buf(),
            dim: split.dim,
            train: train.dim,
        });
    }
    Ok(())
}

/// A saved head and the features of `features_path` in the head's feature kind and unit,
/// refused when they come from another backbone or have another dimension.
fn head_and_features(
    head: &Path,
    features_path: &Path,
) -> Result<(ProbeHead, Features), ClassifyError> {
    let folder = HeadFolder::<ClassifyRecord>::load(head)?;
    let s = Features::load(features_path, folder.info.features)?.in_unit(folder.info.unit);
    folder.check_features(s.backbone.as_ref(), features_path)?;
    let head = ProbeHead::from_folder(&folder)?;
    if s.dim != head.probe.dim {
        return Err(ClassifyError::Dimension {
            features: s.dim,
            head: head.probe.dim,
        });
    }
    Ok((head, s))
}

/// The metrics of the head folder `head` on the labelled rows of `split` (every labelled row
/// when `None`) of the store `features_path`.
pub fn eval(
    head: &Path,
    features_path: &Path,
    labels: &Labels,
    split: Option<&str>,
    domains: &[&dyn Domain],
) -> Result<ClassificationMetrics, ClassifyError> {
    let (head, s) = head_and_features(head, features_path)?;
    let (s, names) = s.labelled(labels, split, domains)?;
    let y = encode(&names, &head.classes)?;
    Ok(ClassificationMetrics::compute(
        &y,
        &head.probe.predict_proba(&s.x),
        head.classes.len(),
    ))
}

/// The predictions of the head folder `head` on the features of `features_path`, written to
/// `out` as Parquet (`path`: the image path or `<group>:<index>` of the row, `predicted`,
/// `p_<class>` per class); returns how many rows.
pub fn predict(head: &Path, features_path: &Path, out: &Path) -> Result<usize, ClassifyError> {
    let (head, s) = head_and_features(head, features_path)?;
    let p = head.probe.predict_proba(&s.x);
    let classes = &head.classes;
    let c = classes.len();
    let best = argmax_rows(&p, c);
    let mut columns = vec![
        col::<String>("path", s.ids()),
        col::<String>(
            "predicted",
            best.iter().map(|&b| classes[b].clone()).collect(),
        ),
    ];
    for (k, name) in classes.iter().enumerate() {
        columns.push(col::<f64>(
            &format!("p_{name}"),
            p.chunks(c).map(|r| r[k]).collect(),
        ));
    }
    let mut df = DataFrame::new(s.len(), columns)?;
    write_parquet(out, &mut df)?;
    Ok(s.len())
}
