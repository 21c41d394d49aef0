//! Resampling: to a target spacing, onto another volume's grid, and centred crop / pad.
//!
//! # Conventions
//!
//! - Values live at **voxel centres**; a volume covers the box from voxel index `-0.5` to
//!   `dims - 0.5` along each axis (its *extent*, `dims · spacing` mm).
//! - [`resample_to_spacing`] keeps the direction and the **extent's centre**: the new shape is
//!   `max(1, round(dims · spacing / new_spacing))` per axis, and new voxel `j` lies at old index
//!   `((j + 0.5) · new + (dims · old - n' · new) / 2) / old - 0.5`. When the extent divides
//!   evenly the two boxes coincide exactly (torch's `align_corners=False`).
//! - Sampling at a position inside the source box but outside the hull of its voxel centres
//!   (the outer half voxel) uses the nearest edge values (clamp); outside the box it gives the
//!   fill value (0 in [`resample_to_grid`]).
//! - [`Interp::Linear`] is trilinear (for images), [`Interp::Nearest`] picks the closest voxel
//!   (for label maps: no new labels appear).

use nalgebra::Vector3;
use serde::{Deserialize, Serialize};

use crate::error::{RadiologyError, Result};
use crate::linalg;
use crate::volume::Volume;

/// How to sample between voxel centres.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interp {
    /// Closest voxel (label maps).
    Nearest,
    /// Trilinear (images).
    Linear,
}

/// Positions closer than this (in voxels) to an integer index count as that index, so that
/// grids that coincide up to rounding sample exactly.
const SNAP: f64 = 1e-6;

/// Value of frame `t` of `v` at continuous voxel index `p`, or `fill` outside the voxel box.
pub(crate) fn sample(v: &Volume, t: usize, p: [f64; 3], interp: Interp, fill: f32) -> f32 {
    let mut q = p;
    for a in 0..3 {
        let n = v.dims[a] as f64;
        if !(q[a] >= -0.5 - SNAP && q[a] <= n - 0.5 + SNAP) {
            return fill;
        }
        let r = q[a].round();
        if (q[a] - r).abs() < SNAP {
            q[a] = r;
        }
        q[a] = q[a].clamp(0.0, n - 1.0);
    }
    let [nx, ny, _] = v.dims;
    let base = t * v.voxels_per_frame();
    let at = |i: usize, j: usize, k: usize| v.voxels[base + i + nx * (j + ny * k)];
    match interp {
        Interp::Nearest => {
            // ties go up (index + 0.5 rounds away from the lower voxel)
            let idx = q.map(|x| (x + 0.5).floor() as usize);
            let idx: [usize; 3] = std::array::from_fn(|a| idx[a].min(v.dims[a] - 1));
            at(idx[0], idx[1], idx[2])
        }
        Interp::Linear => {
            let lo: [usize; 3] = std::array::from_fn(|a| q[a].floor() as usize);
            let hi: [usize; 3] = std::array::from_fn(|a| (lo[a] + 1).min(v.dims[a] - 1));
            let f: [f64; 3] = std::array::from_fn(|a| q[a] - lo[a] as f64);
            let mut acc = 0.0f64;
            for corner in 0..8 {
                let mut w = 1.0;
                let mut idx = [0; 3];
                for a in 0..3 {
                    if corner >> a & 1 == 1 {
                        w *= f[a];
                        idx[a] = hi[a];
                    } else {
                        w *= 1.0 - f[a];
                        idx[a] = lo[a];
                    }
                }
                if w != 0.0 {
                    acc += w * f64::from(at(idx[0], idx[1], idx[2]));
                }
            }
            acc as f32
        }
    }
}

fn check_spacing(spacing: [f64; 3]) -> Result<()> {
    if spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(RadiologyError::InvalidVolume {
            reason: format!("target spacing must be positive and finite, got {spacing:?}"),
        });
    }
    Ok(())
}

/// The shape [`resample_to_spacing`] gives: `max(1, round(dims · spacing / new_spacing))`.
pub fn shape_for_spacing(volume: &Volume, new_spacing: [f64; 3]) -> [usize; 3] {
    std::array::from_fn(|a| {
        let n = (volume.dims[a] as f64 * volume.spacing[a] / new_spacing[a]).round();
        (n as usize).max(1)
    })
}

/// `volume` resampled to `new_spacing` (mm along i, j, k) with the same direction and the same
/// extent centre (see the module docs). All frames are resampled.
pub fn resample_to_spacing(
    volume: &Volume,
    new_spacing: [f64; 3],
    interp: Interp,
) -> Result<Volume> {
    check_spacing(new_spacing)?;
    volume.validate()?;
    let dims = shape_for_spacing(volume, new_spacing);
    // old continuous index of new voxel j: scale[a] * j + offset[a]
    let scale: [f64; 3] = std::array::from_fn(|a| new_spacing[a] / volume.spacing[a]);
    let offset: [f64; 3] = std::array::from_fn(|a| {
        let shift =
            (volume.dims[a] as f64 * volume.spacing[a] - dims[a] as f64 * new_spacing[a]) / 2.0;
        (0.5 * new_spacing[a] + shift) / volume.spacing[a] - 0.5
    });
    let mut voxels = Vec::with_capacity(dims.iter().product::<usize>() * volume.frames);
    for t in 0..volume.frames {
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let p = [
                        scale[0] * i as f64 + offset[0],
                        scale[1] * j as f64 + offset[1],
                        scale[2] * k as f64 + offset[2],
                    ];
                    voxels.push(sample(volume, t, p, interp, 0.0));
                }
            }
        }
    }
    Volume::new(
        voxels,
        dims,
        volume.frames,
        new_spacing,
        volume.direction,
        volume.voxel_to_lps(offset),
        volume.modality.clone(),
        volume.id.clone(),
    )
}

/// `source` sampled at the world positions of the voxel centres of `reference`'s grid (the
/// general case: any direction, spacing, shape). Positions outside `source`'s voxel box get 0.
/// The result has `reference`'s geometry, `source`'s frames, modality and id.
pub fn resample_to_grid(source: &Volume, reference: &Volume, interp: Interp) -> Result<Volume> {
    source.validate()?;
    reference.validate()?;
    let a_src = source.affine_lps();
    let inv =
        linalg::linear_part(&a_src)
            .try_inverse()
            .ok_or_else(|| RadiologyError::InvalidVolume {
                reason: "source affine is singular".into(),
            })?;
    let a_ref = reference.affine_lps();
    // m = A_src^-1 · A_ref (voxel of reference -> voxel of source)
    let m = linalg::rows3(&(inv * linalg::linear_part(&a_ref)));
    let d = Vector3::from_fn(|r, _| a_ref[r][3] - a_src[r][3]);
    let t0: [f64; 3] = (inv * d).into();
    let dims = reference.dims;
    let mut voxels = Vec::with_capacity(dims.iter().product::<usize>() * source.frames);
    for t in 0..source.frames {
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let (x, y, z) = (i as f64, j as f64, k as f64);
                    let p: [f64; 3] =
                        std::array::from_fn(|r| m[r][0] * x + m[r][1] * y + m[r][2] * z + t0[r]);
                    voxels.push(sample(source, t, p, interp, 0.0));
                }
            }
        }
    }
    Volume::new(
        voxels,
        dims,
        source.frames,
        reference.spacing,
        reference.direction,
        reference.origin,
        source.modality.clone(),
        source.id.clone(),
    )
}

/// `volume` cropped and/or padded (with `fill`) to `shape`, centred: along each axis the
/// difference is split in two, the odd voxel going to the **end** (pad after / crop after).
/// The origin moves so that every kept voxel keeps its world position.
pub fn crop_or_pad(volume: &Volume, shape: [usize; 3], fill: f32) -> Result<Volume> {
    if shape.contains(&0) {
        return Err(RadiologyError::InvalidVolume {
            reason: format!("crop/pad to an empty shape {shape:?}"),
        });
    }
    // old index of new voxel 0 along each axis
    let start: [i64; 3] = std::array::from_fn(|a| {
        let (n, m) = (volume.dims[a] as i64, shape[a] as i64);
        if n >= m {
            (n - m) / 2
        } else {
            -((m - n) / 2)
        }
    });
    let [nx, ny, _] = volume.dims;
    let per_frame = volume.voxels_per_frame();
    let mut voxels = Vec::with_capacity(shape.iter().product::<usize>() * volume.frames);
    for t in 0..volume.frames {
        for k in 0..shape[2] {
            for j in 0..shape[1] {
                for i in 0..shape[0] {
                    let o = [
                        i as i64 + start[0],
                        j as i64 + start[1],
                        k as i64 + start[2],
                    ];
                    let inside = (0..3).all(|a| o[a] >= 0 && o[a] < volume.dims[a] as i64);
                    voxels.push(if inside {
                        let (x, y, z) = (o[0] as usize, o[1] as usize, o[2] as usize);
                        volume.voxels[t * per_frame + x + nx * (y + ny * z)]
                    } else {
                        fill
                    });
                }
            }
        }
    }
    Volume::new(
        voxels,
        shape,
        volume.frames,
        volume.spacing,
        volume.direction,
        volume.voxel_to_lps(start.map(|s| s as f64)),
        volume.modality.clone(),
        volume.id.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oblique() -> [[f64; 3]; 3] {
        let (s, c) = (0.3f64.sin(), 0.3f64.cos());
        [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    }

    /// value = 2 x + 3 y - z + 5 in world mm (linear in voxel index too)
    fn ramp_volume(dims: [usize; 3], spacing: [f64; 3]) -> Volume {
        let mut v = Volume::new(
            vec![0.0; dims.iter().product()],
            dims,
            1,
            spacing,
            oblique(),
            [4.0, -3.0, 10.0],
            None,
            "ramp".into(),
        )
        .unwrap();
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let w = v.voxel_to_lps([i as f64, j as f64, k as f64]);
                    let idx = v.index(i, j, k, 0).unwrap();
                    v.voxels[idx] = (2.0 * w[0] + 3.0 * w[1] - w[2] + 5.0) as f32;
                }
            }
        }
        v
    }

    fn world_value(w: [f64; 3]) -> f64 {
        2.0 * w[0] + 3.0 * w[1] - w[2] + 5.0
    }

    #[test]
    fn linear_ramp_is_exact_under_trilinear() {
        let v = ramp_volume([12, 10, 8], [1.0, 1.0, 2.0]);
        // downsampling by 2: every new centre is inside the hull of old centres
        let r = resample_to_spacing(&v, [2.0, 2.0, 4.0], Interp::Linear).unwrap();
        assert_eq!(r.dims, [6, 5, 4]);
        // same extent: the boxes' first corners coincide
        let c_old = v.voxel_to_lps([-0.5; 3]);
        let c_new = r.voxel_to_lps([-0.5; 3]);
        for a in 0..3 {
            assert!((c_old[a] - c_new[a]).abs() < 1e-9);
        }
        for k in 0..4 {
            for j in 0..5 {
                for i in 0..6 {
                    let w = r.voxel_to_lps([i as f64, j as f64, k as f64]);
                    let got = r.voxels[r.index(i, j, k, 0).unwrap()];
                    assert!((f64::from(got) - world_value(w)).abs() < 1e-3, "{got}");
                }
            }
        }
        // upsampling: exact wherever the new centre lies inside the old centres' hull
        let up = resample_to_spacing(&v, [0.5, 0.4, 1.0], Interp::Linear).unwrap();
        assert_eq!(up.dims, [24, 25, 16]);
        let mut checked = 0;
        for k in 0..16 {
            for j in 0..25 {
                for i in 0..24 {
                    let w = up.voxel_to_lps([i as f64, j as f64, k as f64]);
                    let p = [
                        (i as f64 + 0.5) * 0.5 - 0.5,
                        (j as f64 + 0.5) * 0.4 - 0.5,
                        (k as f64 + 0.5) * 0.5 - 0.5,
                    ];
                    let inside = p[0] >= 0.0 && p[0] <= 11.0 && p[1] >= 0.0 && p[1] <= 9.0;
                    if inside && p[2] >= 0.0 && p[2] <= 7.0 {
                        let got = up.voxels[up.index(i, j, k, 0).unwrap()];
                        assert!((f64::from(got) - world_value(w)).abs() < 1e-3);
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 4000, "{checked}");
    }

    #[test]
    fn nearest_keeps_the_label_set() {
        let dims = [9, 7, 5];
        let mut v = ramp_volume(dims, [1.0, 1.3, 2.0]);
        for (n, x) in v.voxels.iter_mut().enumerate() {
            *x = [0.0, 1.0, 4.0, 7.0][(n / 17) % 4];
        }
        for spacing in [[0.7, 0.9, 1.1], [2.5, 2.5, 3.0], [1.0, 1.3, 2.0]] {
            let r = resample_to_spacing(&v, spacing, Interp::Nearest).unwrap();
            let mut labels: Vec<i32> = r.voxels.iter().map(|x| *x as i32).collect();
            labels.sort();
            labels.dedup();
            for l in &labels {
                assert!([0, 1, 4, 7].contains(l), "new label {l}");
            }
            if spacing[0] < 1.0 {
                assert_eq!(labels, [0, 1, 4, 7]);
            }
        }
        // same spacing: nothing changes
        let same = resample_to_spacing(&v, v.spacing, Interp::Nearest).unwrap();
        assert_eq!(same.voxels, v.voxels);
        v.same_grid(&same, 1e-9).unwrap();
    }

    #[test]
    fn resample_to_grid_onto_itself_is_identity() {
        let v = ramp_volume([7, 6, 5], [0.8, 1.2, 2.0]);
        for interp in [Interp::Linear, Interp::Nearest] {
            let r = resample_to_grid(&v, &v, interp).unwrap();
            v.same_grid(&r, 0.0).unwrap();
            for (a, b) in v.voxels.iter().zip(&r.voxels) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
        // onto a shifted grid: the ramp is reproduced where the grids overlap, 0 outside
        let mut shifted = v.clone();
        shifted.origin[2] += 3.0; // 1.5 voxels up
        let r = resample_to_grid(&v, &shifted, Interp::Linear).unwrap();
        let w = shifted.voxel_to_lps([2.0, 3.0, 1.0]);
        let got = r.voxels[r.index(2, 3, 1, 0).unwrap()];
        assert!((f64::from(got) - world_value(w)).abs() < 1e-3);
        assert_eq!(r.voxels[r.index(2, 3, 4, 0).unwrap()], 0.0);
    }

    #[test]
    fn crop_or_pad_keeps_world_positions() {
        let v = ramp_volume([6, 5, 4], [1.0, 1.0, 2.0]);
        let c = crop_or_pad(&v, [3, 8, 4], -1.0).unwrap();
        assert_eq!(c.dims, [3, 8, 4]);
        let mut seen_fill = 0;
        for k in 0..4 {
            for j in 0..8 {
                for i in 0..3 {
                    let x = c.voxels[c.index(i, j, k, 0).unwrap()];
                    if x == -1.0 {
                        seen_fill += 1;
                        continue;
                    }
                    let w = c.voxel_to_lps([i as f64, j as f64, k as f64]);
                    assert!((f64::from(x) - world_value(w)).abs() < 1e-3);
                }
            }
        }
        // 8 - 5 = 3 rows padded: 1 before, 2 after, on 3 x 4 columns/slices
        assert_eq!(seen_fill, 3 * 3 * 4);
        assert_eq!(c.voxels[c.index(0, 0, 0, 0).unwrap()], -1.0);
        assert_ne!(c.voxels[c.index(0, 1, 0, 0).unwrap()], -1.0);
    }
}
