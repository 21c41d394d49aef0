//! Inputs the demo generates where no real annotation exists (`dinoadapt demo`): a label volume
//! and slice labels for one real volume. Real work takes a radiologist's segmentation and
//! per-slice or per-study labels; the demo has none, so it derives stand-ins a head can learn:
//!
//! - **intensity classes**: background (0) and `classes - 1` tissue classes by intensity
//!   quantiles of the foreground (voxels above the volume's Otsu threshold), written as a uint8
//!   NIfTI label map on the source grid (same affine) — what `heads train --task segment
//!   --targets` takes;
//! - **slice positions**: each axial slice labelled by the third of the volume it lies in
//!   (`inferior`, `middle`, `superior`: body-part position, a classic frozen-feature probe),
//!   alternating between the train and val splits, as a labels CSV of `<volume id>:<slice>`
//!   rows (the ids `radiology embed` gives with the same salt) — what `heads train --task
//!   classify --labels csv:` takes on a `radiology embed` store.

use std::path::Path;

use crate::error::{RadiologyError, Result};
use crate::nifti::{read_nifti, write_nifti, NiftiDatatype, NiftiWriteOptions};
use crate::privacy::Pseudonymizer;
use crate::reorient::{to_canonical, Canonical};
use crate::slices::Axis;
use crate::volume::Volume;

/// Otsu's threshold of `values` over 256 bins between their minimum and maximum.
pub fn otsu(values: &[f32]) -> f32 {
    let (lo, hi) = values
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::MAX, f32::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
    if lo >= hi {
        return lo;
    }
    let bins = 256usize;
    let mut hist = vec![0f64; bins];
    let scale = (bins - 1) as f32 / (hi - lo);
    for v in values.iter().filter(|v| v.is_finite()) {
        hist[((v - lo) * scale) as usize] += 1.0;
    }
    let total: f64 = hist.iter().sum();
    let sum_all: f64 = hist.iter().enumerate().map(|(i, c)| i as f64 * c).sum();
    let (mut w0, mut sum0, mut best, mut at) = (0f64, 0f64, -1f64, 0usize);
    for (i, c) in hist.iter().enumerate() {
        w0 += c;
        sum0 += i as f64 * c;
        let w1 = total - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let (m0, m1) = (sum0 / w0, (sum_all - sum0) / w1);
        let between = w0 * w1 * (m0 - m1).powi(2);
        if between > best {
            best = between;
            at = i;
        }
    }
    lo + (at as f32 + 0.5) / scale
}

/// Class of every voxel: 0 below the Otsu threshold, else 1..classes-1 by foreground quantile.
pub fn intensity_classes(volume: &Volume, classes: u8) -> Vec<u8> {
    let t = otsu(&volume.voxels);
    let mut fg: Vec<f32> = volume.voxels.iter().copied().filter(|v| *v > t).collect();
    fg.sort_by(f32::total_cmp);
    let k = classes.max(2) - 1;
    let cuts: Vec<f32> = (1..k)
        .map(|q| fg[(fg.len() * q as usize / k as usize).min(fg.len().saturating_sub(1))])
        .collect();
    volume
        .voxels
        .iter()
        .map(|v| {
            if *v > t {
                1 + cuts.iter().filter(|c| v >= c).count() as u8
            } else {
                0 // below the threshold, or NaN
            }
        })
        .collect()
}

/// Writes the intensity-class label map of the NIfTI `image` to `out` (uint8, same grid).
pub fn write_intensity_labels(image: &Path, classes: u8, out: &Path) -> Result<()> {
    let img = read_nifti(image, &Pseudonymizer::new("demo"))?;
    let labels = intensity_classes(&img.volume, classes);
    let volume = Volume {
        voxels: labels.into_iter().map(f32::from).collect(),
        ..img.volume
    };
    let opts = NiftiWriteOptions {
        datatype: NiftiDatatype::U8,
        xform_code: img.header.sform_code.max(1),
        ..NiftiWriteOptions::default()
    };
    write_nifti(&volume, out, &opts)
}

/// The position label of slice `index` of `count`: which third of the volume it lies in.
pub fn third(index: usize, count: usize) -> &'static str {
    match 3 * index / count.max(1) {
        0 => "inferior",
        1 => "middle",
        _ => "superior",
    }
}

/// A labels CSV (`slice,split,label`) for the axial slices of the NIfTI `image` as `radiology
/// embed` names them with the id salt `salt` (`<volume id>:<slice index>`, every `step`-th
/// slice of the volume reoriented to RAS): each slice's third, even slices for training and
/// odd ones for validation. Returns the number of rows.
pub fn slice_position_labels(image: &Path, salt: &str, step: usize, out: &Path) -> Result<usize> {
    let img = read_nifti(image, &Pseudonymizer::new(salt))?;
    let canonical = to_canonical(&img.volume, Canonical::Ras)?;
    let count = Axis::Axial.count(canonical.dims);
    let mut csv = String::from("slice,split,label\n");
    let mut rows = 0;
    for (k, s) in (0..count).step_by(step.max(1)).enumerate() {
        let split = if k % 2 == 0 { "train" } else { "val" };
        csv.push_str(&format!(
            "{}:{s},{split},{}\n",
            canonical.id,
            third(s, count)
        ));
        rows += 1;
    }
    std::fs::write(out, csv).map_err(|e| RadiologyError::io(out, "writing the slice labels", e))?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otsu_splits_two_populations_and_classes_follow_intensity() {
        let mut v: Vec<f32> = (0..100).map(|i| (i % 10) as f32).collect();
        v.extend((0..100).map(|i| 100.0 + (i % 10) as f32));
        let t = otsu(&v);
        assert!(t > 9.0 && t < 100.0, "{t}");
        let vol = Volume {
            voxels: v,
            dims: [200, 1, 1],
            frames: 1,
            spacing: [1.0; 3],
            direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            origin: [0.0; 3],
            modality: None,
            id: "v".into(),
        };
        let c = intensity_classes(&vol, 3);
        assert!(c[..100].iter().all(|x| *x == 0));
        assert!(c[100..].iter().all(|x| *x == 1 || *x == 2));
        assert!(c[100..].contains(&1) && c[100..].contains(&2));
        assert_eq!(
            [third(0, 9), third(4, 9), third(8, 9)],
            ["inferior", "middle", "superior"]
        );
    }
}
