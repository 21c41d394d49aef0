//! Errors of the satellite plugin: each names the file and says what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SatelliteError {
    #[error("{path}: GDAL cannot open it as a raster ({message})")]
    Open { path: PathBuf, message: String },
    #[error(
        "{path}: the raster has no georeferencing (no geotransform, no GCPs); chips and stitched \
         outputs need one: georeference it first (e.g. gdal_translate -a_srs -a_ullr)"
    )]
    NoGeoreference { path: PathBuf },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error(
        "label raster {label} does not overlap the imagery {image}: label bounds {label_bounds:?} \
         (in the imagery's CRS) vs imagery bounds {image_bounds:?}"
    )]
    NoOverlap {
        label: PathBuf,
        image: PathBuf,
        label_bounds: [f64; 4],
        image_bounds: [f64; 4],
    },
    #[error("{path}: {context}: {reason}")]
    Gdal {
        path: PathBuf,
        context: String,
        /// GDAL's own message ([`gdal_reason`]).
        reason: String,
    },
    #[error("the source raster {name} of the features")]
    SourceRaster {
        name: String,
        #[source]
        source: Box<SatelliteError>,
    },
    #[error("a chip of {width}x{height} px in the table; the features are of {size} px chips")]
    ChipSize {
        width: usize,
        height: usize,
        size: usize,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SatelliteError {
    /// A GDAL error while doing `context` on `path`.
    pub fn gdal(
        path: &std::path::Path,
        context: impl Into<String>,
    ) -> impl FnOnce(gdal::errors::GdalError) -> SatelliteError {
        let path = path.to_path_buf();
        let context = context.into();
        move |source| SatelliteError::Gdal {
            path,
            context,
            reason: gdal_reason(&source),
        }
    }

    pub fn invalid(path: &std::path::Path, what: impl Into<String>) -> SatelliteError {
        SatelliteError::Invalid {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, SatelliteError>;

/// What GDAL said, without the binding's wrapping ("GDAL method 'GDALOpenEx' returned a NULL
/// pointer. Error msg: '...'", "CPL error class '3'"), and in words when it said nothing.
pub fn gdal_reason(e: &gdal::errors::GdalError) -> String {
    use gdal::errors::GdalError;
    let msg = match e {
        GdalError::NullPointer { msg, .. } | GdalError::CplError { msg, .. } => msg.trim(),
        other => return other.to_string(),
    };
    if msg.is_empty() {
        "GDAL gave no reason (not a format it reads, or the file is damaged)".into()
    } else {
        msg.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdal_messages_lose_the_bindings_wrapping() {
        let null = gdal::errors::GdalError::NullPointer {
            method_name: "GDALOpenEx",
            msg: "x.tif: TIFFReadDirectory:Failed to read directory at offset 8".into(),
        };
        assert_eq!(
            gdal_reason(&null),
            "x.tif: TIFFReadDirectory:Failed to read directory at offset 8"
        );
        let silent = gdal::errors::GdalError::NullPointer {
            method_name: "GDALOpenEx",
            msg: String::new(),
        };
        assert!(gdal_reason(&silent).starts_with("GDAL gave no reason"));
    }
}
