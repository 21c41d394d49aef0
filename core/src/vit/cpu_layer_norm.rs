//! LayerNorm with its own backward pass, for the training student on the CPU backend
//! (`Autodiff<CpuBackend>`). burn-autodiff differentiates LayerNorm as the chain burn writes it
//! in (mean, centring, square, mean, sqrt, division, broadcast γ product and β sum): a dozen
//! full passes over the activations forward and backward, each a fresh tensor, and the
//! broadcasts' reductions for γ and β. Here one pass forward keeps each row's mean μ and
//! 1/σ, and one pass backward gives all three gradients:
//!
//! x̂ = (x − μ)/σ, dβ = Σ_rows dy, dγ = Σ_rows dy ⊙ x̂,
//! dx = (g − mean(g) − x̂ · mean(g ⊙ x̂)) / σ with g = dy ⊙ γ.
//!
//! Elsewhere (inference, GPU backends, LayerNorm without β) burn's LayerNorm runs.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::nn::LayerNorm;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use crate::backend::CpuBackend;
use crate::cpu_autodiff::{flex_tensor, from_autodiff, is_cpu_autodiff, row_major, to_autodiff};

/// Rows per task of the parallel passes.
const ROWS_PER_TASK: usize = 64;

/// `norm(x)` over the last dimension, with `epsilon` (the one `norm` was made with: burn keeps
/// it private).
pub fn layer_norm<B: Backend, const D: usize>(
    norm: &LayerNorm<B>,
    x: Tensor<B, D>,
    epsilon: f64,
) -> Tensor<B, D> {
    let Some(beta) = norm.beta.as_ref().filter(|_| is_cpu_autodiff(&x)) else {
        return norm.forward(x);
    };
    let (gamma, beta) = (to_autodiff(norm.gamma.val()), to_autodiff(beta.val()));
    let x = to_autodiff(x);
    let shape = x.primitive.layout().shape().to_vec();
    let c = *shape
        .last()
        .expect("LayerNorm of a tensor of rank 1 or more");
    let gamma_values = row_major(&gamma.primitive).into_owned();
    let beta_values = row_major(&beta.primitive).into_owned();
    let xs = row_major(&x.primitive);
    let mut y = vec![0.0f32; xs.len()];
    let mut stats = vec![0.0f32; 2 * xs.len() / c.max(1)];
    if c > 0 {
        forward(
            &xs,
            c,
            epsilon as f32,
            &gamma_values,
            &beta_values,
            &mut y,
            &mut stats,
        );
    }
    let y = flex_tensor(y, &shape);
    let nodes = [x.node.clone(), gamma.node.clone(), beta.node.clone()];
    let out = match LayerNormBackward
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let x = match x.primitive.layout().contiguous_offsets() {
                Some(_) => x.primitive.clone(),
                None => flex_tensor(xs.into_owned(), &shape),
            };
            let saved = Saved {
                x,
                gamma: gamma_values,
                stats,
            };
            prep.finish(saved, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    from_autodiff(out)
}

/// `y` = LayerNorm of the rows of `x` (`c` wide); each row's (μ, 1/σ) into `stats`.
fn forward(
    x: &[f32],
    c: usize,
    eps: f32,
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
    stats: &mut [f32],
) {
    y.par_chunks_mut(ROWS_PER_TASK * c)
        .zip(x.par_chunks(ROWS_PER_TASK * c))
        .zip(stats.par_chunks_mut(ROWS_PER_TASK * 2))
        .for_each(|((y, x), stats)| {
            for ((y, x), stats) in y.chunks_mut(c).zip(x.chunks(c)).zip(stats.chunks_mut(2)) {
                let mean = x.iter().sum::<f32>() / c as f32;
                let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / c as f32;
                let inv = 1.0 / (var + eps).sqrt();
                for (((y, x), g), b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
                    *y = (x - mean) * inv * g + b;
                }
                stats[0] = mean;
                stats[1] = inv;
            }
        });
}

#[derive(Debug)]
struct LayerNormBackward;

/// What the backward pass reads: the input rows, γ and every row's (μ, 1/σ).
#[derive(Debug, Clone)]
struct Saved {
    x: FlexTensor,
    gamma: Vec<f32>,
    stats: Vec<f32>,
}

impl Backward<CpuBackend, 3> for LayerNormBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, gamma_node, beta_node] = ops.parents;
        let dy = grads.consume::<CpuBackend>(&ops.node);
        let saved = ops.state;
        let shape = dy.layout().shape().to_vec();
        let c = saved.gamma.len();
        let (x, dy) = (row_major(&saved.x), row_major(&dy));
        let mut dx = vec![0.0f32; x.len()];
        let (dgamma, dbeta) = match c {
            0 => (Vec::new(), Vec::new()),
            _ => backward(&x, &dy, &saved.gamma, &saved.stats, &mut dx),
        };
        if let Some(node) = x_node {
            grads.register::<CpuBackend>(node.id, flex_tensor(dx, &shape));
        }
        if let Some(node) = gamma_node {
            grads.register::<CpuBackend>(node.id, flex_tensor(dgamma, &[c]));
        }
        if let Some(node) = beta_node {
            grads.register::<CpuBackend>(node.id, flex_tensor(dbeta, &[c]));
        }
    }
}

/// dx into `dx`; (dγ, dβ) returned.
fn backward(
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    stats: &[f32],
    dx: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    let c = gamma.len();
    let zeros = || (vec![0.0f32; c], vec![0.0f32; c]);
    dx.par_chunks_mut(ROWS_PER_TASK * c)
        .zip(x.par_chunks(ROWS_PER_TASK * c))
        .zip(dy.par_chunks(ROWS_PER_TASK * c))
        .zip(stats.par_chunks(ROWS_PER_TASK * 2))
        .fold(zeros, |(mut dgamma, mut dbeta), (((dx, x), dy), stats)| {
            let rows = dx.chunks_mut(c).zip(x.chunks(c)).zip(dy.chunks(c));
            for (((dx, x), dy), stats) in rows.zip(stats.chunks(2)) {
                let (mean, inv) = (stats[0], stats[1]);
                // dx holds x̂ first, then the gradient.
                let (mut sum_g, mut sum_gx) = (0.0f32, 0.0f32);
                for ((((xh, x), dy), g), (dg, db)) in dx
                    .iter_mut()
                    .zip(x)
                    .zip(dy)
                    .zip(gamma)
                    .zip(dgamma.iter_mut().zip(dbeta.iter_mut()))
                {
                    *xh = (x - mean) * inv;
                    *dg += dy * *xh;
                    *db += dy;
                    sum_g += dy * g;
                    sum_gx += dy * g * *xh;
                }
                let (mean_g, mean_gx) = (sum_g / c as f32, sum_gx / c as f32);
                for ((dx, dy), g) in dx.iter_mut().zip(dy).zip(gamma) {
                    *dx = inv * (dy * g - mean_g - *dx * mean_gx);
                }
            }
            (dgamma, dbeta)
        })
        .reduce(zeros, |(mut ga, mut ba), (gb, bb)| {
            ga.iter_mut().zip(&gb).for_each(|(a, b)| *a += b);
            ba.iter_mut().zip(&bb).for_each(|(a, b)| *a += b);
            (ga, ba)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_autodiff::CpuAutodiff;
    use burn::module::Param;
    use burn::nn::LayerNormConfig;
    use burn::tensor::Distribution;

    fn worst(a: Tensor<CpuBackend, 3>, b: Tensor<CpuBackend, 3>) -> f32 {
        let b = b.into_data().to_vec::<f32>().unwrap();
        a.into_data()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
            .fold(0.0, f32::max)
    }

    #[test]
    fn output_and_gradients_match_burns_layer_norm() {
        let device = Default::default();
        let c = 48;
        let mut norm = LayerNormConfig::new(c)
            .with_epsilon(1e-6)
            .init::<CpuAutodiff>(&device);
        let random =
            |n| Tensor::<CpuAutodiff, 1>::random([n], Distribution::Normal(0.5, 1.0), &device);
        norm.gamma = Param::from_tensor(random(c));
        norm.beta = Some(Param::from_tensor(random(c)));
        // A narrowed view, not at offset 0.
        let whole =
            Tensor::<CpuAutodiff, 3>::random([2, 9, c], Distribution::Normal(1.0, 3.0), &device)
                .require_grad();
        let w = Tensor::<CpuAutodiff, 3>::random([2, 7, c], Distribution::Default, &device);
        let run = |ours: bool| {
            let x = whole.clone().narrow(1, 2, 7);
            let y = match ours {
                true => layer_norm(&norm, x, 1e-6),
                false => norm.forward(x),
            };
            let grads = (y.clone() * w.clone()).sum().backward();
            let g = |p: &Param<Tensor<CpuAutodiff, 1>>| {
                p.val().grad(&grads).unwrap().reshape([1, 1, c])
            };
            (
                y.inner(),
                whole.grad(&grads).unwrap(),
                g(&norm.gamma),
                g(norm.beta.as_ref().unwrap()),
            )
        };
        let (y, dx, dg, db) = run(true);
        let (wy, wdx, wdg, wdb) = run(false);
        assert!(worst(y, wy) < 1e-5);
        assert!(worst(dx, wdx) < 1e-5);
        assert!(worst(dg, wdg) < 1e-5);
        assert!(worst(db, wdb) < 1e-5);
    }
}
