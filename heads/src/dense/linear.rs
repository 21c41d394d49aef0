//! DINOv2's linear segmentation head (`BNHead` of its segmentation evaluation): the patch tokens
//! of the last layer, or of the last 4 layers concatenated (the multi-layer "+ms" variant), each
//! with the layer's class token broadcast to every patch when `use_cls` (as DINOv2 does), then
//! BatchNorm and a 1 × 1 convolution to class logits, upsampled bilinearly to pixels.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::error::{DenseError, DenseResult};
use super::tokens::{class_token, patch_map, resize};

#[derive(Config, Debug, PartialEq)]
pub struct LinearHeadConfig {
    /// Token dimension of the backbone.
    pub dim: usize,
    pub classes: usize,
    /// How many of the last layers of the input are concatenated: 1 (linear) or 4 (+ms).
    #[config(default = 1)]
    pub layers: usize,
    /// Concatenate each layer's class token to its patch tokens.
    #[config(default = true)]
    pub use_cls: bool,
}

impl LinearHeadConfig {
    /// Channels entering the BatchNorm.
    pub fn channels(&self) -> usize {
        self.layers * self.dim * if self.use_cls { 2 } else { 1 }
    }

    pub fn check(&self) -> DenseResult<()> {
        if self.classes < 2 || self.layers == 0 || self.dim == 0 {
            return Err(DenseError::Config(format!(
                "linear head with {} classes, {} layers, dim {}: needs ≥ 2 classes, ≥ 1 layer",
                self.classes, self.layers, self.dim
            )));
        }
        Ok(())
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> LinearHead<B> {
        let c = self.channels();
        LinearHead {
            bn: BatchNormConfig::new(c).init(device),
            conv: Conv2dConfig::new([c, self.classes], [1, 1]).init(device),
            layers: self.layers,
            use_cls: self.use_cls,
        }
    }
}

#[derive(Module, Debug)]
pub struct LinearHead<B: Backend> {
    pub bn: BatchNorm<B>,
    pub conv: Conv2d<B>,
    pub layers: usize,
    pub use_cls: bool,
}

impl<B: Backend> LinearHead<B> {
    /// Logits [batch, classes, size.0, size.1] of `tokens` [batch, layers ≥ self.layers,
    /// 1 + patches, dim] (the last `self.layers` layers are used).
    pub fn forward(
        &self,
        tokens: Tensor<B, 4>,
        grid: (usize, usize),
        size: (usize, usize),
    ) -> Tensor<B, 4> {
        let available = tokens.dims()[1];
        let mut maps = Vec::with_capacity(2 * self.layers);
        for l in available - self.layers..available {
            let patches = patch_map(&tokens, l, grid);
            if self.use_cls {
                let [b, d, h, w] = patches.dims();
                let cls = class_token(&tokens, l)
                    .reshape([b, d, 1, 1])
                    .expand([b, d, h, w]);
                maps.push(patches);
                maps.push(cls);
            } else {
                maps.push(patches);
            }
        }
        let x = Tensor::cat(maps, 1);
        resize(self.conv.forward(self.bn.forward(x)), size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn shapes_of_the_linear_and_multi_layer_heads() {
        let device = Default::default();
        let tokens = Tensor::<Flex, 4>::ones([2, 4, 1 + 6, 8], &device);
        for (layers, use_cls, channels) in [(1, true, 16), (4, true, 64), (4, false, 32)] {
            let cfg = LinearHeadConfig::new(8, 3)
                .with_layers(layers)
                .with_use_cls(use_cls);
            assert_eq!(cfg.channels(), channels);
            let head = cfg.init::<Flex>(&device);
            let y = head.forward(tokens.clone(), (2, 3), (28, 42));
            assert_eq!(y.dims(), [2, 3, 28, 42]);
        }
        assert!(LinearHeadConfig::new(8, 1).check().is_err());
    }
}
