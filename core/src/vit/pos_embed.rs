//! Resampling of the learned position embedding to another patch grid, exactly as the reference
//! implementations do it (PyTorch `F.interpolate(mode="bicubic", align_corners=False)` with and
//! without `antialias`, by size or by the official DINOv2 `+0.1` scale factor).
//!
//! This runs on the host, once per grid size, on a (M*M, D) table: it is tiny next to a forward
//! pass, and doing it here lets us mirror PyTorch's float32 arithmetic term by term.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

/// How the position-embedding grid is resampled to a new grid size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum PosEmbedInterpolation {
    /// Official DINOv2 hub models without registers: `scale_factor=((h+offset)/M, (w+offset)/M)`,
    /// bicubic (a = -0.75), no antialias.
    OffsetBicubic { offset: f64 },
    /// Hugging Face `Dinov2Model` (transformers 5.x): `size=(h, w)`, bicubic, no antialias.
    Bicubic,
    /// Official `*_reg` models, HF `Dinov2WithRegistersModel`, timm `resample_abs_pos_embed`:
    /// `size=(h, w)`, antialiased bicubic (a = -0.5, PIL-style support).
    BicubicAntialias,
}

impl PosEmbedInterpolation {
    pub fn name(&self) -> &'static str {
        match self {
            PosEmbedInterpolation::OffsetBicubic { .. } => "offset-bicubic",
            PosEmbedInterpolation::Bicubic => "bicubic",
            PosEmbedInterpolation::BicubicAntialias => "bicubic-antialias",
        }
    }

    /// Parse the command-line spelling: `offset-bicubic[:OFFSET]`, `bicubic`, `bicubic-antialias`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bicubic" => Some(Self::Bicubic),
            "bicubic-antialias" | "antialias" => Some(Self::BicubicAntialias),
            "offset-bicubic" => Some(Self::OffsetBicubic { offset: 0.1 }),
            _ => s
                .strip_prefix("offset-bicubic:")
                .and_then(|o| o.parse().ok())
                .map(|offset| Self::OffsetBicubic { offset }),
        }
    }
}

/// When the stored table is used as it is instead of being resampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PosEmbedSkip {
    /// Official DINOv2 and Hugging Face: same patch count and a square image (H == W).
    SameCountSquareImage,
    /// timm: the target grid equals the stored grid.
    SameGrid,
}

impl PosEmbedSkip {
    pub fn keeps_table(self, stored: usize, grid: (usize, usize), image: (usize, usize)) -> bool {
        match self {
            PosEmbedSkip::SameCountSquareImage => {
                grid.0 * grid.1 == stored * stored && image.0 == image.1
            }
            PosEmbedSkip::SameGrid => grid == (stored, stored),
        }
    }
}

/// One output sample of a 1-D resampling: `taps` source indices with their weights.
#[derive(Debug, Clone)]
struct Taps {
    index: Vec<usize>,
    weight: Vec<f32>,
}

fn cubic_conv1(x: f32, a: f32) -> f32 {
    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
}

fn cubic_conv2(x: f32, a: f32) -> f32 {
    ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
}

/// PyTorch `upsample_bicubic2d` (align_corners=False) taps along one axis. `scale` is the
/// source-per-output ratio as PyTorch stores it (float32).
fn bicubic_taps(input: usize, output: usize, scale: f32) -> Vec<Taps> {
    const A: f32 = -0.75;
    (0..output)
        .map(|i| {
            let real = scale * (i as f32 + 0.5) - 0.5;
            let f = real.floor();
            let t = real - f;
            let f = f as isize;
            let weight = vec![
                cubic_conv2(t + 1.0, A),
                cubic_conv1(t, A),
                cubic_conv1(1.0 - t, A),
                cubic_conv2(2.0 - t, A),
            ];
            let index = (-1..=2)
                .map(|k| (f + k).clamp(0, input as isize - 1) as usize)
                .collect();
            Taps { index, weight }
        })
        .collect()
}

/// PyTorch `_upsample_bicubic2d_aa` taps along one axis (PIL-style antialiased filter, a = -0.5).
fn antialias_taps(input: usize, output: usize) -> Vec<Taps> {
    fn filter(x: f64) -> f64 {
        const A: f64 = -0.5;
        let x = x.abs();
        if x < 1.0 {
            ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            (((x - 5.0) * x + 8.0) * x - 4.0) * A
        } else {
            0.0
        }
    }
    let scale = input as f64 / output as f64;
    let support = 2.0 * scale.max(1.0);
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    (0..output)
        .map(|i| {
            let center = scale * (i as f64 + 0.5);
            let x0 = ((center - support + 0.5) as isize).max(0) as usize;
            let x1 = ((center + support + 0.5) as isize).min(input as isize) as usize;
            let raw: Vec<f64> = (x0..x1)
                .map(|j| filter((j as f64 - center + 0.5) * invscale))
                .collect();
            let total: f64 = raw.iter().sum();
            let weight = raw
                .iter()
                .map(|w| {
                    if total != 0.0 {
                        (w / total) as f32
                    } else {
                        0.0
                    }
                })
                .collect();
            Taps {
                index: (x0..x1).collect(),
                weight,
            }
        })
        .collect()
}

fn axis_taps(mode: PosEmbedInterpolation, input: usize, output: usize) -> Vec<Taps> {
    match mode {
        PosEmbedInterpolation::OffsetBicubic { offset } => {
            // F.interpolate(scale_factor=sf): the output size is floor(in * sf) (= output here) and
            // the source coordinate uses 1/sf, rounded to float32 from double.
            let sf = (output as f64 + offset) / input as f64;
            bicubic_taps(input, output, (1.0 / sf) as f32)
        }
        PosEmbedInterpolation::Bicubic => bicubic_taps(input, output, input as f32 / output as f32),
        PosEmbedInterpolation::BicubicAntialias => antialias_taps(input, output),
    }
}

/// The dense (output x input) row-major weight matrix of a 1-D resampling along one axis.
/// Clamped taps (edge replication) accumulate into the same column.
pub fn axis_matrix(mode: PosEmbedInterpolation, input: usize, output: usize) -> Vec<f32> {
    let mut m = vec![0f32; output * input];
    for (o, taps) in axis_taps(mode, input, output).iter().enumerate() {
        for (&j, &w) in taps.index.iter().zip(&taps.weight) {
            m[o * input + j] += w;
        }
    }
    m
}

/// [`axis_matrix`], computed once per (mode, input, output) for the life of the process.
pub fn axis_matrix_cached(
    mode: PosEmbedInterpolation,
    input: usize,
    output: usize,
) -> Arc<Vec<f32>> {
    type Key = (u8, u64, usize, usize);
    static CACHE: OnceLock<Mutex<HashMap<Key, Arc<Vec<f32>>>>> = OnceLock::new();
    let key: Key = match mode {
        PosEmbedInterpolation::OffsetBicubic { offset } => (0, offset.to_bits(), input, output),
        PosEmbedInterpolation::Bicubic => (1, 0, input, output),
        PosEmbedInterpolation::BicubicAntialias => (2, 0, input, output),
    };
    let cache = CACHE.get_or_init(Default::default);
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(key)
        .or_insert_with(|| Arc::new(axis_matrix(mode, input, output)))
        .clone()
}

/// Resample the patch part of a position-embedding table on the host.
///
/// `table` is (M*M, D) row-major over (row, col); the result is (h*w, D) row-major over
/// (row, col). The columns (width) are interpolated first, then the rows, as PyTorch does.
/// The model does the same with two matrix products on its device (see `VisionTransformer`).
pub fn resample_grid(
    table: &[f32],
    stored: usize,
    dim: usize,
    grid: (usize, usize),
    mode: PosEmbedInterpolation,
) -> Vec<f32> {
    assert_eq!(table.len(), stored * stored * dim, "position table size");
    let (h, w) = grid;
    let wc = axis_matrix(mode, stored, w);
    let wr = axis_matrix(mode, stored, h);
    // Width pass: (M, M, D) -> (M, w, D).
    let mut wide = vec![0f32; stored * w * dim];
    for r in 0..stored {
        for c in 0..w {
            for j in 0..stored {
                let wt = wc[c * stored + j];
                if wt == 0.0 {
                    continue;
                }
                let src = &table[(r * stored + j) * dim..(r * stored + j + 1) * dim];
                let dst = &mut wide[(r * w + c) * dim..(r * w + c + 1) * dim];
                dst.iter_mut().zip(src).for_each(|(o, s)| *o += s * wt);
            }
        }
    }
    // Height pass: (M, w, D) -> (h, w, D).
    let mut out = vec![0f32; h * w * dim];
    for r in 0..h {
        for j in 0..stored {
            let wt = wr[r * stored + j];
            if wt == 0.0 {
                continue;
            }
            let src = &wide[j * w * dim..(j + 1) * w * dim];
            let dst = &mut out[r * w * dim..(r + 1) * w * dim];
            dst.iter_mut().zip(src).for_each(|(o, s)| *o += s * wt);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_without_antialias_is_exact() {
        let m = 4;
        let table: Vec<f32> = (0..m * m * 3).map(|v| v as f32 * 0.37 - 2.0).collect();
        let out = resample_grid(&table, m, 3, (m, m), PosEmbedInterpolation::Bicubic);
        for (a, b) in out.iter().zip(&table) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn antialias_changes_values_even_when_upsampling_and_weights_sum_to_one() {
        for taps in antialias_taps(4, 7)
            .iter()
            .chain(antialias_taps(9, 4).iter())
        {
            let s: f32 = taps.weight.iter().sum();
            assert!((s - 1.0).abs() < 1e-6);
        }
        let m = 4;
        let table: Vec<f32> = (0..m * m).map(|v| ((v * 7) % 5) as f32).collect();
        let aa = resample_grid(
            &table,
            m,
            1,
            (7, 6),
            PosEmbedInterpolation::BicubicAntialias,
        );
        let plain = resample_grid(&table, m, 1, (7, 6), PosEmbedInterpolation::Bicubic);
        assert!(aa.iter().zip(&plain).any(|(a, b)| (a - b).abs() > 1e-3));
        // At the same size the antialiased filter is the identity.
        let same = resample_grid(
            &table,
            m,
            1,
            (m, m),
            PosEmbedInterpolation::BicubicAntialias,
        );
        assert!(same.iter().zip(&table).all(|(a, b)| (a - b).abs() < 1e-6));
    }

    #[test]
    fn constant_fields_stay_constant_in_every_mode() {
        let m = 5;
        let table = vec![1.5f32; m * m * 2];
        for mode in [
            PosEmbedInterpolation::Bicubic,
            PosEmbedInterpolation::BicubicAntialias,
            PosEmbedInterpolation::OffsetBicubic { offset: 0.1 },
        ] {
            for grid in [(3, 7), (8, 8), (5, 2)] {
                let out = resample_grid(&table, m, 2, grid, mode);
                assert_eq!(out.len(), grid.0 * grid.1 * 2);
                assert!(
                    out.iter().all(|v| (v - 1.5).abs() < 1e-5),
                    "{mode:?} {grid:?}"
                );
            }
        }
    }

    #[test]
    fn parses_cli_spellings() {
        assert_eq!(
            PosEmbedInterpolation::parse("offset-bicubic:0.1"),
            Some(PosEmbedInterpolation::OffsetBicubic { offset: 0.1 })
        );
        assert_eq!(
            PosEmbedInterpolation::parse("bicubic-antialias"),
            Some(PosEmbedInterpolation::BicubicAntialias)
        );
        assert_eq!(PosEmbedInterpolation::parse("nearest"), None);
    }

    #[test]
    fn skip_rules_follow_each_reference() {
        let s = PosEmbedSkip::SameCountSquareImage;
        assert!(s.keeps_table(4, (4, 4), (56, 56)));
        assert!(!s.keeps_table(4, (4, 4), (56, 60)));
        assert!(!s.keeps_table(4, (2, 8), (28, 112)));
        assert!(PosEmbedSkip::SameGrid.keeps_table(4, (4, 4), (56, 60)));
        assert!(!PosEmbedSkip::SameGrid.keeps_table(4, (2, 8), (28, 112)));
    }
}
