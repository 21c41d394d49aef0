//! Per-iteration metrics of a run: every loss term, the schedule values, the collapse
//! diagnostics and the gradient norms, written as `metrics.parquet` and plotted to
//! `metrics.png`. A resumed run reads the table back and continues it.

use std::path::{Path, PathBuf};

use dinoadapt_core::train::loss_terms::intern;
use dinoadapt_core::train::{StepReport, StepValues};
use dinoadapt_datasets::plot::{panels_png, Panel, PlotError};
use dinoadapt_datasets::{write_parquet, ManifestError};
use polars::prelude::{
    Column, DataFrame, DataType, IntoColumn, NamedFrom, ParquetReader, SerReader, Series,
};

/// One iteration.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepRecord {
    /// Iteration index (0-based).
    pub step: u64,
    pub epoch: f64,
    pub values: StepValues,
    pub report: StepReport,
    pub images_per_s: f64,
}

type Getter = fn(&StepRecord) -> f64;
type Setter = fn(&mut StepRecord, f64);

/// The float columns besides the loss terms, in table order (the terms, one `*_loss` column
/// each, follow `loss_total`).
const COLUMNS: &[(&str, Getter, Setter)] = &[
    ("epoch", |r| r.epoch, |r, v| r.epoch = v),
    (
        "loss_total",
        |r| r.report.loss.total,
        |r, v| r.report.loss.total = v,
    ),
    (
        "teacher_entropy",
        |r| r.report.loss.teacher_entropy,
        |r, v| r.report.loss.teacher_entropy = v,
    ),
    (
        "cls_std",
        |r| r.report.loss.cls_std,
        |r, v| r.report.loss.cls_std = v,
    ),
    ("lr", |r| r.values.lr, |r, v| r.values.lr = v),
    (
        "last_layer_lr",
        |r| r.values.last_layer_lr,
        |r, v| r.values.last_layer_lr = v,
    ),
    ("wd", |r| r.values.wd, |r, v| r.values.wd = v),
    (
        "momentum",
        |r| r.values.momentum,
        |r, v| r.values.momentum = v,
    ),
    (
        "teacher_temp",
        |r| r.values.teacher_temp,
        |r, v| r.values.teacher_temp = v,
    ),
    (
        "grad_norm_backbone",
        |r| r.report.grad_norm_backbone,
        |r, v| r.report.grad_norm_backbone = v,
    ),
    (
        "grad_norm_dino_head",
        |r| r.report.grad_norm_dino_head,
        |r, v| r.report.grad_norm_dino_head = v,
    ),
    (
        "grad_norm_ibot_head",
        |r| r.report.grad_norm_ibot_head,
        |r, v| r.report.grad_norm_ibot_head = v,
    ),
    (
        "images_per_s",
        |r| r.images_per_s,
        |r, v| r.images_per_s = v,
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(transparent)]
    Write(#[from] ManifestError),
    #[error("{path}: cannot read the metrics table: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error(transparent)]
    Plot(#[from] PlotError),
}

/// The records as a table: `step`, `backbone_frozen`, then [`COLUMNS`].
pub fn to_frame(records: &[StepRecord]) -> DataFrame {
    let mut columns: Vec<Column> = vec![
        Series::new(
            "step".into(),
            records.iter().map(|r| r.step).collect::<Vec<u64>>(),
        )
        .into_column(),
        Series::new(
            "backbone_frozen".into(),
            records
                .iter()
                .map(|r| r.values.backbone_frozen)
                .collect::<Vec<bool>>(),
        )
        .into_column(),
    ];
    for (name, get, _) in COLUMNS {
        let v: Vec<f64> = records.iter().map(get).collect();
        columns.push(Series::new((*name).into(), v).into_column());
        if *name == "loss_total" {
            for term in term_names(records) {
                let v: Vec<f64> = records
                    .iter()
                    .map(|r| r.report.loss.terms.value(term))
                    .collect();
                columns.push(Series::new(term.into(), v).into_column());
            }
        }
    }
    DataFrame::new(records.len(), columns).expect("columns have one length")
}

/// The loss terms the records report, in the order they first appear.
fn term_names(records: &[StepRecord]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for r in records {
        for (n, _) in r.report.loss.terms.iter() {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    names
}

/// Write `metrics.parquet` atomically.
pub fn write(path: &Path, records: &[StepRecord]) -> Result<(), MetricsError> {
    write_parquet(path, &mut to_frame(records))?;
    Ok(())
}

/// Read a table written by [`write`].
pub fn read(path: &Path) -> Result<Vec<StepRecord>, MetricsError> {
    let err = |reason: String| MetricsError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let df = ParquetReader::new(file)
        .finish()
        .map_err(|e| err(e.to_string()))?;
    let mut records = vec![StepRecord::default(); df.height()];
    let floats = |name: &str| -> Result<Vec<f64>, MetricsError> {
        let c = df
            .column(name)
            .and_then(|c| c.cast(&DataType::Float64))
            .map_err(|e| err(e.to_string()))?;
        let ca = c.f64().map_err(|e| err(e.to_string()))?;
        Ok((0..ca.len())
            .map(|i| ca.get(i).unwrap_or(f64::NAN))
            .collect())
    };
    for (r, s) in records.iter_mut().zip(floats("step")?) {
        r.step = s as u64;
    }
    for (r, f) in records.iter_mut().zip(floats("backbone_frozen")?) {
        r.values.backbone_frozen = f != 0.0;
    }
    for (name, _, set) in COLUMNS {
        for (r, v) in records.iter_mut().zip(floats(name)?) {
            set(r, v);
        }
    }
    let terms: Vec<String> = df
        .get_column_names()
        .into_iter()
        .map(|n| n.to_string())
        .filter(|n| n.ends_with("_loss"))
        .collect();
    for term in terms {
        let name = intern(&term);
        for (r, v) in records.iter_mut().zip(floats(name)?) {
            r.report.loss.terms.set(name, v);
        }
    }
    Ok(records)
}

/// `metrics.png`: losses, schedules, collapse diagnostics and gradient norms over iterations.
pub fn plot(path: &Path, records: &[StepRecord]) -> Result<(), MetricsError> {
    // A column of COLUMNS, or else a loss term.
    let series = |name: &str| -> Vec<(f64, f64)> {
        let get = COLUMNS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, g, _)| *g);
        records
            .iter()
            .map(|r| {
                let v = get.map_or_else(|| r.report.loss.terms.value(name), |g| g(r));
                (r.step as f64, v)
            })
            .collect()
    };
    let panel = |title: &str, y: &str, names: &[(&str, &str)], log: bool| {
        names.iter().fold(
            Panel::new(title).x_label("iteration").y_label(y).log_y(log),
            |p, (label, col)| p.series(*label, series(col)),
        )
    };
    let labels: Vec<String> = term_names(records)
        .into_iter()
        .map(|n| {
            n.trim_end_matches("_loss")
                .replace("_crops", "")
                .replace('_', " ")
        })
        .collect();
    let mut losses = vec![("total", "loss_total")];
    for (label, name) in labels.iter().zip(term_names(records)) {
        // A term that stayed 0 (Gram anchoring before its start, no local crops) is left out.
        if records
            .iter()
            .any(|r| r.report.loss.terms.value(name) != 0.0)
        {
            losses.push((label.as_str(), name));
        }
    }
    let panels = [
        panel("Losses", "loss", &losses, false),
        panel(
            "Learning rate and weight decay",
            "value",
            &[
                ("lr", "lr"),
                ("last layer lr", "last_layer_lr"),
                ("wd", "wd"),
            ],
            true,
        ),
        panel(
            "Teacher",
            "value",
            &[("momentum", "momentum"), ("temperature", "teacher_temp")],
            false,
        ),
        panel(
            "Teacher entropy",
            "nats",
            &[("entropy", "teacher_entropy")],
            false,
        ),
        panel("Class-token std", "std", &[("cls std", "cls_std")], true),
        panel(
            "Gradient norm (before clipping)",
            "norm",
            &[
                ("backbone", "grad_norm_backbone"),
                ("dino head", "grad_norm_dino_head"),
                ("ibot head", "grad_norm_ibot_head"),
            ],
            true,
        ),
    ];
    panels_png(path, &panels, 2)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_round_trips_and_plots() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<StepRecord> = (0..5)
            .map(|i| {
                let mut r = StepRecord {
                    step: i,
                    epoch: i as f64 / 10.0,
                    images_per_s: 3.0,
                    ..Default::default()
                };
                r.values.lr = 1e-3 * (i + 1) as f64;
                r.values.backbone_frozen = i < 2;
                r.report.loss.total = 10.0 - i as f64;
                r.report.grad_norm_backbone = 0.5;
                r
            })
            .collect();
        let path = dir.path().join("metrics.parquet");
        write(&path, &records).unwrap();
        assert_eq!(read(&path).unwrap(), records);
        plot(&dir.path().join("metrics.png"), &records).unwrap();
        let img = image::open(dir.path().join("metrics.png")).unwrap();
        assert!(img.width() > 400 && img.height() > 600);
    }
}
