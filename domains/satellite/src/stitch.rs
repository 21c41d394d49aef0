//! Blending per-chip predictions into one raster, streamed.
//!
//! Each chip's prediction is weighted by a smooth window (cosine or Gaussian, never zero inside
//! the chip) and accumulated in f64; a pixel's output is Σ w·p / Σ w. Chips arrive row of chips by
//! row of chips, so once a chip row starting at `y` begins, every raster row above `y` is final:
//! it is normalised, written and dropped. Memory is one chip height of accumulator rows, whatever
//! the raster's size.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::raster::Window;
use crate::writer::GeoTiffWriter;

/// The weight window over a chip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Blend {
    /// sin²(π (i + ½) / size) per axis: a raised cosine that falls towards (not to) zero at the
    /// chip edges.
    Cosine,
    /// exp(−d² / 2σ²) per axis with σ = size / 8 (nnU-Net's importance map).
    Gaussian,
    /// Plain averaging of overlaps.
    Uniform,
}

impl Blend {
    pub fn parse(s: &str) -> Option<Blend> {
        match s {
            "cosine" => Some(Blend::Cosine),
            "gaussian" => Some(Blend::Gaussian),
            "uniform" => Some(Blend::Uniform),
            _ => None,
        }
    }

    /// The 1-D profile; the 2-D weight is the outer product.
    pub fn profile(self, size: usize) -> Vec<f64> {
        let s = size as f64;
        (0..size)
            .map(|i| {
                let t = i as f64 + 0.5;
                match self {
                    Blend::Cosine => (std::f64::consts::PI * t / s).sin().powi(2),
                    Blend::Gaussian => {
                        let sigma = s / 8.0;
                        let d = t - s / 2.0;
                        (-(d * d) / (2.0 * sigma * sigma)).exp().max(1e-6)
                    }
                    Blend::Uniform => 1.0,
                }
            })
            .collect()
    }
}

struct RowAcc {
    /// [channel][col]
    sum: Vec<f64>,
    weight: Vec<f64>,
}

/// Accumulates chips and streams finished rows to the writer.
pub struct Stitcher {
    writer: GeoTiffWriter,
    width: usize,
    height: usize,
    channels: usize,
    nodata: f32,
    profile: Vec<f64>,
    size: usize,
    /// Raster row of `rows[0]`.
    base: usize,
    rows: VecDeque<RowAcc>,
}

impl Stitcher {
    pub fn new(writer: GeoTiffWriter, chip_size: usize, blend: Blend) -> Stitcher {
        let spec = writer.spec().clone();
        Stitcher {
            width: spec.width,
            height: spec.height,
            channels: spec.bands,
            nodata: spec.nodata as f32,
            profile: blend.profile(chip_size),
            size: chip_size,
            base: 0,
            rows: VecDeque::new(),
            writer,
        }
    }

    /// Make sure accumulator rows exist up to raster row `y` (inclusive).
    fn extend_to(&mut self, y: usize) {
        while self.rows.len() <= y - self.base {
            self.rows.push_back(RowAcc {
                sum: vec![0.0; self.channels * self.width],
                weight: vec![0.0; self.width],
            });
        }
    }

    /// Add one chip's prediction `pred[channel][row][col]` (size × size) over `window`; pixels
    /// where `valid` is false (nodata in the input) get no weight.
    pub fn add(&mut self, window: Window, pred: &[f32], valid: &[bool]) {
        let (s, c) = (self.size, self.channels);
        debug_assert_eq!(pred.len(), c * s * s);
        assert!(
            window.row.max(0) as usize >= self.base,
            "chips must arrive in row order"
        );
        for r in 0..s {
            let y = window.row + r as i64;
            if y < 0 || y as usize >= self.height {
                continue;
            }
            self.extend_to(y as usize);
            let (width, profile) = (self.width, &self.profile);
            let wy = profile[r];
            let acc = &mut self.rows[y as usize - self.base];
            for col in 0..s {
                let x = window.col + col as i64;
                if x < 0 || x as usize >= width || !valid[r * s + col] {
                    continue;
                }
                let (x, w) = (x as usize, wy * profile[col]);
                acc.weight[x] += w;
                for ch in 0..c {
                    acc.sum[ch * width + x] += w * pred[(ch * s + r) * s + col] as f64;
                }
            }
        }
    }

    /// Every row above `row` is final: normalise, write and drop it.
    pub fn flush_before(&mut self, row: usize) -> Result<()> {
        let row = row.min(self.height);
        if row <= self.base {
            return Ok(());
        }
        let n = row - self.base;
        let (w, c) = (self.width, self.channels);
        let mut out = vec![self.nodata; c * n * w];
        for r in 0..n {
            if let Some(acc) = self.rows.pop_front() {
                for x in 0..w {
                    let wt = acc.weight[x];
                    if wt > 0.0 {
                        for ch in 0..c {
                            out[(ch * n + r) * w + x] = (acc.sum[ch * w + x] / wt) as f32;
                        }
                    }
                }
            }
        }
        self.writer.write_rows(self.base, n, out)?;
        self.base = row;
        Ok(())
    }

    /// Write the remaining rows and close the file.
    pub fn finish(mut self) -> Result<std::path::PathBuf> {
        self.flush_before(self.height)?;
        self.writer.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_positive_and_symmetric() {
        for blend in [Blend::Cosine, Blend::Gaussian, Blend::Uniform] {
            let p = blend.profile(256);
            assert!(p.iter().all(|&w| w > 0.0), "{blend:?}");
            for i in 0..128 {
                assert!((p[i] - p[255 - i]).abs() < 1e-12);
            }
        }
        let p = Blend::Cosine.profile(4);
        assert!(p[0] < p[1]);
    }
}
