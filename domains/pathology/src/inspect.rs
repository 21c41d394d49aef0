//! `dinoadapt inspect SLIDE`: what the program shows of a whole-slide image (its levels, pixel
//! size and where the pixel size came from, OpenSlide's own view of it).

use std::path::Path;

use dinoadapt_datasets::{FileClaim, FileDescription};
use serde_json::json;

use crate::{dicom_wsi, mpp, openslide_slide, MppSource, Result, Slide};

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}

/// Whole-slide formats by extension (and DICOM files that are slides) are slides for certain; a
/// TIFF that OpenSlide recognises may be a slide, unless another domain (a georeferenced
/// raster) knows it better.
pub fn claim(path: &Path) -> FileClaim {
    match extension(path).as_deref() {
        Some("dcm") if dicom_wsi::is_wsi(path) => FileClaim::Certain,
        Some("svs" | "ndpi" | "mrxs" | "scn" | "vms" | "vmu" | "bif" | "svslide") => {
            FileClaim::Certain
        }
        Some("tif" | "tiff") if openslide_slide::detect_vendor(path).is_some() => {
            FileClaim::Possible
        }
        _ => FileClaim::No,
    }
}

/// The slide's size, levels and pixel size, as JSON and as text.
pub fn describe(path: &Path) -> Result<FileDescription> {
    // DICOM slides are described from their tags (Debian's OpenSlide 3.4.1 cannot open them).
    let info = if extension(path).as_deref() == Some("dcm") {
        dicom_wsi::describe(path)?
    } else {
        Slide::open(path)?.info().clone()
    };
    let recorded = mpp::recorded_mpp(path);
    // OpenSlide's own view: the mpp the file records (even an implausible 72 dpi), and
    // separately whether it is usable for tiling.
    let (mpp_x, mpp_y) = match (info.mpp, recorded) {
        (Some(m), _) if m.source != MppSource::Override => (Some(m.x), Some(m.y)),
        (_, Some((x, y))) => (Some(x), Some(y)),
        _ => (None, None),
    };
    let json = json!({
        "kind": "slide",
        "path": path,
        "backend": info.backend,
        "vendor": info.format,
        "openslide_version": info.openslide_version,
        "dimensions": [info.width, info.height],
        "level_count": info.levels.len(),
        "level_dimensions": info.levels.iter().map(|l| [l.width, l.height]).collect::<Vec<_>>(),
        "level_downsamples": info.levels.iter().map(|l| l.downsample).collect::<Vec<_>>(),
        "mpp_x": mpp_x,
        "mpp_y": mpp_y,
        "mpp_usable": info.mpp.is_some(),
        "mpp_source": info.mpp.map(|m| m.source),
        "mpp_note": info.mpp_note,
        "objective_power": info.objective_power,
        "bounds": info.bounds,
        "associated_images": info.associated_images,
    });
    let mut text = vec![
        format!(
            "slide         {} ({}, {})",
            path.display(),
            info.format,
            info.backend
        ),
        format!(
            "size          {} x {} px, {} levels",
            info.width,
            info.height,
            info.levels.len()
        ),
    ];
    for (i, l) in info.levels.iter().enumerate() {
        text.push(format!(
            "  level {i}     {} x {} (downsample {:.4})",
            l.width, l.height, l.downsample
        ));
    }
    text.push(match (info.mpp, &info.mpp_note) {
        (Some(m), _) => format!(
            "mpp           {:.4} x {:.4} µm/px ({:?})",
            m.x, m.y, m.source
        ),
        (None, Some(note)) => format!("mpp           none usable: {note}"),
        (None, None) => "mpp           none".to_string(),
    });
    if let Some(p) = info.objective_power {
        text.push(format!("objective     {p}x"));
    }
    Ok(FileDescription { json, text })
}
