//! The tables and plot a dense head folder holds: `metrics.parquet` (one row per split),
//! `training.parquet` (one row per epoch) and `training.png`.

use std::path::Path;

use dinoadapt_datasets::column as col;
use dinoadapt_datasets::plot::{panels_png, Panel, PlotError};
use polars::prelude::{DataFrame, IntoColumn, NamedFrom, PolarsError, Series};

use super::{DenseMetrics, EpochLog};

/// `metrics.parquet`: one row per split (`rows` is not empty; its first row decides the
/// columns: segmentation or regression metrics).
pub fn metrics_table(rows: &[(String, DenseMetrics)]) -> Result<DataFrame, PolarsError> {
    let split = col::<String>("split", rows.iter().map(|r| r.0.clone()).collect());
    let opt = |name: &str, v: Vec<Option<f64>>| Series::new(name.into(), v).into_column();
    let mut columns = vec![split];
    match &rows[0].1 {
        DenseMetrics::Segmentation(first) => {
            let seg: Vec<_> = rows
                .iter()
                .filter_map(|r| match &r.1 {
                    DenseMetrics::Segmentation(m) => Some(m),
                    _ => None,
                })
                .collect();
            columns.push(col::<u64>("pixels", seg.iter().map(|m| m.pixels).collect()));
            columns.push(col::<f64>(
                "pixel_accuracy",
                seg.iter().map(|m| m.pixel_accuracy).collect(),
            ));
            columns.push(col::<f64>("miou", seg.iter().map(|m| m.miou).collect()));
            columns.push(col::<f64>(
                "mean_dice",
                seg.iter().map(|m| m.mean_dice).collect(),
            ));
            for k in 0..first.iou.len() {
                columns.push(opt(
                    &format!("iou_{k}"),
                    seg.iter().map(|m| m.iou[k]).collect(),
                ));
                columns.push(opt(
                    &format!("dice_{k}"),
                    seg.iter().map(|m| m.dice[k]).collect(),
                ));
            }
        }
        DenseMetrics::Regression(_) => {
            let reg: Vec<_> = rows
                .iter()
                .filter_map(|r| match &r.1 {
                    DenseMetrics::Regression(m) => Some(m),
                    _ => None,
                })
                .collect();
            columns.push(col::<u64>("pixels", reg.iter().map(|m| m.pixels).collect()));
            columns.push(col::<f64>("mae", reg.iter().map(|m| m.mae).collect()));
            columns.push(col::<f64>("rmse", reg.iter().map(|m| m.rmse).collect()));
            columns.push(opt("r2", reg.iter().map(|m| m.r2).collect()));
            columns.push(col::<f64>("bias", reg.iter().map(|m| m.bias).collect()));
            columns.push(opt("block_r2", reg.iter().map(|m| m.block_r2).collect()));
            columns.push(col::<u64>("blocks", reg.iter().map(|m| m.blocks).collect()));
        }
    }
    DataFrame::new(rows.len(), columns)
}

/// `training.parquet`: one row per epoch.
pub fn training_table(log: &[EpochLog]) -> Result<DataFrame, PolarsError> {
    DataFrame::new(
        log.len(),
        vec![
            col::<u64>("epoch", log.iter().map(|e| e.epoch as u64).collect()),
            col::<f64>("train_loss", log.iter().map(|e| e.train_loss).collect()),
            Series::new(
                "val_loss".into(),
                log.iter().map(|e| e.val_loss).collect::<Vec<_>>(),
            )
            .into_column(),
            Series::new(
                "val_metric".into(),
                log.iter().map(|e| e.val_metric).collect::<Vec<_>>(),
            )
            .into_column(),
            col::<f64>("seconds", log.iter().map(|e| e.seconds).collect()),
        ],
    )
}

/// `training.png`: the loss per epoch, and the validation `metric` beside it when there is a
/// validation set.
pub fn training_plot(path: &Path, log: &[EpochLog], metric: &str) -> Result<(), PlotError> {
    let pts = |f: &dyn Fn(&EpochLog) -> Option<f64>| -> Vec<(f64, f64)> {
        log.iter()
            .filter_map(|e| f(e).map(|v| (e.epoch as f64, v)))
            .collect()
    };
    let mut loss = Panel::new("loss")
        .x_label("epoch")
        .y_label("loss")
        .series("train", pts(&|e| Some(e.train_loss)));
    let val = pts(&|e| e.val_loss);
    let mut panels = Vec::new();
    if !val.is_empty() {
        loss = loss.series("val", val);
        panels.push(loss);
        panels.push(
            Panel::new(format!("validation {metric}"))
                .x_label("epoch")
                .y_label(metric)
                .series("val", pts(&|e| e.val_metric)),
        );
    } else {
        panels.push(loss);
    }
    let columns = panels.len();
    panels_png(path, &panels, columns)
}
