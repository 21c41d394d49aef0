//! DICOM series: walk files and folders, group by SeriesInstanceUID, order slices by position,
//! check spacing and tilt, build one [`Volume`] per series.
//!
//! Slices are ordered by ImagePositionPatient projected on the slice normal
//! (row cosine x column cosine), never by InstanceNumber. The volume's direction columns are the
//! row cosine, the column cosine and that normal; its origin is the first slice's position; its
//! slice step is the mean gap (first-to-last distance / (n - 1)). Uneven gaps and gantry tilt
//! are reported, not resampled.
//!
//! A file that cannot be read, decoded or placed is reported in [`SeriesScan::errors`] and the
//! rest goes on.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::read::{normal, read_dicom_file, DicomFile};
use crate::error::{RadiologyError, Result};
use crate::linalg;
use crate::privacy::Pseudonymizer;
use crate::volume::Volume;

/// Thresholds of the series checks.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesOptions {
    /// Gaps are uneven when `max - min` exceeds this fraction of the mean gap (default 1 %).
    pub uneven_relative: f64,
    /// ... or, when set, this many mm instead of the relative threshold.
    pub uneven_abs_mm: Option<f64>,
    /// Two slices closer than this (mm, along the normal) are duplicates.
    pub duplicate_mm: f64,
    /// Orientation cosines that differ by more than this are a different stack.
    pub orientation_tol: f64,
}

impl Default for SeriesOptions {
    fn default() -> Self {
        SeriesOptions {
            uneven_relative: 0.01,
            uneven_abs_mm: None,
            duplicate_mm: 1e-3,
            orientation_tol: 1e-4,
        }
    }
}

/// One file that could not be used, and why.
///
/// Carries no path: folder names of DICOM exports often hold patient names or ids, so only
/// the file's base name and its position in the walk are kept, and the message has the full
/// path replaced by the base name (and any remaining folder by `<folder>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileError {
    /// Base name of the file (or folder) only.
    pub file: String,
    /// Position of the file in the walk ([`collect_files`] order: sorted, depth-first);
    /// `None` for a folder, a missing path or a whole series.
    #[serde(default)]
    pub index: Option<usize>,
    pub message: String,
}

impl FileError {
    fn new(path: &Path, index: Option<usize>, message: impl Into<String>) -> Self {
        let file = file_label(path);
        let mut message: String = message.into();
        let full = path.display().to_string();
        if !full.is_empty() && full != file {
            message = message.replace(&full, &file);
        }
        if let Some(parent) = path.parent() {
            let parent = parent.display().to_string();
            if parent.len() > 1 {
                message = message.replace(&parent, "<folder>");
            }
        }
        FileError {
            file,
            index,
            message,
        }
    }
}

/// Geometry facts of a series (serialisable; no identifying values, no original UIDs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesInfo {
    pub rows: u32,
    pub columns: u32,
    pub slices: usize,
    /// File names (for a multi-frame object: `name[frame]`) in slice order (the files; the
    /// volume has `resampled_slices` slices when they were resampled).
    pub order_by_position: Vec<String>,
    /// Distance between consecutive slices along the normal, in slice order.
    pub slice_gaps_mm: Vec<f64>,
    /// The slice step of the volume: the mean gap of an even stack, the step of the even grid an
    /// uneven one was resampled onto, the slice thickness for one slice.
    pub slice_spacing_mm: f64,
    /// `max - min` of the gaps exceeds the threshold (see [`SeriesOptions`]).
    pub uneven_spacing: bool,
    /// Angle (degrees) between the slice normal and the first-to-last slice vector.
    pub gantry_tilt_deg: f64,
    pub image_orientation_patient: [f64; 6],
    /// Voxel (column, row, slice) to LPS mm.
    pub affine_lps_ijk_to_world: [[f64; 4]; 4],
    /// The volume comes from one enhanced multi-frame object.
    pub multiframe: bool,
    /// Slices of the volume when uneven slices (a missing or skipped slice) were resampled
    /// onto an even grid (see [`even_grid`]); `None` when the slices were stacked as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resampled_slices: Option<usize>,
    /// Files of the walk that could not be used (filled in by reports).
    #[serde(default)]
    pub file_errors: Vec<FileError>,
}

/// One volume built from a series (or a multi-frame object), with its files in slice order.
#[derive(Debug, Clone)]
pub struct SeriesVolume {
    pub volume: Volume,
    pub info: SeriesInfo,
    pub files: Vec<PathBuf>,
}

/// Everything found under some paths.
#[derive(Debug, Clone, Default)]
pub struct SeriesScan {
    pub series: Vec<SeriesVolume>,
    pub errors: Vec<FileError>,
}

/// Ordering of a stack of planes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stack {
    /// Indices into the input in increasing position along the normal.
    pub order: Vec<usize>,
    pub gaps: Vec<f64>,
    /// (last - first) / (n - 1) along the normal; 0 for one plane.
    pub mean_gap: f64,
    pub tilt_deg: f64,
}

/// Orders positions along the normal of `iop` and measures gaps and tilt.
pub(crate) fn stack_geometry(positions: &[[f64; 3]], iop: &[f64; 6]) -> Stack {
    let n = linalg::vector3(normal(iop));
    let mut order: Vec<usize> = (0..positions.len()).collect();
    let proj: Vec<f64> = positions
        .iter()
        .map(|p| linalg::vector3(*p).dot(&n))
        .collect();
    order.sort_by(|a, b| proj[*a].total_cmp(&proj[*b]));
    let gaps: Vec<f64> = order.windows(2).map(|w| proj[w[1]] - proj[w[0]]).collect();
    let (mean_gap, tilt_deg) = if order.len() > 1 {
        let (first, last) = (order[0], order[order.len() - 1]);
        let mean = (proj[last] - proj[first]) / (order.len() - 1) as f64;
        let v = linalg::vector3(positions[last]) - linalg::vector3(positions[first]);
        let len = v.norm();
        let tilt = if len > 0.0 {
            (v.dot(&n).abs() / len).clamp(-1.0, 1.0).acos().to_degrees()
        } else {
            0.0
        };
        (mean, tilt)
    } else {
        (0.0, 0.0)
    };
    Stack {
        order,
        gaps,
        mean_gap,
        tilt_deg,
    }
}

/// An even grid of slices along the normal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct EvenGrid {
    pub slices: usize,
    pub spacing: f64,
}

/// The even grid an uneven stack (its gaps along the normal) is resampled onto: from the first
/// to the last slice, in the largest steps no longer than the median gap that divide the extent
/// evenly. A stack
/// with one slice missing (gaps 2.5, 5.0, 2.5) gets its 2.5 mm grid back, the real slices
/// exactly on it; stacking the slices as they are would space them by the mean gap (3.33 mm)
/// and put every slice after the gap up to 0.83 mm off.
pub(crate) fn even_grid(gaps: &[f64]) -> EvenGrid {
    let total: f64 = gaps.iter().sum();
    let mut sorted = gaps.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    // Never coarser than the median gap (the tolerance keeps 10 / 2.5 at 4 steps).
    let steps = (total / median - 1e-6).ceil().max(1.0) as usize;
    EvenGrid {
        slices: steps + 1,
        spacing: total / steps as f64,
    }
}

/// Slices (`plane` values each, at offsets `cumsum(gaps)` along the normal) linearly
/// interpolated onto `grid` from the first slice's position.
pub(crate) fn resample_slices(
    voxels: &[f32],
    plane: usize,
    gaps: &[f64],
    grid: EvenGrid,
) -> Vec<f32> {
    let offsets: Vec<f64> = std::iter::once(0.0)
        .chain(gaps.iter().scan(0.0, |acc, g| {
            *acc += g;
            Some(*acc)
        }))
        .collect();
    let last = offsets.len() - 1;
    let mut out = Vec::with_capacity(plane * grid.slices);
    let mut below = 0;
    for k in 0..grid.slices {
        let t = k as f64 * grid.spacing;
        while below + 1 < last && offsets[below + 1] <= t {
            below += 1;
        }
        let (a, b) = (below, (below + 1).min(last));
        let w = if b == a {
            0.0
        } else {
            ((t - offsets[a]) / (offsets[b] - offsets[a])).clamp(0.0, 1.0)
        };
        let (pa, pb) = (
            &voxels[a * plane..(a + 1) * plane],
            &voxels[b * plane..(b + 1) * plane],
        );
        if w < 1e-9 {
            out.extend_from_slice(pa);
        } else if w > 1.0 - 1e-9 {
            out.extend_from_slice(pb);
        } else {
            let w32 = w as f32;
            out.extend(pa.iter().zip(pb).map(|(x, y)| x + (y - x) * w32));
        }
    }
    out
}

fn is_uneven(gaps: &[f64], mean: f64, opts: &SeriesOptions) -> bool {
    if gaps.len() < 2 {
        return false;
    }
    let (min, max) = gaps
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), g| {
            (a.min(*g), b.max(*g))
        });
    let threshold = opts
        .uneven_abs_mm
        .unwrap_or(opts.uneven_relative * mean.abs());
    max - min > threshold
}

/// Regular files under `paths` (folders walked recursively, sorted; hidden files and DICOMDIR
/// skipped), plus errors for paths that cannot be read.
pub fn collect_files(paths: &[impl AsRef<Path>]) -> (Vec<PathBuf>, Vec<FileError>) {
    fn walk(dir: &Path, depth: usize, files: &mut Vec<PathBuf>, errors: &mut Vec<FileError>) {
        if depth > 64 {
            errors.push(FileError::new(
                dir,
                None,
                "folder nesting deeper than 64 levels, skipped",
            ));
            return;
        }
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                errors.push(FileError::new(
                    dir,
                    None,
                    format!("cannot list folder: {e}"),
                ));
                return;
            }
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('.') || name.eq_ignore_ascii_case("DICOMDIR") {
                continue;
            }
            if p.is_dir() {
                walk(&p, depth + 1, files, errors);
            } else if p.is_file() {
                files.push(p);
            }
        }
    }
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        let p = p.as_ref();
        if p.is_dir() {
            walk(p, 0, &mut files, &mut errors);
        } else if p.is_file() {
            files.push(p.to_path_buf());
        } else {
            let why = dinoadapt_core::io::why_unreachable(p);
            errors.push(FileError::new(p, None, why));
        }
    }
    (files, errors)
}

/// [`load_series_with`] with default options.
pub fn load_series(paths: &[impl AsRef<Path>], pseudo: &Pseudonymizer) -> Result<SeriesScan> {
    load_series_with(paths, pseudo, &SeriesOptions::default())
}

fn file_label(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Walks `paths`, reads every file, and builds one volume per series (classic single-frame
/// slices grouped by SeriesInstanceUID) and per multi-frame / stand-alone image. Fails only
/// when nothing at all could be loaded ([`RadiologyError::NoImages`]); otherwise unusable files are
/// listed in [`SeriesScan::errors`].
pub fn load_series_with(
    paths: &[impl AsRef<Path>],
    pseudo: &Pseudonymizer,
    opts: &SeriesOptions,
) -> Result<SeriesScan> {
    let (files, mut errors) = collect_files(paths);
    let mut scan = SeriesScan::default();
    let mut groups: BTreeMap<String, Vec<DicomFile>> = BTreeMap::new();
    let index_of: HashMap<&Path, usize> = files
        .iter()
        .enumerate()
        .map(|(n, p)| (p.as_path(), n))
        .collect();
    for (n, path) in files.iter().enumerate() {
        let file = match read_dicom_file(path, pseudo) {
            Ok(f) => f,
            Err(e) => {
                errors.push(FileError::new(path, Some(n), e.to_string()));
                continue;
            }
        };
        if let Err(e) = &file.pixels {
            errors.push(FileError::new(path, Some(n), e.to_string()));
            continue;
        }
        let classic = file.planes.len() == 1 && file.info.frames == 1;
        if classic && !file.uids.series.is_empty() {
            groups
                .entry(file.uids.series.clone())
                .or_default()
                .push(file);
        } else {
            match standalone(&file, opts) {
                Ok(v) => scan.series.push(v),
                Err(e) => errors.push(FileError::new(path, Some(n), e.to_string())),
            }
        }
    }
    for (_, group) in groups {
        match build_series(group, opts, &index_of, &mut errors) {
            Ok(Some(v)) => scan.series.push(v),
            Ok(None) => {}
            Err(e) => errors.push(FileError::new(Path::new("<series>"), None, e.to_string())),
        }
    }
    scan.errors = errors;
    if scan.series.is_empty() {
        let shown = paths
            .first()
            .map(|p| p.as_ref().to_path_buf())
            .unwrap_or_default();
        let one_file = paths.len() == 1 && paths[0].as_ref().is_file();
        let detail = match scan.errors.first() {
            // The input is the file: its message alone.
            Some(e) if one_file && scan.errors.len() == 1 => e.message.clone(),
            Some(e) => format!(
                "{} file error(s), first: {}: {}",
                scan.errors.len(),
                e.file,
                e.message
            ),
            None => "a folder with no files in it".to_string(),
        };
        return Err(RadiologyError::NoImages {
            path: shown,
            detail,
        });
    }
    Ok(scan)
}

/// A multi-frame object or an image without a series: its own volume.
fn standalone(file: &DicomFile, opts: &SeriesOptions) -> Result<SeriesVolume> {
    let volume = file.to_volume()?;
    let name = file_label(&file.path);
    let (order, gaps, tilt, iop) = if file.planes.len() > 1 {
        let positions: Vec<[f64; 3]> = file.planes.iter().map(|p| p.position).collect();
        let stack = stack_geometry(&positions, &file.planes[0].orientation);
        let order = stack.order.iter().map(|i| format!("{name}[{i}]")).collect();
        (
            order,
            stack.gaps,
            stack.tilt_deg,
            file.planes[0].orientation,
        )
    } else {
        let iop = file
            .planes
            .first()
            .map(|p| p.orientation)
            .unwrap_or([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        (vec![name], Vec::new(), 0.0, iop)
    };
    let info = SeriesInfo {
        rows: file.info.rows,
        columns: file.info.columns,
        slices: volume.dims[2],
        order_by_position: order,
        uneven_spacing: is_uneven(&gaps, volume.spacing[2], opts),
        slice_gaps_mm: gaps,
        slice_spacing_mm: volume.spacing[2],
        gantry_tilt_deg: tilt,
        image_orientation_patient: iop,
        affine_lps_ijk_to_world: volume.affine_lps(),
        multiframe: file.info.frames > 1,
        resampled_slices: None,
        file_errors: Vec::new(),
    };
    Ok(SeriesVolume {
        volume,
        info,
        files: vec![file.path.clone()],
    })
}

fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
}

/// Builds the volume of one series' classic slices; files that do not fit go to `errors`.
fn build_series(
    group: Vec<DicomFile>,
    opts: &SeriesOptions,
    index_of: &HashMap<&Path, usize>,
    errors: &mut Vec<FileError>,
) -> Result<Option<SeriesVolume>> {
    // the largest set of slices sharing size, orientation and pixel spacing forms the volume
    let key = |f: &DicomFile| {
        (
            f.info.rows,
            f.info.columns,
            f.planes[0].orientation,
            f.in_plane_spacing,
        )
    };
    let mut best: Option<(usize, usize)> = None;
    for (i, f) in group.iter().enumerate() {
        let count = group
            .iter()
            .filter(|g| {
                let (a, b) = (key(f), key(g));
                a.0 == b.0
                    && a.1 == b.1
                    && close(&a.2, &b.2, opts.orientation_tol)
                    && match (a.3, b.3) {
                        (Some(x), Some(y)) => close(&x, &y, 1e-4),
                        (None, None) => true,
                        _ => false,
                    }
            })
            .count();
        if best.is_none_or(|(_, c)| count > c) {
            best = Some((i, count));
        }
    }
    let Some((ref_idx, _)) = best else {
        return Ok(None);
    };
    let reference = key(&group[ref_idx]);
    let mut slices = Vec::new();
    for f in group {
        let k = key(&f);
        let fits = k.0 == reference.0
            && k.1 == reference.1
            && close(&k.2, &reference.2, opts.orientation_tol)
            && match (k.3, reference.3) {
                (Some(x), Some(y)) => close(&x, &y, 1e-4),
                (None, None) => true,
                _ => false,
            };
        if fits {
            slices.push(f);
        } else {
            errors.push(FileError::new(
                &f.path,
                index_of.get(f.path.as_path()).copied(),
                format!(
                    "size {}x{}, orientation {:?} or pixel spacing {:?} differs from the rest of its series ({}x{}, {:?}, {:?}); not stacked",
                    k.1, k.0, k.2, k.3, reference.1, reference.0, reference.2, reference.3
                ),
            ));
        }
    }
    let iop = reference.2;
    let positions: Vec<[f64; 3]> = slices.iter().map(|f| f.planes[0].position).collect();
    let stack = stack_geometry(&positions, &iop);
    // drop duplicates (same position), keeping the first in order
    let n = linalg::vector3(normal(&iop));
    let mut kept: Vec<usize> = Vec::new();
    for &i in &stack.order {
        if let Some(&prev) = kept.last() {
            let d = (linalg::vector3(positions[i]) - linalg::vector3(positions[prev])).dot(&n);
            if d.abs() < opts.duplicate_mm {
                errors.push(FileError::new(
                    &slices[i].path,
                    index_of.get(slices[i].path.as_path()).copied(),
                    format!(
                        "same slice position as {} (duplicate or another echo/time point); skipped",
                        file_label(&slices[prev].path)
                    ),
                ));
                continue;
            }
        }
        kept.push(i);
    }
    let kept_positions: Vec<[f64; 3]> = kept.iter().map(|i| positions[*i]).collect();
    let stack = stack_geometry(&kept_positions, &iop);
    let ordered: Vec<&DicomFile> = stack.order.iter().map(|i| &slices[kept[*i]]).collect();
    let first = ordered[0];
    let [dx, dy] = first.in_plane_spacing.unwrap_or([1.0, 1.0]);
    let dz = if ordered.len() > 1 {
        stack.mean_gap
    } else {
        first
            .info
            .spacing_between_slices
            .or(first.info.slice_thickness)
            .filter(|v| *v > 0.0)
            .unwrap_or(1.0)
    };
    let uneven = is_uneven(&stack.gaps, dz, opts);
    let grid = (uneven && ordered.len() > 2).then(|| even_grid(&stack.gaps));
    if let Some(g) = grid {
        tracing::warn!(
            "series {}: uneven slice gaps {:?} mm (a missing slice?); resampled onto {} slices \
             {:.4} mm apart",
            first.id,
            stack.gaps,
            g.slices,
            g.spacing
        );
    }
    let dz = grid.map_or(dz, |g| g.spacing);
    let lin = [
        [iop[0] * dx, iop[3] * dy, n[0] * dz],
        [iop[1] * dx, iop[4] * dy, n[1] * dz],
        [iop[2] * dx, iop[5] * dy, n[2] * dz],
    ];
    let affine = linalg::affine_from(&lin, first.planes[0].position);
    let (rows, cols) = (first.info.rows as usize, first.info.columns as usize);
    let mut voxels = Vec::with_capacity(rows * cols * ordered.len());
    for f in &ordered {
        // checked by read: pixels decoded, one frame, one sample
        let p = f
            .pixels
            .as_ref()
            .map_err(|e| RadiologyError::InconsistentSeries {
                series: first.id.clone(),
                reason: e.to_string(),
            })?;
        if p.samples != 1 || p.values.len() != rows * cols {
            return Err(RadiologyError::InconsistentSeries {
                series: first.id.clone(),
                reason: format!(
                    "{}: {} samples per pixel, {} values for {rows}x{cols}: not a scalar slice",
                    file_label(&f.path),
                    p.samples,
                    p.values.len()
                ),
            });
        }
        voxels.extend_from_slice(&p.values);
    }
    let (voxels, depth) = match grid {
        Some(g) => (
            resample_slices(&voxels, rows * cols, &stack.gaps, g),
            g.slices,
        ),
        None => (voxels, ordered.len()),
    };
    let volume = Volume::from_affine_lps(
        voxels,
        [cols, rows, depth],
        1,
        &affine,
        first.modality.clone(),
        first.id.clone(),
    )
    .map_err(|e| RadiologyError::InconsistentSeries {
        series: first.id.clone(),
        reason: e.to_string(),
    })?;
    let info = SeriesInfo {
        rows: first.info.rows,
        columns: first.info.columns,
        slices: ordered.len(),
        order_by_position: ordered.iter().map(|f| file_label(&f.path)).collect(),
        uneven_spacing: uneven,
        slice_gaps_mm: stack.gaps.clone(),
        slice_spacing_mm: dz,
        gantry_tilt_deg: stack.tilt_deg,
        image_orientation_patient: iop,
        affine_lps_ijk_to_world: affine,
        multiframe: false,
        resampled_slices: grid.map(|g| g.slices),
        file_errors: Vec::new(),
    };
    Ok(Some(SeriesVolume {
        volume,
        files: ordered.iter().map(|f| f.path.clone()).collect(),
        info,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_orders_by_position_and_measures_tilt() {
        let iop = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        let pos = [[0.0, 0.0, 5.0], [0.0, 0.0, 0.0], [0.0, 0.0, 2.5]];
        let s = stack_geometry(&pos, &iop);
        assert_eq!(s.order, vec![1, 2, 0]);
        assert_eq!(s.gaps, vec![2.5, 2.5]);
        assert_eq!(s.mean_gap, 2.5);
        assert!(s.tilt_deg.abs() < 1e-12);
        // 2.5 mm along z and 2.5*tan(20 deg) along y: 20 degrees of tilt
        let t = 2.5 * 20f64.to_radians().tan();
        let pos = [[0.0, 0.0, 0.0], [0.0, t, 2.5], [0.0, 2.0 * t, 5.0]];
        let s = stack_geometry(&pos, &iop);
        assert!((s.tilt_deg - 20.0).abs() < 1e-9, "{}", s.tilt_deg);
    }

    #[test]
    fn uneven_threshold() {
        let o = SeriesOptions::default();
        assert!(!is_uneven(&[2.5, 2.5, 2.499999999999999], 2.5, &o));
        assert!(is_uneven(&[2.5, 2.5, 3.0], 2.66, &o));
        let abs = SeriesOptions {
            uneven_abs_mm: Some(1.0),
            ..o
        };
        assert!(!is_uneven(&[2.5, 2.5, 3.0], 2.66, &abs));
    }
}
