//! The `pca` head: the backbone's patch tokens projected on their first three principal
//! components (fitted once on a sample of chips, so colours agree across chips), upsampled
//! bilinearly to pixels — the classic DINOv2 feature map, here as a georeferenced raster. It needs
//! no training: any backbone, on any backend, turns a raster into a 3-band feature map with
//! [`predict_raster`](crate::predict::predict_raster).

use burn::tensor::backend::Backend;
use dinoadapt_core::vit::VisionTransformer;
use dinoadapt_datasets::embedding::{patch_tokens, EmbedError};
use nalgebra::{DMatrix, SymmetricEigen};

use crate::chips::ChipGrid;
use crate::error::SatelliteError;
use crate::normalize::Normalization;
use crate::predict::{read_batch, ChipBatch, ChipModel, PredictConfig};
use crate::raster::Raster;

/// Why the pca head cannot be fitted.
#[derive(Debug, thiserror::Error)]
pub enum PcaHeadError {
    #[error(
        "the pca head needs a chip size that is a multiple of the patch size {patch} (got \
         {chip_size})"
    )]
    ChipSize { patch: usize, chip_size: usize },
    #[error("the backbone takes 3 channels; {selected} bands are selected")]
    Channels { selected: usize },
    #[error(transparent)]
    Raster(#[from] SatelliteError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

/// A backbone and the 3-axis projection of its patch tokens, as a [`ChipModel`].
pub struct PcaHead<B: Backend> {
    model: VisionTransformer<B>,
    device: B::Device,
    norm: Normalization,
    chunks: usize,
    mean: Vec<f64>,
    /// Three unit vectors of length D.
    basis: Vec<Vec<f64>>,
}

/// The top `k` eigenvectors of a symmetric `d`×`d` matrix (row-major), by descending
/// eigenvalue, each with its largest-magnitude entry positive (a deterministic sign).
fn top_eigenvectors(cov: &[f64], d: usize, k: usize) -> Vec<Vec<f64>> {
    let eigen = SymmetricEigen::new(DMatrix::from_row_slice(d, d, cov));
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
    order
        .into_iter()
        .take(k)
        .map(|i| {
            let mut v: Vec<f64> = eigen.eigenvectors.column(i).iter().copied().collect();
            let m = v
                .iter()
                .copied()
                .fold(0.0f64, |m, x| if x.abs() > m.abs() { x } else { m });
            if m < 0.0 {
                v.iter_mut().for_each(|x| *x = -*x);
            }
            v
        })
        .collect()
}

/// Bilinear upsampling of a `gh`×`gw` grid to `size`×`size` (half-pixel centres, edge clamp).
fn upsample(grid: &[f64], (gh, gw): (usize, usize), size: usize, out: &mut Vec<f32>) {
    let coord = |i: usize, g: usize| -> (usize, usize, f64) {
        let x = ((i as f64 + 0.5) * g as f64 / size as f64 - 0.5).clamp(0.0, (g - 1) as f64);
        let x0 = x.floor() as usize;
        (x0, (x0 + 1).min(g - 1), x - x0 as f64)
    };
    for r in 0..size {
        let (y0, y1, fy) = coord(r, gh);
        for c in 0..size {
            let (x0, x1, fx) = coord(c, gw);
            let top = grid[y0 * gw + x0] * (1.0 - fx) + grid[y0 * gw + x1] * fx;
            let bottom = grid[y1 * gw + x0] * (1.0 - fx) + grid[y1 * gw + x1] * fx;
            out.push((top * (1.0 - fy) + bottom * fy) as f32);
        }
    }
}

impl<B: Backend> PcaHead<B> {
    /// Fit the projection on up to 16 chips spread over the raster (chips of `cfg`, bands
    /// normalised with `norm`); `chunks` slices of each batch run at once (one per CPU thread on
    /// the CPU, 1 on a GPU).
    pub fn fit(
        model: VisionTransformer<B>,
        device: B::Device,
        norm: Normalization,
        raster: &Raster,
        cfg: &PredictConfig,
        chunks: usize,
    ) -> Result<Self, PcaHeadError> {
        let p = model.config.patch_size;
        if !cfg.chip_size.is_multiple_of(p) {
            return Err(PcaHeadError::ChipSize {
                patch: p,
                chip_size: cfg.chip_size,
            });
        }
        if cfg.bands.len() != 3 {
            return Err(PcaHeadError::Channels {
                selected: cfg.bands.len(),
            });
        }
        let info = raster.info();
        let gt = info.require_geotransform()?;
        let chips = ChipGrid::new(info.width, info.height, cfg.chip_size, cfg.stride)?.chips(&gt);
        let step = chips.len().div_ceil(16).max(1);
        let sample: Vec<_> = chips.iter().step_by(step).copied().collect();
        let batch = read_batch(raster, &cfg.bands, &sample, cfg.chip_size)?;
        let (tokens, _) = patch_tokens(
            &model,
            &device,
            batch.normalized(&norm),
            sample.len(),
            cfg.chip_size,
            chunks,
        )?;
        let d = model.config.embed_dim;
        let rows = tokens.len() / d;
        let mut mean = vec![0f64; d];
        for row in tokens.chunks(d) {
            for (m, &x) in mean.iter_mut().zip(row) {
                *m += x as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= rows as f64);
        let mut cov = vec![0f64; d * d];
        let mut centred = vec![0f64; d];
        for row in tokens.chunks(d) {
            for (c, (&x, m)) in centred.iter_mut().zip(row.iter().zip(&mean)) {
                *c = x as f64 - m;
            }
            for i in 0..d {
                let ci = centred[i];
                for j in 0..d {
                    cov[i * d + j] += ci * centred[j];
                }
            }
        }
        let basis = top_eigenvectors(&cov, d, 3);
        Ok(PcaHead {
            model,
            device,
            norm,
            chunks,
            mean,
            basis,
        })
    }
}

impl<B: Backend> ChipModel for PcaHead<B> {
    fn channels(&self) -> usize {
        3
    }

    fn predict(&mut self, batch: &ChipBatch) -> Result<Vec<f32>, String> {
        let n = batch.chips.len();
        let (tokens, grid) = patch_tokens(
            &self.model,
            &self.device,
            batch.normalized(&self.norm),
            n,
            batch.size,
            self.chunks,
        )
        .map_err(|e| e.to_string())?;
        let d = self.model.config.embed_dim;
        let np = grid.0 * grid.1;
        let mut out = Vec::with_capacity(n * 3 * batch.size * batch.size);
        let mut plane = vec![0f64; np];
        for chip in tokens.chunks(np * d) {
            for axis in &self.basis {
                for (p, tok) in plane.iter_mut().zip(chip.chunks(d)) {
                    *p = tok
                        .iter()
                        .zip(&self.mean)
                        .zip(axis)
                        .map(|((&x, m), a)| (x as f64 - m) * a)
                        .sum();
                }
                upsample(&plane, grid, batch.size, &mut out);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_leading_axes() {
        // diag(5, 3, 1, 0.5) rotated in the first two coordinates.
        let (c, s) = (0.6f64, 0.8f64);
        let mut cov = vec![0f64; 16];
        let (a, b) = (5.0, 3.0);
        cov[0] = a * c * c + b * s * s;
        cov[1] = (a - b) * c * s;
        cov[4] = cov[1];
        cov[5] = a * s * s + b * c * c;
        cov[10] = 1.0;
        cov[15] = 0.5;
        let v = top_eigenvectors(&cov, 4, 3);
        assert!(
            (v[0][0] - c).abs() < 1e-9 && (v[0][1] - s).abs() < 1e-9,
            "{:?}",
            v[0]
        );
        assert!((v[1][0].abs() - s).abs() < 1e-9 && (v[1][1].abs() - c).abs() < 1e-9);
        assert!((v[2][2].abs() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn bilinear_upsampling_keeps_constants_and_interpolates() {
        let mut out = Vec::new();
        upsample(&[2.0; 4], (2, 2), 4, &mut out);
        assert!(out.iter().all(|&v| v == 2.0));
        out.clear();
        upsample(&[0.0, 1.0], (1, 2), 4, &mut out);
        assert_eq!(out[..4], [0.0, 0.25, 0.75, 1.0]);
    }
}
