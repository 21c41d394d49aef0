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
pub use layout::{append_batch, forward_rows, patch_tokens, BatchRows, FeatureLayout};
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
    /// A model trained on other channels than the source gives (`model.in_chans` of a
    /// pre-training run).
    #[error(
        "the model takes {channels} input channels ({names}) and this source gives {given}: \
         rasters give one channel per --bands entry, volumes one with --channels gray (the \
         default for one-channel models), image files gray to a one-channel model, slides RGB"
    )]
    Channels {
        channels: usize,
        names: String,
        given: usize,
    },
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

/// Blocks to keep as `layer.{i}`: `8,9,10,11` or `last:N`, checked against the model's `depth`.
pub fn parse_layers(spec: &str, depth: usize) -> Result<Vec<usize>, String> {
    let layers: Vec<usize> = if let Some(n) = spec.strip_prefix("last:") {
        let n: usize = n
            .parse()
            .map_err(|_| format!("`{spec}`: N of last:N is a count"))?;
        if n == 0 || n > depth {
            return Err(format!("`{spec}`: the model has {depth} blocks"));
        }
        (depth - n..depth).collect()
    } else {
        spec.split(',')
            .map(|s| s.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("`{spec}`: not an index list"))?
    };
    if let Some(bad) = layers.iter().find(|&&i| i >= depth) {
        return Err(format!(
            "`{spec}`: block {bad} does not exist (the model has blocks 0..{})",
            depth - 1
        ));
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::parse_layers;

    #[test]
    fn layer_specs_are_lists_or_the_last_n_blocks() {
        assert_eq!(parse_layers("last:2", 12).unwrap(), [10, 11]);
        assert_eq!(parse_layers("0, 5", 12).unwrap(), [0, 5]);
        assert!(parse_layers("last:13", 12)
            .unwrap_err()
            .contains("12 blocks"));
        assert!(parse_layers("12", 12)
            .unwrap_err()
            .contains("block 12 does not exist"));
        assert!(parse_layers("a", 12)
            .unwrap_err()
            .contains("not an index list"));
    }
}
