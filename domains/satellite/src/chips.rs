//! Chips: square windows of `size` px every `stride` px, the last row/column flush with the
//! raster's edge so every pixel is covered; each chip knows its bounds in world coordinates.

use serde::Serialize;

use crate::error::{Result, SatelliteError};
use crate::geotransform::GeoTransform;
use crate::raster::Window;

/// The chip layout of one raster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChipGrid {
    pub size: usize,
    pub stride: usize,
    pub width: usize,
    pub height: usize,
}

/// One chip: its pixel window and its world bounds (min x, min y, max x, max y).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Chip {
    pub index: usize,
    /// Position in the grid (column, row of chips).
    pub grid_col: usize,
    pub grid_row: usize,
    pub window: Window,
    pub bounds: [f64; 4],
}

/// Chip offsets along one axis: 0, stride, 2·stride, … and a last one flush with the end.
pub fn offsets(length: usize, size: usize, stride: usize) -> Vec<usize> {
    if length <= size {
        return vec![0];
    }
    let last = length - size;
    let mut v: Vec<usize> = (0..last).step_by(stride).collect();
    if v.last() != Some(&last) {
        v.push(last);
    }
    v
}

impl ChipGrid {
    pub fn new(width: usize, height: usize, size: usize, stride: usize) -> Result<ChipGrid> {
        if size == 0 || stride == 0 || stride > size {
            return Err(SatelliteError::invalid(
                std::path::Path::new("chips"),
                format!(
                    "chip size {size} and stride {stride}: both must be ≥ 1 and stride ≤ size \
                     (stride > size would leave pixels uncovered)"
                ),
            ));
        }
        Ok(ChipGrid {
            size,
            stride,
            width,
            height,
        })
    }

    pub fn col_offsets(&self) -> Vec<usize> {
        offsets(self.width, self.size, self.stride)
    }

    pub fn row_offsets(&self) -> Vec<usize> {
        offsets(self.height, self.size, self.stride)
    }

    pub fn len(&self) -> usize {
        self.col_offsets().len() * self.row_offsets().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every chip, row by row (the order the stitcher needs).
    pub fn chips(&self, gt: &GeoTransform) -> Vec<Chip> {
        let cols = self.col_offsets();
        let mut out = Vec::new();
        for (gr, &row) in self.row_offsets().iter().enumerate() {
            for (gc, &col) in cols.iter().enumerate() {
                let (s, index) = (self.size as f64, out.len());
                out.push(Chip {
                    index,
                    grid_col: gc,
                    grid_row: gr,
                    window: Window {
                        col: col as i64,
                        row: row as i64,
                        width: self.size,
                        height: self.size,
                    },
                    bounds: gt.window_bounds(col as f64, row as f64, s, s),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_cover_the_axis_and_end_flush() {
        assert_eq!(offsets(1000, 256, 192), vec![0, 192, 384, 576, 744]);
        assert_eq!(offsets(256, 256, 192), vec![0]);
        assert_eq!(offsets(100, 256, 192), vec![0]);
        assert_eq!(offsets(640, 256, 192), vec![0, 192, 384]);
        for len in [257, 300, 511, 1025] {
            let o = offsets(len, 256, 192);
            assert_eq!(*o.last().unwrap() + 256, len);
            assert!(o.windows(2).all(|w| w[1] > w[0] && w[1] - w[0] <= 192));
        }
    }

    #[test]
    fn chips_carry_world_bounds() {
        let grid = ChipGrid::new(515, 403, 256, 192).unwrap();
        let gt = GeoTransform([792988.0, 5.0, 0.0, 2050382.0, 0.0, -5.0]);
        let chips = grid.chips(&gt);
        // Columns 0, 192, 259 (flush with the edge); rows 0, 147.
        assert_eq!(chips.len(), 6);
        assert_eq!(chips[2].window.col, 515 - 256);
        assert_eq!(chips[3].window.row, 403 - 256);
        assert_eq!(
            chips[0].bounds,
            [792988.0, 2050382.0 - 1280.0, 792988.0 + 1280.0, 2050382.0]
        );
        assert!(ChipGrid::new(10, 10, 8, 9).is_err());
    }
}
