//! The rows every embedding writes: one backbone forward of a batch, split into `cls`, `patch`,
//! `reg` and `layer.{i}` rows of the feature store.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use dinoadapt_core::vit::VisionTransformer;

use super::EmbedError;
use crate::FeatureWriter;

/// Token counts of one input size.
#[derive(Debug, Clone)]
pub struct FeatureLayout {
    pub dim: usize,
    pub registers: usize,
    pub patches: usize,
    pub layers: Vec<usize>,
    pub norm_layers: bool,
    pub size: (usize, usize),
    /// Input channels of the model (and of the regions).
    pub channels: usize,
}

impl FeatureLayout {
    pub fn new<B: Backend>(
        model: &VisionTransformer<B>,
        size: (usize, usize),
        layers: Vec<usize>,
        norm_layers: bool,
    ) -> Result<Self, EmbedError> {
        let cfg = &model.config;
        let (h, w) = model.grid_of(size.0, size.1);
        if h == 0 || w == 0 {
            return Err(EmbedError::SmallerThanPatch {
                height: size.0,
                width: size.1,
                patch: cfg.patch_size,
            });
        }
        Ok(FeatureLayout {
            dim: cfg.embed_dim,
            registers: cfg.num_register_tokens,
            patches: h * w,
            layers,
            norm_layers,
            size,
            channels: cfg.in_chans,
        })
    }

    /// The feature store's tensors for `n` rows.
    pub fn specs(&self, n: usize) -> Vec<(String, Vec<usize>)> {
        let (d, r, np) = (self.dim, self.registers, self.patches);
        let mut specs = vec![
            ("cls".to_string(), vec![n, d]),
            ("patch".to_string(), vec![n, np, d]),
        ];
        if r > 0 {
            specs.push(("reg".to_string(), vec![n, r, d]));
        }
        for i in &self.layers {
            specs.push((format!("layer.{i}"), vec![n, 1 + r + np, d]));
        }
        specs
    }
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>, EmbedError> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| EmbedError::Device(format!("{e:?}")))
}

/// One batch's feature rows on the host, ready for the feature store.
#[derive(Debug, Clone)]
pub struct BatchRows {
    /// Class tokens, [n, dim].
    pub cls: Vec<f32>,
    /// Patch tokens, [n, patches, dim].
    pub patch: Vec<f32>,
    /// Register tokens, [n, registers, dim] (empty without registers).
    pub reg: Vec<f32>,
    /// The kept intermediate blocks, each [n, tokens, dim], in the layout's order.
    pub layers: Vec<Vec<f32>>,
}

impl BatchRows {
    /// Append the rows to `writer` (the tensors of `layout.specs`).
    pub fn append_to(
        &self,
        layout: &FeatureLayout,
        writer: &mut FeatureWriter,
    ) -> Result<(), EmbedError> {
        writer.append("cls", &self.cls)?;
        writer.append("patch", &self.patch)?;
        if layout.registers > 0 {
            writer.append("reg", &self.reg)?;
        }
        for (i, rows) in layout.layers.iter().zip(&self.layers) {
            writer.append(&format!("layer.{i}"), rows)?;
        }
        Ok(())
    }
}

/// Run the backbone on `pixels` ([n][C][h][w]) and bring its rows to the host.
pub fn forward_rows<B: Backend>(
    model: &VisionTransformer<B>,
    layout: &FeatureLayout,
    pixels: Vec<f32>,
    n: usize,
    chunks: usize,
    device: &B::Device,
) -> Result<BatchRows, EmbedError> {
    let (d, r, np) = (layout.dim, layout.registers, layout.patches);
    let x = Tensor::<B, 4>::from_data(
        TensorData::new(pixels, [n, layout.channels, layout.size.0, layout.size.1]),
        device,
    );
    let f = model.forward_features_chunked(x, &layout.layers, chunks);
    // One transfer of all tokens, split into cls / reg / patch rows on the host.
    let tokens = host(f.tokens)?;
    let t = 1 + r + np;
    let rows = |from: usize, len: usize| -> Vec<f32> {
        (0..n)
            .flat_map(|i| {
                tokens[(i * t + from) * d..(i * t + from + len) * d]
                    .iter()
                    .copied()
            })
            .collect()
    };
    let layers = f
        .layers
        .into_iter()
        .map(|layer| match layout.norm_layers {
            true => host(model.apply_norm(layer)),
            false => host(layer),
        })
        .collect::<Result<_, _>>()?;
    Ok(BatchRows {
        cls: rows(0, 1),
        patch: rows(1 + r, np),
        reg: rows(1, r),
        layers,
    })
}

/// Run the backbone on `pixels` ([n][C][h][w]) and append the rows to `writer`; returns the
/// class tokens written ([n, dim]), for callers that also pool or export them.
pub fn append_batch<B: Backend>(
    model: &VisionTransformer<B>,
    layout: &FeatureLayout,
    pixels: Vec<f32>,
    n: usize,
    chunks: usize,
    device: &B::Device,
    writer: &mut FeatureWriter,
) -> Result<Vec<f32>, EmbedError> {
    let rows = forward_rows(model, layout, pixels, n, chunks, device)?;
    rows.append_to(layout, writer)?;
    Ok(rows.cls)
}

/// Patch tokens of a batch of square inputs (`[n][C][size][size]`, C the model's input
/// channels): `[image][patch][dim]` and the patch grid.
pub fn patch_tokens<B: Backend>(
    model: &VisionTransformer<B>,
    device: &B::Device,
    pixels: Vec<f32>,
    n: usize,
    size: usize,
    chunks: usize,
) -> Result<(Vec<f32>, (usize, usize)), EmbedError> {
    let cfg = &model.config;
    let (gh, gw) = model.grid_of(size, size);
    let c = cfg.in_chans;
    if pixels.len() != n * c * size * size {
        return Err(EmbedError::Channels {
            channels: c,
            names: cfg
                .channels
                .as_ref()
                .map(|r| r.names.join(", "))
                .unwrap_or_else(|| "unnamed".into()),
            given: pixels.len() / (n * size * size).max(1),
        });
    }
    let x = Tensor::<B, 4>::from_data(TensorData::new(pixels, [n, c, size, size]), device);
    let f = model.forward_features_chunked(x, &[], chunks);
    let prefix = 1 + cfg.num_register_tokens;
    let patches = host(f.tokens.narrow(1, prefix, gh * gw))?;
    Ok((patches, (gh, gw)))
}
