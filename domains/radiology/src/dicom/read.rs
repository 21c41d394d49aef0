//! One DICOM file: attributes, geometry and decoded pixels.

use std::path::{Path, PathBuf};

use dicom_core::dictionary::{DataDictionary, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dinoadapt_datasets::dicom_lengths::check_dicom_lengths;
use serde::{Deserialize, Serialize};

use super::attrs::{self, DataSet};
use super::pixels::{self, Pixels, Rescale};
use crate::error::{RadiologyError, Result};
use crate::linalg;
use crate::privacy::Pseudonymizer;
use crate::volume::{IntensityStats, Volume};

/// Attributes of one file as pydicom reports them (top-level values; `None` when absent).
/// Contains no identifying value and no original UID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DicomFileInfo {
    pub rows: u32,
    pub columns: u32,
    /// NumberOfFrames (1 when absent).
    pub frames: u32,
    pub bits_allocated: u16,
    pub bits_stored: Option<u16>,
    pub pixel_representation: Option<u16>,
    pub samples_per_pixel: u16,
    pub photometric: Option<String>,
    /// Transfer syntax UID (a public standard UID, not an instance UID).
    pub transfer_syntax: String,
    pub transfer_syntax_name: String,
    pub sop_class_uid: Option<String>,
    pub image_position_patient: Option<[f64; 3]>,
    pub image_orientation_patient: Option<[f64; 6]>,
    /// PixelSpacing as stored: [row spacing (between rows), column spacing] in mm.
    pub pixel_spacing: Option<[f64; 2]>,
    pub slice_thickness: Option<f64>,
    pub spacing_between_slices: Option<f64>,
    pub rescale_slope: Option<f64>,
    pub rescale_intercept: Option<f64>,
    /// Shape of the pixel array as pydicom gives it: `[frames,] rows, columns[, samples]`.
    pub pixel_shape: Option<Vec<usize>>,
    /// Why the pixels could not be decoded (then no value range is given).
    pub pixel_error: Option<String>,
    /// Enhanced multi-frame object (per-frame functional groups with plane positions).
    pub enhanced: bool,
    /// Voxel (column, row, frame) to LPS mm, when the file has a position and orientation.
    pub affine_lps_ijk_to_world: Option<[[f64; 4]; 4]>,
}

/// The original UIDs, kept only to group and order files; never serialised or printed.
#[derive(Clone, Default, PartialEq)]
pub struct DicomUids {
    pub study: String,
    pub series: String,
    pub frame_of_reference: Option<String>,
}

impl std::fmt::Debug for DicomUids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DicomUids(<redacted>)")
    }
}

/// Position and orientation of one frame (plane) in LPS mm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FramePlane {
    pub position: [f64; 3],
    pub orientation: [f64; 6],
}

/// One DICOM file read into memory.
#[derive(Debug)]
pub struct DicomFile {
    pub path: PathBuf,
    /// Pseudonymous id of the file's series.
    pub id: String,
    pub modality: Option<String>,
    pub info: DicomFileInfo,
    pub uids: DicomUids,
    pub instance_number: Option<i64>,
    /// Geometry of each frame: from per-frame functional groups (enhanced objects), from
    /// GridFrameOffsetVector (RT dose), or the single plane of a classic image. Empty when
    /// the file has no position/orientation.
    pub planes: Vec<FramePlane>,
    /// In-plane spacing [along a row (column step), along a column (row step)] in mm.
    pub in_plane_spacing: Option<[f64; 2]>,
    /// Decoded pixels, or why they could not be decoded.
    pub pixels: Result<Pixels>,
}

fn invalid(path: &Path, e: impl std::error::Error) -> RadiologyError {
    RadiologyError::InvalidDicom {
        path: path.to_path_buf(),
        reason: crate::error::error_chain(&e),
    }
}

/// Opens a DICOM file (with or without the 128-byte preamble).
pub(crate) fn open(path: &Path, until_pixels: bool) -> Result<DefaultDicomObject> {
    let meta =
        std::fs::metadata(path).map_err(|e| RadiologyError::io(path, "cannot open file", e))?;
    if !meta.is_file() {
        return Err(RadiologyError::InvalidDicom {
            path: path.to_path_buf(),
            reason: "not a regular file".into(),
        });
    }
    lengths_fit(path, until_pixels)?;
    let mut opts = OpenFileOptions::new();
    if until_pixels {
        opts = opts.read_until(tags::PIXEL_DATA);
    }
    opts.open_file(path).map_err(|e| invalid(path, e))
}

/// Refuses a file with an element length that runs past its end (of the elements before the
/// pixel data when `until_pixels`), before dicom-rs allocates that length.
pub(crate) fn lengths_fit(path: &Path, until_pixels: bool) -> Result<()> {
    let stop = until_pixels.then_some((tags::PIXEL_DATA.0, tags::PIXEL_DATA.1));
    check_dicom_lengths(path, stop, is_sequence)
        .map_err(|e| RadiologyError::io(path, "cannot read file", e))?
        .map_err(|reason| RadiologyError::InvalidDicom {
            path: path.to_path_buf(),
            reason,
        })
}

/// Whether the standard dictionary gives the tag the sequence VR (for implicit-VR files).
fn is_sequence((group, element): (u16, u16)) -> bool {
    StandardDataDictionary
        .by_tag(Tag(group, element))
        .is_some_and(|e| e.vr == VirtualVr::Exact(VR::SQ))
}

fn rescale_of(ds: &DataSet) -> Option<(f64, f64)> {
    let s = attrs::float(ds, tags::RESCALE_SLOPE);
    let i = attrs::float(ds, tags::RESCALE_INTERCEPT);
    (s.is_some() || i.is_some()).then(|| (s.unwrap_or(1.0), i.unwrap_or(0.0)))
}

/// Reads a file's attributes, geometry and pixels. Fails only when the file cannot be read as
/// DICOM; pixel decoding problems are kept in [`DicomFile::pixels`].
pub fn read_dicom_file(path: impl AsRef<Path>, pseudo: &Pseudonymizer) -> Result<DicomFile> {
    let path = path.as_ref();
    let obj = open(path, false)?;
    let mut file = describe(&obj, path, pseudo)?;
    if file.pixels.is_ok() {
        let rescale = pixel_rescale(&obj, file.info.frames as usize);
        file.pixels = pixels::decode(&obj, path, &rescale);
    }
    if let Ok(p) = &file.pixels {
        let mut shape = Vec::new();
        if p.frames > 1 {
            shape.push(p.frames);
        }
        shape.extend([p.rows, p.columns]);
        if p.samples > 1 {
            shape.push(p.samples);
        }
        file.info.pixel_shape = Some(shape);
    } else if let Err(e) = &file.pixels {
        file.info.pixel_error = Some(e.to_string());
    }
    Ok(file)
}

/// Modality rescale to apply: top level, else shared functional groups, else per frame.
fn pixel_rescale(obj: &DataSet, frames: usize) -> Rescale {
    if let Some((s, i)) = rescale_of(obj) {
        return Rescale::All(s, i);
    }
    let from_group =
        |g: &DataSet| attrs::in_macro(g, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, rescale_of);
    if let Some(shared) = attrs::first_item(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE) {
        if let Some((s, i)) = from_group(shared) {
            return Rescale::All(s, i);
        }
    }
    let per = attrs::items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    if per.len() == frames && per.iter().any(|g| from_group(g).is_some()) {
        return Rescale::PerFrame(
            per.iter()
                .map(|g| from_group(g).unwrap_or((1.0, 0.0)))
                .collect(),
        );
    }
    Rescale::None
}

/// Attributes and geometry (pixels not decoded: `pixels` is `Ok` with no values).
fn describe(obj: &DefaultDicomObject, path: &Path, pseudo: &Pseudonymizer) -> Result<DicomFile> {
    let ds: &DataSet = obj;
    if ds.element_opt(tags::PIXEL_DATA).ok().flatten().is_none()
        && ds
            .element_opt(tags::FLOAT_PIXEL_DATA)
            .ok()
            .flatten()
            .is_none()
        && ds
            .element_opt(tags::DOUBLE_FLOAT_PIXEL_DATA)
            .ok()
            .flatten()
            .is_none()
    {
        return Err(RadiologyError::MissingAttribute {
            path: path.to_path_buf(),
            attribute: "PixelData (not an image)",
        });
    }
    let rows = attrs::uint(ds, tags::ROWS).ok_or(RadiologyError::MissingAttribute {
        path: path.to_path_buf(),
        attribute: "Rows",
    })?;
    let columns = attrs::uint(ds, tags::COLUMNS).ok_or(RadiologyError::MissingAttribute {
        path: path.to_path_buf(),
        attribute: "Columns",
    })?;
    let frames = attrs::uint(ds, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
    let uid = obj.meta().transfer_syntax().to_string();
    let study = attrs::text(ds, tags::STUDY_INSTANCE_UID).unwrap_or_default();
    let series = attrs::text(ds, tags::SERIES_INSTANCE_UID).unwrap_or_default();
    let ipp = attrs::array::<3>(ds, tags::IMAGE_POSITION_PATIENT);
    let iop = attrs::array::<6>(ds, tags::IMAGE_ORIENTATION_PATIENT);
    let pixel_spacing = attrs::array::<2>(ds, tags::PIXEL_SPACING);
    let rescale = (
        attrs::float(ds, tags::RESCALE_SLOPE),
        attrs::float(ds, tags::RESCALE_INTERCEPT),
    );
    let shared = attrs::first_item(ds, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let per_frame = attrs::items(ds, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);

    // geometry
    let group_iop = |g: &DataSet| {
        attrs::in_macro(g, tags::PLANE_ORIENTATION_SEQUENCE, |m| {
            attrs::array::<6>(m, tags::IMAGE_ORIENTATION_PATIENT)
        })
    };
    let group_ipp = |g: &DataSet| {
        attrs::in_macro(g, tags::PLANE_POSITION_SEQUENCE, |m| {
            attrs::array::<3>(m, tags::IMAGE_POSITION_PATIENT)
        })
    };
    let group_measures = |g: &DataSet| attrs::first_item(g, tags::PIXEL_MEASURES_SEQUENCE).cloned();
    let shared_iop = shared.and_then(group_iop);
    let measures = shared
        .and_then(group_measures)
        .or_else(|| per_frame.first().and_then(group_measures));
    let mut planes = Vec::new();
    let mut enhanced = false;
    if !per_frame.is_empty() {
        let per: Vec<Option<FramePlane>> = per_frame
            .iter()
            .map(|g| {
                let position = group_ipp(g).or_else(|| shared.and_then(group_ipp))?;
                let orientation = group_iop(g).or(shared_iop)?;
                Some(FramePlane {
                    position,
                    orientation,
                })
            })
            .collect();
        if per.len() == frames as usize && per.iter().all(Option::is_some) {
            planes = per.into_iter().flatten().collect();
            enhanced = true;
        }
    }
    if planes.is_empty() {
        if let (Some(position), Some(orientation)) = (ipp, iop) {
            let offsets = attrs::floats(ds, tags::GRID_FRAME_OFFSET_VECTOR);
            match offsets {
                Some(off) if frames > 1 && off.len() == frames as usize => {
                    let n = normal(&orientation);
                    planes = off
                        .iter()
                        .map(|o| {
                            let d = o - off[0];
                            FramePlane {
                                position: [
                                    position[0] + d * n[0],
                                    position[1] + d * n[1],
                                    position[2] + d * n[2],
                                ],
                                orientation,
                            }
                        })
                        .collect();
                }
                _ => {
                    planes = vec![FramePlane {
                        position,
                        orientation,
                    }]
                }
            }
        }
    }
    let in_plane = pixel_spacing
        .or_else(|| {
            measures
                .as_ref()
                .and_then(|m| attrs::array::<2>(m, tags::PIXEL_SPACING))
        })
        .or_else(|| attrs::array::<2>(ds, tags::IMAGER_PIXEL_SPACING))
        .map(|[row_step, col_step]| [col_step, row_step]);
    let thickness = attrs::float(ds, tags::SLICE_THICKNESS);
    let between = attrs::float(ds, tags::SPACING_BETWEEN_SLICES).or_else(|| {
        measures
            .as_ref()
            .and_then(|m| attrs::float(m, tags::SPACING_BETWEEN_SLICES))
    });

    let info = DicomFileInfo {
        rows,
        columns,
        frames,
        bits_allocated: attrs::uint(ds, tags::BITS_ALLOCATED).unwrap_or(0) as u16,
        bits_stored: attrs::uint(ds, tags::BITS_STORED).map(|v| v as u16),
        pixel_representation: attrs::uint(ds, tags::PIXEL_REPRESENTATION).map(|v| v as u16),
        samples_per_pixel: attrs::uint(ds, tags::SAMPLES_PER_PIXEL).unwrap_or(1) as u16,
        photometric: attrs::text(ds, tags::PHOTOMETRIC_INTERPRETATION),
        transfer_syntax_name: pixels::transfer_syntax_name(&uid),
        transfer_syntax: uid,
        sop_class_uid: attrs::text(ds, tags::SOP_CLASS_UID),
        image_position_patient: ipp,
        image_orientation_patient: iop,
        pixel_spacing,
        slice_thickness: thickness,
        spacing_between_slices: between,
        rescale_slope: rescale.0,
        rescale_intercept: rescale.1,
        pixel_shape: None,
        pixel_error: None,
        enhanced,
        affine_lps_ijk_to_world: None,
    };
    let mut file = DicomFile {
        path: path.to_path_buf(),
        id: pseudo.series_id(&study, &series),
        modality: attrs::text(ds, tags::MODALITY),
        info,
        uids: DicomUids {
            study,
            series,
            frame_of_reference: attrs::text(ds, tags::FRAME_OF_REFERENCE_UID),
        },
        instance_number: attrs::float(ds, tags::INSTANCE_NUMBER).map(|v| v as i64),
        planes,
        in_plane_spacing: in_plane,
        pixels: Ok(Pixels {
            values: Vec::new(),
            frames: 0,
            rows: 0,
            columns: 0,
            samples: 0,
        }),
    };
    file.info.affine_lps_ijk_to_world = file.geometry().ok().map(|g| g.affine);
    Ok(file)
}

/// Unit normal of an ImageOrientationPatient: row cosine x column cosine.
pub fn normal(iop: &[f64; 6]) -> [f64; 3] {
    let row = linalg::vector3([iop[0], iop[1], iop[2]]);
    let n = row.cross(&linalg::vector3([iop[3], iop[4], iop[5]]));
    n.try_normalize(0.0).unwrap_or(n).into()
}

/// Grid of a file's frames.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FileGeometry {
    pub affine: [[f64; 4]; 4],
    /// Frames are positions along the normal (else they are time points / a cine).
    pub spatial_frames: bool,
}

impl DicomFile {
    /// The voxel-to-LPS affine of this file (frames along the normal when the file gives
    /// per-frame positions), or an error when it has no position/orientation.
    pub(crate) fn geometry(&self) -> Result<FileGeometry> {
        let first = self
            .planes
            .first()
            .ok_or_else(|| RadiologyError::MissingAttribute {
                path: self.path.clone(),
                attribute: "ImagePositionPatient / ImageOrientationPatient",
            })?;
        let [dx, dy] = self.in_plane_spacing.unwrap_or([1.0, 1.0]);
        let o = first.orientation;
        let n = normal(&o);
        let (dz, spatial) = if self.planes.len() > 1 {
            let stack = super::series::stack_geometry(
                &self.planes.iter().map(|p| p.position).collect::<Vec<_>>(),
                &o,
            );
            (stack.mean_gap, true)
        } else {
            let z = self
                .info
                .spacing_between_slices
                .or(self.info.slice_thickness)
                .filter(|v| *v > 0.0)
                .unwrap_or(1.0);
            (z, false)
        };
        let origin = if spatial {
            // the stack's first plane along the normal
            let mut ps: Vec<[f64; 3]> = self.planes.iter().map(|p| p.position).collect();
            let along = |p: &[f64; 3]| linalg::vector3(*p).dot(&linalg::vector3(n));
            ps.sort_by(|a, b| along(a).total_cmp(&along(b)));
            ps[0]
        } else {
            first.position
        };
        let lin = [
            [o[0] * dx, o[3] * dy, n[0] * dz],
            [o[1] * dx, o[4] * dy, n[1] * dz],
            [o[2] * dx, o[5] * dy, n[2] * dz],
        ];
        Ok(FileGeometry {
            affine: linalg::affine_from(&lin, origin),
            spatial_frames: spatial,
        })
    }

    /// Value range of the decoded samples (all frames and samples).
    pub fn stats(&self) -> Option<IntensityStats> {
        self.pixels
            .as_ref()
            .ok()
            .and_then(|p| IntensityStats::of(&p.values))
    }

    /// The file as a volume: i = column, j = row, k = frame in position order when the frames
    /// are planes (enhanced objects, RT dose), otherwise frames become [`Volume::frames`].
    /// Without position/orientation the grid is axis-aligned at the origin with the pixel
    /// spacing (1 mm when unknown). Colour images (SamplesPerPixel > 1) are an error.
    pub fn to_volume(&self) -> Result<Volume> {
        let p = self
            .pixels
            .as_ref()
            .map_err(|e| RadiologyError::PixelData {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        if p.samples != 1 {
            return Err(RadiologyError::PixelData {
                path: self.path.clone(),
                reason: format!(
                    "{} samples per pixel ({}): a colour image is not a scalar volume",
                    p.samples,
                    self.info.photometric.as_deref().unwrap_or("?")
                ),
            });
        }
        let (affine, spatial) = match self.geometry() {
            Ok(g) => (g.affine, g.spatial_frames),
            Err(_) => {
                let [dx, dy] = self.in_plane_spacing.unwrap_or([1.0, 1.0]);
                let lin = [[dx, 0.0, 0.0], [0.0, dy, 0.0], [0.0, 0.0, 1.0]];
                (linalg::affine_from(&lin, [0.0; 3]), false)
            }
        };
        let plane = p.rows * p.columns;
        let (dims, frames, voxels) = if spatial {
            // reorder frames by position along the normal
            let n = linalg::vector3(normal(&self.planes[0].orientation));
            let mut order: Vec<usize> = (0..p.frames).collect();
            let along = |f: usize| linalg::vector3(self.planes[f].position).dot(&n);
            order.sort_by(|a, b| along(*a).total_cmp(&along(*b)));
            let mut v = Vec::with_capacity(p.values.len());
            for f in order {
                v.extend_from_slice(&p.values[f * plane..(f + 1) * plane]);
            }
            ([p.columns, p.rows, p.frames], 1, v)
        } else {
            ([p.columns, p.rows, 1], p.frames, p.values.clone())
        };
        Volume::from_affine_lps(
            voxels,
            dims,
            frames,
            &affine,
            self.modality.clone(),
            self.id.clone(),
        )
        .map_err(|e| RadiologyError::PixelData {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }
}
