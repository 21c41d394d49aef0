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
    attend_rows(rows, t, d, heads, &mut out);
    Ok(Tensor::from_data(TensorData::new(out, [b, t, d]), &device))
}

/// The largest score buffer (in floats) a thread keeps between calls: 64 MiB, T ≈ 4096 tokens.
const KEPT_SCORES: usize = 16 << 20;

thread_local! {
    /// One [T, T] score matrix per thread, kept between calls (no allocation per head).
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Attention of a batch of images of `t` tokens each, one image per task: `rows` [B·T, 3D] ->
/// `out` [B·T, D].
pub(crate) fn attend_rows(rows: &[f32], t: usize, d: usize, heads: usize, out: &mut [f32]) {
    if t == 0 || d == 0 {
        return;
    }
    out.par_chunks_mut(t * d)
        .zip(rows.par_chunks(t * 3 * d))
        .for_each(|(out, rows)| {
            SCORES.with_borrow_mut(|scores| {
                scores.resize(t * t + t, 0.0);
                attend_image(rows, t, d, heads, out, scores);
                // Large images' score matrices (64 MiB and up) are not kept between calls.
                if scores.capacity() > KEPT_SCORES {
                    *scores = Vec::new();
                }
            })
        });
}

/// One image: `rows` [T, 3D] -> `out` [T, D]; `scores` holds T·T + T floats (the scores and
/// each row's 1/Σ).
fn attend_image(
    rows: &[f32],
    t: usize,
    d: usize,
    heads: usize,
    out: &mut [f32],
    scores: &mut [f32],
) {
    let hd = d / heads;
    let stride = 3 * d as isize;
    let scale = (1.0 / (hd as f64).sqrt()) as f32;
    assert!(rows.len() == t * 3 * d && out.len() == t * d && hd * heads == d);
    assert!(scores.len() == t * t + t);
    let (scores, inv) = scores.split_at_mut(t * t);
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
        // The softmax's exp; its normalisation 1/Σ waits for the product with v (D_head
        // products per row instead of T).
        for (row, inv) in scores.chunks_mut(t).zip(inv.iter_mut()) {
            *inv = 1.0 / exp_shifted(row);
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
        for (row, inv) in out.chunks_mut(d).zip(inv.iter()) {
            row[h * hd..(h + 1) * hd].iter_mut().for_each(|o| *o *= inv);
        }
    }
}

/// `exp(x)` for `x <= 0` (softmax scores less their row's maximum) to within 2 ulp: 2^n · e^r
/// with n = round(x / ln 2) and a degree-7 polynomial of r in [-ln 2 / 2, ln 2 / 2] (Cephes'
/// expf), branch-free and without float-to-int conversions (Rust's `as i32` saturates, which
/// the compiler does one element at a time), so that the loop vectorises;
/// `madd(a, b, c) = a * b + c`.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32, madd: impl Fn(f32, f32, f32) -> f32) -> f32 {
    // 1.5 · 2^23: a float this large has no fraction bits, so adding it rounds to an integer,
    // which then sits in the low bits of the sum's mantissa.
    const ROUND: f32 = 12_582_912.0;
    // Clamped at -87.3, where e^x (1e-38) reaches f32's smallest normal number: next to the
    // row's maximum (e^0 = 1) it counts for nothing.
    let x = x.max(-87.3);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    // r = x - n ln 2, with ln 2 in two parts so that the product is exact.
    let r = madd(n, 2.121_944_4e-4, madd(n, -0.693_359_4, x));
    let mut p = 1.987_569_1e-4;
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        p = madd(p, r, c);
    }
    let e = madd(p, r * r, r + 1.0);
    // 2^n from its exponent bits: n (in -126..=0) is the difference of the two bit patterns.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    e * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

/// `row[i] = exp(row[i] - max(row))`; returns Σ row[i]. The maximum and the sum run on 16
/// lanes (a vector register of AVX-512) so that they vectorise.
#[inline(always)]
fn exp_shifted_with(row: &mut [f32], madd: impl Fn(f32, f32, f32) -> f32 + Copy) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        lanes.iter_mut().zip(c).for_each(|(m, x)| *m = m.max(*x));
    }
    let max = chunks.remainder().iter().fold(
        lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        |m, x| m.max(*x),
    );
    let mut lanes = [0.0f32; 16];
    let mut chunks = row.chunks_exact_mut(16);
    for c in &mut chunks {
        for (sum, s) in lanes.iter_mut().zip(c) {
            *s = exp_nonpositive(*s - max, madd);
            *sum += *s;
        }
    }
    let mut sum = lanes.iter().sum::<f32>();
    for s in chunks.into_remainder() {
        *s = exp_nonpositive(*s - max, madd);
        sum += *s;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn exp_shifted_avx512(row: &mut [f32]) -> f32 {
    exp_shifted_with(row, f32::mul_add)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_shifted_avx2_fma(row: &mut [f32]) -> f32 {
    exp_shifted_with(row, f32::mul_add)
}

/// `row[i] = exp(row[i] - max(row))`, returning the sum: the softmax's numerators and
/// denominator (AVX-512 or AVX2 + FMA where the CPU has them).
pub(crate) fn exp_shifted(row: &mut [f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { exp_shifted_avx512(row) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { exp_shifted_avx2_fma(row) };
        }
    }
    exp_shifted_with(row, |a, b, c| a * b + c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;
    use burn::tensor::Distribution;

    #[test]
    fn exp_is_within_2_ulp_on_the_softmax_range() {
        for fma in [false, true] {
            let worst = (0..=1_000_000)
                .map(|i| -(i as f32) * 8.7e-5)
                .map(|x| {
                    let got = match fma {
                        true => exp_nonpositive(x, f32::mul_add),
                        false => exp_nonpositive(x, |a, b, c| a * b + c),
                    } as f64;
                    let want = (x as f64).exp();
                    (got - want).abs() / want
                })
                .fold(0.0, f64::max);
            assert!(worst < 2.4e-7, "fma {fma}: {worst}");
        }
        let mut row = vec![-1e30, 0.0, 3.0, -200.0];
        let sum = exp_shifted(&mut row);
        assert!(row[0] < 1e-37);
        assert!((row[1] - (-3f32).exp()).abs() < 1e-7);
        assert_eq!(row[2], 1.0);
        assert!(row[3] < 1e-37);
        assert_eq!(sum, row.iter().sum::<f32>());
        // Rows longer than the 16 lanes, with the maximum in the remainder.
        let mut row: Vec<f32> = (0..37).map(|i| -(i as f32) * 0.1).rev().collect();
        let want: Vec<f64> = row.iter().map(|&x| (x as f64 - 0.0).exp()).collect();
        let sum = exp_shifted(&mut row);
        for (g, w) in row.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-6 * w);
        }
        assert!((sum as f64 - want.iter().sum::<f64>()).abs() < 1e-5);
    }

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
