//! NIfTI-1 / NIfTI-2 reading and writing (own implementation: header, affine, data).

pub mod affine;
pub mod header;
pub mod read;
pub mod write;

pub use header::{NiftiDatatype, NiftiHeader, NiftiVersion};
pub use read::{is_nifti_path, read_nifti, read_nifti_header, NiftiHeaderInfo, NiftiImage};
pub use write::{encode_nifti, header_for, write_nifti, NiftiWriteOptions};
