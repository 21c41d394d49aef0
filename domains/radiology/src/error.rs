//! Typed errors of the radiology domain.
//!
//! Every error names the file (when there is one), what was wrong and, where it helps, what to do.
//! Messages never contain identifying DICOM values (names, ids, dates): only tags, UIDs of
//! transfer syntaxes and numbers.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = RadiologyError> = std::result::Result<T, E>;

/// What can go wrong while reading, checking or writing radiology volumes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RadiologyError {
    /// The file could not be read or written at the operating-system level.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// The file is not a NIfTI-1/NIfTI-2 file, or its header is inconsistent.
    #[error("{}: not a valid NIfTI file: {reason}", path.display())]
    InvalidNifti { path: PathBuf, reason: String },

    /// The NIfTI datatype code is not one this crate reads or writes.
    #[error("{}: unsupported NIfTI datatype code {code} ({name}); supported: u8, i8, i16, u16, i32, u32, i64, u64, f32, f64", path.display())]
    UnsupportedNiftiDatatype {
        path: PathBuf,
        code: i16,
        name: &'static str,
    },

    /// The file could not be parsed as DICOM (not DICOM, truncated, corrupt).
    #[error("{}: cannot read as DICOM: {reason}", path.display())]
    InvalidDicom { path: PathBuf, reason: String },

    /// The pixel data uses a transfer syntax this build cannot decode.
    #[error("{}: cannot decode pixel data in transfer syntax {uid} ({name}): {reason}", path.display())]
    UndecodableTransferSyntax {
        path: PathBuf,
        uid: String,
        name: String,
        reason: String,
    },

    /// A required DICOM attribute is missing.
    #[error("{}: missing DICOM attribute {attribute}", path.display())]
    MissingAttribute {
        path: PathBuf,
        attribute: &'static str,
    },

    /// A DICOM attribute is present but its value cannot be used.
    #[error("{}: invalid DICOM attribute {attribute}: {reason}", path.display())]
    InvalidAttribute {
        path: PathBuf,
        attribute: &'static str,
        reason: String,
    },

    /// The decoded pixel data cannot be turned into what was asked.
    #[error("{}: pixel data: {reason}", path.display())]
    PixelData { path: PathBuf, reason: String },

    /// Slices of a series do not form one volume.
    #[error("series {series}: {reason}")]
    InconsistentSeries { series: String, reason: String },

    /// Nothing readable was found under the given paths.
    #[error("{}: no DICOM images could be loaded ({detail})", path.display())]
    NoImages { path: PathBuf, detail: String },

    /// Two volumes are not on the same voxel grid.
    #[error("volumes are not on the same grid: {reason}")]
    GridMismatch { reason: String },

    /// A volume's own fields disagree (voxel count, zero spacing, ...).
    #[error("invalid volume: {reason}")]
    InvalidVolume { reason: String },

    /// Voxel values do not fit the requested output datatype.
    #[error("{}: cannot write as {dtype}: {reason}", path.display())]
    ValueOutOfRange {
        path: PathBuf,
        dtype: &'static str,
        reason: String,
    },
}

impl RadiologyError {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
        source: std::io::Error,
    ) -> Self {
        RadiologyError::Io {
            path: path.into(),
            action,
            source,
        }
    }
}

/// Display of an error with its sources.
pub(crate) use dinoadapt_core::error_chain;
