//! The row-major `m[row][col]` arrays the volume types store, seen as nalgebra matrices, and the
//! affine pieces built from them.

use nalgebra::{Matrix3, Vector3};

pub(crate) type Mat3 = [[f64; 3]; 3];
pub(crate) type Mat4 = [[f64; 4]; 4];

/// A row-major 3x3 array as a matrix.
pub(crate) fn matrix3(m: &Mat3) -> Matrix3<f64> {
    Matrix3::from_fn(|r, c| m[r][c])
}

/// A matrix as a row-major 3x3 array.
pub(crate) fn rows3(m: &Matrix3<f64>) -> Mat3 {
    std::array::from_fn(|r| std::array::from_fn(|c| m[(r, c)]))
}

/// A point or direction as a vector.
pub(crate) fn vector3(v: [f64; 3]) -> Vector3<f64> {
    Vector3::from(v)
}

/// Orthogonal polar factor of a non-singular matrix (the closest orthogonal matrix): `U Vᵀ`
/// of its SVD. `None` for a singular or non-finite matrix.
pub(crate) fn polar_orthogonal(m: &Matrix3<f64>) -> Option<Matrix3<f64>> {
    let det = m.determinant();
    if !det.is_finite() || det.abs() < 1e-300 {
        return None;
    }
    let svd = m.svd(true, true);
    Some(svd.u? * svd.v_t?)
}

/// 4x4 affine from a 3x3 linear part and a translation.
pub(crate) fn affine_from(linear: &Mat3, translation: [f64; 3]) -> Mat4 {
    let mut a = [[0.0; 4]; 4];
    for r in 0..3 {
        a[r][..3].copy_from_slice(&linear[r]);
        a[r][3] = translation[r];
    }
    a[3][3] = 1.0;
    a
}

/// Linear part of a 4x4 affine.
pub(crate) fn linear_part(a: &Mat4) -> Matrix3<f64> {
    Matrix3::from_fn(|r, c| a[r][c])
}

/// LPS <-> RAS: negate the first two rows (a self-inverse map).
pub(crate) fn flip_xy(a: &Mat4) -> Mat4 {
    let mut out = *a;
    for row in out.iter_mut().take(2) {
        for v in row.iter_mut() {
            *v = -*v;
            if *v == 0.0 {
                *v = 0.0; // no negative zeros in reports
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polar_of_rotation_times_scale_is_rotation() {
        let (s, c) = (0.3f64.sin(), 0.3f64.cos());
        let rot = Matrix3::new(c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0);
        let p = polar_orthogonal(&(rot * 2.5)).unwrap();
        assert!((p - rot).abs().max() < 1e-12);
        assert!(polar_orthogonal(&Matrix3::zeros()).is_none());
    }

    #[test]
    fn row_major_arrays_round_trip() {
        let m = [[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 1.0]];
        assert_eq!(matrix3(&m)[(0, 1)], 1.0);
        assert_eq!(rows3(&matrix3(&m)), m);
        let a = affine_from(&m, [4.0, 5.0, 6.0]);
        assert_eq!(linear_part(&a), matrix3(&m));
        assert_eq!(flip_xy(&flip_xy(&a)), a);
    }
}
