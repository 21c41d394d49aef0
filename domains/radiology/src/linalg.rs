//! Small dense 3x3 / 4x4 helpers (row-major `m[row][col]`).

pub(crate) type Mat3 = [[f64; 3]; 3];
pub(crate) type Mat4 = [[f64; 4]; 4];

pub(crate) fn det3(m: &Mat3) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

pub(crate) fn transpose3(m: &Mat3) -> Mat3 {
    let mut t = [[0.0; 3]; 3];
    for (r, row) in m.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            t[c][r] = *v;
        }
    }
    t
}

pub(crate) fn inverse3(m: &Mat3) -> Option<Mat3> {
    let d = det3(m);
    if !d.is_finite() || d.abs() < 1e-300 {
        return None;
    }
    let mut inv = [[0.0; 3]; 3];
    for (r, row) in inv.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            // cofactor of (c, r)
            let (r1, r2) = ((c + 1) % 3, (c + 2) % 3);
            let (c1, c2) = ((r + 1) % 3, (r + 2) % 3);
            *v = (m[r1][c1] * m[r2][c2] - m[r1][c2] * m[r2][c1]) / d;
        }
    }
    Some(inv)
}

pub(crate) fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

pub(crate) fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub(crate) fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

pub(crate) fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

pub(crate) fn column(m: &Mat3, c: usize) -> [f64; 3] {
    [m[0][c], m[1][c], m[2][c]]
}

/// Orthogonal polar factor of a non-singular matrix (the closest orthogonal matrix, what
/// `U @ Vt` of an SVD gives), by the scaled Newton iteration `X <- (X + X^-T) / 2`.
/// Returns `None` for a singular or non-finite matrix.
pub(crate) fn polar_orthogonal(m: &Mat3) -> Option<Mat3> {
    if m.iter().flatten().any(|v| !v.is_finite()) {
        return None;
    }
    let mut x = *m;
    for _ in 0..100 {
        let inv_t = transpose3(&inverse3(&x)?);
        let mut next = [[0.0; 3]; 3];
        let mut delta: f64 = 0.0;
        for r in 0..3 {
            for c in 0..3 {
                next[r][c] = 0.5 * (x[r][c] + inv_t[r][c]);
                delta = delta.max((next[r][c] - x[r][c]).abs());
            }
        }
        x = next;
        if delta < 1e-15 {
            break;
        }
    }
    Some(x)
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
pub(crate) fn linear_part(a: &Mat4) -> Mat3 {
    let mut m = [[0.0; 3]; 3];
    for r in 0..3 {
        m[r].copy_from_slice(&a[r][..3]);
    }
    m
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
        let rot = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]];
        let mut m = rot;
        for row in m.iter_mut() {
            for v in row.iter_mut() {
                *v *= 2.5;
            }
        }
        let p = polar_orthogonal(&m).unwrap();
        for r in 0..3 {
            for c in 0..3 {
                assert!((p[r][c] - rot[r][c]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn inverse_roundtrip() {
        let m = [[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 1.0]];
        let inv = inverse3(&m).unwrap();
        for r in 0..3 {
            for c in 0..3 {
                let v: f64 = (0..3).map(|k| m[r][k] * inv[k][c]).sum();
                assert!((v - if r == c { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        assert!(inverse3(&[[0.0; 3]; 3]).is_none());
    }
}
