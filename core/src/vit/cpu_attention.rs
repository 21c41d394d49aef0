//! Multi-head self-attention straight from the packed qkv rows, for inference on the CPU
//! backend. burn's path (reshape, permute, three `narrow`s, the fused attention, `swap_dims`,
//! reshape) copies q, k, v and the output through burn-flex's strided iterator, one element at
//! a time: 14% of a ViT-S/14 forward in the CPU profile (bench/README.md). Here each head's
//! products read q, k and v where they lie in the [B, T, 3D] rows (the `gemm` crate takes any
//! strides) and write the head's output into its columns of the [B, T, D] result: no copies.

use std::any::TypeId;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use crate::backend::CpuBackend;

/// softmax(q·kᵀ/√d_head)·v of every head of `qkv` ([B, T, 3D], rows [q | k | v], each split by
/// head), heads concatenated: [B, T, D]; `qkv` back, untouched, off the CPU backend (or for
/// other dtypes).
pub fn attend<B: Backend>(qkv: Tensor<B, 3>, heads: usize) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
    if TypeId::of::<B>() != TypeId::of::<CpuBackend>() || qkv.dtype() != DType::F32 {
        return Err(qkv);
    }
    let [b, t, d3] = qkv.dims();
    let d = d3 / 3;
    let device = qkv.device();
    let data = qkv.into_data();
    let rows = data.as_slice::<f32>().expect("an f32 tensor holds f32");
    let mut out = vec![0.0f32; b * t * d];
    out.par_chunks_mut(t * d)
        .zip(rows.par_chunks(t * d3))
        .for_each(|(out, rows)| attend_image(rows, t, d, heads, out));
    Ok(Tensor::from_data(TensorData::new(out, [b, t, d]), &device))
}

/// One image: `rows` [T, 3D] -> `out` [T, D].
fn attend_image(rows: &[f32], t: usize, d: usize, heads: usize, out: &mut [f32]) {
    let hd = d / heads;
    let stride = 3 * d as isize;
    let scale = (1.0 / (hd as f64).sqrt()) as f32;
    let mut scores = vec![0.0f32; t * t];
    assert!(rows.len() == t * 3 * d && out.len() == t * d && hd * heads == d);
    for h in 0..heads {
        let (q, k, v) = (
            &rows[h * hd..],
            &rows[d + h * hd..],
            &rows[2 * d + h * hd..],
        );
        // SAFETY: every element read is (i, c) -> i * 3D + c of a slice starting at the head's
        // column (i < T, c < d_head), inside `rows` (checked above); scores is [T, T]; the
        // output block is (i, c) -> i * D + h * d_head + c, inside `out`.
        unsafe {
            // scores[i][j] = scale · Σ_c q[i][c] k[j][c]
            gemm(
                t,
                t,
                hd,
                scores.as_mut_ptr(),
                1,
                t as isize,
                false,
                q.as_ptr(),
                1,
                stride,
                k.as_ptr(),
                stride,
                1,
                0.0,
                scale,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
        for row in scores.chunks_mut(t) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for s in row.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            let inv = 1.0 / sum;
            row.iter_mut().for_each(|s| *s *= inv);
        }
        // SAFETY: as above.
        unsafe {
            // out[i][h·d_head + c] = Σ_j p[i][j] v[j][c]
            gemm(
                t,
                hd,
                t,
                out.as_mut_ptr().add(h * hd),
                1,
                d as isize,
                false,
                scores.as_ptr(),
                1,
                t as isize,
                v.as_ptr(),
                1,
                stride,
                0.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;
    use burn::tensor::Distribution;

    #[test]
    fn matches_burns_attention_on_the_permuted_heads() {
        let device = Default::default();
        let (b, t, h, hd) = (3, 19, 4, 8);
        let d = h * hd;
        let qkv =
            Tensor::<CpuBackend, 3>::random([b, t, 3 * d], Distribution::Normal(0.0, 2.0), &device);
        let got = attend(qkv.clone(), h)
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let x = qkv.reshape([b, t, 3, h, hd]).permute([2, 0, 3, 1, 4]);
        let part = |i| x.clone().narrow(0, i, 1).squeeze_dim::<4>(0);
        let want = attention(
            part(0),
            part(1),
            part(2),
            None,
            None,
            AttentionModuleOptions::default(),
        )
        .swap_dims(1, 2)
        .reshape([b, t, d])
        .into_data()
        .to_vec::<f32>()
        .unwrap();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-5, "{worst}");
    }
}
