//! The radiology batch's inputs (`dinoadapt_radiology::volume_inputs`) from the command line,
//! and `volumes.parquet`.

use dinoadapt_datasets::column as col;
use dinoadapt_radiology::source::{SliceOptions, SliceSource};
pub use dinoadapt_radiology::volume_inputs::{
    for_each_sliced_volume as for_each_sliced, for_each_volume as for_each, write_label_map,
    VolumeItem, VolumeRow,
};
use dinoadapt_radiology::Volume;
use polars::prelude::{DataFrame, IntoColumn, NamedFrom, Series};

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
pub fn table(rows: &[VolumeRow]) -> DataFrame {
    let s = |g: fn(&VolumeRow) -> &String| rows.iter().map(|r| g(r).clone()).collect::<Vec<_>>();
    let columns = vec![
        col::<u64>(
            "input_index",
            rows.iter().map(|r| r.input_index as u64).collect(),
        ),
        col::<String>("file", s(|r| &r.file)),
        col::<String>("volume_id", s(|r| &r.id)),
        col::<String>("kind", s(|r| &r.kind)),
        col::<String>("modality", s(|r| &r.modality)),
        col::<String>("status", s(|r| &r.status)),
        col::<String>("error", s(|r| &r.error)),
        col::<u64>("nx", rows.iter().map(|r| r.dims[0]).collect()),
        col::<u64>("ny", rows.iter().map(|r| r.dims[1]).collect()),
        col::<u64>("nz", rows.iter().map(|r| r.dims[2]).collect()),
        col::<f64>("spacing_x", rows.iter().map(|r| r.spacing[0]).collect()),
        col::<f64>("spacing_y", rows.iter().map(|r| r.spacing[1]).collect()),
        col::<f64>("spacing_z", rows.iter().map(|r| r.spacing[2]).collect()),
        col::<String>("orientation", s(|r| &r.orientation)),
        Series::new(
            "uneven_spacing".into(),
            rows.iter().map(|r| r.uneven_spacing).collect::<Vec<_>>(),
        )
        .into_column(),
        Series::new(
            "gantry_tilt_deg".into(),
            rows.iter().map(|r| r.gantry_tilt_deg).collect::<Vec<_>>(),
        )
        .into_column(),
        col::<String>("output", s(|r| &r.output)),
        col::<u64>("regions", rows.iter().map(|r| r.regions as u64).collect()),
        Series::new(
            "feature_row".into(),
            rows.iter().map(|r| r.feature_row).collect::<Vec<_>>(),
        )
        .into_column(),
    ];
    DataFrame::new(rows.len(), columns).expect("columns have one length")
}
