//! DICOM: single files (attributes, geometry, decoded pixels) and series (grouping, ordering,
//! spacing checks, volume building).

pub mod attrs;
pub mod pixels;
pub mod read;
pub mod series;

pub use pixels::{transfer_syntax_name, Pixels};
pub use read::{normal, read_dicom_file, DicomFile, DicomFileInfo, DicomUids, FramePlane};
pub use series::{
    collect_files, load_series, load_series_with, FileError, SeriesInfo, SeriesOptions, SeriesScan,
    SeriesVolume,
};
