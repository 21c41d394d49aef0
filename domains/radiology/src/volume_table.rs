//! `volumes.parquet`: what a radiology batch did with each input volume; the slice table of a
//! volume's features.

use dinoadapt_datasets::column as col;
use polars::prelude::{DataFrame, IntoColumn, NamedFrom, PolarsResult, Series};

use crate::volume_inputs::VolumeRow;

/// `volumes.parquet`: one row per input volume or failure.
pub fn volumes_table(rows: &[VolumeRow]) -> DataFrame {
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

/// The slice table of one volume's features: feature row n = slice record n.
pub fn slice_table(records: &[crate::source::SliceRecord]) -> PolarsResult<DataFrame> {
    DataFrame::new(
        records.len(),
        vec![
            col::<u64>("feature_row", (0..records.len() as u64).collect()),
            col::<String>(
                "volume_id",
                records.iter().map(|r| r.volume_id.clone()).collect(),
            ),
            col::<String>("axis", records.iter().map(|r| r.axis.to_string()).collect()),
            col::<u64>(
                "slice_index",
                records.iter().map(|r| r.slice_index as u64).collect(),
            ),
            col::<f64>("x_lps", records.iter().map(|r| r.position_lps[0]).collect()),
            col::<f64>("y_lps", records.iter().map(|r| r.position_lps[1]).collect()),
            col::<f64>("z_lps", records.iter().map(|r| r.position_lps[2]).collect()),
            col::<f64>(
                "valid_fraction",
                records.iter().map(|r| r.valid_fraction).collect(),
            ),
        ],
    )
}
