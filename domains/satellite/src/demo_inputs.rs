//! Inputs the demo generates where no real file exists: canopy heights aligned with a raster,
//! from its vegetation index. Real canopy-height work takes airborne-lidar heights (a canopy
//! height model) on the imagery's grid; the demo has none, so it derives a stand-in: NDVI
//! (near-infrared vs red) mapped linearly to 0–`max_height` m and smoothed over a few pixels,
//! so that vegetated areas are tall and bare ground is 0 — a target a head can learn from the
//! imagery, written on the imagery's grid with its CRS.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::raster::{Raster, Window};
use crate::writer::{GeoTiffWriter, OutputSpec};

/// Nodata of the heights raster.
pub const HEIGHT_NODATA: f64 = -9999.0;

/// Writes NDVI-derived heights (metres) of `raster` (band `red`, band `nir`, 1-based) to `out`.
pub fn ndvi_heights(
    raster: &Path,
    red: usize,
    nir: usize,
    max_height: f32,
    out: &Path,
) -> Result<PathBuf> {
    let r = Raster::open(raster)?;
    let info = r.info().clone();
    let (w, h) = (info.width, info.height);
    let px = r.read_window(
        &[red, nir],
        Window {
            col: 0,
            row: 0,
            width: w,
            height: h,
        },
    )?;
    let (red_v, nir_v) = px.data.split_at(w * h);
    let ndvi: Vec<f32> = red_v
        .iter()
        .zip(nir_v)
        .zip(&px.valid)
        .map(|((r, n), ok)| {
            if !ok || r + n <= 0.0 {
                f32::NAN
            } else {
                (n - r) / (n + r)
            }
        })
        .collect();
    // NDVI box-smoothed 5 x 5, then its 40th .. 98th percentile -> 0 .. max_height.
    let k = 2isize;
    let mut smooth = vec![f32::NAN; w * h];
    for y in 0..h as isize {
        for x in 0..w as isize {
            let centre = ndvi[y as usize * w + x as usize];
            if centre.is_nan() {
                continue;
            }
            let (mut s, mut c) = (0f32, 0f32);
            for dy in -k..=k {
                for dx in -k..=k {
                    let (yy, xx) = (y + dy, x + dx);
                    if yy < 0 || xx < 0 || yy >= h as isize || xx >= w as isize {
                        continue;
                    }
                    let v = ndvi[yy as usize * w + xx as usize];
                    if !v.is_nan() {
                        s += v;
                        c += 1.0;
                    }
                }
            }
            smooth[y as usize * w + x as usize] = s / c;
        }
    }
    let mut sorted: Vec<f32> = smooth.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f32::total_cmp);
    let q = |p: f64| {
        sorted
            .get(((sorted.len().max(1) - 1) as f64 * p) as usize)
            .copied()
    };
    let (lo, hi) = (q(0.40).unwrap_or(0.0), q(0.98).unwrap_or(1.0));
    let heights: Vec<f32> = smooth
        .iter()
        .map(|v| {
            if v.is_nan() {
                HEIGHT_NODATA as f32
            } else {
                ((v - lo) / (hi - lo).max(1e-6)).clamp(0.0, 1.0) * max_height
            }
        })
        .collect();
    let gt = info.require_geotransform()?;
    let mut writer = GeoTiffWriter::create(
        out,
        OutputSpec {
            width: w,
            height: h,
            bands: 1,
            geotransform: gt,
            crs: info.crs.clone(),
            nodata: HEIGHT_NODATA,
            cog: false,
        },
    )?;
    writer.write_rows(0, h, heights)?;
    writer.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn heights_follow_vegetation_on_the_imagerys_grid() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/satellite/rgbn.tif");
        if !src.is_file() {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "CI needs ../shared"
            );
            eprintln!("skipping: ../shared is not beside the repository");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("heights.tif");
        super::ndvi_heights(&src, 1, 4, 30.0, &out).unwrap();
        let (a, b) = (
            crate::Raster::open(&src).unwrap(),
            crate::Raster::open(&out).unwrap(),
        );
        assert_eq!(a.info().geotransform, b.info().geotransform);
        assert_eq!(
            (a.info().width, a.info().height),
            (b.info().width, b.info().height)
        );
        let all = crate::Window {
            col: 0,
            row: 0,
            width: b.info().width,
            height: b.info().height,
        };
        let h = b.read_window(&[1], all).unwrap().data;
        let (lo, hi) = h
            .iter()
            .filter(|v| **v >= 0.0)
            .fold((f32::MAX, f32::MIN), |(l, u), v| (l.min(*v), u.max(*v)));
        assert!(lo >= 0.0 && hi <= 30.0 && hi - lo > 5.0, "{lo}..{hi}");
    }
}
