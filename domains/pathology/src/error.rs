//! Errors of the pathology plugin: each names the slide file, says what was wrong and what to do.
//!
//! Messages never carry slide properties beyond the technical whitelist (no label text, no
//! barcode, no free-text description): only the path the user gave, numbers and library errors.

use std::path::{Path, PathBuf};

/// Result alias of this crate.
pub type Result<T, E = PathologyError> = std::result::Result<T, E>;

/// What can go wrong while opening, reading, masking or tiling a slide.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PathologyError {
    /// The file does not exist or cannot be read at the operating-system level.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// Neither OpenSlide nor the plain-image reader recognises the file.
    #[error(
        "{}: not a slide OpenSlide {openslide} recognises, nor a plain TIFF/PNG/JPEG image \
         ({reason}); convert it (e.g. to a tiled pyramidal TIFF with vips tiffsave --tile \
         --pyramid) or check the file is complete",
        path.display()
    )]
    Unrecognised {
        path: PathBuf,
        openslide: String,
        reason: String,
    },

    /// OpenSlide recognises the format but cannot open or decode it (corrupt, truncated,
    /// unsupported compression).
    #[error(
        "{}: OpenSlide {openslide} recognises it as '{vendor}' but cannot read it: {message}; the \
         file may be truncated or corrupt (compare its size/checksum with the original) or use a \
         compression this OpenSlide lacks",
        path.display()
    )]
    OpenSlide {
        path: PathBuf,
        vendor: String,
        openslide: String,
        message: String,
    },

    /// No trustworthy pixel size: neither OpenSlide nor the TIFF resolution tags give one.
    #[error(
        "{}: the slide records no usable microns per pixel ({detail}); pass --mpp <um per pixel> \
         (e.g. --mpp 0.25 for 40x, 0.5 for 20x scans)",
        path.display()
    )]
    NoMpp { path: PathBuf, detail: String },

    /// An explicit mpp override outside the range of microscope resolutions.
    #[error(
        "{}: --mpp {value} is not a plausible microscope pixel size (expected {min}..{max} um/px)",
        path.display()
    )]
    InvalidMpp {
        path: PathBuf,
        value: f64,
        min: f64,
        max: f64,
    },

    /// Reading pixels failed (a corrupt tile, a truncated file) or the request was out of range.
    #[error(
        "{}: cannot read level {level} region at level-0 ({x}, {y}) size {width}x{height}: {message}",
        path.display()
    )]
    Read {
        path: PathBuf,
        level: u32,
        x: i64,
        y: i64,
        width: u32,
        height: u32,
        message: String,
    },

    /// A parameter (tile size, target mpp, thresholds) is unusable.
    #[error("{}: {what}", path.display())]
    Invalid { path: PathBuf, what: String },

    /// Writing an output (GeoJSON, QC PNG) failed.
    #[error("{}: cannot write: {reason}", path.display())]
    Write { path: PathBuf, reason: String },
}

impl PathologyError {
    /// An unusable parameter or request concerning `path`.
    pub fn invalid(path: &Path, what: impl Into<String>) -> PathologyError {
        PathologyError::Invalid {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }

    /// An operating-system error while doing `action` on `path`.
    pub fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> PathologyError {
        let path = path.to_path_buf();
        move |source| PathologyError::Io {
            path,
            action,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_mpp_message_says_what_to_do() {
        let e = PathologyError::NoMpp {
            path: "a.tiff".into(),
            detail: "72 dpi is a screen resolution".into(),
        };
        let m = e.to_string();
        assert!(m.starts_with("a.tiff: "), "{m}");
        assert!(m.contains("--mpp"), "{m}");
    }
}
