//! The radiology batch's inputs (`dinoadapt_radiology::volume_inputs`) from the command line,
//! and `volumes.parquet`.

use dinoadapt_radiology::source::{SliceOptions, SliceSource};
pub use dinoadapt_radiology::volume_inputs::{
    for_each_sliced_volume as for_each_sliced, for_each_volume as for_each, write_label_map,
    VolumeItem, VolumeRow,
};
use dinoadapt_radiology::Volume;

use super::VolumeInputs;

/// Every input volume in turn (see `dinoadapt_radiology::volume_inputs::for_each_volume`).
pub fn for_each_volume(
    inputs: &VolumeInputs,
    f: impl FnMut(VolumeItem) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for_each(&inputs.config(), f)
}

/// Every input volume with its slice source.
pub fn for_each_sliced_volume(
    inputs: &VolumeInputs,
    options: SliceOptions,
    rows: &mut Vec<VolumeRow>,
    f: impl FnMut(&Volume, SliceSource, &mut VolumeRow) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for_each_sliced(&inputs.config(), options, rows, f)
}

/// `volumes.parquet`.
pub use dinoadapt_radiology::volume_table::volumes_table as table;
