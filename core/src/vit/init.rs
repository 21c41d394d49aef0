//! The official initialisation of new weights (`DinoVisionTransformer.init_weights`,
//! `DINOHead._init_weights`): every linear layer of the blocks and heads draws its weight from a
//! truncated normal with std 0.02 and starts its bias at zero (`init_weights_vit_timm`); the
//! position embedding is truncated-normal(0.02); class and register tokens normal(1e-6); the
//! mask token zero. The patch embedding (a convolution in PyTorch) and the heads' prototype layer
//! keep PyTorch's default `kaiming_uniform_(a=sqrt(5))`, which is burn's default linear init
//! (uniform in ±1/sqrt(fan_in), bias too).

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Shape, Tensor};

/// Std of the truncated normal of `init_weights_vit_timm` and `DINOHead._init_weights`.
pub const TRUNC_NORMAL_STD: f64 = 0.02;

/// `torch.nn.init.trunc_normal_(t, std=std)`: normal(0, std) restricted to PyTorch's default
/// bounds [-2, 2] (absolute, not in stds; at std 0.02 they are 100 stds away).
pub fn trunc_normal<B: Backend, const D: usize>(
    shape: impl Into<Shape>,
    std: f64,
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Normal(0.0, std), device).clamp(-2.0, 2.0)
}

/// A linear layer as `init_weights_vit_timm` leaves it: weight truncated-normal(0.02), bias 0.
pub fn timm_linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    bias: bool,
    device: &B::Device,
) -> Linear<B> {
    let mut layer = LinearConfig::new(d_in, d_out)
        .with_bias(false)
        .init::<B>(device);
    layer.weight = Param::from_tensor(trunc_normal([d_in, d_out], TRUNC_NORMAL_STD, device));
    layer.bias = bias.then(|| Param::from_tensor(Tensor::zeros([d_out], device)));
    layer
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn moments(v: &[f32]) -> (f64, f64) {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    #[test]
    fn timm_linear_is_truncated_normal_with_zero_bias() {
        let device = Default::default();
        let l = timm_linear::<Flex>(256, 512, true, &device);
        let w: Vec<f32> = l.weight.val().into_data().into_vec().unwrap();
        let (mean, std) = moments(&w);
        assert!(mean.abs() < 1e-3, "{mean}");
        assert!((std - 0.02).abs() < 5e-4, "{std}");
        let b: Vec<f32> = l.bias.unwrap().val().into_data().into_vec().unwrap();
        assert!(b.iter().all(|&x| x == 0.0));
        assert!(w.iter().all(|&x| x.abs() <= 2.0));
    }
}
