//! 2-D slices of a canonical RAS volume, in the display orientation radiologists use.
//!
//! # Axes (volume reoriented with [`crate::reorient::to_canonical`] to RAS first)
//!
//! | axis       | slices along | slice index | image columns (left -> right) | image rows (top -> bottom) |
//! |------------|--------------|-------------|--------------------------------|-----------------------------|
//! | `axial`    | S (`k`)      | `k`         | patient Right -> Left (`i` decreasing) | Anterior -> Posterior (`j` decreasing) |
//! | `coronal`  | A (`j`)      | `j`         | patient Right -> Left (`i` decreasing) | Superior -> Inferior (`k` decreasing) |
//! | `sagittal` | R (`i`)      | `i`         | Anterior -> Posterior (`j` decreasing) | Superior -> Inferior (`k` decreasing) |
//!
//! So axial slices are seen from the feet with anterior at the top and the patient's right on
//! the image's left, coronal slices from the front, sagittal slices from the patient's left
//! with anterior on the image's left: the conventions of PACS viewers and 3D Slicer.
//! Slice index 0 is the most inferior / posterior / left slice (the canonical grid's order).
//!
//! Every slice knows its world position: the LPS position (mm) of its centre (the centre of
//! its pixel grid, exactly on the slice plane) and the plane's unit normal in LPS, pointing
//! towards increasing slice index (S, A or R).
//!
//! Slices are taken from frame 0 only; select another frame of a 4-D volume first with
//! [`Volume::frame`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{RadiologyError, Result};
use crate::volume::Volume;

/// The direction slices are stacked along (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Axis {
    Axial,
    Coronal,
    Sagittal,
}

impl Axis {
    /// All three, in the order axial, coronal, sagittal.
    pub const ALL: [Axis; 3] = [Axis::Axial, Axis::Coronal, Axis::Sagittal];

    /// The name as parsed and printed.
    pub fn name(self) -> &'static str {
        match self {
            Axis::Axial => "axial",
            Axis::Coronal => "coronal",
            Axis::Sagittal => "sagittal",
        }
    }

    /// The canonical voxel axis slices are stacked along (2 = k, 1 = j, 0 = i).
    pub fn volume_axis(self) -> usize {
        match self {
            Axis::Axial => 2,
            Axis::Coronal => 1,
            Axis::Sagittal => 0,
        }
    }

    /// The canonical voxel axes along image columns and rows.
    pub fn plane_axes(self) -> (usize, usize) {
        match self {
            Axis::Axial => (0, 1),
            Axis::Coronal => (0, 2),
            Axis::Sagittal => (1, 2),
        }
    }

    /// Number of slices of a volume with canonical `dims`.
    pub fn count(self, dims: [usize; 3]) -> usize {
        dims[self.volume_axis()]
    }

    /// (width, height) in pixels of a slice of a volume with canonical `dims`.
    pub fn plane_size(self, dims: [usize; 3]) -> (usize, usize) {
        let (c, r) = self.plane_axes();
        (dims[c], dims[r])
    }

    /// (column step, row step) of the image in mm.
    pub fn pixel_spacing(self, spacing: [f64; 3]) -> [f64; 2] {
        let (c, r) = self.plane_axes();
        [spacing[c], spacing[r]]
    }

    /// Canonical voxel index (continuous) of display position (`col`, `row`) of slice
    /// `index`. Pixel centres are at integer positions; `-0.5` / `width - 0.5` are the edges.
    pub fn voxel_at(self, dims: [usize; 3], index: f64, col: f64, row: f64) -> [f64; 3] {
        let (ca, ra) = self.plane_axes();
        let mut ijk = [0.0; 3];
        ijk[self.volume_axis()] = index;
        // both image axes run against their canonical voxel axis (see the module table)
        ijk[ca] = dims[ca] as f64 - 1.0 - col;
        ijk[ra] = dims[ra] as f64 - 1.0 - row;
        ijk
    }

    /// Integer version of [`Axis::voxel_at`] (position inside the slice).
    pub fn voxel(self, dims: [usize; 3], index: usize, col: usize, row: usize) -> [usize; 3] {
        let (ca, ra) = self.plane_axes();
        let mut ijk = [0; 3];
        ijk[self.volume_axis()] = index;
        ijk[ca] = dims[ca] - 1 - col;
        ijk[ra] = dims[ra] - 1 - row;
        ijk
    }
}

impl fmt::Display for Axis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A string that is not an [`Axis`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown slice axis {0:?}: use axial, coronal or sagittal")]
pub struct ParseAxisError(pub String);

impl FromStr for Axis {
    type Err = ParseAxisError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        Axis::ALL
            .into_iter()
            .find(|a| a.name() == t)
            .ok_or_else(|| ParseAxisError(s.to_string()))
    }
}

/// One slice as a 2-D image (display orientation) with its place in the world.
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    pub axis: Axis,
    /// Index along the canonical slicing axis.
    pub index: usize,
    pub width: usize,
    pub height: usize,
    /// Row-major values, row 0 at the top (`pixels[col + width * row]`), unmapped.
    pub pixels: Vec<f32>,
    /// (column step, row step) in mm.
    pub pixel_spacing: [f64; 2],
    /// LPS position (mm) of the slice centre.
    pub centre_lps: [f64; 3],
    /// Unit plane normal in LPS, towards increasing slice index.
    pub normal_lps: [f64; 3],
}

/// Fails unless `volume` is in canonical RAS orientation.
pub fn check_canonical_ras(volume: &Volume) -> Result<()> {
    let codes = volume.orientation_code();
    if codes != [Some("R"), Some("A"), Some("S")] {
        return Err(RadiologyError::InvalidVolume {
            reason: format!(
                "slices need a canonical RAS volume, this one is {codes:?}; reorient it with to_canonical(.., Canonical::Ras) first"
            ),
        });
    }
    Ok(())
}

/// LPS position of display position (`col`, `row`) of slice `index` (continuous).
pub fn pixel_to_lps(volume: &Volume, axis: Axis, index: f64, col: f64, row: f64) -> [f64; 3] {
    volume.voxel_to_lps(axis.voxel_at(volume.dims, index, col, row))
}

/// LPS position (mm) of the centre of slice `index`.
pub fn slice_centre(volume: &Volume, axis: Axis, index: usize) -> [f64; 3] {
    let (w, h) = axis.plane_size(volume.dims);
    pixel_to_lps(
        volume,
        axis,
        index as f64,
        (w as f64 - 1.0) / 2.0,
        (h as f64 - 1.0) / 2.0,
    )
}

/// Unit LPS normal of the slice plane, towards increasing slice index.
///
/// For an oblique volume this is the slicing axis' direction column (the planes are the grid's
/// planes, which the normal is not exactly perpendicular to only for sheared grids).
pub fn slice_normal(volume: &Volume, axis: Axis) -> [f64; 3] {
    let a = axis.volume_axis();
    [
        volume.direction[0][a],
        volume.direction[1][a],
        volume.direction[2][a],
    ]
}

/// The values of slice `index` of frame 0, in display orientation (unmapped).
pub fn slice_pixels(volume: &Volume, axis: Axis, index: usize) -> Vec<f32> {
    let dims = volume.dims;
    let (w, h) = axis.plane_size(dims);
    let [nx, ny, _] = dims;
    let mut out = Vec::with_capacity(w * h);
    for row in 0..h {
        for col in 0..w {
            let [i, j, k] = axis.voxel(dims, index, col, row);
            out.push(volume.voxels[i + nx * (j + ny * k)]);
        }
    }
    out
}

/// Slice `index` of a canonical RAS volume along `axis`.
pub fn slice(volume: &Volume, axis: Axis, index: usize) -> Result<Slice> {
    check_canonical_ras(volume)?;
    let count = axis.count(volume.dims);
    if index >= count {
        return Err(RadiologyError::InvalidVolume {
            reason: format!("{axis} slice {index} out of range (0..{count})"),
        });
    }
    let (width, height) = axis.plane_size(volume.dims);
    Ok(Slice {
        axis,
        index,
        width,
        height,
        pixels: slice_pixels(volume, axis, index),
        pixel_spacing: axis.pixel_spacing(volume.spacing),
        centre_lps: slice_centre(volume, axis, index),
        normal_lps: slice_normal(volume, axis),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RAS canonical (LPS direction diag(-1, -1, 1)), value = 100 i + 10 j + k.
    fn ras_volume() -> Volume {
        let dims = [4, 3, 2];
        let mut voxels = Vec::new();
        for k in 0..2 {
            for j in 0..3 {
                for i in 0..4 {
                    voxels.push((100 * i + 10 * j + k) as f32);
                }
            }
        }
        Volume::new(
            voxels,
            dims,
            1,
            [0.5, 0.8, 3.0],
            [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
            [10.0, 20.0, -30.0],
            None,
            "v".into(),
        )
        .unwrap()
    }

    #[test]
    fn axial_is_displayed_like_a_radiologist_sees_it() {
        let v = ras_volume();
        let s = slice(&v, Axis::Axial, 1).unwrap();
        assert_eq!((s.width, s.height), (4, 3));
        // top-left pixel: patient's right-most (largest i) and most anterior (largest j)
        assert_eq!(s.pixels[0], 321.0);
        // top-right: patient's left (i = 0), anterior
        assert_eq!(s.pixels[3], 21.0);
        // bottom-left: right, posterior
        assert_eq!(s.pixels[4 * 2], 301.0);
        assert_eq!(s.pixel_spacing, [0.5, 0.8]);
        // image left is patient right: LPS x of column 0 is smaller than of column 3
        let left = pixel_to_lps(&v, Axis::Axial, 1.0, 0.0, 0.0);
        let right = pixel_to_lps(&v, Axis::Axial, 1.0, 3.0, 0.0);
        assert!(left[0] < right[0]);
        // top is anterior: smaller LPS y
        let bottom = pixel_to_lps(&v, Axis::Axial, 1.0, 0.0, 2.0);
        assert!(left[1] < bottom[1]);
        // centre by hand: voxel (1.5, 1, 1) -> LPS (10 - 0.75, 20 - 0.8, -30 + 3)
        let want = [9.25, 19.2, -27.0];
        assert!((0..3).all(|a| (s.centre_lps[a] - want[a]).abs() < 1e-12));
        assert_eq!(s.normal_lps, [0.0, 0.0, 1.0]);
    }

    #[test]
    fn coronal_and_sagittal_have_superior_at_the_top() {
        let v = ras_volume();
        let c = slice(&v, Axis::Coronal, 2).unwrap();
        assert_eq!((c.width, c.height), (4, 2));
        assert_eq!(c.pixels[0], 321.0); // right, superior
        assert_eq!(c.pixels[4], 320.0); // right, inferior
        assert_eq!(c.normal_lps, [0.0, -1.0, 0.0]); // towards anterior
        let s = slice(&v, Axis::Sagittal, 0).unwrap();
        assert_eq!((s.width, s.height), (3, 2));
        assert_eq!(s.pixels[0], 21.0); // anterior, superior
        assert_eq!(s.pixels[2], 1.0); // posterior, superior
        assert_eq!(s.normal_lps, [-1.0, 0.0, 0.0]); // towards the patient's right
        assert_eq!(s.pixel_spacing, [0.8, 3.0]);
        assert!(slice(&v, Axis::Sagittal, 4).is_err());
        assert_eq!("Coronal".parse::<Axis>().unwrap(), Axis::Coronal);
        assert!("oblique".parse::<Axis>().is_err());
    }

    #[test]
    fn non_canonical_volumes_are_refused() {
        let mut v = ras_volume();
        v.direction = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let err = slice(&v, Axis::Axial, 0).unwrap_err();
        assert!(err.to_string().contains("canonical RAS"), "{err}");
    }
}
