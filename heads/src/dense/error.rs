//! What can go wrong when dense heads are built, trained, loaded or run.

use dinoadapt_core::train::param_paths::RestoreError;

#[derive(Debug, thiserror::Error)]
pub enum DenseError {
    /// Shapes or sizes that do not fit together (features vs. targets, head vs. features).
    #[error("{0}")]
    Shape(String),
    /// A configuration that cannot be built (zero bins, min ≥ max, wrong layer count, ...).
    #[error("invalid head configuration: {0}")]
    Config(String),
    /// A class value outside the head's classes that is not the ignore index.
    #[error(transparent)]
    Class(#[from] crate::segmentation_metrics::OutOfRange),
    /// Saved tensors that do not fit the configuration.
    #[error("loading the head: {0}")]
    Restore(#[from] RestoreError),
    /// The training set has no pixel with a valid target.
    #[error("the {0} set has no pixel with a valid target (all ignored / nodata)")]
    NoTargets(&'static str),
    /// A tensor could not be read back from the device.
    #[error("reading a tensor from the device: {0}")]
    Readback(String),
}

pub type DenseResult<T> = std::result::Result<T, DenseError>;
