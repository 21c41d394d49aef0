//! A frozen backbone and a trained dense head as one per-pixel model: normalised images in,
//! class probabilities or heights out. Domain-free: as a [`DenseModel`] it runs in each
//! domain's own inference (satellite rasters, slides, volumes; `Domain::dense_predict`).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use dinoadapt_core::vit::VisionTransformer;
pub use dinoadapt_datasets::class_planes::argmax_at;
use dinoadapt_datasets::DenseModel;
use serde::{Deserialize, Serialize};

use super::error::{DenseError, DenseResult};
use super::head::{DenseHead, DenseHeadConfig};

/// Which backbone tokens a head reads, as the feature files record them: intermediate blocks
/// (`layer.{i}`, optionally through the final norm) or, with no layers, the final normed tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSpec {
    /// Block indices, ascending; empty = the final (normed) output.
    pub layers: Vec<usize>,
    /// Whether the final norm was applied to the intermediate layers.
    pub norm_layers: bool,
}

/// Tokens of `pixels` [n, 3, h, w] in the heads' layout: [n, layers, 1 + patches, dim] (class
/// token then patches; registers dropped), and the patch grid.
pub fn backbone_tokens<B: Backend>(
    model: &VisionTransformer<B>,
    pixels: Tensor<B, 4>,
    spec: &TokenSpec,
    chunks: usize,
) -> (Tensor<B, 4>, (usize, usize)) {
    let f = model.forward_features_chunked(pixels, &spec.layers, chunks);
    let r = f.num_registers;
    let drop_registers = |t: Tensor<B, 3>| {
        let [n, tokens, d] = t.dims();
        let cls = t.clone().narrow(1, 0, 1);
        let patches = t.narrow(1, 1 + r, tokens - 1 - r);
        Tensor::cat(vec![cls, patches], 1).reshape([n, 1, tokens - r, d])
    };
    let layers: Vec<Tensor<B, 4>> = if spec.layers.is_empty() {
        vec![drop_registers(f.tokens)]
    } else {
        f.layers
            .into_iter()
            .map(|l| {
                drop_registers(if spec.norm_layers {
                    model.apply_norm(l)
                } else {
                    l
                })
            })
            .collect()
    };
    (Tensor::cat(layers, 1), f.grid)
}

/// Backbone + head.
pub struct DensePredictor<B: Backend> {
    pub backbone: VisionTransformer<B>,
    pub tokens: TokenSpec,
    pub config: DenseHeadConfig,
    pub head: DenseHead<B>,
    pub device: B::Device,
    /// Slices of a batch run in parallel on the CPU (see `forward_features_chunked`).
    pub chunks: usize,
}

impl<B: Backend> DensePredictor<B> {
    /// Channels of [`predict`](Self::predict): classes or 1.
    pub fn channels(&self) -> usize {
        self.config.output_channels()
    }

    /// Predictions [n, channels, h, w] for normalised `pixels` [n, C, h, w], C the backbone's
    /// input channels (class probabilities, or heights in metres).
    pub fn predict(
        &self,
        pixels: Vec<f32>,
        n: usize,
        (h, w): (usize, usize),
    ) -> DenseResult<Vec<f32>> {
        let c = self.backbone.config.in_chans;
        if pixels.len() != n * c * h * w {
            return Err(DenseError::Shape(format!(
                "{} pixel values for {n} images of {c}x{h}x{w} (the backbone takes {c} \
                 channel(s))",
                pixels.len()
            )));
        }
        let x = Tensor::<B, 4>::from_data(TensorData::new(pixels, [n, c, h, w]), &self.device);
        let (tokens, grid) = backbone_tokens(&self.backbone, x, &self.tokens, self.chunks);
        self.config.check_input(tokens.dims(), grid)?;
        self.head
            .predict(&self.config, tokens, grid, (h, w))
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| DenseError::Readback(format!("{e:?}")))
    }
}

impl<B: Backend> DenseModel for DensePredictor<B> {
    fn channels(&self) -> usize {
        DensePredictor::channels(self)
    }

    fn predict(
        &mut self,
        pixels: Vec<f32>,
        n: usize,
        size: (usize, usize),
    ) -> Result<Vec<f32>, String> {
        DensePredictor::predict(self, pixels, n, size).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dense::linear::LinearHeadConfig;
    use burn::backend::Flex;
    use dinoadapt_core::vit::VitConfig;

    #[test]
    fn backbone_tokens_keep_cls_and_patches_and_feed_the_head() {
        let device = Default::default();
        let mut cfg = VitConfig::preset("vits14_reg").unwrap();
        (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.pos_grid) = (16, 2, 2, 2);
        cfg.ffn = dinoadapt_core::vit::FfnConfig::mlp(16, 4.0);
        let model = VisionTransformer::<Flex>::init(&cfg, &device);
        let x = Tensor::<Flex, 4>::random(
            [2, 3, 28, 42],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let spec = TokenSpec {
            layers: vec![0, 1],
            norm_layers: true,
        };
        let (t, grid) = backbone_tokens(&model, x.clone(), &spec, 1);
        assert_eq!(grid, (2, 3));
        assert_eq!(t.dims(), [2, 2, 7, 16]);
        // The last block through the norm is the final output (registers dropped).
        let (fin, _) = backbone_tokens(
            &model,
            x,
            &TokenSpec {
                layers: vec![],
                norm_layers: false,
            },
            1,
        );
        let a = t.narrow(1, 1, 1).into_data().to_vec::<f32>().unwrap();
        let b = fin.into_data().to_vec::<f32>().unwrap();
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5));

        let config = DenseHeadConfig::Linear(LinearHeadConfig::new(16, 3).with_layers(2));
        let p = DensePredictor {
            head: config.init::<Flex>(&device).unwrap(),
            backbone: model,
            tokens: spec,
            config,
            device,
            chunks: 1,
        };
        let y = p.predict(vec![0.1; 3 * 28 * 42], 1, (28, 42)).unwrap();
        assert_eq!(y.len(), 3 * 28 * 42);
        assert!(((y[0] + y[28 * 42] + y[2 * 28 * 42]) - 1.0).abs() < 1e-5);
        assert!(p.predict(vec![0.1; 5], 1, (28, 42)).is_err());
    }
}
