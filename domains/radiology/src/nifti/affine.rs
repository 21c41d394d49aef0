//! NIfTI orientation: qform (quaternion) and sform, chosen exactly as nibabel does.

use super::header::NiftiHeader;
use crate::linalg::{self, Mat3, Mat4};

/// nibabel's `Nifti1Header.get_qform()`: the quaternion affine. `quatern_a` is recomputed as
/// `sqrt(1 - b² - c² - d²)` (0 when that is slightly negative), zooms are `|pixdim[1..4]|`
/// and `qfac = pixdim[0]` (any value other than -1 counts as 1, as nibabel's header fix does).
pub fn qform_affine(h: &NiftiHeader) -> Mat4 {
    let [b, c, d] = h.quatern;
    let w2 = 1.0 - (b * b + c * c + d * d);
    let a = if w2 < 0.0 { 0.0 } else { w2.sqrt() };
    let r = quat2mat([a, b, c, d]);
    let mut zooms = [h.pixdim[1].abs(), h.pixdim[2].abs(), h.pixdim[3].abs()];
    if h.pixdim[0] == -1.0 {
        zooms[2] = -zooms[2];
    }
    let mut m = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            m[i][j] = r[i][j] * zooms[j];
        }
    }
    linalg::affine_from(&m, h.qoffset)
}

/// nibabel's `get_sform()`: the three srow rows.
pub fn sform_affine(h: &NiftiHeader) -> Mat4 {
    [h.srow[0], h.srow[1], h.srow[2], [0.0, 0.0, 0.0, 1.0]]
}

/// nibabel's `get_base_affine()` (`shape_zoom_affine` with the x flip): the affine of an image
/// with neither qform nor sform, centred on the middle voxel.
pub fn base_affine(h: &NiftiHeader) -> Mat4 {
    let mut shape = [1.0f64; 3];
    let mut zooms = [1.0f64; 3];
    let nd = h.dim[0].clamp(0, 3) as usize;
    for i in 0..nd {
        shape[i] = h.dim[i + 1] as f64;
        zooms[i] = h.pixdim[i + 1].abs();
    }
    zooms[0] = -zooms[0];
    let mut m = [[0.0; 3]; 3];
    let mut t = [0.0; 3];
    for i in 0..3 {
        m[i][i] = zooms[i];
        t[i] = -(shape[i] - 1.0) / 2.0 * zooms[i];
    }
    linalg::affine_from(&m, t)
}

/// nibabel's `get_best_affine()`: sform if sform_code != 0, else qform if qform_code != 0,
/// else the base affine.
pub fn best_affine(h: &NiftiHeader) -> Mat4 {
    if h.sform_code != 0 {
        sform_affine(h)
    } else if h.qform_code != 0 {
        qform_affine(h)
    } else {
        base_affine(h)
    }
}

/// Rotation matrix of a quaternion (w, x, y, z), nibabel's `quat2mat`.
pub fn quat2mat(q: [f64; 4]) -> Mat3 {
    let [w, x, y, z] = q;
    let nq = w * w + x * x + y * y + z * z;
    if nq < f64::EPSILON {
        return [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    }
    let s = 2.0 / nq;
    let (xs, ys, zs) = (x * s, y * s, z * s);
    let (wx, wy, wz) = (w * xs, w * ys, w * zs);
    let (xx, xy, xz) = (x * xs, x * ys, x * zs);
    let (yy, yz, zz) = (y * ys, y * zs, z * zs);
    [
        [1.0 - (yy + zz), xy - wz, xz + wy],
        [xy + wz, 1.0 - (xx + zz), yz - wx],
        [xz - wy, yz + wx, 1.0 - (xx + yy)],
    ]
}

/// Quaternion (w, x, y, z) of a rotation matrix with `w >= 0` (nibabel's `mat2quat` up to
/// the sign it also normalises away).
pub fn mat2quat(m: &Mat3) -> [f64; 4] {
    let tr = m[0][0] + m[1][1] + m[2][2];
    let q = if tr > 0.0 {
        let s = (tr + 1.0).sqrt() * 2.0;
        [
            0.25 * s,
            (m[2][1] - m[1][2]) / s,
            (m[0][2] - m[2][0]) / s,
            (m[1][0] - m[0][1]) / s,
        ]
    } else if m[0][0] > m[1][1] && m[0][0] > m[2][2] {
        let s = (1.0 + m[0][0] - m[1][1] - m[2][2]).sqrt() * 2.0;
        [
            (m[2][1] - m[1][2]) / s,
            0.25 * s,
            (m[0][1] + m[1][0]) / s,
            (m[0][2] + m[2][0]) / s,
        ]
    } else if m[1][1] > m[2][2] {
        let s = (1.0 + m[1][1] - m[0][0] - m[2][2]).sqrt() * 2.0;
        [
            (m[0][2] - m[2][0]) / s,
            (m[0][1] + m[1][0]) / s,
            0.25 * s,
            (m[1][2] + m[2][1]) / s,
        ]
    } else {
        let s = (1.0 + m[2][2] - m[0][0] - m[1][1]).sqrt() * 2.0;
        [
            (m[1][0] - m[0][1]) / s,
            (m[0][2] + m[2][0]) / s,
            (m[1][2] + m[2][1]) / s,
            0.25 * s,
        ]
    };
    if q[0] < 0.0 {
        [-q[0], -q[1], -q[2], -q[3]]
    } else {
        q
    }
}

/// The qform fields of a header.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QformFields {
    /// quatern_b, quatern_c, quatern_d.
    pub quatern: [f64; 3],
    /// qoffset_x, qoffset_y, qoffset_z.
    pub qoffset: [f64; 3],
    /// `pixdim[0]`: 1 or -1.
    pub qfac: f64,
    /// pixdim[1..4].
    pub zooms: [f64; 3],
}

/// qform fields for an affine, as nibabel's `set_qform(affine)` computes them. Zooms are the column norms; a left-handed matrix gets
/// `qfac = -1` with its last column negated; shears are stripped by the polar decomposition.
/// `None` for a singular linear part.
pub fn qform_fields(affine: &Mat4) -> Option<QformFields> {
    let mut r = linalg::linear_part(affine);
    let mut zooms = [0.0; 3];
    for (zoom, mut col) in zooms.iter_mut().zip(r.column_iter_mut()) {
        *zoom = col.norm();
        if !(*zoom > 0.0 && zoom.is_finite()) {
            return None;
        }
        col /= *zoom;
    }
    let qfac = if r.determinant() > 0.0 {
        1.0
    } else {
        r.column_mut(2).neg_mut();
        -1.0
    };
    let pr = linalg::polar_orthogonal(&r)?;
    let q = mat2quat(&linalg::rows3(&pr));
    Some(QformFields {
        quatern: [q[1], q[2], q[3]],
        qoffset: [affine[0][3], affine[1][3], affine[2][3]],
        qfac,
        zooms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rot(ax: f64, ay: f64, az: f64) -> Mat3 {
        let rx = [
            [1.0, 0.0, 0.0],
            [0.0, ax.cos(), -ax.sin()],
            [0.0, ax.sin(), ax.cos()],
        ];
        let ry = [
            [ay.cos(), 0.0, ay.sin()],
            [0.0, 1.0, 0.0],
            [-ay.sin(), 0.0, ay.cos()],
        ];
        let rz = [
            [az.cos(), -az.sin(), 0.0],
            [az.sin(), az.cos(), 0.0],
            [0.0, 0.0, 1.0],
        ];
        let mul = |a: &Mat3, b: &Mat3| {
            let mut m = [[0.0; 3]; 3];
            for i in 0..3 {
                for j in 0..3 {
                    m[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
                }
            }
            m
        };
        mul(&rz, &mul(&ry, &rx))
    }

    #[test]
    fn quaternion_roundtrip_including_180_degrees() {
        for angles in [
            (0.0, 0.0, 0.0),
            (0.3, -0.2, 1.1),
            (std::f64::consts::PI, 0.0, 0.0),
            (0.0, std::f64::consts::PI, 0.0),
            (0.0, 0.0, std::f64::consts::PI),
            (2.5, 1.0, -2.9),
        ] {
            let m = rot(angles.0, angles.1, angles.2);
            let q = mat2quat(&m);
            assert!(q[0] >= 0.0);
            let back = quat2mat(q);
            for i in 0..3 {
                for j in 0..3 {
                    assert!((back[i][j] - m[i][j]).abs() < 1e-12, "{angles:?}");
                }
            }
        }
    }

    #[test]
    fn qform_fields_roundtrip_left_handed() {
        // a RAS affine with a flipped axis (left-handed) and anisotropic zooms
        let r = rot(0.2, -0.4, 0.9);
        let zooms = [0.8, 1.25, -3.0];
        let mut m = [[0.0; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] = r[i][j] * zooms[j];
            }
        }
        let a = linalg::affine_from(&m, [1.0, -2.0, 30.0]);
        let QformFields {
            quatern: bcd,
            qoffset: off,
            qfac,
            zooms: z,
        } = qform_fields(&a).unwrap();
        assert_eq!(qfac, -1.0);
        let mut h =
            crate::nifti::header::NiftiHeader::parse(&crate::nifti::write::blank_header_v1())
                .unwrap();
        h.quatern = bcd;
        h.qoffset = off;
        h.pixdim[0] = qfac;
        h.pixdim[1..4].copy_from_slice(&z);
        let back = qform_affine(&h);
        for i in 0..4 {
            for j in 0..4 {
                assert!((back[i][j] - a[i][j]).abs() < 1e-12);
            }
        }
    }
}
