//! Radiology domain of dinoadapt: NIfTI volumes and DICOM series, their geometry in one world
//! convention (LPS+, see [`volume`]), and pseudonymous ids that keep patient data out of every
//! output.
//!
//! - [`volume`]: the [`Volume`] type, affines, axis codes, intensity range, grid checks.
//! - [`nifti`]: own NIfTI-1/NIfTI-2 reader and writer (nibabel's affine rules).
//! - [`dicom`]: single files (all transfer syntaxes dicom-rs decodes in pure Rust) and series.
//! - [`privacy`]: pseudonymous ids, identifying attributes.
//! - [`inspect`]: the serialisable [`inspect::VolumeReport`] behind `inspect --json`.

// Index loops read more clearly than iterator chains in small 3x3 / 4x4 matrix code.
#![allow(clippy::needless_range_loop)]

pub mod dicom;
pub mod error;
pub mod inspect;
pub(crate) mod linalg;
pub mod nifti;
pub mod privacy;
pub mod volume;

pub use error::{Error, Result};
pub use privacy::Pseudonymizer;
pub use volume::{axcodes, IntensityStats, Volume};
