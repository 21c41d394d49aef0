//! The in-memory volume and the one world convention of this crate.
//!
//! # World convention
//!
//! World coordinates are **LPS+** in millimetres, as in DICOM: +x points to the patient's
//! **L**eft, +y to **P**osterior, +z to **S**uperior. NIfTI (and nibabel) use **RAS+**; the two
//! differ by the sign of x and y, so `affine_ras = diag(-1, -1, 1, 1) · affine_lps`, exactly
//! (see [`Volume::affine_ras`]). Nothing else in the crate converts between the two.
//!
//! # Voxel layout
//!
//! `voxels[i + nx * (j + ny * (k + nz * t))]` with `i` the fastest axis (NIfTI order). For a
//! volume built from DICOM, `i` runs along a row (the column index), `j` down the rows and `k`
//! along the slices in position order.
//!
//! # Geometry
//!
//! `direction[r][c]` is row `r` of a 3x3 matrix whose **column** `c` is the unit world (LPS)
//! direction of voxel axis `c`; `spacing[c]` the step in mm along that axis; `origin` the LPS
//! position of the centre of voxel (0, 0, 0). So `world = direction · diag(spacing) · ijk + origin`.

use crate::error::{RadiologyError, Result};
use crate::linalg::{self, Mat3, Mat4};

/// A scalar 3D (or 3D + frames) image on a regular grid with its position in LPS space.
///
/// Holds nothing that identifies a patient: `id` is a pseudonymous id (see [`crate::privacy`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    /// Voxel values, `i` fastest, then `j`, `k`, then the frame (see module docs).
    pub voxels: Vec<f32>,
    /// Number of voxels along i, j, k.
    pub dims: [usize; 3],
    /// Number of 3D frames (time points / 4th NIfTI dimension); 1 for a plain 3D volume.
    pub frames: usize,
    /// Voxel size along i, j, k in mm (always > 0).
    pub spacing: [f64; 3],
    /// Column `c` = unit LPS direction of voxel axis `c` (see module docs).
    pub direction: [[f64; 3]; 3],
    /// LPS position (mm) of the centre of voxel (0, 0, 0).
    pub origin: [f64; 3],
    /// DICOM modality ("CT", "MR", ...) when known.
    pub modality: Option<String>,
    /// Pseudonymous id (never a patient identifier or an original UID).
    pub id: String,
}

/// Minimum, maximum and mean of the finite voxel values.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IntensityStats {
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

impl IntensityStats {
    /// Statistics of the finite values of `values` (`None` when there are none). The mean is
    /// accumulated in f64.
    pub fn of(values: &[f32]) -> Option<Self> {
        let mut min = f64::INFINITY;
        let mut max = f64::NEG_INFINITY;
        let mut sum = 0.0f64;
        let mut n = 0usize;
        for &v in values {
            if v.is_finite() {
                let v = f64::from(v);
                min = min.min(v);
                max = max.max(v);
                sum += v;
                n += 1;
            }
        }
        (n > 0).then(|| IntensityStats {
            min,
            max,
            mean: sum / n as f64,
        })
    }
}

impl Volume {
    /// Builds a volume and checks that its fields agree (voxel count, positive finite spacing,
    /// finite non-degenerate direction, at least one frame).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        voxels: Vec<f32>,
        dims: [usize; 3],
        frames: usize,
        spacing: [f64; 3],
        direction: [[f64; 3]; 3],
        origin: [f64; 3],
        modality: Option<String>,
        id: String,
    ) -> Result<Self> {
        let v = Volume {
            voxels,
            dims,
            frames,
            spacing,
            direction,
            origin,
            modality,
            id,
        };
        v.validate()?;
        Ok(v)
    }

    /// Builds a volume from a voxel-to-LPS affine: spacing = column norms, direction = the
    /// normalised columns, origin = the translation.
    pub fn from_affine_lps(
        voxels: Vec<f32>,
        dims: [usize; 3],
        frames: usize,
        affine_lps: &[[f64; 4]; 4],
        modality: Option<String>,
        id: String,
    ) -> Result<Self> {
        let lin = linalg::linear_part(affine_lps);
        let mut spacing = [0.0; 3];
        let mut direction = [[0.0; 3]; 3];
        for c in 0..3 {
            let col = lin.column(c);
            let n = col.norm();
            if !(n.is_finite() && n > 0.0) {
                return Err(RadiologyError::InvalidVolume {
                    reason: format!("affine column {c} has zero or non-finite length"),
                });
            }
            spacing[c] = n;
            for r in 0..3 {
                direction[r][c] = col[r] / n;
            }
        }
        let origin = [affine_lps[0][3], affine_lps[1][3], affine_lps[2][3]];
        Volume::new(
            voxels, dims, frames, spacing, direction, origin, modality, id,
        )
    }

    /// Builds a volume from a voxel-to-RAS affine (what NIfTI stores).
    pub fn from_affine_ras(
        voxels: Vec<f32>,
        dims: [usize; 3],
        frames: usize,
        affine_ras: &[[f64; 4]; 4],
        modality: Option<String>,
        id: String,
    ) -> Result<Self> {
        Volume::from_affine_lps(
            voxels,
            dims,
            frames,
            &linalg::flip_xy(affine_ras),
            modality,
            id,
        )
    }

    /// Checks the invariants listed in [`Volume::new`].
    pub fn validate(&self) -> Result<()> {
        let expected = self.voxels_per_frame().checked_mul(self.frames);
        if self.frames == 0 || self.dims.contains(&0) {
            return Err(RadiologyError::InvalidVolume {
                reason: format!("empty grid: dims {:?}, frames {}", self.dims, self.frames),
            });
        }
        if expected != Some(self.voxels.len()) {
            return Err(RadiologyError::InvalidVolume {
                reason: format!(
                    "{} voxels for dims {:?} x {} frames",
                    self.voxels.len(),
                    self.dims,
                    self.frames
                ),
            });
        }
        if self.spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(RadiologyError::InvalidVolume {
                reason: format!(
                    "spacing must be positive and finite, got {:?}",
                    self.spacing
                ),
            });
        }
        if self
            .direction
            .iter()
            .flatten()
            .chain(self.origin.iter())
            .any(|v| !v.is_finite())
        {
            return Err(RadiologyError::InvalidVolume {
                reason: "direction or origin is not finite".into(),
            });
        }
        if linalg::matrix3(&self.direction).determinant().abs() < 1e-6 {
            return Err(RadiologyError::InvalidVolume {
                reason: format!("direction matrix is degenerate: {:?}", self.direction),
            });
        }
        Ok(())
    }

    /// Voxels in one 3D frame.
    pub fn voxels_per_frame(&self) -> usize {
        self.dims[0] * self.dims[1] * self.dims[2]
    }

    /// Index of voxel (i, j, k) of frame `t` in `voxels`, `None` when out of the grid.
    pub fn index(&self, i: usize, j: usize, k: usize, t: usize) -> Option<usize> {
        let [nx, ny, nz] = self.dims;
        (i < nx && j < ny && k < nz && t < self.frames).then(|| i + nx * (j + ny * (k + nz * t)))
    }

    /// Frame `t` as a 3D volume (same geometry, modality and id).
    pub fn frame(&self, t: usize) -> Result<Volume> {
        if t >= self.frames {
            return Err(RadiologyError::InvalidVolume {
                reason: format!("frame {t} out of range (volume has {} frames)", self.frames),
            });
        }
        let n = self.voxels_per_frame();
        Ok(Volume {
            voxels: self.voxels[t * n..(t + 1) * n].to_vec(),
            frames: 1,
            ..self.clone_geometry()
        })
    }

    /// This volume's geometry, modality and id with no voxels (frames 0): a template.
    fn clone_geometry(&self) -> Volume {
        Volume {
            voxels: Vec::new(),
            dims: self.dims,
            frames: 0,
            spacing: self.spacing,
            direction: self.direction,
            origin: self.origin,
            modality: self.modality.clone(),
            id: self.id.clone(),
        }
    }

    /// Voxel-to-LPS affine (mm), rows `[R·diag(spacing) | origin]`.
    pub fn affine_lps(&self) -> [[f64; 4]; 4] {
        let mut lin: Mat3 = [[0.0; 3]; 3];
        for r in 0..3 {
            for c in 0..3 {
                lin[r][c] = self.direction[r][c] * self.spacing[c];
            }
        }
        linalg::affine_from(&lin, self.origin)
    }

    /// Voxel-to-RAS affine (mm) as NIfTI/nibabel use it: [`Volume::affine_lps`] with its first
    /// two rows negated.
    pub fn affine_ras(&self) -> [[f64; 4]; 4] {
        linalg::flip_xy(&self.affine_lps())
    }

    /// LPS position (mm) of a (possibly fractional) voxel index.
    pub fn voxel_to_lps(&self, ijk: [f64; 3]) -> [f64; 3] {
        let a = self.affine_lps();
        let mut out = [0.0; 3];
        for (r, o) in out.iter_mut().enumerate() {
            *o = a[r][0] * ijk[0] + a[r][1] * ijk[1] + a[r][2] * ijk[2] + a[r][3];
        }
        out
    }

    /// Axis codes exactly like nibabel's `aff2axcodes(affine_ras)`: for each voxel axis, the
    /// RAS direction it points **towards** ("R"/"L", "A"/"P", "S"/"I").
    pub fn orientation_code(&self) -> [Option<&'static str>; 3] {
        axcodes(&self.affine_ras())
    }

    /// Min / max / mean of the finite voxel values (all frames).
    pub fn intensity_range(&self) -> Option<IntensityStats> {
        IntensityStats::of(&self.voxels)
    }

    /// Checks that `other` lies on the same voxel grid: same dims and frames, and an affine
    /// equal within `tol_mm` (each entry of the voxel-to-LPS affine).
    pub fn same_grid(&self, other: &Volume, tol_mm: f64) -> Result<()> {
        if self.dims != other.dims {
            return Err(RadiologyError::GridMismatch {
                reason: format!("dims {:?} vs {:?}", self.dims, other.dims),
            });
        }
        if self.frames != other.frames {
            return Err(RadiologyError::GridMismatch {
                reason: format!("frames {} vs {}", self.frames, other.frames),
            });
        }
        let (a, b) = (self.affine_lps(), other.affine_lps());
        let mut worst = (0.0f64, 0, 0);
        for r in 0..3 {
            for c in 0..4 {
                let d = (a[r][c] - b[r][c]).abs();
                if d.is_nan() || d > worst.0 {
                    worst = (d, r, c);
                }
            }
        }
        if worst.0.is_nan() || worst.0 > tol_mm {
            return Err(RadiologyError::GridMismatch {
                reason: format!(
                    "affines differ by {:.3e} mm at [{}][{}] (tolerance {tol_mm:e}): {:?} vs {:?}",
                    worst.0, worst.1, worst.2, a, b
                ),
            });
        }
        Ok(())
    }
}

/// nibabel's `aff2axcodes(aff)` (= `ornt2axcodes(io_orientation(aff))` with labels
/// (L,R), (P,A), (I,S)): for each voxel axis, the RAS world axis it changes most, and the
/// direction it points towards. `None` for an axis with a zero column.
pub fn axcodes(affine_ras: &Mat4) -> [Option<&'static str>; 3] {
    const LABELS: [(&str, &str); 3] = [("L", "R"), ("P", "A"), ("I", "S")];
    let mut rs = linalg::linear_part(affine_ras);
    // normalise columns (zero columns stay zero)
    for mut col in rs.column_iter_mut() {
        let n = col.norm();
        col /= if n == 0.0 { 1.0 } else { n };
    }
    // the closest shear-free matrix (polar decomposition), by the SVD as nibabel does
    let mut r = linalg::polar_orthogonal(&rs).unwrap_or(rs);
    let mut out = [None; 3];
    for (in_ax, code) in out.iter_mut().enumerate() {
        let col = r.column(in_ax);
        if col.iter().all(|v| v.abs() <= 1e-8) {
            // np.allclose(col, 0)
            continue;
        }
        let mut out_ax = 0;
        for k in 1..3 {
            if col[k].abs() > col[out_ax].abs() {
                out_ax = k;
            }
        }
        *code = Some(if col[out_ax] < 0.0 {
            LABELS[out_ax].0
        } else {
            LABELS[out_ax].1
        });
        r.row_mut(out_ax).fill(0.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(direction: [[f64; 3]; 3]) -> Volume {
        Volume::new(
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
            [2, 2, 2],
            1,
            [0.5, 0.7, 2.0],
            direction,
            [10.0, -20.0, 30.0],
            Some("CT".into()),
            "x".into(),
        )
        .unwrap()
    }

    #[test]
    fn identity_lps_is_lps_in_ras_codes() {
        let v = vol([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
        // +i points to the patient's left, +j posterior, +k superior
        assert_eq!(v.orientation_code(), [Some("L"), Some("P"), Some("S")]);
        let ras = v.affine_ras();
        assert_eq!(ras[0][0], -0.5);
        assert_eq!(ras[1][1], -0.7);
        assert_eq!(ras[2][2], 2.0);
        assert_eq!(ras[0][3], -10.0);
        assert_eq!(ras[1][3], 20.0);
        assert_eq!(ras[2][3], 30.0);
    }

    #[test]
    fn axcodes_match_nibabel_examples() {
        // nibabel: aff2axcodes(np.diag([-2, 2, 2, 1])) == ('L', 'A', 'S')
        let a = [
            [-2.0, 0.0, 0.0, 0.0],
            [0.0, 2.0, 0.0, 0.0],
            [0.0, 0.0, 2.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert_eq!(axcodes(&a), [Some("L"), Some("A"), Some("S")]);
        // permuted axes: i -> S, j -> R, k -> P
        let a = [
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, -1.0, 0.0],
            [3.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert_eq!(axcodes(&a), [Some("S"), Some("R"), Some("P")]);
        // a zero column has no code
        let a = [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert_eq!(axcodes(&a), [Some("R"), Some("A"), None]);
    }

    #[test]
    fn affine_roundtrip_and_grid_check() {
        let (s, c) = (0.4f64.sin(), 0.4f64.cos());
        let v = vol([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]);
        let w = Volume::from_affine_lps(
            v.voxels.clone(),
            v.dims,
            1,
            &v.affine_lps(),
            None,
            "y".into(),
        )
        .unwrap();
        v.same_grid(&w, 1e-9).unwrap();
        let w2 = Volume::from_affine_ras(
            v.voxels.clone(),
            v.dims,
            1,
            &v.affine_ras(),
            None,
            "y".into(),
        )
        .unwrap();
        v.same_grid(&w2, 1e-9).unwrap();
        let mut moved = w.clone();
        moved.origin[2] += 0.1;
        let err = v.same_grid(&moved, 1e-3).unwrap_err();
        assert!(err.to_string().contains("affines differ"), "{err}");
        let mut other = w;
        other.dims = [2, 4, 1];
        assert!(matches!(
            v.same_grid(&other, 1.0),
            Err(RadiologyError::GridMismatch { .. })
        ));
    }

    #[test]
    fn bad_volumes_are_errors() {
        let e = Volume::new(
            vec![0.0; 3],
            [2, 2, 1],
            1,
            [1.0; 3],
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            [0.0; 3],
            None,
            "x".into(),
        );
        assert!(matches!(e, Err(RadiologyError::InvalidVolume { .. })));
        let e = Volume::new(
            vec![0.0; 4],
            [2, 2, 1],
            1,
            [0.0, 1.0, 1.0],
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            [0.0; 3],
            None,
            "x".into(),
        );
        assert!(matches!(e, Err(RadiologyError::InvalidVolume { .. })));
    }

    #[test]
    fn stats_skip_nan() {
        let s = IntensityStats::of(&[1.0, f32::NAN, 3.0]).unwrap();
        assert_eq!((s.min, s.max, s.mean), (1.0, 3.0, 2.0));
        assert!(IntensityStats::of(&[f32::NAN]).is_none());
    }
}
