//! Gradient clipping by global norm over one module, as `torch.nn.utils.clip_grad_norm_`
//! computes it. The official DINOv2 loop clips each student module (backbone, DINO head, iBOT
//! head) on its own; burn's built-in clipping works per tensor, hence this.

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};

struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
    ids: Vec<ParamId>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s = g.powf_scalar(2.0).sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + s,
                None => s,
            });
            self.ids.push(param.id);
        }
    }
}

struct Scale<'a, B: Backend> {
    grads: &'a mut GradientsParams,
    factor: f64,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// The sum of squares of the gradients of `module`'s parameters (those present in `grads`),
/// as the backend computes it (0 when none has a gradient).
pub fn squared_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> f64 {
    let mut v = SquaredNorm::<B> {
        grads,
        total: None,
        ids: Vec::new(),
    };
    module.visit(&mut v);
    v.total
        .map(|t| t.into_scalar().elem::<f64>())
        .unwrap_or(0.0)
}

/// The global L2 norm of the gradients of `module`'s parameters (those present in `grads`).
pub fn grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> f64 {
    squared_grad_norm::<B, M>(module, grads).sqrt()
}

/// Scale `module`'s gradients so that their global norm `norm` is at most `max_norm`
/// (factor `max_norm / (norm + 1e-6)` when that is below 1), as `clip_grad_norm_` does.
pub fn clip_to_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    norm: f64,
    max_norm: f64,
) {
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        let mut s = Scale::<B> {
            grads,
            factor,
            _b: std::marker::PhantomData,
        };
        module.visit(&mut s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::{Linear, LinearConfig};

    type AB = Autodiff<Flex>;

    /// `clip_grad_norm_`: clips `module`'s gradients and returns their norm before.
    fn clip_grad_norm<M: AutodiffModule<AB>>(
        module: &M,
        grads: &mut GradientsParams,
        max_norm: f64,
    ) -> f64 {
        let norm = grad_norm::<AB, M>(module, grads);
        clip_to_norm::<AB, M>(module, grads, norm, max_norm);
        norm
    }

    #[test]
    fn clips_the_global_norm_of_one_module_only() {
        let device = Default::default();
        let a: Linear<AB> = LinearConfig::new(3, 4).init(&device);
        let b: Linear<AB> = LinearConfig::new(3, 4).init(&device);
        let x = Tensor::<AB, 2>::from_data([[1.0f32, -2.0, 3.0]], &device);
        let loss = a.forward(x.clone()).sum().mul_scalar(10.0) + b.forward(x).sum();
        let mut grads = GradientsParams::from_grads(loss.backward(), &(a.clone(), b.clone()));
        // d/dW_a = 10 * x per output column (4 columns), d/db_a = 10: norm = 10 * sqrt(4 * 14 + 4).
        let want = 10.0 * (4.0f64 * 14.0 + 4.0).sqrt();
        let before_b = grad_norm::<AB, _>(&b, &grads);
        let norm = clip_grad_norm(&a, &mut grads, 3.0);
        assert!((norm - want).abs() < 1e-3, "{norm} vs {want}");
        assert!((grad_norm::<AB, _>(&a, &grads) - 3.0).abs() < 1e-4);
        assert!((grad_norm::<AB, _>(&b, &grads) - before_b).abs() < 1e-9);
        // Below the threshold nothing changes.
        let n = clip_grad_norm(&a, &mut grads, 100.0);
        assert!((n - 3.0).abs() < 1e-4);
    }
}
