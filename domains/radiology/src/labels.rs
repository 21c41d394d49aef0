//! Label volumes (segmentation masks) as per-slice targets that line up pixel for pixel with the
//! model inputs a [`SliceSource`] renders: the same reorientation, slices, fit rectangle and
//! canvas, resized with nearest neighbour so that class ids stay class ids.

use crate::error::{RadiologyError, Result};
use crate::inputs::resize_nearest;
use crate::resample::{resample_to_grid, Interp};
use crate::slices::slice_pixels;
use crate::source::SliceSource;
use crate::volume::Volume;

/// Whether `a` and `b` share dims and geometry (spacing, direction, origin within 1e-4 mm).
fn same_grid(a: &Volume, b: &Volume) -> bool {
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-4 * (1.0 + x.abs().max(y.abs()));
    a.dims == b.dims
        && (0..3).all(|i| {
            close(a.spacing[i], b.spacing[i])
                && close(a.origin[i], b.origin[i])
                && (0..3).all(|j| close(a.direction[i][j], b.direction[i][j]))
        })
}

/// The `size²` label map of every slice `source` yields (record order), from `labels` given on
/// `image`'s grid (or resampled onto it with nearest neighbour). Pixels outside the fit
/// rectangle (aspect padding) are `ignore`; label values must be whole numbers `0..ignore`.
pub fn label_slices(
    source: &SliceSource,
    image: &Volume,
    labels: &Volume,
    ignore: u8,
) -> Result<Vec<Vec<u8>>> {
    let labels = if labels.frames != 1 {
        return Err(RadiologyError::InvalidVolume {
            reason: format!(
                "a label volume has one frame, this one has {}",
                labels.frames
            ),
        });
    } else if same_grid(image, labels) {
        std::borrow::Cow::Borrowed(labels)
    } else {
        std::borrow::Cow::Owned(resample_to_grid(labels, image, Interp::Nearest)?)
    };
    if let Some(bad) = labels
        .voxels
        .iter()
        .find(|v| v.fract() != 0.0 || **v < 0.0 || **v >= f32::from(ignore))
    {
        return Err(RadiologyError::InvalidVolume {
            reason: format!(
                "label value {bad} is not a class id (whole numbers 0..{}; {ignore} means ignore)",
                ignore - 1
            ),
        });
    }
    let canonical = source.reorientation().apply(&labels)?;
    let axis = source.options().axis;
    let fit = source.fit();
    let (w, h) = axis.plane_size(canonical.dims);
    Ok(source
        .records()
        .iter()
        .map(|r| {
            let values: Vec<u8> = slice_pixels(&canonical, axis, r.slice_index)
                .into_iter()
                .map(|v| v as u8)
                .collect();
            let resized = resize_nearest(&values, w, h, fit.w, fit.h);
            let mut canvas = vec![ignore; fit.size * fit.size];
            for (row, line) in resized.chunks_exact(fit.w).enumerate() {
                let start = (fit.y0 + row) * fit.size + fit.x0;
                canvas[start..start + fit.w].copy_from_slice(line);
            }
            canvas
        })
        .collect())
}

/// [`label_slices`] as per-pixel target values, slice after slice: the class value, NaN where
/// the map is `ignore` (outside the fit rectangle, or ignored in the label volume).
pub fn label_targets(
    source: &SliceSource,
    image: &Volume,
    labels: &Volume,
    ignore: u8,
) -> Result<Vec<f32>> {
    Ok(label_slices(source, image, labels, ignore)?
        .iter()
        .flatten()
        .map(|&v| if v == ignore { f32::NAN } else { f32::from(v) })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::InputSpec;
    use crate::source::SliceOptions;

    fn volume(voxels: Vec<f32>, dims: [usize; 3], spacing: [f64; 3]) -> Volume {
        // LPS direction of an LAS-stored NIfTI-like volume: reorientation is not the identity.
        Volume::new(
            voxels,
            dims,
            1,
            spacing,
            [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
            [0.0; 3],
            None,
            "v".into(),
        )
        .unwrap()
    }

    #[test]
    fn label_slices_line_up_with_the_rendered_image() {
        // Labels constant on 3 x 2 x 1 voxel blocks; the image's intensity is its label, so
        // wherever the bilinear rendering sees one block only, it must equal the label map.
        let dims = [6, 4, 3];
        let mut classes = Vec::new();
        for k in 0..3 {
            for j in 0..4 {
                for i in 0..6 {
                    classes.push((i / 3 + 2 * (j / 2) + k) as f32);
                }
            }
        }
        let image = volume(classes.clone(), dims, [1.0, 1.0, 1.0]);
        let labels = volume(classes, dims, [1.0, 1.0, 1.0]);
        let input = InputSpec {
            size: 24,
            intensity: crate::intensity::Intensity::None,
            mean: [0.0; 3],
            std: [1.0; 3],
            ..InputSpec::default()
        };
        let source = SliceSource::new(
            &image,
            SliceOptions {
                input,
                ..SliceOptions::default()
            },
        )
        .unwrap();
        let maps = label_slices(&source, &image, &labels, 255).unwrap();
        assert_eq!(maps.len(), 3);
        let fit = source.fit();
        assert!(fit.h < 24, "aspect padding is exercised: {fit:?}");
        let (mut agree, mut padding) = (0, 0);
        for (r, map) in source.records().iter().zip(&maps) {
            let rendered = source
                .input()
                .render(source.canonical(), source.options().axis, r.slice_index)
                .unwrap();
            for (i, &label) in map.iter().enumerate() {
                let (x, y) = (i % 24, i / 24);
                let inside =
                    (fit.x0..fit.x0 + fit.w).contains(&x) && (fit.y0..fit.y0 + fit.h).contains(&y);
                if !inside {
                    assert_eq!(label, 255);
                    padding += 1;
                } else if rendered[i].fract() == 0.0 {
                    assert_eq!(f32::from(label), rendered[i], "pixel ({x}, {y})");
                    agree += 1;
                }
            }
        }
        assert!(
            agree > 3 * fit.w * fit.h / 3,
            "{agree} block-interior pixels"
        );
        assert!(padding > 0);
    }

    #[test]
    fn fractional_labels_are_refused() {
        let dims = [2, 2, 2];
        let image = volume(vec![0.0; 8], dims, [1.0; 3]);
        let labels = volume(vec![0.5; 8], dims, [1.0; 3]);
        let source = SliceSource::new(&image, SliceOptions::default()).unwrap();
        let e = label_slices(&source, &image, &labels, 255).unwrap_err();
        assert!(e.to_string().contains("0.5"), "{e}");
    }
}
