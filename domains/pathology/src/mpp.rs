//! Microns per pixel: where a slide's pixel size comes from and whether it is believable.
//!
//! Order of trust: an explicit override the user passes (`--mpp`) wins; otherwise OpenSlide's
//! `openslide.mpp-x/y`; otherwise the TIFF `XResolution`/`YResolution`/`ResolutionUnit` tags of
//! the first image. Resolution tags are only believed inside [`MPP_RANGE`]: 72 dpi (352.8 um/px)
//! or 300 dpi are what scanners and image editors write when they know nothing, not microscope
//! resolutions.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tiff::decoder::Decoder;
use tiff::tags::{ResolutionUnit, Tag};

/// Plausible microscope pixel sizes in um/px (100x oil objectives ~0.05, 1.25x overviews ~8;
/// a little headroom above).
pub const MPP_RANGE: (f64, f64) = (0.05, 20.0);

/// Where an mpp value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MppSource {
    /// `openslide.mpp-x` / `openslide.mpp-y` (vendor metadata as OpenSlide reads it).
    Openslide,
    /// TIFF XResolution/YResolution with ResolutionUnit centimeter or inch.
    TiffResolution,
    /// Given by the user.
    Override,
    /// DICOM PixelSpacing of a whole-slide image's shared functional groups.
    Dicom,
}

/// Level-0 pixel size in micrometres.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mpp {
    pub x: f64,
    pub y: f64,
    pub source: MppSource,
}

impl Mpp {
    /// The mean of x and y (slides are almost always square-pixelled).
    pub fn mean(&self) -> f64 {
        0.5 * (self.x + self.y)
    }
}

/// Whether `v` um/px is a plausible microscope resolution.
pub fn plausible(v: f64) -> bool {
    v.is_finite() && v >= MPP_RANGE.0 && v <= MPP_RANGE.1
}

/// Resolution tags as written in a TIFF: pixels per unit, and the unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resolution {
    pub x_per_unit: f64,
    pub y_per_unit: f64,
    pub unit: ResolutionUnit,
}

/// What resolution tags say, or why they cannot be used.
pub fn mpp_from_resolution(res: Resolution) -> Result<(f64, f64), String> {
    let um_per_unit = match res.unit {
        ResolutionUnit::Centimeter => 10_000.0,
        ResolutionUnit::Inch => 25_400.0,
        _ => {
            return Err("the TIFF ResolutionUnit is 'none' (no absolute unit)".into());
        }
    };
    if res.x_per_unit.is_nan()
        || res.y_per_unit.is_nan()
        || res.x_per_unit <= 0.0
        || res.y_per_unit <= 0.0
    {
        return Err("the TIFF resolution tags are zero or negative".into());
    }
    let (x, y) = (um_per_unit / res.x_per_unit, um_per_unit / res.y_per_unit);
    if !plausible(x) || !plausible(y) {
        return Err(format!(
            "the TIFF resolution tags give {x:.4} x {y:.4} um/px, outside the microscope range \
             {}..{} um/px (72 dpi = 352.8 um/px is a screen default, not a scan resolution)",
            MPP_RANGE.0, MPP_RANGE.1
        ));
    }
    Ok((x, y))
}

/// What a TIFF's resolution tags record, in µm/px, plausible or not (OpenSlide ≥ 4 reports
/// this as the generic-TIFF mpp; `inspect` shows it beside whether it is usable).
pub fn recorded_mpp(path: &Path) -> Option<(f64, f64)> {
    let res = read_tiff_resolution(path)?;
    let um_per_unit = match res.unit {
        ResolutionUnit::Centimeter => 10_000.0,
        ResolutionUnit::Inch => 25_400.0,
        _ => return None,
    };
    (res.x_per_unit > 0.0 && res.y_per_unit > 0.0)
        .then(|| (um_per_unit / res.x_per_unit, um_per_unit / res.y_per_unit))
}

/// The resolution tags of the first image of a TIFF file, if it is a TIFF and has them.
pub fn read_tiff_resolution(path: &Path) -> Option<Resolution> {
    let file = File::open(path).ok()?;
    let mut dec = Decoder::new(BufReader::new(file)).ok()?;
    let ratio = |dec: &mut Decoder<BufReader<File>>, tag| -> Option<f64> {
        use tiff::decoder::ifd::Value;
        match dec.find_tag(tag).ok()?? {
            Value::Rational(n, d) if d != 0 => Some(n as f64 / d as f64),
            Value::Double(v) => Some(v),
            Value::Float(v) => Some(f64::from(v)),
            _ => None,
        }
    };
    let x = ratio(&mut dec, Tag::XResolution)?;
    let y = ratio(&mut dec, Tag::YResolution)?;
    // ResolutionUnit defaults to inch (TIFF 6.0) when absent.
    let unit = dec
        .find_tag_unsigned::<u16>(Tag::ResolutionUnit)
        .ok()
        .flatten()
        .and_then(ResolutionUnit::from_u16)
        .unwrap_or(ResolutionUnit::Inch);
    Some(Resolution {
        x_per_unit: x,
        y_per_unit: y,
        unit,
    })
}

/// Resolution tags from OpenSlide's `tiff.*` properties (generic TIFF, SVS, ...).
pub fn resolution_from_properties(get: impl Fn(&str) -> Option<String>) -> Option<Resolution> {
    let num = |k: &str| get(k).and_then(|v| v.trim().parse::<f64>().ok());
    let unit = match get("tiff.ResolutionUnit")?.trim() {
        "centimeter" => ResolutionUnit::Centimeter,
        "inch" => ResolutionUnit::Inch,
        _ => ResolutionUnit::None,
    };
    Some(Resolution {
        x_per_unit: num("tiff.XResolution")?,
        y_per_unit: num("tiff.YResolution")?,
        unit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(x: f64, unit: ResolutionUnit) -> Resolution {
        Resolution {
            x_per_unit: x,
            y_per_unit: x,
            unit,
        }
    }

    #[test]
    fn centimetre_tags_give_microns() {
        // 20000 px/cm = 0.5 um/px.
        let (x, y) = mpp_from_resolution(res(20_000.0, ResolutionUnit::Centimeter)).unwrap();
        assert!((x - 0.5).abs() < 1e-12 && (y - 0.5).abs() < 1e-12);
    }

    #[test]
    fn inch_tags_give_microns() {
        let (x, _) = mpp_from_resolution(res(25_400.0 / 0.25, ResolutionUnit::Inch)).unwrap();
        assert!((x - 0.25).abs() < 1e-12);
    }

    #[test]
    fn screen_dpi_is_not_a_microscope_resolution() {
        let e = mpp_from_resolution(res(72.0, ResolutionUnit::Inch)).unwrap_err();
        assert!(e.contains("352.7778"), "{e}");
        assert!(mpp_from_resolution(res(1.0, ResolutionUnit::None)).is_err());
        assert!(mpp_from_resolution(res(0.0, ResolutionUnit::Inch)).is_err());
    }

    #[test]
    fn openslide_tiff_properties_parse() {
        let get = |k: &str| match k {
            "tiff.XResolution" => Some("20000".to_string()),
            "tiff.YResolution" => Some("20000".to_string()),
            "tiff.ResolutionUnit" => Some("centimeter".to_string()),
            _ => None,
        };
        let r = resolution_from_properties(get).unwrap();
        assert_eq!(r.unit, ResolutionUnit::Centimeter);
        assert_eq!(mpp_from_resolution(r).unwrap(), (0.5, 0.5));
    }
}
