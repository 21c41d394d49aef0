//! dinoadapt-heads: what is trained on frozen features, and how it is measured.
//!
//! - [`metrics`]: accuracy, balanced accuracy, macro-F1, one-vs-rest AUROC, confusion matrix.
//! - [`linear`]: the linear (multinomial logistic) probe, trained full-batch with AdamW.
//! - [`probe`]: the classification protocol: kNN (k = 20, T = 0.07, DINOv2's `eval_knn`),
//!   the linear probe's lr × weight-decay sweep chosen on a validation split, few-shot subsets.
//! - [`survival`]: gated-attention MIL (ABMIL) on slide feature bags with the Cox or the
//!   discrete-time NLL loss; C-index, Kaplan–Meier, log-rank, time bins, folds by patient.

pub mod linear;
pub mod metrics;
pub mod probe;
pub mod survival;

pub use linear::{LinearProbe, LinearProbeConfig};
pub use metrics::ClassificationMetrics;
pub use probe::{few_shot, sweep_linear, ProbeResult, SweepPoint};
