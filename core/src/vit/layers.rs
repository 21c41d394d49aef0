//! The building blocks of a ViT block: DINOv2's attention (one packed qkv projection), the two
//! feed-forward networks, LayerScale and stochastic depth.

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::silu;

use super::cpu_layer_norm::layer_norm;
use super::erf_gelu::gelu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::config::{FfnConfig, VitConfig};
use super::init::timm_linear;
use super::precision::{linear, scaled_dot_product, MatmulPrecision};
use super::stochastic_depth::{drop_add_residual, keep_mask, DropPathForm};

/// Multi-head self-attention with one packed qkv projection (rows [q | k | v], each split by
/// head), as the official DINOv2 and timm code store it.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub qkv: Linear<B>,
    pub proj: Linear<B>,
    #[module(skip)]
    pub num_heads: usize,
}

impl<B: Backend> Attention<B> {
    pub fn init(cfg: &VitConfig, device: &B::Device) -> Self {
        let d = cfg.embed_dim;
        Attention {
            qkv: timm_linear(d, 3 * d, cfg.qkv_bias, device),
            proj: timm_linear(d, d, cfg.proj_bias, device),
            num_heads: cfg.num_heads,
        }
    }

    /// x: [B, T, D] -> [B, T, D]
    pub fn forward(&self, x: Tensor<B, 3>, precision: MatmulPrecision) -> Tensor<B, 3> {
        let qkv = linear(&self.qkv, x, precision);
        linear(&self.proj, self.attend(qkv, precision), precision)
    }

    /// Multi-head attention of projected [q | k | v] rows [B, T, 3D] -> [B, T, D] (heads
    /// concatenated, before the output projection).
    pub fn attend(&self, qkv: Tensor<B, 3>, precision: MatmulPrecision) -> Tensor<B, 3> {
        let qkv = match precision {
            MatmulPrecision::Backend => match super::cpu_attention::attend(qkv, self.num_heads)
                .or_else(|qkv| super::cpu_attention_grad::attend(qkv, self.num_heads))
            {
                Ok(out) => return out,
                Err(qkv) => qkv,
            },
            _ => qkv,
        };
        let [b, t, d3] = qkv.dims();
        let (h, d) = (self.num_heads, d3 / 3);
        let qkv = qkv.reshape([b, t, 3, h, d / h]).permute([2, 0, 3, 1, 4]);
        let q = qkv.clone().narrow(0, 0, 1).squeeze_dim::<4>(0);
        let k = qkv.clone().narrow(0, 1, 1).squeeze_dim::<4>(0);
        let v = qkv.narrow(0, 2, 1).squeeze_dim::<4>(0);
        scaled_dot_product(q, k, v, precision)
            .swap_dims(1, 2)
            .reshape([b, t, d])
    }
}

/// The block's feed-forward network.
#[derive(Module, Debug)]
pub enum Ffn<B: Backend> {
    /// fc1, exact GELU, fc2.
    Mlp(Mlp<B>),
    /// Packed SwiGLU.
    SwiGlu(SwiGlu<B>),
}

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

/// `w12` gives [gate | value]; the output is `w3(silu(gate) * value)`.
#[derive(Module, Debug)]
pub struct SwiGlu<B: Backend> {
    pub w12: Linear<B>,
    pub w3: Linear<B>,
    #[module(skip)]
    pub hidden: usize,
}

impl<B: Backend> Ffn<B> {
    pub fn init(cfg: &VitConfig, device: &B::Device) -> Self {
        let d = cfg.embed_dim;
        match cfg.ffn {
            FfnConfig::Mlp { hidden } => Ffn::Mlp(Mlp {
                fc1: timm_linear(d, hidden, cfg.ffn_bias, device),
                fc2: timm_linear(hidden, d, cfg.ffn_bias, device),
            }),
            FfnConfig::SwiGlu { hidden } => Ffn::SwiGlu(SwiGlu {
                w12: timm_linear(d, 2 * hidden, cfg.ffn_bias, device),
                w3: timm_linear(hidden, d, cfg.ffn_bias, device),
                hidden,
            }),
        }
    }

    pub fn forward(&self, x: Tensor<B, 3>, precision: MatmulPrecision) -> Tensor<B, 3> {
        match self {
            Ffn::Mlp(m) => linear(&m.fc2, gelu(linear(&m.fc1, x, precision)), precision),
            Ffn::SwiGlu(s) => {
                let x12 = linear(&s.w12, x, precision);
                let gate = x12.clone().narrow(2, 0, s.hidden);
                let value = x12.narrow(2, s.hidden, s.hidden);
                linear(&s.w3, silu(gate) * value, precision)
            }
        }
    }
}

/// Per-channel scaling of a residual branch.
#[derive(Module, Debug)]
pub struct LayerScale<B: Backend> {
    pub gamma: Param<Tensor<B, 1>>,
}

impl<B: Backend> LayerScale<B> {
    pub fn init(dim: usize, value: f64, device: &B::Device) -> Self {
        LayerScale {
            gamma: Param::from_tensor(Tensor::full([dim], value, device)),
        }
    }

    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        x * self.gamma.val().unsqueeze::<3>()
    }
}

/// Stochastic depth: drop a whole residual branch per sample while training (when the backend
/// records gradients), rescaling the kept ones by 1/(1-p).
pub fn drop_path<B: Backend>(x: Tensor<B, 3>, rate: f64) -> Tensor<B, 3> {
    if rate <= 0.0 || !B::ad_enabled(&x.device()) {
        return x;
    }
    let [b, _, _] = x.dims();
    let keep = 1.0 - rate;
    let mask = keep_mask::<B>(b, keep, &x.device()).reshape([b, 1, 1]);
    x * mask.div_scalar(keep)
}

/// A pre-norm transformer block:
/// `x + ls1 * attn(norm1(x))`, then `x + ls2 * ffn(norm2(x))`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub attn: Attention<B>,
    pub ls1: Option<LayerScale<B>>,
    pub norm2: LayerNorm<B>,
    pub mlp: Ffn<B>,
    pub ls2: Option<LayerScale<B>>,
    /// The norms' ε (burn's LayerNorm keeps its own private).
    #[module(skip)]
    pub norm_eps: f64,
    #[module(skip)]
    pub drop_path: f64,
    /// Masked or efficient stochastic depth (the same draws, outputs and gradients).
    #[module(skip)]
    pub drop_path_form: DropPathForm,
}

impl<B: Backend> Block<B> {
    pub fn init(cfg: &VitConfig, index: usize, device: &B::Device) -> Self {
        let norm = || {
            LayerNormConfig::new(cfg.embed_dim)
                .with_epsilon(cfg.norm_eps)
                .init(device)
        };
        let ls = || {
            cfg.layer_scale
                .then(|| LayerScale::init(cfg.embed_dim, cfg.layer_scale_init, device))
        };
        Block {
            norm1: norm(),
            attn: Attention::init(cfg, device),
            ls1: ls(),
            norm2: norm(),
            mlp: Ffn::init(cfg, device),
            ls2: ls(),
            norm_eps: cfg.norm_eps,
            drop_path: cfg.drop_path_of_block(index),
            drop_path_form: DropPathForm::default(),
        }
    }

    pub fn forward(&self, x: Tensor<B, 3>, precision: MatmulPrecision) -> Tensor<B, 3> {
        let attn = |x| self.scale1(self.attn.forward(self.norm1(x), precision));
        let ffn = |x| self.scale2(self.mlp.forward(self.norm2(x), precision));
        let rate = self.drop_path;
        if self.drop_path_form.skips::<B>(rate, &x.device()) {
            let x = drop_add_residual(x, rate, attn);
            return drop_add_residual(x, rate, ffn);
        }
        let x = x.clone() + drop_path(attn(x), rate);
        x.clone() + drop_path(ffn(x), rate)
    }

    /// The attention branch's LayerNorm.
    pub(crate) fn norm1<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        layer_norm(&self.norm1, x, self.norm_eps)
    }

    /// The feed-forward branch's LayerNorm.
    pub(crate) fn norm2<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        layer_norm(&self.norm2, x, self.norm_eps)
    }

    /// LayerScale of the attention branch (identity without LayerScale).
    pub(crate) fn scale1(&self, y: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.ls1 {
            Some(ls) => ls.forward(y),
            None => y,
        }
    }

    /// LayerScale of the feed-forward branch.
    pub(crate) fn scale2(&self, y: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.ls2 {
            Some(ls) => ls.forward(y),
            None => y,
        }
    }
}
