//! Radiology domain of dinoadapt: NIfTI volumes and DICOM series, their geometry in one world
//! convention (LPS+, see [`volume`]), and pseudonymous ids that keep patient data out of every
//! output.
//!
//! - [`volume`]: the [`Volume`] type, affines, axis codes, intensity range, grid checks.
//! - [`nifti`]: own NIfTI-1/NIfTI-2 reader and writer (nibabel's affine rules).
//! - [`dicom`]: single files (all transfer syntaxes dicom-rs decodes in pure Rust) and series.
//! - [`privacy`]: pseudonymous ids, identifying attributes.
//! - [`doctor`]: what `dinoadapt doctor` checks: the DICOM decoders built in, gzip NIfTI.
//! - [`inspect`]: the serialisable [`inspect::VolumeReport`] behind `inspect --json`.
//! - [`reorient`]: exact reorientation to canonical RAS / LPS (permutation and flips).
//! - [`resample`]: resampling to a spacing or onto another grid, centred crop / pad.
//! - [`intensity`]: CT windows, MR percentiles, min-max.
//! - [`slices`]: axial / coronal / sagittal slices in display orientation with world positions.
//! - [`inputs`]: slices as model inputs (2.5D channels, resize, normalisation).
//! - [`source`]: [`source::SliceSource`], the `RegionSource` of a volume's slices.
//! - [`predictions`]: per-slice predictions back onto the source grid, written as NIfTI.

// Index loops read more clearly than iterator chains in small 3x3 / 4x4 matrix code.
#![allow(clippy::needless_range_loop)]

pub mod demo;
pub mod demo_inputs;
pub mod dense;
pub mod dicom;
pub mod doctor;
pub mod embed_batch;
pub mod embedding_inputs;
pub mod error;
pub mod inputs;
pub mod inspect;
pub mod intensity;
pub mod labels;
pub(crate) mod linalg;
pub mod nifti;
pub mod plugin;
pub mod predictions;
pub mod pretraining;
pub mod privacy;
pub mod reorient;
pub mod resample;
pub mod slices;
pub mod source;
pub mod volume;
pub mod volume_inputs;
pub mod volume_table;

pub use error::{RadiologyError, Result};
pub use plugin::Radiology;
pub use pretraining::{VolumeSlices, VolumeSlicesConfig};
pub use privacy::Pseudonymizer;
pub use volume::{axcodes, IntensityStats, Volume};
