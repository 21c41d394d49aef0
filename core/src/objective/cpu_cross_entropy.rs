//! The DINO and iBOT soft cross-entropies as one op with its own backward pass, for the training
//! student on the CPU backend (`Autodiff<CpuBackend>`):
//!
//! L = −Σ_i w_i Σ_t Σ_k t_ik log_softmax(s_i / τ)_k
//!
//! over a student's logits s [M, K] (K = 65536 prototypes) against one or more teachers' targets
//! t [M, K] (no gradient) with row weights w. burn differentiates it as a chain over [M, K]
//! tensors (scale, max, shift, exp, sum, log, product with the targets, row sums), each a fresh
//! tensor made on one thread. Here each row takes two passes forward (the maximum; then the sum
//! of exponentials, Σ t and Σ t·s together), keeping only its log-sum-exp, and one pass backward:
//!
//! ∂L/∂s_ik = −(w_i / τ) · (Σ_t t_ik − p_ik Σ_t Σ_k t_ik), p_ik = exp(s_ik/τ − lse_i)
//!
//! rows in parallel.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use crate::backend::CpuBackend;
use crate::cpu_autodiff::{flex_tensor, from_autodiff, is_cpu_autodiff, row_major, to_autodiff};
use crate::vit::cpu_attention::exp_nonpositive;

/// Rows per task of the parallel passes.
const ROWS_PER_TASK: usize = 4;

/// L above, [1]; the student back, untouched, where it is not an f32 tensor of
/// `Autodiff<CpuBackend>`. `weights` has one value per row.
pub fn soft_cross_entropy<B: Backend>(
    student: Tensor<B, 2>,
    targets: &[Tensor<B, 2>],
    weights: &[f32],
    student_temp: f64,
) -> Result<Tensor<B, 1>, Tensor<B, 2>> {
    if !is_cpu_autodiff(&student) || targets.iter().any(|t| t.dims() != student.dims()) {
        return Err(student);
    }
    let [m, k] = student.dims();
    assert_eq!(weights.len(), m, "one weight per row");
    let student = to_autodiff(student);
    // Row-major once (for the forward and the backward both).
    let targets: Vec<FlexTensor> = targets
        .iter()
        .map(|t| to_autodiff(t.clone()).primitive)
        .map(|t| match t.layout().contiguous_offsets() {
            Some(_) => t,
            None => t.to_contiguous(),
        })
        .collect();
    let problem = Problem {
        k,
        inv_temp: (1.0 / student_temp) as f32,
        weights: weights.to_vec(),
    };
    let (loss, lse) = {
        let s = row_major(&student.primitive);
        let ts: Vec<_> = targets.iter().map(row_major).collect();
        let ts: Vec<&[f32]> = ts.iter().map(|t| &t[..]).collect();
        problem.forward(&s, &ts)
    };
    let out = flex_tensor(vec![loss], &[1]);
    let out = match CrossEntropyBackward
        .prepare::<NoCheckpointing>([student.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let saved = Saved {
                student: student.primitive.clone(),
                targets,
                lse,
                problem,
            };
            prep.finish(saved, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Ok(from_autodiff(out))
}

/// The rows' width, 1/τ and weights.
#[derive(Debug, Clone)]
struct Problem {
    k: usize,
    inv_temp: f32,
    weights: Vec<f32>,
}

impl Problem {
    /// (L, each row's log-sum-exp of s/τ).
    fn forward(&self, s: &[f32], targets: &[&[f32]]) -> (f32, Vec<f32>) {
        let k = self.k;
        let mut lse = vec![0.0f32; self.weights.len()];
        if k == 0 {
            return (0.0, lse);
        }
        let loss: f64 = lse
            .par_chunks_mut(ROWS_PER_TASK)
            .enumerate()
            .map(|(chunk, lse)| {
                let mut loss = 0.0f64;
                for (j, lse) in lse.iter_mut().enumerate() {
                    let i = chunk * ROWS_PER_TASK + j;
                    let row = &s[i * k..(i + 1) * k];
                    *lse = log_sum_exp(row, self.inv_temp);
                    // Σ_k t_k log_softmax(s/τ)_k = Σ_k t_k s_k / τ − lse · Σ_k t_k
                    let term: f64 = targets
                        .iter()
                        .map(|t| {
                            let (sum, dot) = sum_and_dot(&t[i * k..(i + 1) * k], row);
                            (dot * self.inv_temp - *lse * sum) as f64
                        })
                        .sum();
                    loss -= self.weights[i] as f64 * term;
                }
                loss
            })
            .sum();
        (loss as f32, lse)
    }

    /// ∂L/∂s [M, K] times the output's gradient `g`.
    fn backward(&self, s: &[f32], targets: &[&[f32]], lse: &[f32], g: f32) -> Vec<f32> {
        let k = self.k;
        let mut ds = vec![0.0f32; s.len()];
        if k == 0 {
            return ds;
        }
        ds.par_chunks_mut(ROWS_PER_TASK * k)
            .enumerate()
            .for_each(|(chunk, ds)| {
                for (j, ds) in ds.chunks_mut(k).enumerate() {
                    let i = chunk * ROWS_PER_TASK + j;
                    let range = i * k..(i + 1) * k;
                    // ds = Σ_t t; its sum is Σ_t Σ_k t.
                    ds.copy_from_slice(&targets[0][range.clone()]);
                    for t in &targets[1..] {
                        ds.iter_mut()
                            .zip(&t[range.clone()])
                            .for_each(|(d, t)| *d += t);
                    }
                    let total = ds.iter().sum::<f32>();
                    let scale = -g * self.weights[i] * self.inv_temp;
                    softmax_grad(ds, &s[range], self.inv_temp, lse[i], total, scale);
                }
            });
        ds
    }
}

#[derive(Debug)]
struct CrossEntropyBackward;

/// What the backward pass reads: the student's logits, the targets, each row's log-sum-exp.
#[derive(Debug, Clone)]
struct Saved {
    student: FlexTensor,
    targets: Vec<FlexTensor>,
    lse: Vec<f32>,
    problem: Problem,
}

impl Backward<CpuBackend, 1> for CrossEntropyBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let saved = ops.state;
        unary::<CpuBackend, _>(ops.parents, ops.node, grads, |grad| {
            let g = row_major(&grad)[0];
            let s = row_major(&saved.student);
            let ts: Vec<_> = saved.targets.iter().map(row_major).collect();
            let ts: Vec<&[f32]> = ts.iter().map(|t| &t[..]).collect();
            let ds = saved.problem.backward(&s, &ts, &saved.lse, g);
            flex_tensor(ds, saved.student.layout().shape())
        });
    }
}

/// Runs `body` compiled for AVX-512 or AVX2 + FMA where the CPU has them (fused multiply-adds,
/// wide lanes), else as plain code; `madd(a, b, c) = a * b + c`.
macro_rules! dispatch {
    ($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty, $with:ident) => {
        fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) -> $ret {
                    $with($($arg,)* f32::mul_add)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2_fma($($arg: $ty),*) -> $ret {
                    $with($($arg,)* f32::mul_add)
                }
                if is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features the function is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: as above.
                    return unsafe { avx2_fma($($arg),*) };
                }
            }
            $with($($arg,)* |a, b, c| a * b + c)
        }
    };
}

dispatch!(log_sum_exp(row: &[f32], inv_temp: f32) -> f32, log_sum_exp_with);
dispatch!(sum_and_dot(t: &[f32], s: &[f32]) -> (f32, f32), sum_and_dot_with);
dispatch!(
    softmax_grad(ds: &mut [f32], s: &[f32], inv_temp: f32, lse: f32, total: f32, scale: f32) -> (),
    softmax_grad_with
);

/// log Σ_k exp(row_k · inv_temp), on 16 lanes (inv_temp > 0).
#[inline(always)]
fn log_sum_exp_with(row: &[f32], inv_temp: f32, madd: impl Fn(f32, f32, f32) -> f32 + Copy) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = row.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        lanes.iter_mut().zip(c).for_each(|(m, x)| *m = m.max(*x));
    }
    let max = tail.iter().fold(
        lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        |m, x| m.max(*x),
    ) * inv_temp;
    let mut lanes = [0.0f32; 16];
    let chunks = row.chunks_exact(16);
    for c in chunks {
        for (sum, x) in lanes.iter_mut().zip(c) {
            *sum += exp_nonpositive(madd(*x, inv_temp, -max), madd);
        }
    }
    let tail: f32 = tail
        .iter()
        .map(|x| exp_nonpositive(madd(*x, inv_temp, -max), madd))
        .sum();
    max + (lanes.iter().sum::<f32>() + tail).ln()
}

/// (Σ t, Σ t·s), on 16 lanes.
#[inline(always)]
fn sum_and_dot_with(t: &[f32], s: &[f32], madd: impl Fn(f32, f32, f32) -> f32) -> (f32, f32) {
    let (mut sums, mut dots) = ([0.0f32; 16], [0.0f32; 16]);
    let (ct, cs) = (t.chunks_exact(16), s.chunks_exact(16));
    let (tt, ts) = (ct.remainder(), cs.remainder());
    for (t, s) in ct.zip(cs) {
        for l in 0..16 {
            sums[l] += t[l];
            dots[l] = madd(t[l], s[l], dots[l]);
        }
    }
    let sum = sums.iter().sum::<f32>() + tt.iter().sum::<f32>();
    let dot = dots.iter().sum::<f32>() + tt.iter().zip(ts).map(|(t, s)| t * s).sum::<f32>();
    (sum, dot)
}

/// ds_k = scale · (ds_k − total · exp(s_k · inv_temp − lse)), where ds holds Σ_t t.
#[inline(always)]
fn softmax_grad_with(
    ds: &mut [f32],
    s: &[f32],
    inv_temp: f32,
    lse: f32,
    total: f32,
    scale: f32,
    madd: impl Fn(f32, f32, f32) -> f32 + Copy,
) {
    for (d, x) in ds.iter_mut().zip(s) {
        let p = exp_nonpositive(madd(*x, inv_temp, -lse).min(0.0), madd);
        *d = scale * madd(-total, p, *d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_autodiff::CpuAutodiff;
    use burn::tensor::activation::log_softmax;
    use burn::tensor::{Distribution, TensorData};

    #[test]
    fn loss_and_gradient_match_burns_chain() {
        let device = Default::default();
        // K not a multiple of 16 (the lanes' remainder), two teachers, uneven weights.
        let (m, k, temp) = (6, 1000 + 7, 0.1);
        let s = Tensor::<CpuAutodiff, 2>::random([m, k], Distribution::Normal(0.0, 3.0), &device)
            .require_grad();
        let target = |seed: f64| {
            let logits =
                Tensor::<CpuAutodiff, 2>::random([m, k], Distribution::Normal(seed, 2.0), &device);
            burn::tensor::activation::softmax(logits, 1)
        };
        let targets = [target(0.0), target(1.0)];
        let weights: Vec<f32> = (0..m).map(|i| 0.5 + i as f32 * 0.25).collect();
        let w = Tensor::<CpuAutodiff, 1>::from_data(TensorData::new(weights.clone(), [m]), &device);
        let run = |ours: bool| {
            let loss = match ours {
                true => soft_cross_entropy(s.clone(), &targets, &weights, temp).unwrap(),
                false => {
                    let lsm = log_softmax(s.clone().div_scalar(temp), 1);
                    let per_row = targets
                        .iter()
                        .map(|t| (t.clone() * lsm.clone()).sum_dim(1).squeeze_dim::<1>(1))
                        .reduce(|a, b| a + b)
                        .unwrap();
                    (per_row * w.clone()).sum().neg()
                }
            };
            let grads = loss.clone().mul_scalar(1.5).backward();
            let g = s.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
            (loss.into_scalar(), g)
        };
        let ((loss, g), (want_loss, want_g)) = (run(true), run(false));
        assert!(
            (loss - want_loss).abs() <= 1e-5 * want_loss.abs(),
            "{loss} vs {want_loss}"
        );
        let scale = want_g.iter().fold(0.0f32, |a, b| a.max(b.abs()));
        let worst = g
            .iter()
            .zip(&want_g)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst <= 1e-5 * scale, "{worst} of {scale}");
    }

    #[test]
    fn other_backends_get_the_student_back() {
        let device = Default::default();
        let s = Tensor::<CpuBackend, 2>::zeros([2, 3], &device);
        assert!(soft_cross_entropy(s.clone(), &[s], &[1.0, 1.0], 0.1).is_err());
    }
}
