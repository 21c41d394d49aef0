//! The DPT head (Ranftl et al. 2021) on 4 intermediate layers, as Meta's high-resolution
//! canopy-height model uses it on DINOv2:
//!
//! - reassemble: each layer's patch tokens as a map, projected by a 1 × 1 convolution and
//!   resampled to 4 scales (×4 and ×2 by transposed convolutions, ×1, ×½ by a strided 3 × 3
//!   convolution), then a 3 × 3 convolution to a common width;
//! - fuse: from the coarsest scale up, residual convolution units add each scale to the upsampled
//!   path (bilinear ×2, to the next scale's exact size);
//! - head: 3 × 3 convolution, bilinear resampling to pixels, 3 × 3 convolution, ReLU, 1 × 1
//!   convolution to the output: `n` bin scores turned into a height by [`Bins`], or one value
//!   mapped affinely to [min, max] metres (plain regression).
//!
//! The class token is not used (DPT's "ignore" readout).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::PaddingConfig2d;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::bins::{BinNorm, Bins};
use super::error::{DenseError, DenseResult};
use super::tokens::{patch_map, resize};

/// What the DPT head predicts per pixel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DptOutput {
    /// Scores over height bins, reduced to their expected height.
    Bins(Bins),
    /// One value `v`, the height `min + (max - min) * v` (the network works in [0, 1] units).
    Regression { min: f64, max: f64 },
}

impl DptOutput {
    pub fn channels(&self) -> usize {
        match self {
            DptOutput::Bins(b) => b.n,
            DptOutput::Regression { .. } => 1,
        }
    }

    /// The height range the output is built for.
    pub fn range(&self) -> (f64, f64) {
        match self {
            DptOutput::Bins(b) => (b.min, b.max),
            DptOutput::Regression { min, max } => (*min, *max),
        }
    }
}

#[derive(Config, Debug, PartialEq)]
pub struct DptHeadConfig {
    /// Token dimension of the backbone.
    pub dim: usize,
    pub output: DptOutput,
    /// Width of the fusion path (DPT's `features`; 256 in Meta's ViT-L model).
    #[config(default = 64)]
    pub features: usize,
    /// Channels of the 4 reassembled scales (×4, ×2, ×1, ×½).
    #[config(default = "[32, 64, 128, 128]")]
    pub scale_channels: [usize; 4],
    /// Channels of the last convolution before the output.
    #[config(default = 32)]
    pub head_channels: usize,
}

impl DptHeadConfig {
    pub fn check(&self) -> DenseResult<()> {
        if let DptOutput::Bins(b) = &self.output {
            b.check()?;
        }
        let (min, max) = self.output.range();
        if min.partial_cmp(&max) != Some(std::cmp::Ordering::Less) {
            return Err(DenseError::Config(format!(
                "height range [{min}, {max}]: min must be below max"
            )));
        }
        if self.dim == 0
            || self.features < 2
            || self.head_channels == 0
            || self.scale_channels.contains(&0)
        {
            return Err(DenseError::Config(format!(
                "DPT head widths must be positive (dim {}, features {}, scales {:?}, head {})",
                self.dim, self.features, self.scale_channels, self.head_channels
            )));
        }
        Ok(())
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> DptHead<B> {
        let c = self.scale_channels;
        let f = self.features;
        let conv = |i: usize, o: usize, k: usize| {
            Conv2dConfig::new([i, o], [k, k]).with_padding(PaddingConfig2d::Explicit(
                k / 2,
                k / 2,
                k / 2,
                k / 2,
            ))
        };
        DptHead {
            project: (0..4)
                .map(|i| conv(self.dim, c[i], 1).init(device))
                .collect(),
            up4: ConvTranspose2dConfig::new([c[0], c[0]], [4, 4])
                .with_stride([4, 4])
                .init(device),
            up2: ConvTranspose2dConfig::new([c[1], c[1]], [2, 2])
                .with_stride([2, 2])
                .init(device),
            down2: conv(c[3], c[3], 3).with_stride([2, 2]).init(device),
            layer_rn: (0..4)
                .map(|i| conv(c[i], f, 3).with_bias(false).init(device))
                .collect(),
            fusion: (0..4).map(|_| FusionBlock::init(f, device)).collect(),
            head1: conv(f, f / 2, 3).init(device),
            head2: conv(f / 2, self.head_channels, 3).init(device),
            head3: {
                let mut c = conv(self.head_channels, self.output.channels(), 1).init(device);
                if let DptOutput::Bins(Bins {
                    norm: BinNorm::ReluEps { .. },
                    n,
                    ..
                }) = self.output
                {
                    // Bin scores start positive: under relu a score below 0 has no gradient, and
                    // a head whose scores all start there never leaves the uniform weights.
                    c.bias = Some(Param::from_tensor(Tensor::ones([n], device)));
                }
                c
            },
        }
    }
}

/// Two 3 × 3 convolutions with pre-activation ReLUs and a skip connection.
#[derive(Module, Debug)]
pub struct ResidualConvUnit<B: Backend> {
    pub conv1: Conv2d<B>,
    pub conv2: Conv2d<B>,
}

impl<B: Backend> ResidualConvUnit<B> {
    fn init(f: usize, device: &B::Device) -> Self {
        let c = || {
            Conv2dConfig::new([f, f], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        ResidualConvUnit {
            conv1: c(),
            conv2: c(),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = self
            .conv2
            .forward(relu(self.conv1.forward(relu(x.clone()))));
        y + x
    }
}

/// DPT's feature fusion block: path (+ residual unit of the skip), residual unit, resample,
/// 1 × 1 convolution.
#[derive(Module, Debug)]
pub struct FusionBlock<B: Backend> {
    pub skip: ResidualConvUnit<B>,
    pub path: ResidualConvUnit<B>,
    pub out: Conv2d<B>,
}

impl<B: Backend> FusionBlock<B> {
    fn init(f: usize, device: &B::Device) -> Self {
        FusionBlock {
            skip: ResidualConvUnit::init(f, device),
            path: ResidualConvUnit::init(f, device),
            out: Conv2dConfig::new([f, f], [1, 1]).init(device),
        }
    }

    fn forward(
        &self,
        x: Tensor<B, 4>,
        skip: Option<Tensor<B, 4>>,
        size: (usize, usize),
    ) -> Tensor<B, 4> {
        let x = match skip {
            Some(s) => x + self.skip.forward(s),
            None => x,
        };
        self.out.forward(resize(self.path.forward(x), size))
    }
}

#[derive(Module, Debug)]
pub struct DptHead<B: Backend> {
    pub project: Vec<Conv2d<B>>,
    pub up4: ConvTranspose2d<B>,
    pub up2: ConvTranspose2d<B>,
    pub down2: Conv2d<B>,
    pub layer_rn: Vec<Conv2d<B>>,
    pub fusion: Vec<FusionBlock<B>>,
    pub head1: Conv2d<B>,
    pub head2: Conv2d<B>,
    pub head3: Conv2d<B>,
}

impl<B: Backend> DptHead<B> {
    /// The raw output [batch, channels, size.0, size.1] (bin scores or the [0, 1] value) of
    /// `tokens` [batch, layers ≥ 4, 1 + patches, dim]; the last 4 layers are used.
    pub fn forward_raw(
        &self,
        tokens: Tensor<B, 4>,
        grid: (usize, usize),
        size: (usize, usize),
    ) -> Tensor<B, 4> {
        let available = tokens.dims()[1];
        let first = available - 4;
        let maps: Vec<Tensor<B, 4>> = (0..4)
            .map(|i| {
                let x = self.project[i].forward(patch_map(&tokens, first + i, grid));
                let x = match i {
                    0 => self.up4.forward(x),
                    1 => self.up2.forward(x),
                    2 => x,
                    _ => self.down2.forward(x),
                };
                self.layer_rn[i].forward(x)
            })
            .collect();
        let hw = |t: &Tensor<B, 4>| {
            let [_, _, h, w] = t.dims();
            (h, w)
        };
        let s: Vec<(usize, usize)> = maps.iter().map(hw).collect();
        let top = (s[0].0 * 2, s[0].1 * 2);
        let p = self.fusion[3].forward(maps[3].clone(), None, s[2]);
        let p = self.fusion[2].forward(p, Some(maps[2].clone()), s[1]);
        let p = self.fusion[1].forward(p, Some(maps[1].clone()), s[0]);
        let p = self.fusion[0].forward(p, Some(maps[0].clone()), top);
        let x = resize(self.head1.forward(p), size);
        self.head3.forward(relu(self.head2.forward(x)))
    }

    /// Heights in metres [batch, 1, size.0, size.1].
    pub fn forward(
        &self,
        tokens: Tensor<B, 4>,
        grid: (usize, usize),
        size: (usize, usize),
        output: &DptOutput,
    ) -> Tensor<B, 4> {
        let raw = self.forward_raw(tokens, grid, size);
        match output {
            DptOutput::Bins(b) => b.expected(raw),
            DptOutput::Regression { min, max } => raw.mul_scalar(max - min).add_scalar(*min),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn heights_at_pixel_resolution_within_the_bin_range() {
        let device = Default::default();
        // A 5 x 3 grid (odd sizes exercise the exact-size resampling) of 4 layers, dim 8.
        let tokens = Tensor::<Flex, 4>::random(
            [2, 4, 1 + 15, 8],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let bins = Bins::new(16, 2.0, 30.0, BinNorm::default()).unwrap();
        let cfg = DptHeadConfig::new(8, DptOutput::Bins(bins))
            .with_features(8)
            .with_scale_channels([4, 4, 8, 8])
            .with_head_channels(4);
        cfg.check().unwrap();
        let head = cfg.init::<Flex>(&device);
        let y = head.forward(tokens.clone(), (5, 3), (70, 42), &cfg.output);
        assert_eq!(y.dims(), [2, 1, 70, 42]);
        let v = y.into_data().to_vec::<f32>().unwrap();
        assert!(v.iter().all(|h| (2.0..=30.0).contains(h)), "{:?}", &v[..4]);
        let raw = head.forward_raw(tokens, (5, 3), (70, 42));
        assert_eq!(raw.dims(), [2, 16, 70, 42]);
    }
}
