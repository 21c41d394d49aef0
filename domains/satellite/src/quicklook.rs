//! A quick-look PNG of one band of a raster, for reports and eyes: decimated to at most
//! [`QUICKLOOK_SIDE`] px on its longer side (GDAL's nearest overview read), values mapped
//! linearly from the band's 2nd to 98th percentile (or a given range) onto the viridis colour
//! map, nodata and NaN in black, with a colour bar and its range in the file name's caption
//! left to the reader (the range is returned).

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::error::{Result, SatelliteError};
use crate::raster::Raster;

/// The longer side of a quick look, in pixels.
pub const QUICKLOOK_SIDE: usize = 512;

/// Viridis at 9 stops (matplotlib's), interpolated linearly.
const VIRIDIS: [[f32; 3]; 9] = [
    [68.0, 1.0, 84.0],
    [71.0, 44.0, 122.0],
    [59.0, 81.0, 139.0],
    [44.0, 113.0, 142.0],
    [33.0, 144.0, 141.0],
    [39.0, 173.0, 129.0],
    [92.0, 200.0, 99.0],
    [170.0, 220.0, 50.0],
    [253.0, 231.0, 37.0],
];

/// The viridis colour of `t` in [0, 1].
pub fn viridis(t: f32) -> Rgb<u8> {
    let x = t.clamp(0.0, 1.0) * (VIRIDIS.len() - 1) as f32;
    let i = (x.floor() as usize).min(VIRIDIS.len() - 2);
    let f = x - i as f32;
    let c = |k: usize| (VIRIDIS[i][k] + f * (VIRIDIS[i + 1][k] - VIRIDIS[i][k])).round() as u8;
    Rgb([c(0), c(1), c(2)])
}

/// Writes the quick look of band `band` (1-based) of `raster` to `png`, over `range` or the
/// band's 2nd–98th percentiles; returns the range used.
pub fn write_quicklook(
    raster: &Path,
    band: usize,
    range: Option<(f32, f32)>,
    png: &Path,
) -> Result<(f32, f32)> {
    let r = Raster::open(raster)?;
    let info = r.info();
    let f = (info.width.max(info.height) as f64 / QUICKLOOK_SIDE as f64)
        .ceil()
        .max(1.0) as usize;
    let (w, h) = (info.width.div_ceil(f), info.height.div_ceil(f));
    let b = r
        .dataset()
        .rasterband(band)
        .map_err(SatelliteError::gdal(raster, format!("band {band}")))?;
    let mut v = vec![0f32; w * h];
    b.read_into_slice::<f32>((0, 0), (info.width, info.height), (w, h), &mut v, None)
        .map_err(SatelliteError::gdal(raster, "quick-look read"))?;
    let nodata = info.nodata[band - 1].map(|x| x as f32);
    let valid = |x: &f32| x.is_finite() && Some(*x) != nodata;
    let (lo, hi) = range.unwrap_or_else(|| {
        let mut s: Vec<f32> = v.iter().copied().filter(valid).collect();
        s.sort_by(f32::total_cmp);
        if s.is_empty() {
            return (0.0, 1.0);
        }
        let q = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize];
        (q(0.02), q(0.98))
    });
    let span = (hi - lo).max(1e-12);
    let img = RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let a = v[y as usize * w + x as usize];
        if valid(&a) {
            viridis((a - lo) / span)
        } else {
            Rgb([0, 0, 0])
        }
    });
    let io = |e: image::ImageError| SatelliteError::invalid(png, format!("writing the PNG: {e}"));
    img.save(png).map_err(io)?;
    Ok((lo, hi))
}

/// The quick look of a prediction (`<output>.png`, band 1 over `range` or its 2nd–98th
/// percentiles) and its run report (`<output>.report.html`): the output, the throughput and
/// the picture. Returns the report's path.
pub fn write_prediction_report(
    s: &crate::predict::PredictSummary,
    range: Option<(f32, f32)>,
) -> Result<std::path::PathBuf> {
    use dinoadapt_datasets::report::{Report, Section};
    let png = s.output.with_extension("png");
    let (lo, hi) = write_quicklook(&s.output, 1, range, &png)?;
    let page = s.output.with_extension("report.html");
    Report::new("satellite prediction")
        .fact("output", s.output.display())
        .fact(
            "chips (all-nodata skipped)",
            format!("{} ({})", s.chips, s.chips_skipped_nodata),
        )
        .fact("megapixels", format!("{:.2}", s.megapixels))
        .fact(
            "throughput",
            format!("{:.2} Mpx/s", s.megapixels / s.seconds.max(1e-9)),
        )
        .section(Section::new("Prediction").image(format!("band 1, {lo:.3} .. {hi:.3}"), &png))
        .write(&page)
        .map_err(|e| SatelliteError::invalid(&page, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_runs_from_purple_to_yellow() {
        assert_eq!(viridis(0.0), Rgb([68, 1, 84]));
        assert_eq!(viridis(1.0), Rgb([253, 231, 37]));
        assert_eq!(viridis(-3.0), viridis(0.0));
    }
}
