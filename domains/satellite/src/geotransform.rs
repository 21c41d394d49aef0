//! GDAL's affine geotransform: pixel/line to world coordinates.
//!
//! `x = gt[0] + col * gt[1] + row * gt[2]`, `y = gt[3] + col * gt[4] + row * gt[5]`, where
//! (col, row) is a pixel *corner* (GDAL's convention: (0, 0) is the top-left corner of the
//! top-left pixel, whatever the file's PixelIsArea/PixelIsPoint flag).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GeoTransform(pub [f64; 6]);

impl GeoTransform {
    /// World coordinates of the pixel corner (col, row).
    pub fn apply(&self, col: f64, row: f64) -> (f64, f64) {
        let g = &self.0;
        (
            g[0] + col * g[1] + row * g[2],
            g[3] + col * g[4] + row * g[5],
        )
    }

    /// The inverse transform (world -> pixel/line), or None if degenerate.
    pub fn invert(&self) -> Option<GeoTransform> {
        let g = &self.0;
        let det = g[1] * g[5] - g[2] * g[4];
        if det == 0.0 || !det.is_finite() {
            return None;
        }
        let (a, b, c, d) = (g[5] / det, -g[2] / det, -g[4] / det, g[1] / det);
        Some(GeoTransform([
            -(a * g[0] + b * g[3]),
            a,
            b,
            -(c * g[0] + d * g[3]),
            c,
            d,
        ]))
    }

    /// Bounds (min x, min y, max x, max y) of a pixel window, from its four corners.
    pub fn window_bounds(&self, col: f64, row: f64, width: f64, height: f64) -> [f64; 4] {
        let corners = [
            self.apply(col, row),
            self.apply(col + width, row),
            self.apply(col, row + height),
            self.apply(col + width, row + height),
        ];
        let mut b = [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ];
        for (x, y) in corners {
            b[0] = b[0].min(x);
            b[1] = b[1].min(y);
            b[2] = b[2].max(x);
            b[3] = b[3].max(y);
        }
        b
    }

    /// The geotransform of a window starting at (col, row): same pixel size, shifted origin.
    pub fn shifted(&self, col: f64, row: f64) -> GeoTransform {
        let (x, y) = self.apply(col, row);
        let g = self.0;
        GeoTransform([x, g[1], g[2], y, g[4], g[5]])
    }

    /// True for a north-up transform (no rotation terms).
    pub fn is_north_up(&self) -> bool {
        self.0[2] == 0.0 && self.0[4] == 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_round_trips_a_rotated_transform() {
        let gt = GeoTransform([1000.0, 2.0, 0.5, 5000.0, 0.25, -3.0]);
        let inv = gt.invert().unwrap();
        for (c, r) in [(0.0, 0.0), (10.5, 3.25), (-4.0, 100.0)] {
            let (x, y) = gt.apply(c, r);
            let (c2, r2) = inv.apply(x, y);
            assert!((c2 - c).abs() < 1e-9 && (r2 - r).abs() < 1e-9, "{c2} {r2}");
        }
    }

    #[test]
    fn bounds_of_a_north_up_window() {
        let gt = GeoTransform([792988.0, 5.0, 0.0, 2050382.0, 0.0, -5.0]);
        assert_eq!(
            gt.window_bounds(0.0, 0.0, 515.0, 403.0),
            [792988.0, 2048367.0, 795563.0, 2050382.0]
        );
        assert_eq!(gt.shifted(2.0, 1.0).0[0], 792998.0);
        assert_eq!(gt.shifted(2.0, 1.0).0[3], 2050377.0);
    }
}
