//! Per-pixel regression metrics (canopy height in metres): MAE, RMSE, R², bias, and the
//! block-R² of the canopy-height literature (Tolan et al. 2024 report R² of 50 × 50-pixel block
//! means as well as per pixel, because per-pixel R² punishes small misregistrations of lidar
//! and imagery that do not matter at stand scale).
//!
//! Pixels whose target is not finite (NaN marks nodata) or whose prediction is not finite are
//! not counted.

use serde::{Deserialize, Serialize};

/// What [`RegressionMetrics::compute`] reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionMetrics {
    /// Pixels counted.
    pub pixels: u64,
    pub mae: f64,
    pub rmse: f64,
    /// 1 − SS_res / SS_tot (scikit-learn's `r2_score`); None with fewer than 2 pixels or a
    /// constant target.
    pub r2: Option<f64>,
    /// Mean of prediction − target (positive: over-estimation).
    pub bias: f64,
    /// R² of block means (see [`block_means`]); None with fewer than 2 blocks.
    pub block_r2: Option<f64>,
    /// Blocks counted for `block_r2`.
    pub blocks: u64,
    /// The block side in pixels.
    pub block: usize,
}

/// R² of `pred` against `target` (both already filtered to valid pairs).
pub fn r2_score(pred: &[f64], target: &[f64]) -> Option<f64> {
    if target.len() < 2 {
        return None;
    }
    let n = target.len() as f64;
    let mean = target.iter().sum::<f64>() / n;
    let ss_tot: f64 = target.iter().map(|t| (t - mean) * (t - mean)).sum();
    let ss_res: f64 = pred
        .iter()
        .zip(target)
        .map(|(p, t)| (p - t) * (p - t))
        .sum();
    (ss_tot > 0.0).then(|| 1.0 - ss_res / ss_tot)
}

/// Block means of one `height` × `width` image pair, row-major: blocks of `block` × `block`
/// pixels tiled from the top-left corner, only those fully inside the image, and only those
/// whose every pixel is valid (finite target and prediction). Returns (prediction, target)
/// means per kept block.
pub fn block_means(
    pred: &[f32],
    target: &[f32],
    (height, width): (usize, usize),
    block: usize,
) -> Vec<(f64, f64)> {
    assert_eq!(pred.len(), height * width, "prediction size");
    assert_eq!(target.len(), height * width, "target size");
    let mut out = Vec::new();
    if block == 0 {
        return out;
    }
    for by in 0..height / block {
        'blocks: for bx in 0..width / block {
            let (mut sp, mut st) = (0f64, 0f64);
            for y in by * block..(by + 1) * block {
                for x in bx * block..(bx + 1) * block {
                    let (p, t) = (pred[y * width + x], target[y * width + x]);
                    if !(p.is_finite() && t.is_finite()) {
                        continue 'blocks;
                    }
                    sp += p as f64;
                    st += t as f64;
                }
            }
            let n = (block * block) as f64;
            out.push((sp / n, st / n));
        }
    }
    out
}

impl RegressionMetrics {
    /// Metrics of `pred` against `target`, both `[images, height, width]` (`size` = (height,
    /// width) of each image); block-R² over `block` × `block` blocks of every image.
    pub fn compute(pred: &[f32], target: &[f32], size: (usize, usize), block: usize) -> Self {
        assert_eq!(pred.len(), target.len(), "prediction and target lengths");
        let plane = (size.0 * size.1).max(1);
        assert_eq!(pred.len() % plane, 0, "not whole images of the given size");
        let (mut p, mut t) = (Vec::new(), Vec::new());
        for (&a, &b) in pred.iter().zip(target) {
            if a.is_finite() && b.is_finite() {
                p.push(a as f64);
                t.push(b as f64);
            }
        }
        let n = p.len().max(1) as f64;
        let diff = || p.iter().zip(&t).map(|(a, b)| a - b);
        let blocks: Vec<(f64, f64)> = pred
            .chunks(plane)
            .zip(target.chunks(plane))
            .flat_map(|(a, b)| block_means(a, b, size, block))
            .collect();
        let (bp, bt): (Vec<f64>, Vec<f64>) = blocks.iter().copied().unzip();
        RegressionMetrics {
            pixels: p.len() as u64,
            mae: diff().map(f64::abs).sum::<f64>() / n,
            rmse: (diff().map(|d| d * d).sum::<f64>() / n).sqrt(),
            r2: r2_score(&p, &t),
            bias: diff().sum::<f64>() / n,
            block_r2: r2_score(&bp, &bt),
            blocks: blocks.len() as u64,
            block,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn f32s(v: &Value) -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().map_or(f32::NAN, |x| x as f32))
            .collect()
    }

    #[test]
    fn matches_scikit_learn_and_numpy_block_means() {
        let all: Value =
            serde_json::from_str(include_str!("../tests/data/dense_reference.json")).unwrap();
        let r = &all["regression"];
        let (h, w) = (
            r["height"].as_u64().unwrap() as usize,
            r["width"].as_u64().unwrap() as usize,
        );
        let block = r["block"].as_u64().unwrap() as usize;
        // NaN targets are written as null in the JSON.
        let (pred, target) = (f32s(&r["predicted"]), f32s(&r["target"]));
        let m = RegressionMetrics::compute(&pred, &target, (h, w), block);
        let want = |k: &str| r[k].as_f64().unwrap();
        let diffs = [
            (m.mae - want("mae")).abs(),
            (m.rmse - want("rmse")).abs(),
            (m.r2.unwrap() - want("r2")).abs(),
            (m.bias - want("bias")).abs(),
            (m.block_r2.unwrap() - want("block_r2")).abs(),
        ];
        let worst = diffs.iter().copied().fold(0f64, f64::max);
        assert_eq!(m.pixels, r["pixels"].as_u64().unwrap());
        assert_eq!(m.blocks, r["blocks"].as_u64().unwrap());
        assert!(worst < 1e-9, "differences {diffs:?}");
        eprintln!("regression metrics vs scikit-learn: max abs difference {worst:e}");
    }

    #[test]
    fn blocks_must_be_whole_and_valid() {
        // 5 x 4 image, 2 x 2 blocks: 2 x 2 = 4 whole blocks; one has a NaN target.
        let (h, w) = (5, 4);
        let pred: Vec<f32> = (0..20).map(|i| i as f32).collect();
        let mut target = pred.clone();
        target[0] = f32::NAN;
        let b = block_means(&pred, &target, (h, w), 2);
        assert_eq!(b.len(), 3);
        // Block (0, 1): pixels 2, 3, 6, 7.
        assert_eq!(b[0], (4.5, 4.5));
        let m = RegressionMetrics::compute(&pred, &target, (h, w), 2);
        assert_eq!(m.pixels, 19);
        assert_eq!(m.r2, Some(1.0));
        assert_eq!(m.mae, 0.0);
        assert_eq!(r2_score(&[1.0], &[1.0]), None);
        assert_eq!(r2_score(&[1.0, 2.0], &[3.0, 3.0]), None);
    }
}
