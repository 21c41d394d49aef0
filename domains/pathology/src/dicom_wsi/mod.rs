//! DICOM whole-slide images (VL Whole Slide Microscopy, one instance per level or associated
//! image, instances of a slide share a SeriesInstanceUID in one folder): their geometry read
//! and its pixels read with dicom-rs, for OpenSlide builds that cannot open DICOM (Debian's
//! 3.4.1; OpenSlide ≥ 4 opens them itself and is preferred when present).

mod fragments;
mod reader;

pub use reader::DicomSlide;

use std::path::{Path, PathBuf};

use dicom_core::dictionary::{DataDictionary, VirtualVr};
use dicom_core::VR;
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::{InMemDicomObject, OpenFileOptions};
use dinoadapt_datasets::dicom_lengths::check_dicom_lengths;

use crate::error::{PathologyError, Result};
use crate::mpp::{Mpp, MppSource};
use crate::slide::{LevelInfo, SlideInfo};

const WSI_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.77.1.6";

pub(crate) fn text(ds: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let s = ds.element_opt(tag).ok()??.to_str().ok()?.to_string();
    let s = s
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_string();
    (!s.is_empty()).then_some(s)
}

pub(crate) fn number(ds: &InMemDicomObject, tag: dicom_core::Tag) -> Option<f64> {
    ds.element_opt(tag).ok()??.to_float64().ok()
}

pub(crate) fn first_item(ds: &InMemDicomObject, tag: dicom_core::Tag) -> Option<&InMemDicomObject> {
    ds.element_opt(tag).ok()??.items()?.first()
}

/// `Err` with the reason when an element of the DICOM file at `path` declares a length that runs
/// past the end of the file (of the elements before the pixel data when `until_pixels`): checked
/// before dicom-rs reads the file, since it allocates a declared length before reading it.
pub(crate) fn lengths_fit(path: &Path, until_pixels: bool) -> std::result::Result<(), String> {
    let stop = until_pixels.then_some((tags::PIXEL_DATA.0, tags::PIXEL_DATA.1));
    check_dicom_lengths(path, stop, is_sequence).unwrap_or_else(|e| Err(e.to_string()))
}

/// Whether the standard dictionary gives the tag the sequence VR (for implicit-VR files).
fn is_sequence((group, element): (u16, u16)) -> bool {
    StandardDataDictionary
        .by_tag(dicom_core::Tag(group, element))
        .is_some_and(|e| e.vr == VirtualVr::Exact(VR::SQ))
}

/// The header of a DICOM file (everything before its pixel data).
fn header(path: &Path) -> Option<InMemDicomObject> {
    lengths_fit(path, true).ok()?;
    OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .ok()
        .map(|o| o.into_inner())
}

/// Whether a header is of the whole-slide microscopy class (or modality SM).
fn header_is_wsi(obj: &InMemDicomObject) -> bool {
    text(obj, tags::SOP_CLASS_UID).as_deref() == Some(WSI_SOP_CLASS)
        || text(obj, tags::MODALITY).as_deref() == Some("SM")
}

/// True for a DICOM file of the whole-slide microscopy class (or modality SM).
pub fn is_wsi(path: &Path) -> bool {
    header(path).is_some_and(|h| header_is_wsi(&h))
}

/// The SeriesInstanceUID of a DICOM whole-slide image file (the slide it belongs to); None for
/// anything else.
pub fn series_uid(path: &Path) -> Option<String> {
    if !path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("dcm"))
    {
        return None;
    }
    let h = header(path)?;
    header_is_wsi(&h)
        .then(|| text(&h, tags::SERIES_INSTANCE_UID))
        .flatten()
}

struct Instance {
    path: PathBuf,
    kind: String,
    width: u64,
    height: u64,
    mpp: Option<(f64, f64)>,
    objective: Option<f64>,
}

fn instance(path: &Path) -> Option<(String, Instance)> {
    lengths_fit(path, true).ok()?;
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .ok()?;
    let series = text(&obj, tags::SERIES_INSTANCE_UID)?;
    // ImageType value 3: VOLUME, THUMBNAIL, LABEL or OVERVIEW.
    let kind = text(&obj, tags::IMAGE_TYPE)
        .and_then(|t| t.split('\\').nth(2).map(|s| s.trim().to_ascii_uppercase()))
        .unwrap_or_else(|| "VOLUME".into());
    let width = number(&obj, tags::TOTAL_PIXEL_MATRIX_COLUMNS)
        .or_else(|| number(&obj, tags::COLUMNS))? as u64;
    let height =
        number(&obj, tags::TOTAL_PIXEL_MATRIX_ROWS).or_else(|| number(&obj, tags::ROWS))? as u64;
    let spacing = first_item(&obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|g| first_item(g, tags::PIXEL_MEASURES_SEQUENCE))
        .and_then(|m| m.element_opt(tags::PIXEL_SPACING).ok()?)
        .and_then(|e| e.to_multi_float64().ok())
        .filter(|v| v.len() >= 2);
    // PixelSpacing is (row spacing, column spacing) in mm.
    let mpp = spacing.map(|v| (v[1] * 1000.0, v[0] * 1000.0));
    let objective = first_item(&obj, tags::OPTICAL_PATH_SEQUENCE)
        .and_then(|o| number(o, tags::OBJECTIVE_LENS_POWER));
    Some((
        series,
        Instance {
            path: path.to_path_buf(),
            kind,
            width,
            height,
            mpp,
            objective,
        },
    ))
}

/// The slide `path` belongs to: every instance of its series in its folder.
pub fn describe(path: &Path) -> Result<SlideInfo> {
    series(path).map(|(info, _)| info)
}

/// The slide `path` belongs to, opened for reading pixels.
pub fn open(path: &Path) -> Result<(DicomSlide, SlideInfo)> {
    let (info, volumes) = series(path)?;
    Ok((DicomSlide::open(&volumes)?, info))
}

/// The slide's description and its VOLUME instances, largest first.
fn series(path: &Path) -> Result<(SlideInfo, Vec<PathBuf>)> {
    let not_wsi = |reason: &str| PathologyError::Invalid {
        path: path.to_path_buf(),
        what: format!("not a DICOM whole-slide image: {reason}"),
    };
    // The header only: the pixel data of a level can be gigabytes.
    lengths_fit(path, true).map_err(|r| not_wsi(&r))?;
    OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| not_wsi(&e.to_string()))?;
    let (series, _) = instance(path).ok_or_else(|| not_wsi("no slide geometry"))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(PathologyError::io(dir, "cannot list the slide's folder"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut volumes = Vec::new();
    let mut associated = Vec::new();
    for f in files {
        if let Some((s, inst)) = instance(&f) {
            if s != series {
                continue;
            }
            match inst.kind.as_str() {
                "VOLUME" => volumes.push(inst),
                other => associated.push(other.to_ascii_lowercase()),
            }
        }
    }
    volumes.sort_by_key(|v| std::cmp::Reverse(v.width));
    let base = volumes
        .first()
        .ok_or_else(|| not_wsi("no VOLUME instance"))?;
    let levels = volumes
        .iter()
        .map(|v| LevelInfo {
            width: v.width,
            height: v.height,
            downsample: base.width as f64 / v.width as f64,
        })
        .collect();
    associated.sort();
    associated.dedup();
    let paths = volumes.iter().map(|v| v.path.clone()).collect();
    let info = SlideInfo {
        backend: "dicom".into(),
        format: "dicom".into(),
        openslide_version: None,
        width: base.width,
        height: base.height,
        levels,
        mpp: base.mpp.map(|(x, y)| Mpp {
            x,
            y,
            source: MppSource::Dicom,
        }),
        mpp_note: None,
        objective_power: volumes.iter().find_map(|v| v.objective),
        bounds: None,
        associated_images: associated,
    };
    Ok((info, paths))
}
