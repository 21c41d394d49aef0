//! Dense heads on frozen ViT tokens: per-pixel classes and per-pixel heights.
//!
//! - [`linear`]: DINOv2's linear segmentation head (BatchNorm + 1 × 1 convolution on patch
//!   tokens, + class token) and its multi-layer variant on the last 4 layers;
//! - [`dpt`]: the DPT head on 4 intermediate layers with the regression-over-bins output of
//!   Meta's high-resolution canopy-height model ([`bins`]) or plain regression;
//! - [`head`]: [`DenseHeadConfig`] / [`DenseHead`], one type for both, saved as named tensors +
//!   a serde configuration;
//! - [`set`], [`loss`], [`train`]: in-memory training sets, losses on valid pixels only,
//!   AdamW training with per-epoch logs, evaluation with the segmentation / regression metrics;
//! - [`predict`]: backbone + head as one per-pixel model for the domains' tiled inference;
//! - [`features`]: the layer tokens of a feature file in this layout; [`tables`]: the tables
//!   and plot of a dense head folder; [`folder`]: the dense head's record in the head store
//!   ([`crate::store`]) and what it reads from it;
//! - [`engine`]: `heads train|eval` on any domain's features: the head configuration from plain
//!   settings and the targets, class targets, training + metrics per split.
//!
//! Token layout everywhere: `[batch, layers, 1 + patches, dim]`, class token first, patches
//! row-major on the (rows, cols) grid (see [`tokens`]).

pub mod bins;
pub mod dpt;
pub mod engine;
pub mod error;
pub mod head;
pub mod head_folder;
pub mod layer_tokens;
pub mod linear;
pub mod loss;
pub mod predict;
pub mod set;
pub mod tables;
pub mod tokens;
pub mod train;

pub use bins::{BinNorm, Bins};
pub use dpt::{DptHead, DptHeadConfig, DptOutput};
pub use engine::{
    class_targets, head_config, targets_for, train_and_measure, HeadChoice, TargetsError,
    TrainedHead,
};
pub use error::{DenseError, DenseResult};
pub use head::{DenseHead, DenseHeadConfig, DenseTask};
pub use head_folder::{DenseRecord, HeadFolder, HeadFolderError, HeadInfo, TrainedDense};
pub use linear::{LinearHead, LinearHeadConfig};
pub use loss::RegressionLoss;
pub use predict::{argmax_at, backbone_tokens, DensePredictor, TokenSpec};
pub use set::{DenseSet, DenseTargets};
pub use train::{
    evaluate, predict_set, train, DenseMetrics, DenseTrainConfig, EpochLog, Evaluation, Trained,
};

#[cfg(test)]
mod learning_tests;
