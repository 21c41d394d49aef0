//! What can go wrong when a survival study reads its cohort (clinical table, feature bags),
//! trains, stores or applies a head and writes its outputs.

use std::path::PathBuf;

use dinoadapt_core::checkpoint::CheckpointError;
use dinoadapt_core::train::param_paths::RestoreError;
use dinoadapt_datasets::plot::PlotError;
use dinoadapt_datasets::ManifestError;
use polars::prelude::PolarsError;

use super::clinical::{list, ColumnRole};
use super::SurvivalError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    // --- The clinical table ----------------------------------------------------------------
    #[error("opening {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening {}", path.display())]
    OpenCsv {
        path: PathBuf,
        #[source]
        source: PolarsError,
    },
    #[error("{}: the clinical table must be .csv or .parquet", path.display())]
    TableFormat { path: PathBuf },
    #[error("{}: not a readable table", path.display())]
    Table {
        path: PathBuf,
        #[source]
        source: PolarsError,
    },
    /// A column the clinical table lacks (`role` says which one was asked for).
    #[error("{}: no column `{column}` (columns: {})", path.display(), columns.join(", "))]
    NoColumn {
        path: PathBuf,
        column: String,
        columns: Vec<String>,
        role: ColumnRole,
        #[source]
        source: PolarsError,
    },
    #[error("{}: `{column}` is empty in row {row}", path.display())]
    EmptyCell {
        path: PathBuf,
        column: String,
        /// 1-based.
        row: usize,
    },
    #[error("{}: `{column}` is not numeric", path.display())]
    NotNumeric {
        path: PathBuf,
        column: String,
        #[source]
        source: PolarsError,
    },
    #[error("{}: `{column}` is missing or not a number for slide {slide}", path.display())]
    NotANumber {
        path: PathBuf,
        column: String,
        slide: String,
    },
    #[error("{}: slides listed more than once: {}", path.display(), list(slides))]
    DuplicateSlides { path: PathBuf, slides: Vec<String> },
    #[error("{}: negative time for slide {slide}", path.display())]
    NegativeTime { path: PathBuf, slide: String },
    #[error(
        "{}: event {value} for slide {slide}: use 1 (event) or 0 (censored)",
        path.display()
    )]
    EventValue {
        path: PathBuf,
        slide: String,
        value: f64,
    },
    #[error("{}: no slide has an event; survival needs some", path.display())]
    NoEvents { path: PathBuf },
    #[error("the clinical table has no rows")]
    NoRows,
    /// A study (or an evaluation) without the clinical table of times and events.
    #[error("the cohort has no clinical table (times and events)")]
    NoClinicalTable,

    // --- Feature bags ------------------------------------------------------------------------
    #[error(
        "{}: no feature bags (features/*.safetensors from `pathology embed`, or *.h5)",
        dir.display()
    )]
    NoBags { dir: PathBuf },
    #[error(
        "{}: no feature bag for slides {} (looked for features/ID.safetensors, h5/ID.h5, \
         ID.h5, ID.safetensors); embed them or drop their rows from the clinical table",
        dir.display(),
        list(slides)
    )]
    MissingBags { dir: PathBuf, slides: Vec<String> },
    /// A bag file that cannot be read as one: `what` says how.
    #[error("{}: {what}", path.display())]
    Bag { path: PathBuf, what: String },
    /// An HDF5 call on a bag that failed: `what` says which.
    #[error("{}: {what}", path.display())]
    H5 {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: hdf5_metno::Error,
    },
    /// A `pathology embed` tile table that cannot be read: `what` says how.
    #[error("{}: {what}", path.display())]
    TileTable {
        path: PathBuf,
        what: String,
        #[source]
        source: PolarsError,
    },
    #[error(
        "{}: {seen} tiles for {rows} feature rows; the tile table and the features disagree \
         (re-run `pathology embed --overwrite` for this slide)",
        path.display()
    )]
    TileRows {
        path: PathBuf,
        seen: usize,
        rows: usize,
    },
    #[error("{}: slide {slide} has an empty bag", path.display())]
    EmptyBag { path: PathBuf, slide: String },
    #[error(
        "{} has features of dimension {dim}, {} of {first_dim}: all bags must come from one model",
        path.display(),
        first.display()
    )]
    MixedDimensions {
        path: PathBuf,
        dim: usize,
        first: PathBuf,
        first_dim: usize,
    },

    #[error(
        "{} comes from the backbone of sha256 {sha256}, {} from {first_sha256}: all bags must \
         come from one model",
        path.display(),
        first.display()
    )]
    MixedBackbones {
        path: PathBuf,
        sha256: String,
        first: PathBuf,
        first_sha256: String,
    },

    // --- The head ----------------------------------------------------------------------------
    /// The head folder (see [`crate::store`]): missing, of another task, of another backbone.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}: does not fit head.json", path.display())]
    HeadWeights {
        path: PathBuf,
        #[source]
        source: RestoreError,
    },
    #[error(
        "the bags have features of dimension {bags}, the head in {} takes {takes}: embed with \
         the model the head was trained on",
        head.display()
    )]
    HeadDimension {
        bags: usize,
        head: PathBuf,
        takes: usize,
    },
    /// The cohort's covariates are not the ones the head was trained with.
    #[error("covariates {} differ from the head's {}", given.join(","), head.join(","))]
    Covariates {
        given: Vec<String>,
        head: Vec<String>,
    },
    /// The head takes covariates and the cohort has no clinical table to give them.
    #[error("the head takes covariates {}: give the clinical table with them", names.join(","))]
    CovariatesNeeded { names: Vec<String> },

    // --- The study ---------------------------------------------------------------------------
    /// Quantile time bins that cannot be made from the event times.
    #[error("the time bins")]
    Bins(#[source] SurvivalError),
    /// Folds by patient that cannot be made.
    #[error("{folds} folds")]
    Folds {
        folds: usize,
        #[source]
        source: SurvivalError,
    },
    #[error("the C-index of these slides")]
    CIndex(#[source] SurvivalError),
    #[error("creating {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    // --- From the layers below ---------------------------------------------------------------
    #[error(transparent)]
    Survival(#[from] SurvivalError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Plot(#[from] PlotError),
    #[error(transparent)]
    Polars(#[from] PolarsError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// An error and its sources, joined with `: ` (as `anyhow` prints `{:#}`).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
