//! One configurable Vision Transformer for the whole DINOv2 / UNI family.

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Distribution, Tensor, TensorData};

use super::config::{PosEmbedPrefix, VitConfig};
use super::init::{trunc_normal, TRUNC_NORMAL_STD};
use super::layers::Block;
use super::pos_embed::axis_matrix_cached;
use super::precision::{linear, matmul, MatmulPrecision};
use super::stochastic_depth::DropPathForm;

/// The Vision Transformer backbone. Token order is always `[CLS, REG_1..REG_R, patches]` with
/// patches row-major over the (h, w) grid.
#[derive(Module, Debug)]
pub struct VisionTransformer<B: Backend> {
    /// The patch-embedding convolution (kernel = stride = patch), held as a linear map over
    /// flattened (channel, row, col) patches: it computes the same sums as the convolution.
    pub patch_embed: Linear<B>,
    /// [1, 1, D]
    pub cls_token: Param<Tensor<B, 3>>,
    /// [1, R, D]
    pub register_tokens: Option<Param<Tensor<B, 3>>>,
    /// [1, D]
    pub mask_token: Option<Param<Tensor<B, 2>>>,
    /// [1, prefix rows + M*M, D]
    pub pos_embed: Param<Tensor<B, 3>>,
    pub blocks: Vec<Block<B>>,
    pub norm: LayerNorm<B>,
    #[module(skip)]
    pub config: VitConfig,
    /// How matrix products are computed (see [`MatmulPrecision`]); not part of the weights.
    #[module(skip)]
    pub precision: MatmulPrecision,
}

/// What a forward pass returns.
#[derive(Debug, Clone)]
pub struct VitFeatures<B: Backend> {
    /// All tokens after the final norm: [B, 1 + R + h*w, D].
    pub tokens: Tensor<B, 3>,
    /// Outputs of the requested blocks, before the final norm, in the order asked.
    pub layers: Vec<Tensor<B, 3>>,
    /// The patch grid (h, w).
    pub grid: (usize, usize),
    /// Number of register tokens.
    pub num_registers: usize,
}

impl<B: Backend> VitFeatures<B> {
    /// Normalised class token [B, D].
    pub fn cls(&self) -> Tensor<B, 2> {
        cls_of(&self.tokens)
    }

    /// Normalised register tokens [B, R, D], if the model has registers.
    pub fn registers(&self) -> Option<Tensor<B, 3>> {
        registers_of(&self.tokens, self.num_registers)
    }

    /// Normalised patch tokens [B, h*w, D].
    pub fn patches(&self) -> Tensor<B, 3> {
        patches_of(&self.tokens, self.num_registers)
    }
}

/// The class token of a token tensor [B, T, D].
pub fn cls_of<B: Backend>(tokens: &Tensor<B, 3>) -> Tensor<B, 2> {
    tokens.clone().narrow(1, 0, 1).squeeze_dim::<2>(1)
}

/// The register tokens of a token tensor, if `r > 0`.
pub fn registers_of<B: Backend>(tokens: &Tensor<B, 3>, r: usize) -> Option<Tensor<B, 3>> {
    (r > 0).then(|| tokens.clone().narrow(1, 1, r))
}

/// The patch tokens of a token tensor.
pub fn patches_of<B: Backend>(tokens: &Tensor<B, 3>, r: usize) -> Tensor<B, 3> {
    let t = tokens.dims()[1];
    tokens.clone().narrow(1, 1 + r, t - 1 - r)
}

/// Patch tokens [B, h*w, D] as a feature map [B, D, h, w].
pub fn patches_to_grid<B: Backend>(patches: Tensor<B, 3>, grid: (usize, usize)) -> Tensor<B, 4> {
    let [b, _, d] = patches.dims();
    patches.swap_dims(1, 2).reshape([b, d, grid.0, grid.1])
}

impl<B: Backend> VisionTransformer<B> {
    /// The final LayerNorm (the CPU student's own op under autodiff, burn's elsewhere).
    pub(crate) fn final_norm(&self, tokens: Tensor<B, 3>) -> Tensor<B, 3> {
        super::cpu_layer_norm::layer_norm(&self.norm, tokens, self.config.norm_eps)
    }

    /// A model with fresh random weights, initialised as the official `init_weights`
    /// ([`super::init`]).
    pub fn init(config: &VitConfig, device: &B::Device) -> Self {
        let d = config.embed_dim;
        let p = config.patch_size;
        let normal = |shape: [usize; 3], std: f64| {
            Tensor::<B, 3>::random(shape, Distribution::Normal(0.0, std), device)
        };
        VisionTransformer {
            patch_embed: LinearConfig::new(config.in_chans * p * p, d).init(device),
            cls_token: Param::from_tensor(normal([1, 1, d], 1e-6)),
            register_tokens: (config.num_register_tokens > 0)
                .then(|| Param::from_tensor(normal([1, config.num_register_tokens, d], 1e-6))),
            mask_token: config
                .mask_token
                .then(|| Param::from_tensor(Tensor::zeros([1, d], device))),
            pos_embed: Param::from_tensor(trunc_normal(
                [1, config.pos_embed_rows(), d],
                TRUNC_NORMAL_STD,
                device,
            )),
            blocks: (0..config.depth)
                .map(|i| Block::init(config, i, device))
                .collect(),
            norm: LayerNormConfig::new(d)
                .with_epsilon(config.norm_eps)
                .init(device),
            config: config.clone(),
            precision: MatmulPrecision::default(),
        }
    }

    /// The model with a trainable mask token: a checkpoint without one (timm, UNI) gets a zero
    /// token [1, D], as the official `DinoVisionTransformer` initialises it, recorded in its
    /// config so that it is saved with the weights. A model that has one is returned as it is.
    pub fn with_mask_token(mut self) -> Self {
        if self.mask_token.is_none() {
            let device = self.device();
            let d = self.config.embed_dim;
            self.mask_token = Some(Param::from_tensor(Tensor::zeros([1, d], &device)));
            self.config.mask_token = true;
        }
        self
    }

    /// The model with its position-embedding table resampled once to a `grid` x `grid` patch
    /// grid (with the model's own interpolation mode), as a high-resolution stage stores it:
    /// at that grid the table is then used as it is.
    pub fn with_pos_grid(mut self, grid: usize) -> Self {
        let cfg = &self.config;
        if grid == cfg.pos_grid || grid == 0 {
            return self;
        }
        let p = cfg.patch_size;
        let d = cfg.embed_dim;
        let (prefix, table) = self.pos_embed_for((grid, grid), (grid * p, grid * p));
        let rows = match prefix {
            Some(prefix) => Tensor::cat(vec![prefix, table], 0),
            None => table,
        };
        let n = rows.dims()[0];
        let table = rows.reshape([1, n, d]).detach();
        self.pos_embed = Param::from_tensor(table);
        self.config.pos_grid = grid;
        self
    }

    /// The same model computing its products at `precision`.
    pub fn with_precision(mut self, precision: MatmulPrecision) -> Self {
        self.precision = precision;
        self
    }

    /// The same model dropping residual branches in `form` while training.
    pub fn with_drop_path_form(mut self, form: DropPathForm) -> Self {
        for block in &mut self.blocks {
            block.drop_path_form = form;
        }
        self
    }

    pub fn device(&self) -> B::Device {
        self.cls_token.val().device()
    }

    /// Patch grid for an image of `(height, width)` pixels (the remainder is cropped, as the
    /// stride-p convolution of the references drops it).
    pub fn grid_of(&self, height: usize, width: usize) -> (usize, usize) {
        (
            height / self.config.patch_size,
            width / self.config.patch_size,
        )
    }

    /// Flattened patches [B, h*w, C*p*p] in (channel, row, col) order.
    fn patchify(&self, x: Tensor<B, 4>) -> (Tensor<B, 3>, (usize, usize)) {
        let [b, c, hh, ww] = x.dims();
        let p = self.config.patch_size;
        let (h, w) = self.grid_of(hh, ww);
        let x = if hh != h * p || ww != w * p {
            x.narrow(2, 0, h * p).narrow(3, 0, w * p)
        } else {
            x
        };
        let patches = x
            .reshape([b, c, h, p, w, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([b, h * w, c * p * p]);
        (patches, (h, w))
    }

    /// The position embedding for a grid: (prefix rows [P, D] if any, grid rows [h*w, D]).
    pub fn pos_embed_for(
        &self,
        grid: (usize, usize),
        image: (usize, usize),
    ) -> (Option<Tensor<B, 2>>, Tensor<B, 2>) {
        let cfg = &self.config;
        let m = cfg.pos_grid;
        let d = cfg.embed_dim;
        let prefix_rows = cfg.pos_embed_prefix.rows(cfg.num_register_tokens);
        let pe = self.pos_embed.val().squeeze_dim::<2>(0);
        let prefix = (prefix_rows > 0).then(|| pe.clone().narrow(0, 0, prefix_rows));
        let table = pe.narrow(0, prefix_rows, m * m);
        if cfg.interpolation_skip.keeps_table(m, grid, image) {
            return (prefix, table);
        }
        let (h, w) = grid;
        let device = self.device();
        let matrix = |out: usize| {
            Tensor::<B, 2>::from_data(
                TensorData::new(
                    axis_matrix_cached(cfg.interpolation, m, out).to_vec(),
                    [out, m],
                ),
                &device,
            )
        };
        // Columns first: [M, w, M] x [M, M, D] -> [M, w, D]; then rows: [h, M] x [M, w*D].
        let wide = matmul(
            matrix(w).unsqueeze_dim::<3>(0).expand([m, w, m]),
            table.reshape([m, m, d]),
            self.precision.exact(),
        );
        let out = matmul(matrix(h), wide.reshape([m, w * d]), self.precision.exact());
        (prefix, out.reshape([h * w, d]))
    }

    /// Patch embedding, mask token, class/register tokens and position embedding.
    /// `mask` [B, h*w] replaces the masked patch embeddings by the mask token (iBOT).
    pub fn prepare_tokens(
        &self,
        x: Tensor<B, 4>,
        mask: Option<Tensor<B, 2, Bool>>,
    ) -> (Tensor<B, 3>, (usize, usize)) {
        let [b, _, hh, ww] = x.dims();
        let d = self.config.embed_dim;
        let (patches, grid) = self.patchify(x);
        let n = grid.0 * grid.1;
        let mut patches = linear(&self.patch_embed, patches, self.precision);
        if let Some(mask) = mask {
            let token = self
                .mask_token
                .as_ref()
                .map(|t| t.val())
                .unwrap_or_else(|| Tensor::zeros([1, d], &patches.device()));
            let token = token.unsqueeze_dim::<3>(0).expand([b, n, d]);
            patches = patches.mask_where(mask.unsqueeze_dim::<3>(2).expand([b, n, d]), token);
        }
        let (pos_prefix, pos_grid) = self.pos_embed_for(grid, (hh, ww));
        let patches = patches + pos_grid.unsqueeze_dim::<3>(0);
        let cls = self.cls_token.val().expand([b, 1, d]);
        let regs = self
            .register_tokens
            .as_ref()
            .map(|r| r.val().expand([b, self.config.num_register_tokens, d]));
        let tokens = match (self.config.pos_embed_prefix, pos_prefix) {
            (PosEmbedPrefix::Cls, Some(pp)) => {
                let cls = cls + pp.unsqueeze_dim::<3>(0);
                cat_tokens(cls, regs, patches)
            }
            (PosEmbedPrefix::AllPrefix, Some(pp)) => {
                let prefix = match regs {
                    Some(r) => Tensor::cat(vec![cls, r], 1),
                    None => cls,
                };
                Tensor::cat(vec![prefix + pp.unsqueeze_dim::<3>(0), patches], 1)
            }
            _ => cat_tokens(cls, regs, patches),
        };
        (tokens, grid)
    }

    /// Full forward pass: final-normed tokens plus the raw outputs of the blocks in `layers`
    /// (indices 0..depth, in the order asked).
    pub fn forward_features(
        &self,
        x: Tensor<B, 4>,
        mask: Option<Tensor<B, 2, Bool>>,
        layers: &[usize],
    ) -> VitFeatures<B> {
        let (tokens, grid) = self.prepare_tokens(x, mask);
        let (tokens, kept) = self.forward_blocks(tokens, layers);
        let layers = layers
            .iter()
            .map(|i| {
                kept.iter()
                    .find(|(k, _)| k == i)
                    .map(|(_, t)| t.clone())
                    .expect("layer index checked against depth")
            })
            .collect();
        VitFeatures {
            tokens: self.final_norm(tokens),
            layers,
            grid,
            num_registers: self.config.num_register_tokens,
        }
    }

    /// Every block on the prepared tokens: the last block's output and the outputs of the
    /// blocks in `layers` (in block order). Inference on the CPU backend runs the fused blocks
    /// of [`super::cpu_blocks`]; everything else burn's ops.
    fn forward_blocks(
        &self,
        tokens: Tensor<B, 3>,
        layers: &[usize],
    ) -> (Tensor<B, 3>, Vec<(usize, Tensor<B, 3>)>) {
        let tokens = match self.precision {
            MatmulPrecision::Backend => {
                match super::cpu_blocks::forward_blocks(
                    &self.blocks,
                    tokens,
                    self.config.norm_eps,
                    layers,
                ) {
                    Ok(done) => return done,
                    Err(tokens) => tokens,
                }
            }
            _ => tokens,
        };
        let mut tokens = tokens;
        let mut kept = Vec::with_capacity(layers.len());
        for (i, block) in self.blocks.iter().enumerate() {
            tokens = block.forward(tokens, self.precision);
            if layers.contains(&i) {
                kept.push((i, tokens.clone()));
            }
        }
        (tokens, kept)
    }

    /// [`forward_features`](Self::forward_features) on `chunks` slices of the batch at once, one
    /// per thread, concatenated in order: the same result. For CPU backends, whose element-wise
    /// ops, copies and attention run on one thread each (burn-flex 0.21): splitting the batch
    /// keeps every core busy through them, while the matmuls stay multi-threaded.
    pub fn forward_features_chunked(
        &self,
        x: Tensor<B, 4>,
        layers: &[usize],
        chunks: usize,
    ) -> VitFeatures<B>
    where
        Self: Sync,
    {
        use rayon::prelude::*;
        let batch = x.dims()[0];
        let chunks = chunks.clamp(1, batch.max(1));
        if chunks == 1 {
            return self.forward_features(x, None, layers);
        }
        let parts: Vec<VitFeatures<B>> = x
            .chunk(chunks, 0)
            .into_par_iter()
            .map(|part| self.forward_features(part, None, layers))
            .collect();
        let grid = parts[0].grid;
        let num_registers = parts[0].num_registers;
        let tokens = Tensor::cat(parts.iter().map(|p| p.tokens.clone()).collect(), 0);
        let layers = (0..layers.len())
            .map(|i| Tensor::cat(parts.iter().map(|p| p.layers[i].clone()).collect(), 0))
            .collect();
        VitFeatures {
            tokens,
            layers,
            grid,
            num_registers,
        }
    }

    /// Indices of the last `n` blocks.
    pub fn last_layers(&self, n: usize) -> Vec<usize> {
        let depth = self.config.depth;
        (depth.saturating_sub(n)..depth).collect()
    }

    /// Apply the final norm to an intermediate output (as `get_intermediate_layers(norm=True)`).
    pub fn apply_norm(&self, tokens: Tensor<B, 3>) -> Tensor<B, 3> {
        self.final_norm(tokens)
    }
}

fn cat_tokens<B: Backend>(
    cls: Tensor<B, 3>,
    regs: Option<Tensor<B, 3>>,
    patches: Tensor<B, 3>,
) -> Tensor<B, 3> {
    match regs {
        Some(r) => Tensor::cat(vec![cls, r, patches], 1),
        None => Tensor::cat(vec![cls, patches], 1),
    }
}
