//! Reorientation to a canonical voxel order by axis permutation and flips only.
//!
//! Like nibabel's `as_closest_canonical` (RAS) or ITK's `DICOMOrientImageFilter` (LPS): each
//! voxel axis is assigned the world axis it changes most (nibabel's `io_orientation`, the same
//! rule as [`crate::axcodes`]), the axes are permuted into world order and flipped where they
//! point the wrong way. No interpolation: voxel values are moved, never changed, and the affine
//! is updated so that every voxel (and every voxel corner) keeps its world position exactly.
//! An oblique volume stays oblique (its direction columns are only permuted / negated); it
//! becomes the *closest* canonical orientation.

use serde::{Deserialize, Serialize};

use crate::error::{RadiologyError, Result};
use crate::volume::Volume;

/// The canonical orientation to reorient to (what `+i`, `+j`, `+k` point towards).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Canonical {
    /// `+i` to the patient's Right, `+j` Anterior, `+k` Superior (nibabel / NIfTI canonical).
    Ras,
    /// `+i` to the patient's Left, `+j` Posterior, `+k` Superior (DICOM / ITK canonical).
    Lps,
}

impl Canonical {
    /// The axis codes of a volume in this orientation (nibabel's `aff2axcodes` letters).
    pub fn axcodes(self) -> [&'static str; 3] {
        match self {
            Canonical::Ras => ["R", "A", "S"],
            Canonical::Lps => ["L", "P", "S"],
        }
    }
}

/// A permutation + flip of voxel axes: output axis `a` is input axis `perm[a]`, read backwards
/// when `flip[a]`. `source_dims` are the input's dims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reorientation {
    pub perm: [usize; 3],
    pub flip: [bool; 3],
    pub source_dims: [usize; 3],
}

impl Reorientation {
    /// The reorientation that takes `volume` to `target`.
    pub fn to_canonical(volume: &Volume, target: Canonical) -> Result<Self> {
        let codes = volume.orientation_code();
        let want = target.axcodes();
        let mut perm = [usize::MAX; 3];
        let mut flip = [false; 3];
        for (input, code) in codes.iter().enumerate() {
            let code = code.ok_or_else(|| RadiologyError::InvalidVolume {
                reason: format!("voxel axis {input} has no orientation (degenerate affine)"),
            })?;
            let (world, positive) = match code {
                "R" => (0, true),
                "L" => (0, false),
                "A" => (1, true),
                "P" => (1, false),
                "S" => (2, true),
                _ => (2, false), // "I"
            };
            let target_positive = want[world] == ["R", "A", "S"][world];
            perm[world] = input;
            flip[world] = positive != target_positive;
        }
        if perm.contains(&usize::MAX) {
            return Err(RadiologyError::InvalidVolume {
                reason: format!("two voxel axes share one world axis: {codes:?}"),
            });
        }
        Ok(Reorientation {
            perm,
            flip,
            source_dims: volume.dims,
        })
    }

    /// Dims after reorientation.
    pub fn target_dims(&self) -> [usize; 3] {
        self.perm.map(|p| self.source_dims[p])
    }

    /// True when nothing moves.
    pub fn is_identity(&self) -> bool {
        self.perm == [0, 1, 2] && self.flip == [false; 3]
    }

    /// The input voxel index of output voxel `out`.
    pub fn source_index(&self, out: [usize; 3]) -> [usize; 3] {
        let mut src = [0; 3];
        for a in 0..3 {
            let p = self.perm[a];
            src[p] = if self.flip[a] {
                self.source_dims[p] - 1 - out[a]
            } else {
                out[a]
            };
        }
        src
    }

    /// The reorientation that undoes this one.
    pub fn inverse(&self) -> Reorientation {
        let mut perm = [0; 3];
        let mut flip = [false; 3];
        for a in 0..3 {
            perm[self.perm[a]] = a;
            flip[self.perm[a]] = self.flip[a];
        }
        Reorientation {
            perm,
            flip,
            source_dims: self.target_dims(),
        }
    }

    /// Moves the voxels of `volume` (all frames) and updates its geometry.
    pub fn apply(&self, volume: &Volume) -> Result<Volume> {
        if volume.dims != self.source_dims {
            return Err(RadiologyError::GridMismatch {
                reason: format!(
                    "reorientation made for dims {:?}, volume has {:?}",
                    self.source_dims, volume.dims
                ),
            });
        }
        let dims = self.target_dims();
        let [nx, ny, nz] = dims;
        let [sx, sy, _] = self.source_dims;
        let per_frame = volume.voxels_per_frame();
        let mut voxels = Vec::with_capacity(volume.voxels.len());
        for t in 0..volume.frames {
            let frame = &volume.voxels[t * per_frame..(t + 1) * per_frame];
            for k in 0..nz {
                for j in 0..ny {
                    for i in 0..nx {
                        let [a, b, c] = self.source_index([i, j, k]);
                        voxels.push(frame[a + sx * (b + sy * c)]);
                    }
                }
            }
        }
        let mut spacing = [0.0; 3];
        let mut direction = [[0.0; 3]; 3];
        for a in 0..3 {
            let p = self.perm[a];
            spacing[a] = volume.spacing[p];
            let sign = if self.flip[a] { -1.0 } else { 1.0 };
            for r in 0..3 {
                direction[r][a] = sign * volume.direction[r][p];
            }
        }
        let corner = self.source_index([0, 0, 0]).map(|v| v as f64);
        let origin = volume.voxel_to_lps(corner);
        Volume::new(
            voxels,
            dims,
            volume.frames,
            spacing,
            direction,
            origin,
            volume.modality.clone(),
            volume.id.clone(),
        )
    }

    /// Takes a volume on the reoriented grid back to the grid of `source` (the volume this
    /// reorientation was made for): voxels moved by [`Reorientation::inverse`], geometry copied
    /// from `source` bit for bit. The result keeps `reoriented`'s frames, modality and id.
    pub fn restore(&self, reoriented: &Volume, source: &Volume) -> Result<Volume> {
        if source.dims != self.source_dims {
            return Err(RadiologyError::GridMismatch {
                reason: format!(
                    "reorientation made for dims {:?}, source has {:?}",
                    self.source_dims, source.dims
                ),
            });
        }
        let mut back = self.inverse().apply(reoriented)?;
        back.spacing = source.spacing;
        back.direction = source.direction;
        back.origin = source.origin;
        Ok(back)
    }
}

/// `volume` in the closest `target` orientation (nibabel's `as_closest_canonical` for
/// [`Canonical::Ras`]); a copy when it already is.
pub fn to_canonical(volume: &Volume, target: Canonical) -> Result<Volume> {
    Reorientation::to_canonical(volume, target)?.apply(volume)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(dims: [usize; 3], frames: usize, direction: [[f64; 3]; 3]) -> Volume {
        let n = dims.iter().product::<usize>() * frames;
        Volume::new(
            (0..n).map(|v| v as f32).collect(),
            dims,
            frames,
            [0.7, 1.1, 2.5],
            direction,
            [-12.0, 30.5, 7.25],
            Some("CT".into()),
            "vol".into(),
        )
        .unwrap()
    }

    fn close(a: [f64; 3], b: [f64; 3]) -> bool {
        a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-9)
    }

    /// Every voxel keeps its value and world position; the box corners stay the same set.
    fn check_exact(src: &Volume, out: &Volume, r: &Reorientation) {
        let [nx, ny, nz] = out.dims;
        for t in 0..src.frames {
            for k in 0..nz {
                for j in 0..ny {
                    for i in 0..nx {
                        let s = r.source_index([i, j, k]);
                        let a = src.index(s[0], s[1], s[2], t).unwrap();
                        let b = out.index(i, j, k, t).unwrap();
                        assert_eq!(src.voxels[a], out.voxels[b]);
                        let ws = src.voxel_to_lps(s.map(|v| v as f64));
                        let wo = out.voxel_to_lps([i, j, k].map(|v| v as f64));
                        assert!(close(ws, wo), "{ws:?} vs {wo:?}");
                    }
                }
            }
        }
        let corners = |v: &Volume| {
            let mut c = Vec::new();
            for bits in 0..8 {
                let ijk: [f64; 3] = std::array::from_fn(|a| {
                    if bits >> a & 1 == 1 {
                        v.dims[a] as f64 - 0.5
                    } else {
                        -0.5
                    }
                });
                c.push(v.voxel_to_lps(ijk));
            }
            c
        };
        let (cs, co) = (corners(src), corners(out));
        for c in &cs {
            assert!(co.iter().any(|d| close(*c, *d)), "corner {c:?} moved");
        }
    }

    #[test]
    fn las_becomes_ras_and_lps_is_lps() {
        // LPS world: +i -> L (x+), +j -> A (-y), +k -> S: codes L, A, S
        let v = ramp(
            [3, 4, 2],
            1,
            [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
        );
        assert_eq!(v.orientation_code(), [Some("L"), Some("A"), Some("S")]);
        let r = Reorientation::to_canonical(&v, Canonical::Ras).unwrap();
        assert_eq!(r.perm, [0, 1, 2]);
        assert_eq!(r.flip, [true, false, false]);
        let ras = r.apply(&v).unwrap();
        assert_eq!(ras.orientation_code(), [Some("R"), Some("A"), Some("S")]);
        check_exact(&v, &ras, &r);
        let lps = to_canonical(&v, Canonical::Lps).unwrap();
        assert_eq!(lps.orientation_code(), [Some("L"), Some("P"), Some("S")]);
    }

    #[test]
    fn permuted_oblique_4d_is_exact_and_restores() {
        // i -> I, j -> mostly R, k -> mostly A (LPS columns), slightly rotated
        let (s, c) = (0.2f64.sin(), 0.2f64.cos());
        let dir = [[0.0, -c, s], [0.0, -s, -c], [-1.0, 0.0, 0.0]];
        let v = ramp([2, 3, 4], 2, dir);
        assert_eq!(v.orientation_code(), [Some("I"), Some("R"), Some("A")]);
        let r = Reorientation::to_canonical(&v, Canonical::Ras).unwrap();
        let ras = r.apply(&v).unwrap();
        assert_eq!(ras.dims, [3, 4, 2]);
        assert_eq!(ras.orientation_code(), [Some("R"), Some("A"), Some("S")]);
        check_exact(&v, &ras, &r);
        let back = r.restore(&ras, &v).unwrap();
        assert_eq!(back, v);
        let inv = r.inverse();
        let again = inv.apply(&ras).unwrap();
        assert_eq!(again.voxels, v.voxels);
        v.same_grid(&again, 1e-9).unwrap();
        // LPS target from the same volume
        let lps = to_canonical(&v, Canonical::Lps).unwrap();
        assert_eq!(lps.orientation_code(), [Some("L"), Some("P"), Some("S")]);
        let rl = Reorientation::to_canonical(&v, Canonical::Lps).unwrap();
        check_exact(&v, &lps, &rl);
    }

    #[test]
    fn canonical_is_identity() {
        let v = ramp(
            [2, 2, 2],
            1,
            [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
        );
        let r = Reorientation::to_canonical(&v, Canonical::Ras).unwrap();
        assert!(r.is_identity());
        assert_eq!(r.apply(&v).unwrap(), v);
    }
}
