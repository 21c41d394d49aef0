//! Per-slice predictions back onto the source grid, written as NIfTI with the source affine.
//!
//! The model saw `size × size` canvases of the canonical RAS volume's slices
//! ([`crate::inputs`]). Each prediction is cut out of its canvas (the [`Fit`] rectangle,
//! padding dropped), resized back to the slice's pixels (nearest for label maps, bilinear for
//! probabilities), put into a volume on the canonical grid, and moved back onto the source
//! grid by the exact inverse of the reorientation (a permutation and flips: no interpolation,
//! geometry copied from the source). The NIfTI file then overlays the original image in
//! ITK-SNAP or 3D Slicer. Slices without a prediction (skipped, or not every `step`-th) are 0.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{RadiologyError, Result};
use crate::inputs::{resize_bilinear, resize_nearest, Fit, InputSpec};
use crate::nifti::{write_nifti, NiftiDatatype, NiftiWriteOptions};
use crate::reorient::{Canonical, Reorientation};
use crate::slices::Axis;
use crate::volume::Volume;

/// One slice's prediction at model resolution: `size × size`, row-major, display orientation.
#[derive(Debug, Clone, PartialEq)]
pub enum SliceValues {
    /// Label map, 8-bit.
    U8(Vec<u8>),
    /// Label map, 16-bit.
    U16(Vec<u16>),
    /// Probability (or any continuous) map.
    F32(Vec<f32>),
}

impl SliceValues {
    fn len(&self) -> usize {
        match self {
            SliceValues::U8(v) => v.len(),
            SliceValues::U16(v) => v.len(),
            SliceValues::F32(v) => v.len(),
        }
    }

    fn kind(&self) -> PredictionKind {
        match self {
            SliceValues::U8(_) => PredictionKind::LabelsU8,
            SliceValues::U16(_) => PredictionKind::LabelsU16,
            SliceValues::F32(_) => PredictionKind::Probabilities,
        }
    }
}

/// What the prediction volume holds (decides the NIfTI datatype and the interpolation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionKind {
    LabelsU8,
    LabelsU16,
    Probabilities,
}

impl PredictionKind {
    /// The NIfTI datatype it is written as.
    pub fn datatype(self) -> NiftiDatatype {
        match self {
            PredictionKind::LabelsU8 => NiftiDatatype::U8,
            PredictionKind::LabelsU16 => NiftiDatatype::U16,
            PredictionKind::Probabilities => NiftiDatatype::F32,
        }
    }
}

/// The prediction for slice `index` (along the canonical axis, as in [`crate::source::SliceRecord`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SlicePrediction {
    pub index: usize,
    pub values: SliceValues,
}

/// `values` (the `fit.size²` canvas) cut to the fit rectangle and resized to `w × h`, as f32.
fn back_to_slice(values: &SliceValues, fit: &Fit, w: usize, h: usize) -> Vec<f32> {
    fn crop<T: Copy>(v: &[T], fit: &Fit) -> Vec<T> {
        let mut out = Vec::with_capacity(fit.w * fit.h);
        for r in 0..fit.h {
            let start = (fit.y0 + r) * fit.size + fit.x0;
            out.extend_from_slice(&v[start..start + fit.w]);
        }
        out
    }
    match values {
        SliceValues::U8(v) => resize_nearest(&crop(v, fit), fit.w, fit.h, w, h)
            .into_iter()
            .map(f32::from)
            .collect(),
        SliceValues::U16(v) => resize_nearest(&crop(v, fit), fit.w, fit.h, w, h)
            .into_iter()
            .map(f32::from)
            .collect(),
        SliceValues::F32(v) => resize_bilinear(&crop(v, fit), fit.w, fit.h, w, h),
    }
}

/// The prediction volume on `source`'s grid (one frame, `source`'s geometry and id, no
/// modality) and what it holds. `axis` and `input` must be those the slices were made with
/// (see [`crate::source::SliceOptions`]).
pub fn predictions_to_source(
    source: &Volume,
    axis: Axis,
    input: &InputSpec,
    predictions: &[SlicePrediction],
) -> Result<(Volume, PredictionKind)> {
    source.validate()?;
    let kind = predictions
        .first()
        .map(|p| p.values.kind())
        .unwrap_or(PredictionKind::LabelsU8);
    let reorientation = Reorientation::to_canonical(source, Canonical::Ras)?;
    let template = Volume {
        voxels: vec![0.0; source.voxels_per_frame()],
        frames: 1,
        modality: None,
        ..source.frame(0)?
    };
    let mut canonical = reorientation.apply(&template)?;
    let dims = canonical.dims;
    let (w, h) = axis.plane_size(dims);
    let fit = Fit::new(
        w,
        h,
        axis.pixel_spacing(canonical.spacing),
        input.size,
        input.keep_aspect,
    );
    let count = axis.count(dims);
    let [nx, ny, _] = dims;
    for p in predictions {
        if p.values.kind() != kind {
            return Err(RadiologyError::InvalidVolume {
                reason: format!(
                    "slice {}: predictions mix {:?} and {:?}; give one kind for every slice",
                    p.index,
                    kind,
                    p.values.kind()
                ),
            });
        }
        if p.index >= count {
            return Err(RadiologyError::InvalidVolume {
                reason: format!(
                    "prediction for {axis} slice {} out of range (0..{count})",
                    p.index
                ),
            });
        }
        if p.values.len() != fit.size * fit.size {
            return Err(RadiologyError::InvalidVolume {
                reason: format!(
                    "prediction for slice {} has {} values, expected {} x {}",
                    p.index,
                    p.values.len(),
                    fit.size,
                    fit.size
                ),
            });
        }
        let pixels = back_to_slice(&p.values, &fit, w, h);
        for row in 0..h {
            for col in 0..w {
                let [i, j, k] = axis.voxel(dims, p.index, col, row);
                canonical.voxels[i + nx * (j + ny * k)] = pixels[col + w * row];
            }
        }
    }
    let back = reorientation.restore(&canonical, source)?;
    Ok((back, kind))
}

/// [`predictions_to_source`], written to `path` (.nii / .nii.gz) with the source affine (both
/// sform and qform, code 1) and the datatype of the predictions (u8 / u16 labels, f32
/// probabilities). Returns the volume written.
pub fn write_predictions(
    path: impl AsRef<Path>,
    source: &Volume,
    axis: Axis,
    input: &InputSpec,
    predictions: &[SlicePrediction],
) -> Result<Volume> {
    let (volume, kind) = predictions_to_source(source, axis, input, predictions)?;
    write_nifti(&volume, path, &NiftiWriteOptions::labels(kind.datatype()))?;
    Ok(volume)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::resize_nearest;
    use crate::reorient::to_canonical;
    use crate::slices::slice_pixels;

    fn source() -> Volume {
        // LPS identity direction (codes L, P, S), non-square pixels
        let dims = [5, 4, 3];
        let n: usize = dims.iter().product();
        Volume::new(
            (0..n).map(|v| (v * 7 % 11) as f32).collect(),
            dims,
            1,
            [0.5, 0.5, 2.0],
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            [3.0, -4.0, 5.0],
            Some("CT".into()),
            "src".into(),
        )
        .unwrap()
    }

    #[test]
    fn thresholded_slices_come_back_voxel_for_voxel() {
        let src = source();
        let canonical = to_canonical(&src, Canonical::Ras).unwrap();
        for axis in Axis::ALL {
            for keep_aspect in [true, false] {
                let input = InputSpec {
                    size: 16,
                    keep_aspect,
                    ..InputSpec::default()
                };
                let (w, h) = axis.plane_size(canonical.dims);
                let fit = Fit::new(w, h, axis.pixel_spacing(canonical.spacing), 16, keep_aspect);
                let preds: Vec<SlicePrediction> = (0..axis.count(canonical.dims))
                    .map(|index| {
                        let labels: Vec<u8> = slice_pixels(&canonical, axis, index)
                            .iter()
                            .map(|v| u8::from(*v > 5.0))
                            .collect();
                        let up = resize_nearest(&labels, w, h, fit.w, fit.h);
                        let mut canvas = vec![0u8; 256];
                        for r in 0..fit.h {
                            let s = (fit.y0 + r) * 16 + fit.x0;
                            canvas[s..s + fit.w].copy_from_slice(&up[r * fit.w..(r + 1) * fit.w]);
                        }
                        SlicePrediction {
                            index,
                            values: SliceValues::U8(canvas),
                        }
                    })
                    .collect();
                let (out, kind) = predictions_to_source(&src, axis, &input, &preds).unwrap();
                assert_eq!(kind, PredictionKind::LabelsU8);
                src.same_grid(&out, 0.0).unwrap();
                let want: Vec<f32> = src.voxels.iter().map(|v| f32::from(*v > 5.0)).collect();
                assert_eq!(out.voxels, want, "{axis} keep_aspect {keep_aspect}");
            }
        }
    }

    #[test]
    fn bad_predictions_are_errors() {
        let src = source();
        let input = InputSpec {
            size: 8,
            ..InputSpec::default()
        };
        let p = |index, values| SlicePrediction { index, values };
        let e = predictions_to_source(
            &src,
            Axis::Axial,
            &input,
            &[p(3, SliceValues::U8(vec![0; 64]))],
        );
        assert!(e.is_err());
        let e = predictions_to_source(
            &src,
            Axis::Axial,
            &input,
            &[p(0, SliceValues::U8(vec![0; 63]))],
        );
        assert!(e.is_err());
        let e = predictions_to_source(
            &src,
            Axis::Axial,
            &input,
            &[
                p(0, SliceValues::U8(vec![0; 64])),
                p(1, SliceValues::F32(vec![0.0; 64])),
            ],
        );
        assert!(e.is_err());
    }
}
