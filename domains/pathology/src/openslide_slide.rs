//! The OpenSlide backend: every format the linked OpenSlide reads (Aperio SVS, Hamamatsu NDPI/VMS,
//! MIRAX MRXS, Leica SCN, Ventana BIF, Philips TIFF, generic tiled TIFF; DICOM from OpenSlide 4).
//!
//! Only the technical properties listed in [`TECHNICAL_PROPERTIES`] are ever looked at; label and
//! macro images are never read (only their names are listed, so a user sees they exist).

use std::path::{Path, PathBuf};

use image::RgbImage;
use openslide_rs::{Address, OpenSlide, Region, Size};

use crate::error::{PathologyError, Result};
use crate::mpp::{self, Mpp, MppSource};
use crate::slide::LevelInfo;

/// The OpenSlide properties this crate reads (nothing else is looked at or copied).
pub const TECHNICAL_PROPERTIES: &[&str] = &[
    "openslide.vendor",
    "openslide.mpp-x",
    "openslide.mpp-y",
    "openslide.objective-power",
    "openslide.bounds-x",
    "openslide.bounds-y",
    "openslide.bounds-width",
    "openslide.bounds-height",
    "tiff.XResolution",
    "tiff.YResolution",
    "tiff.ResolutionUnit",
];

/// The version of the linked OpenSlide library ("3.4.1"), or "unknown".
pub fn openslide_version() -> String {
    OpenSlide::get_version().unwrap_or_else(|_| "unknown".into())
}

/// The vendor OpenSlide detects for `path` ("aperio", "generic-tiff", ...), or None when it does
/// not recognise the file.
pub fn detect_vendor(path: &Path) -> Option<String> {
    OpenSlide::detect_vendor(path).ok()
}

/// A slide opened through OpenSlide. OpenSlide's reads are thread-safe: share it across threads.
#[derive(Debug)]
pub struct OpenSlideSlide {
    path: PathBuf,
    osr: OpenSlide,
    vendor: String,
    levels: Vec<LevelInfo>,
}

impl OpenSlideSlide {
    /// Opens `path`, which OpenSlide detected as `vendor`.
    pub fn open(path: &Path, vendor: &str) -> Result<OpenSlideSlide> {
        let fail = |message: String| PathologyError::OpenSlide {
            path: path.to_path_buf(),
            vendor: vendor.to_string(),
            openslide: openslide_version(),
            message,
        };
        let osr = OpenSlide::new(path).map_err(|e| fail(e.to_string()))?;
        let count = osr.get_level_count().map_err(|e| fail(e.to_string()))?;
        let mut levels = Vec::with_capacity(count as usize);
        for level in 0..count {
            let Size { w, h } = osr
                .get_level_dimensions(level)
                .map_err(|e| fail(e.to_string()))?;
            let downsample = osr
                .get_level_downsample(level)
                .map_err(|e| fail(e.to_string()))?;
            levels.push(LevelInfo {
                width: u64::from(w),
                height: u64::from(h),
                downsample,
            });
        }
        if levels.is_empty() || levels[0].width == 0 || levels[0].height == 0 {
            return Err(fail(
                "the slide has no pixels (no level or an empty level 0)".into(),
            ));
        }
        Ok(OpenSlideSlide {
            path: path.to_path_buf(),
            osr,
            vendor: vendor.to_string(),
            levels,
        })
    }

    /// OpenSlide's vendor name.
    pub fn vendor(&self) -> &str {
        &self.vendor
    }

    /// The pyramid levels, level 0 first.
    pub fn levels(&self) -> &[LevelInfo] {
        &self.levels
    }

    /// One whitelisted technical property.
    fn property(&self, name: &str) -> Option<String> {
        debug_assert!(TECHNICAL_PROPERTIES.contains(&name));
        self.osr
            .get_property_value(name)
            .ok()
            .filter(|v| !v.trim().is_empty())
    }

    fn number(&self, name: &str) -> Option<f64> {
        self.property(name)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite())
    }

    /// The pixel size from `openslide.mpp-x/y`, else from the TIFF resolution tags, with a note
    /// saying why none was usable.
    pub fn mpp(&self) -> (Option<Mpp>, Option<String>) {
        if let (Some(x), Some(y)) = (
            self.number("openslide.mpp-x"),
            self.number("openslide.mpp-y"),
        ) {
            if mpp::plausible(x) && mpp::plausible(y) {
                let source = MppSource::Openslide;
                return (Some(Mpp { x, y, source }), None);
            }
        }
        let res = mpp::resolution_from_properties(|k| self.property(k))
            .or_else(|| mpp::read_tiff_resolution(&self.path));
        match res.map(mpp::mpp_from_resolution) {
            Some(Ok((x, y))) => {
                let source = MppSource::TiffResolution;
                (Some(Mpp { x, y, source }), None)
            }
            Some(Err(why)) => (None, Some(format!("no openslide.mpp-x/y; {why}"))),
            None => (
                None,
                Some("no openslide.mpp-x/y and no TIFF resolution tags".into()),
            ),
        }
    }

    /// `openslide.objective-power`.
    pub fn objective_power(&self) -> Option<f64> {
        self.number("openslide.objective-power")
    }

    /// `openslide.bounds-*` as (x, y, width, height) in level-0 pixels, when the scanner recorded
    /// the scanned area (MIRAX, some Hamamatsu/Leica slides).
    pub fn bounds(&self) -> Option<[u64; 4]> {
        let b = |k| self.number(k).filter(|v| *v >= 0.0).map(|v| v as u64);
        Some([
            b("openslide.bounds-x")?,
            b("openslide.bounds-y")?,
            b("openslide.bounds-width")?,
            b("openslide.bounds-height")?,
        ])
    }

    /// Names of the associated images (label, macro, thumbnail); they are never read.
    pub fn associated_image_names(&self) -> Vec<String> {
        self.osr.get_associated_image_names().unwrap_or_default()
    }

    /// Reads `w` x `h` level pixels at level-0 position (`x0`, `y0`) (both >= 0), composited
    /// over white.
    pub fn read(&self, level: u32, x0: u64, y0: u64, w: u32, h: u32) -> Result<RgbImage> {
        let fail = |message: String| PathologyError::Read {
            path: self.path.clone(),
            level,
            x: x0 as i64,
            y: y0 as i64,
            width: w,
            height: h,
            message,
        };
        let address = Address {
            x: u32::try_from(x0).map_err(|_| fail("x beyond 2^32 px".into()))?,
            y: u32::try_from(y0).map_err(|_| fail("y beyond 2^32 px".into()))?,
        };
        let region = Region {
            size: Size { w, h },
            level,
            address,
        };
        let argb = self
            .osr
            .read_region(&region)
            .map_err(|e| fail(e.to_string()))?;
        Ok(premultiplied_bgra_over_white(&argb, w, h))
    }
}

/// OpenSlide's pixels (premultiplied ARGB in native-endian u32, i.e. B, G, R, A bytes on
/// little-endian machines) composited over white: with premultiplied alpha, `c + (255 - a)`.
pub fn premultiplied_bgra_over_white(buf: &[u8], w: u32, h: u32) -> RgbImage {
    let mut out = RgbImage::new(w, h);
    for (px, chunk) in out.pixels_mut().zip(buf.chunks_exact(4)) {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let a = (v >> 24) as u8;
        let bg = 255 - a;
        let c = |shift: u32| ((v >> shift) as u8).saturating_add(bg);
        px.0 = [c(16), c(8), c(0)];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argb(a: u8, r: u8, g: u8, b: u8) -> [u8; 4] {
        (u32::from(a) << 24 | u32::from(r) << 16 | u32::from(g) << 8 | u32::from(b)).to_ne_bytes()
    }

    #[test]
    fn opaque_pixels_keep_their_colour() {
        let buf = argb(255, 200, 100, 50);
        let img = premultiplied_bgra_over_white(&buf, 1, 1);
        assert_eq!(img.get_pixel(0, 0).0, [200, 100, 50]);
    }

    #[test]
    fn transparent_background_is_white() {
        let buf = argb(0, 0, 0, 0);
        let img = premultiplied_bgra_over_white(&buf, 1, 1);
        assert_eq!(img.get_pixel(0, 0).0, [255, 255, 255]);
    }

    #[test]
    fn half_transparent_red_over_white_is_pink() {
        // Red at alpha 128, premultiplied: (128, 0, 0).
        let buf = argb(128, 128, 0, 0);
        let img = premultiplied_bgra_over_white(&buf, 1, 1);
        assert_eq!(img.get_pixel(0, 0).0, [255, 127, 127]);
    }
}
