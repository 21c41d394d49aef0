//! The DINO and iBOT projection heads (`dinov2/layers/dino_head.py`): an MLP to a bottleneck,
//! L2 normalisation, then a weight-normalised prototype layer, so the logits are scaled cosine
//! similarities to the prototypes.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Configuration of a DINO / iBOT head (defaults of the official `ssl_default_config`).
#[derive(Config, Debug)]
pub struct DinoHeadConfig {
    /// Backbone width.
    pub in_dim: usize,
    /// Number of prototypes K (65536 in DINOv2; up to 131072).
    #[config(default = 65536)]
    pub num_prototypes: usize,
    #[config(default = 2048)]
    pub hidden_dim: usize,
    #[config(default = 256)]
    pub bottleneck_dim: usize,
    /// Linear layers in the MLP (GELU between them).
    #[config(default = 3)]
    pub nlayers: usize,
}

/// MLP -> L2 normalise -> weight-normalised prototypes (no bias).
#[derive(Module, Debug)]
pub struct DinoHead<B: Backend> {
    pub mlp: Vec<Linear<B>>,
    /// Weight-norm direction `weight_v`, stored [bottleneck, K] (burn's input-major layout).
    pub last_layer_v: Param<Tensor<B, 2>>,
    /// Weight-norm magnitude `weight_g` per prototype, [K] (initialised to 1).
    pub last_layer_g: Param<Tensor<B, 1>>,
}

impl DinoHeadConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> DinoHead<B> {
        let n = self.nlayers.max(1);
        let mlp = (0..n)
            .map(|i| {
                let d_in = if i == 0 { self.in_dim } else { self.hidden_dim };
                let d_out = if i == n - 1 {
                    self.bottleneck_dim
                } else {
                    self.hidden_dim
                };
                LinearConfig::new(d_in, d_out).init(device)
            })
            .collect();
        let v = LinearConfig::new(self.bottleneck_dim, self.num_prototypes)
            .with_bias(false)
            .init::<B>(device)
            .weight;
        DinoHead {
            mlp,
            last_layer_v: v,
            last_layer_g: Param::from_tensor(Tensor::ones([self.num_prototypes], device)),
        }
    }
}

impl<B: Backend> DinoHead<B> {
    /// Bottleneck features, L2-normalised (eps 1e-12 as in f32): [N, bottleneck].
    pub fn embed(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let last = self.mlp.len() - 1;
        let mut x = x;
        for (i, layer) in self.mlp.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = gelu(x);
            }
        }
        let norm = x
            .clone()
            .powf_scalar(2.0)
            .sum_dim(1)
            .sqrt()
            .clamp_min(1e-12);
        x / norm
    }

    /// The prototype weights W = g * v / ||v|| (norm of each prototype's column), [bottleneck, K].
    pub fn prototypes(&self) -> Tensor<B, 2> {
        let v = self.last_layer_v.val();
        let norm = v.clone().powf_scalar(2.0).sum_dim(0).sqrt(); // [1, K]
        v / norm * self.last_layer_g.val().unsqueeze_dim::<2>(0)
    }

    /// Logits over the prototypes: [N, K].
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.embed(x).matmul(self.prototypes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    #[test]
    fn logits_are_scaled_cosine_similarities() {
        let device = Default::default();
        let head = DinoHeadConfig::new(16)
            .with_num_prototypes(32)
            .with_hidden_dim(24)
            .with_bottleneck_dim(8)
            .init::<Flex>(&device);
        assert_eq!(head.mlp.len(), 3);
        let x = Tensor::<Flex, 2>::random([5, 16], Distribution::Normal(0.0, 3.0), &device);
        let logits = head.forward(x.clone());
        assert_eq!(logits.dims(), [5, 32]);
        let max = logits.clone().abs().max().into_scalar();
        assert!(max <= 1.0 + 1e-5, "{max}");
        // The bottleneck rows have unit norm...
        let rows = head.embed(x).powf_scalar(2.0).sum_dim(1).sqrt();
        assert!((rows - 1.0).abs().max().into_scalar() < 1e-5);
        // ...and each prototype column has norm g.
        let norms = head.prototypes().powf_scalar(2.0).sum_dim(0).sqrt();
        assert!((norms - 1.0).abs().max().into_scalar() < 1e-5);
    }
}
