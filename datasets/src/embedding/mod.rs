//! The embedding engine: any [`RegionSource`](crate::RegionSource) (slide tiles, volume slices,
//! raster chips, image files, a pixel tensor) through a backbone into the feature store.
//!
//! A producer thread reads batches from the source while the backbone runs on the previous one;
//! features stream into the safetensors file batch by batch, so memory stays flat in the number
//! of regions. The model is built once and embeds any number of sources.

mod engine;
mod inputs_batch;
mod layout;
mod progress;

pub use engine::{EmbedSettings, Embedded, RegionEmbedder};
pub use inputs_batch::{InputStatus, InputsBatch, InputsBatchError, SourceStatus};
pub use layout::{append_batch, patch_tokens, FeatureLayout};
pub use progress::{Progress, Silent};

use crate::StoreError;

/// Why an embedding failed.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("inputs of {height}x{width} px are smaller than one {patch}-px patch")]
    SmallerThanPatch {
        height: usize,
        width: usize,
        patch: usize,
    },
    #[error("the source has no regions")]
    NoRegions,
    /// Every region was skipped (all nodata, empty or unreadable).
    #[error("every region was skipped (all nodata / empty)")]
    NothingEmbedded,
    #[error("{0}")]
    Source(String),
    #[error("reading features from the device: {0}")]
    Device(String),
    #[error(transparent)]
    Checkpoint(#[from] dinoadapt_core::checkpoint::CheckpointError),
    #[error(transparent)]
    Store(#[from] StoreError),
}
