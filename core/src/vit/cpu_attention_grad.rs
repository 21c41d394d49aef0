//! Multi-head self-attention with its own backward pass, for the training student on the CPU
//! backend (`Autodiff<CpuBackend>`). burn's path reshapes and permutes q, k and v out of the
//! [B, T, 3D] rows and the output back (each a strided copy, forward and backward), and
//! differentiates the softmax as a chain of element-wise ops over every [T, T] score matrix.
//! Here the forward is [`cpu_attention`](super::cpu_attention)'s (products reading q, k, v
//! where they lie) keeping each head's probabilities P, and the backward writes the gradient of
//! the qkv rows directly, per image and head:
//!
//! dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P ⊙ (dP − rowsum(P ⊙ dP)), dQ = s·dS·K, dK = s·dSᵀ·Q
//!
//! with s = 1/√d_head.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use burn_flex::FlexTensor;
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::cpu_attention::{attend_rows, exp_shifted};
use crate::backend::CpuBackend;
use crate::cpu_autodiff::{flex_tensor, from_autodiff, is_cpu_autodiff, row_major, to_autodiff};

/// softmax(q·kᵀ/√d_head)·v of every head of `qkv` ([B, T, 3D]), heads concatenated: [B, T, D],
/// differentiable; `qkv` back, untouched, where it is not an f32 tensor of
/// `Autodiff<CpuBackend>`.
pub fn attend<B: Backend>(qkv: Tensor<B, 3>, heads: usize) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
    let [b, t, _] = qkv.dims();
    attend_packed(qkv, &[(b, t)], heads)
}

/// [`attend`] over a packed sequence `qkv` ([1, Σ b·t, 3D], groups of b images of t tokens laid
/// end to end), each image attending to its own tokens: [1, Σ b·t, D]. One op for all groups:
/// no per-group slices of the qkv rows, no concatenation of the outputs (nor their backward).
pub fn attend_packed<B: Backend>(
    qkv: Tensor<B, 3>,
    groups: &[(usize, usize)],
    heads: usize,
) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
    if !is_cpu_autodiff(&qkv) {
        return Err(qkv);
    }
    let [b, t, d3] = qkv.dims();
    assert_eq!(
        groups.iter().map(|(b, t)| b * t).sum::<usize>(),
        b * t,
        "the groups cover the sequence"
    );
    let qkv = to_autodiff(qkv);
    let rows = match qkv.primitive.layout().contiguous_offsets() {
        Some(_) => qkv.primitive.clone(),
        None => qkv.primitive.to_contiguous(),
    };
    let layout = Layout {
        groups: groups.to_vec(),
        d: d3 / 3,
        heads,
    };
    let shape = [b, t, d3 / 3];
    let mut out = vec![0.0f32; b * t * layout.d];
    let node = qkv.node.clone();
    let out = match AttentionBackward
        .prepare::<NoCheckpointing>([node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let mut probs = vec![0.0f32; layout.probs_len()];
            layout.forward(&row_major(&rows), &mut out, Some(&mut probs));
            let saved = Saved {
                qkv: rows,
                probs: Arc::new(probs),
                layout,
            };
            prep.finish(saved, flex_tensor(out, &shape))
        }
        OpsKind::UnTracked(prep) => {
            layout.forward(&row_major(&rows), &mut out, None);
            prep.finish(flex_tensor(out, &shape))
        }
    };
    Ok(from_autodiff(out))
}

/// How the rows of a (packed) sequence form images: groups of (images, tokens per image), the
/// width D and the heads.
#[derive(Debug, Clone)]
struct Layout {
    groups: Vec<(usize, usize)>,
    d: usize,
    heads: usize,
}

impl Layout {
    /// Floats of every image's probabilities [H, T, T].
    fn probs_len(&self) -> usize {
        self.groups
            .iter()
            .map(|(b, t)| b * self.heads * t * t)
            .sum()
    }

    /// Each group's part of the packed buffers: (tokens per image, its qkv rows [b·t, 3D], its
    /// rows of `per_token` (`width` floats a token), its probabilities [b, H, t, t]).
    fn parts<'a, O: SplitAt, P: SplitAt>(
        &self,
        mut rows: &'a [f32],
        mut per_token: O,
        width: usize,
        mut probs: P,
    ) -> Vec<(usize, &'a [f32], O, P)> {
        let mut parts = Vec::with_capacity(self.groups.len());
        for &(b, t) in &self.groups {
            let (r, rest) = rows.split_at(b * t * 3 * self.d);
            rows = rest;
            let (o, rest) = per_token.split(b * t * width);
            per_token = rest;
            let (p, rest) = probs.split(b * self.heads * t * t);
            probs = rest;
            parts.push((t, r, o, p));
        }
        parts
    }

    /// The attention of every image: `rows` [N, 3D] -> `out` [N, D], each image's
    /// probabilities into `probs` where given.
    fn forward(&self, rows: &[f32], out: &mut [f32], probs: Option<&mut [f32]>) {
        let (d, heads) = (self.d, self.heads);
        let Some(probs) = probs else {
            for (t, rows, out, _) in self.parts(rows, out, d, &[][..]) {
                attend_rows(rows, t, d, heads, out);
            }
            return;
        };
        for (t, rows, out, probs) in self.parts(rows, out, d, probs) {
            if t == 0 || d == 0 {
                continue;
            }
            out.par_chunks_mut(t * d)
                .zip(rows.par_chunks(t * 3 * d))
                .zip(probs.par_chunks_mut(heads * t * t))
                .for_each(|((out, rows), probs)| image_forward(rows, t, d, heads, out, probs));
        }
    }
}

/// A slice split in two at an index (shared or mutable), and an empty slice splitting into
/// empty slices (for buffers a caller does not have).
trait SplitAt: Sized {
    fn split(self, at: usize) -> (Self, Self);
}

impl SplitAt for &[f32] {
    fn split(self, at: usize) -> (Self, Self) {
        self.split_at(at.min(self.len()))
    }
}

impl SplitAt for &mut [f32] {
    fn split(self, at: usize) -> (Self, Self) {
        let at = at.min(self.len());
        self.split_at_mut(at)
    }
}

#[derive(Debug)]
struct AttentionBackward;

/// What the backward pass reads: the qkv rows, every image's probabilities [H, T, T].
#[derive(Debug, Clone)]
struct Saved {
    qkv: FlexTensor,
    probs: Arc<Vec<f32>>,
    layout: Layout,
}

impl Backward<CpuBackend, 1> for AttentionBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let saved = ops.state;
        unary::<CpuBackend, _>(ops.parents, ops.node, grads, |grad| qkv_grad(&saved, &grad));
    }
}

/// The gradient of the qkv rows [.., .., 3D] from the output's `grad` [.., .., D].
fn qkv_grad(saved: &Saved, grad: &FlexTensor) -> FlexTensor {
    let Layout { d, heads, .. } = saved.layout;
    let rows = row_major(&saved.qkv);
    let dout = row_major(grad);
    let mut dqkv = vec![0.0f32; rows.len()];
    let parts = saved
        .layout
        .parts(&rows, dqkv.as_mut_slice(), 3 * d, &saved.probs[..]);
    let douts = saved.layout.parts(&rows, &dout[..], d, &[][..]);
    for ((t, rows, dqkv, probs), (_, _, dout, _)) in parts.into_iter().zip(douts) {
        if t == 0 || d == 0 {
            continue;
        }
        dqkv.par_chunks_mut(t * 3 * d)
            .zip(rows.par_chunks(t * 3 * d))
            .zip(dout.par_chunks(t * d))
            .zip(probs.par_chunks(heads * t * t))
            .for_each(|(((dqkv, rows), dout), probs)| {
                image_grad(rows, dout, probs, t, d, heads, dqkv)
            });
    }
    let mut shape = grad.layout().shape().to_vec();
    *shape.last_mut().expect("a 3-D tensor") = 3 * d;
    flex_tensor(dqkv, &shape)
}

/// A matrix operand of [`product`]: its first element, column stride and row stride.
type Operand<T> = (T, isize, isize);

/// dst[m×n] = beta · lhs[m×k] · rhs[k×n], on the calling thread.
///
/// # Safety
/// Every element (i, j) of each operand, at `ptr + j·cs + i·rs` over its own m×k, k×n or m×n
/// range, must lie in one live allocation, and `dst` must not overlap the others.
#[allow(clippy::too_many_arguments)]
unsafe fn product(
    [m, n, k]: [usize; 3],
    dst: Operand<*mut f32>,
    lhs: Operand<*const f32>,
    rhs: Operand<*const f32>,
    beta: f32,
) {
    gemm(
        m,
        n,
        k,
        dst.0,
        dst.1,
        dst.2,
        false,
        lhs.0,
        lhs.1,
        lhs.2,
        rhs.0,
        rhs.1,
        rhs.2,
        0.0,
        beta,
        false,
        false,
        false,
        Parallelism::None,
    );
}

/// One image: `rows` [T, 3D] -> `out` [T, D], its probabilities into `probs` [H, T, T].
fn image_forward(
    rows: &[f32],
    t: usize,
    d: usize,
    heads: usize,
    out: &mut [f32],
    probs: &mut [f32],
) {
    let hd = d / heads;
    let (d, t3) = (d as isize, 3 * d as isize);
    let scale = (1.0 / (hd as f64).sqrt()) as f32;
    assert!(rows.len() == t * 3 * d as usize && out.len() == t * d as usize);
    assert!(probs.len() == heads * t * t && hd * heads == d as usize);
    let ti = t as isize;
    for (h, p) in probs.chunks_mut(t * t).enumerate() {
        let (q, k, v) = (h * hd, d as usize + h * hd, 2 * d as usize + h * hd);
        // SAFETY: q, k and v are [T, d_head] blocks of `rows` (row stride 3D) starting at
        // their head's column, inside `rows` (checked above); p is [T, T]; the output block
        // is [T, d_head] of `out` (row stride D) at the head's column.
        unsafe {
            // s[i][j] = scale · Σ_c q[i][c] k[j][c]
            product(
                [t, t, hd],
                (p.as_mut_ptr(), 1, ti),
                (rows.as_ptr().add(q), 1, t3),
                (rows.as_ptr().add(k), t3, 1),
                scale,
            );
        }
        for row in p.chunks_mut(t) {
            let inv = 1.0 / exp_shifted(row);
            row.iter_mut().for_each(|x| *x *= inv);
        }
        // SAFETY: as above.
        unsafe {
            // o[i][c] = Σ_j p[i][j] v[j][c]
            product(
                [t, hd, t],
                (out.as_mut_ptr().add(h * hd), 1, d),
                (p.as_ptr(), 1, ti),
                (rows.as_ptr().add(v), 1, t3),
                1.0,
            );
        }
    }
}

/// One image's gradient: `rows` [T, 3D], `dout` [T, D], `probs` [H, T, T] -> `dqkv` [T, 3D].
fn image_grad(
    rows: &[f32],
    dout: &[f32],
    probs: &[f32],
    t: usize,
    d: usize,
    heads: usize,
    dqkv: &mut [f32],
) {
    let hd = d / heads;
    let scale = (1.0 / (hd as f64).sqrt()) as f32;
    assert!(rows.len() == t * 3 * d && dqkv.len() == t * 3 * d && dout.len() == t * d);
    assert!(probs.len() == heads * t * t && hd * heads == d);
    let (di, t3, ti) = (d as isize, 3 * d as isize, t as isize);
    let mut ds = vec![0.0f32; t * t];
    for (h, p) in probs.chunks(t * t).enumerate() {
        let (q, k, v, o) = (h * hd, d + h * hd, 2 * d + h * hd, h * hd);
        // SAFETY: q, k, v and their gradients are [T, d_head] blocks of `rows` / `dqkv` (row
        // stride 3D) at their head's column; dO is the [T, d_head] block of `dout` (row stride
        // D); p and ds are [T, T]; all inside their slices (checked above).
        unsafe {
            // dv[j][c] = Σ_i p[i][j] do[i][c]
            product(
                [t, hd, t],
                (dqkv.as_mut_ptr().add(v), 1, t3),
                (p.as_ptr(), ti, 1),
                (dout.as_ptr().add(o), 1, di),
                1.0,
            );
            // dp[i][j] = Σ_c do[i][c] v[j][c]
            product(
                [t, t, hd],
                (ds.as_mut_ptr(), 1, ti),
                (dout.as_ptr().add(o), 1, di),
                (rows.as_ptr().add(v), t3, 1),
                1.0,
            );
        }
        // ds = s · p ⊙ (dp − Σ_j p ⊙ dp), row by row.
        for (ds, p) in ds.chunks_mut(t).zip(p.chunks(t)) {
            let delta = dot(ds, p);
            ds.iter_mut()
                .zip(p)
                .for_each(|(g, p)| *g = scale * p * (*g - delta));
        }
        // SAFETY: as above.
        unsafe {
            // dq[i][c] = Σ_j ds[i][j] k[j][c]
            product(
                [t, hd, t],
                (dqkv.as_mut_ptr().add(q), 1, t3),
                (ds.as_ptr(), 1, ti),
                (rows.as_ptr().add(k), 1, t3),
                1.0,
            );
            // dk[j][c] = Σ_i ds[i][j] q[i][c]
            product(
                [t, hd, t],
                (dqkv.as_mut_ptr().add(k), 1, t3),
                (ds.as_ptr(), ti, 1),
                (rows.as_ptr().add(q), 1, t3),
                1.0,
            );
        }
    }
}

/// Σ a[i] b[i] on 16 lanes (so that it vectorises).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        lanes
            .iter_mut()
            .zip(x.iter().zip(y))
            .for_each(|(l, (x, y))| *l += x * y);
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_autodiff::CpuAutodiff;
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;
    use burn::tensor::Distribution;

    /// burn's attention of the permuted heads, as the model's generic path computes it.
    fn burns(qkv: Tensor<CpuAutodiff, 3>, h: usize) -> Tensor<CpuAutodiff, 3> {
        let [b, t, d3] = qkv.dims();
        let hd = d3 / 3 / h;
        let x = qkv.reshape([b, t, 3, h, hd]).permute([2, 0, 3, 1, 4]);
        let part = |i| x.clone().narrow(0, i, 1).squeeze_dim::<4>(0);
        attention(
            part(0),
            part(1),
            part(2),
            None,
            None,
            AttentionModuleOptions::default(),
        )
        .swap_dims(1, 2)
        .reshape([b, t, d3 / 3])
    }

    fn worst(a: Tensor<CpuBackend, 3>, b: Tensor<CpuBackend, 3>) -> f32 {
        let (a, b) = (a.into_data().to_vec::<f32>().unwrap(), b.into_data());
        a.iter()
            .zip(b.to_vec::<f32>().unwrap())
            .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
            .fold(0.0, f32::max)
    }

    #[test]
    fn output_and_gradient_match_burns_attention() {
        let device = Default::default();
        // Two groups packed in one sequence, at an offset (a narrowed view, as a sliced batch
        // gives).
        let (h, hd) = (4, 8);
        let d = h * hd;
        let groups = [(3, 19), (2, 5)];
        let n: usize = groups.iter().map(|(b, t)| b * t).sum();
        let whole = Tensor::<CpuAutodiff, 3>::random(
            [1, 4 + n, 3 * d],
            Distribution::Normal(0.0, 2.0),
            &device,
        )
        .require_grad();
        let weights =
            Tensor::<CpuAutodiff, 3>::random([1, n, d], Distribution::Normal(0.0, 1.0), &device);
        let run = |ours: bool| {
            let qkv = whole.clone().narrow(1, 4, n);
            let out = match ours {
                true => attend_packed(qkv, &groups, h).unwrap(),
                false => {
                    let mut start = 0;
                    let parts = groups
                        .iter()
                        .map(|&(b, t)| {
                            let g = qkv.clone().narrow(1, start, b * t).reshape([b, t, 3 * d]);
                            start += b * t;
                            burns(g, h).reshape([1, b * t, d])
                        })
                        .collect();
                    Tensor::cat(parts, 1)
                }
            };
            let loss = (out.clone() * weights.clone()).sum();
            let grads = loss.backward();
            (out.inner(), whole.grad(&grads).unwrap())
        };
        let (out, grad) = run(true);
        let (want_out, want_grad) = run(false);
        assert!(worst(out, want_out) < 1e-5);
        assert!(worst(grad, want_grad) < 1e-5);
        // One group of [B, T, 3D].
        let qkv = Tensor::<CpuAutodiff, 3>::random([2, 9, 3 * d], Distribution::Default, &device);
        let got = attend(qkv.clone(), h).unwrap().inner();
        assert!(worst(got, burns(qkv, h).inner()) < 1e-5);
    }

    #[test]
    fn untracked_inputs_give_the_inference_output() {
        let device = Default::default();
        let qkv = Tensor::<CpuAutodiff, 3>::random([2, 7, 24], Distribution::Default, &device);
        let got = attend(qkv.clone(), 2).unwrap().inner();
        let want = super::super::cpu_attention::attend(qkv.inner(), 2).unwrap();
        assert!(worst(got, want) < 1e-6);
        // Off the autodiff CPU backend the tensor comes back untouched.
        let plain = Tensor::<CpuBackend, 3>::zeros([1, 2, 6], &device);
        assert!(attend(plain, 1).is_err());
    }
}
