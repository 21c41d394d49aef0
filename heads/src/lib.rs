//! dinoadapt-heads: what is trained on frozen features, and how it is measured.
//!
//! - [`metrics`]: accuracy, balanced accuracy, macro-F1, one-vs-rest AUROC, confusion matrix.
//! - [`linear`]: the linear (multinomial logistic) probe, trained full-batch with AdamW.
//! - [`probe`]: the classification protocol: kNN (k = 20, T = 0.07, DINOv2's `eval_knn`),
//!   the linear probe's lr × weight-decay sweep chosen on a validation split, few-shot subsets.
//! - [`classify`]: that protocol run on feature files and their labels, and the classification
//!   head folder it writes, evaluates and predicts with.
//! - [`backbone`]: the backbone identity a head records.
//! - [`store`]: the head folder every task writes and reads (`head.json` with the task, the
//!   backbone and the task's record; `head.safetensors`; `metrics.parquet`; `training.parquet`
//!   and `training.png`), and the one backbone check.
//! - [`dense`]: dense heads on patch tokens — DINOv2's linear / multi-layer segmentation heads
//!   and the DPT canopy-height head (regression over bins) — their training and prediction.
//! - [`segmentation_metrics`]: confusion → per-class IoU / Dice, mIoU, pixel accuracy.
//! - [`regression_metrics`]: MAE, RMSE, R², bias and block-R² of per-pixel heights.
//! - [`survival`]: gated-attention MIL (ABMIL) on slide feature bags with the Cox or the
//!   discrete-time NLL loss; C-index, Kaplan–Meier, log-rank, time bins, folds by patient.

pub mod backbone;
pub mod classify;
pub mod dense;
pub mod linear;
pub mod metrics;
pub mod probe;
pub mod regression_metrics;
pub mod segmentation_metrics;
pub mod store;
pub mod survival;

pub use linear::{LinearProbe, LinearProbeConfig};
pub use metrics::ClassificationMetrics;
pub use probe::{few_shot, sweep_linear, ProbeResult, SweepPoint};
