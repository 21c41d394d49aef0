//! How the ViT computes its matrix products.
//!
//! On CPU, burn's products are plain f32. On CUDA, burn 0.21 (cubek) runs every f32 matmul it can
//! on tensor cores in TF32 (10-bit mantissa), with no switch to turn that off; ViT features then
//! drift by ~1e-3 from PyTorch, which computes f32 products in f32. [`MatmulPrecision::Split`]
//! restores f32 accuracy on such hardware: each operand is split into a bfloat16 head and an f32
//! tail, `x = hi + lo` (`lo = x - hi` is exact), and `a·b ≈ hi_a·hi_b + hi_a·lo_b + lo_a·hi_b`.
//! The heads hold 8 significant bits, so TF32 represents them exactly; what TF32 truncates from
//! the tails, and the dropped `lo_a·lo_b`, are ~2^-18 of the product. Attention then runs as
//! explicit products and a softmax instead of the fused kernel (which uses tensor cores too).

use burn::nn::Linear;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{FloatDType, Tensor};
use serde::{Deserialize, Serialize};

/// How matrix products are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatmulPrecision {
    /// The backend's own matmul and fused attention: exact f32 on CPU, TF32 on CUDA.
    #[default]
    Backend,
    /// Three products of split operands: f32 accuracy on TF32 tensor cores, at ~3x the matmul
    /// work.
    Split,
    /// Mixed precision for training on bf16 tensor cores: the operands of every product (and
    /// of attention) are cast to bfloat16 and the results back to f32; the weights (the f32
    /// master copy the optimizer updates), norms, softmax outside attention, heads and losses
    /// stay f32, as PyTorch's autocast does. Gradients flow back through the casts.
    Bf16,
}

impl MatmulPrecision {
    /// The precision for small exact work (position-embedding resampling): bf16 falls back to
    /// the backend's own products.
    pub fn exact(self) -> MatmulPrecision {
        match self {
            MatmulPrecision::Bf16 => MatmulPrecision::Backend,
            p => p,
        }
    }
}

fn bf16<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.cast(FloatDType::BF16)
}

/// `x = hi + lo` with `hi` on the bfloat16 grid.
fn split<B: Backend, const D: usize>(x: Tensor<B, D>) -> (Tensor<B, D>, Tensor<B, D>) {
    let hi = x.clone().cast(FloatDType::BF16).cast(FloatDType::F32);
    let lo = x - hi.clone();
    (hi, lo)
}

/// `a.matmul(b)` at the given precision.
pub fn matmul<B: Backend, const D: usize>(
    a: Tensor<B, D>,
    b: Tensor<B, D>,
    precision: MatmulPrecision,
) -> Tensor<B, D> {
    match precision {
        MatmulPrecision::Backend => a.matmul(b),
        MatmulPrecision::Split => {
            let (ah, al) = split(a);
            let (bh, bl) = split(b);
            ah.clone().matmul(bh.clone()) + ah.matmul(bl) + al.matmul(bh)
        }
        MatmulPrecision::Bf16 => bf16(a).matmul(bf16(b)).cast(FloatDType::F32),
    }
}

/// A linear layer applied to [B, T, D_in] at the given precision.
pub fn linear<B: Backend>(
    layer: &Linear<B>,
    x: Tensor<B, 3>,
    precision: MatmulPrecision,
) -> Tensor<B, 3> {
    match precision {
        MatmulPrecision::Backend => layer.forward(x),
        MatmulPrecision::Split | MatmulPrecision::Bf16 => {
            let [b, t, d] = x.dims();
            let w = layer.weight.val();
            let out = w.dims()[1];
            let y = matmul(x.reshape([b * t, d]), w, precision);
            let y = match &layer.bias {
                Some(bias) => y + bias.val().unsqueeze_dim::<2>(0),
                None => y,
            };
            y.reshape([b, t, out])
        }
    }
}

/// softmax(q·kᵀ / sqrt(head_dim))·v over [B, H, T, head_dim].
pub fn scaled_dot_product<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    precision: MatmulPrecision,
) -> Tensor<B, 4> {
    match precision {
        MatmulPrecision::Backend => {
            attention(q, k, v, None, None, AttentionModuleOptions::default())
        }
        MatmulPrecision::Bf16 => attention(
            bf16(q),
            bf16(k),
            bf16(v),
            None,
            None,
            AttentionModuleOptions::default(),
        )
        .cast(FloatDType::F32),
        MatmulPrecision::Split => {
            let scale = (q.dims()[3] as f64).powf(-0.5);
            let scores = matmul(q, k.swap_dims(2, 3), precision).mul_scalar(scale);
            matmul(softmax(scores, 3), v, precision)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    #[test]
    fn split_products_equal_plain_products_in_f32() {
        let device = Default::default();
        let a = Tensor::<Flex, 2>::random([17, 33], Distribution::Normal(0.0, 1.0), &device);
        let b = Tensor::<Flex, 2>::random([33, 9], Distribution::Normal(0.0, 1.0), &device);
        let (hi, lo) = split(a.clone());
        // hi sits on the bfloat16 grid and hi + lo is exactly a.
        let hv = hi.clone().into_data().to_vec::<f32>().unwrap();
        assert!(hv.iter().all(|v| v.to_bits() & 0xffff == 0));
        let back = (hi + lo).into_data().to_vec::<f32>().unwrap();
        assert_eq!(back, a.clone().into_data().to_vec::<f32>().unwrap());
        let plain = a
            .clone()
            .matmul(b.clone())
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let split = matmul(a, b, MatmulPrecision::Split)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let err = plain
            .iter()
            .zip(&split)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-4, "{err}");
    }

    #[test]
    fn explicit_attention_matches_the_fused_op() {
        let device = Default::default();
        let r = |s| Tensor::<Flex, 4>::random(s, Distribution::Normal(0.0, 1.0), &device);
        let (q, k, v) = (r([2, 3, 7, 8]), r([2, 3, 7, 8]), r([2, 3, 7, 8]));
        let fused = scaled_dot_product(q.clone(), k.clone(), v.clone(), MatmulPrecision::Backend);
        let split = scaled_dot_product(q, k, v, MatmulPrecision::Split);
        let d = (fused - split).abs().max().into_scalar();
        assert!(d < 1e-4, "{d}");
    }
}

#[cfg(test)]
mod model_tests {
    use super::*;
    use crate::vit::{VisionTransformer, VitConfig};
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    #[test]
    fn a_vit_gives_the_same_features_with_split_products() {
        let cfg = VitConfig::tiny("vitg14_reg", 48, 3, 3);
        let device = Default::default();
        let model = VisionTransformer::<Flex>::init(&cfg, &device);
        // Non-native size: the position-embedding resampling runs through split products too.
        let x = Tensor::<Flex, 4>::random([2, 3, 56, 70], Distribution::Normal(0.0, 1.0), &device);
        let a = model.forward_features(x.clone(), None, &[0]).tokens;
        let model = model.with_precision(MatmulPrecision::Split);
        let b = model.forward_features(x, None, &[0]).tokens;
        let d = (a - b).abs().max().into_scalar();
        assert!(d < 1e-4, "{d}");
    }

    #[test]
    fn batch_chunks_run_concurrently_give_the_same_features() {
        let cfg = VitConfig::tiny("vits14", 32, 2, 2);
        let device = Default::default();
        let model = VisionTransformer::<Flex>::init(&cfg, &device);
        let x = Tensor::<Flex, 4>::random([5, 3, 28, 42], Distribution::Normal(0.0, 1.0), &device);
        let whole = model.forward_features(x.clone(), None, &[0, 1]);
        let split = model.forward_features_chunked(x, &[0, 1], 3);
        assert_eq!(split.tokens.dims(), whole.tokens.dims());
        let d = (whole.tokens - split.tokens).abs().max().into_scalar();
        assert!(d < 1e-5, "{d}");
        let d = (whole.layers[1].clone() - split.layers[1].clone())
            .abs()
            .max()
            .into_scalar();
        assert!(d < 1e-5, "{d}");
    }

    #[test]
    fn bf16_mixed_precision_stays_close_to_f32_and_trains_the_f32_weights() {
        use burn::backend::Autodiff;
        type A = Autodiff<Flex>;
        let device = Default::default();
        // SwiGLU, registers, LayerScale; 56 px is not the native size (resampled positions).
        let mut cfg = VitConfig::tiny("vitg14_reg", 32, 2, 4);
        cfg.drop_path_rate = 0.0;
        cfg.layer_scale_init = 1.0;
        let model = VisionTransformer::<A>::init(&cfg, &device);
        let x = Tensor::<A, 4>::random([2, 3, 56, 56], Distribution::Normal(0.0, 1.0), &device);
        // Parameters initialise lazily, once per copy: draw them before copying the model.
        let _ = model.forward_features(x.clone(), None, &[]);
        let run = |precision| {
            let m = model.clone().with_precision(precision);
            let tokens = m.forward_features(x.clone(), None, &[]).tokens;
            let grads = tokens.clone().powf_scalar(2.0).mean().backward();
            let g = m.blocks[0].attn.qkv.weight.val().grad(&grads).unwrap();
            (tokens.inner(), g)
        };
        let (t32, g32) = run(MatmulPrecision::Backend);
        let (t16, g16) = run(MatmulPrecision::Bf16);
        // Outputs and gradients are f32 (the weights' dtype), within bf16 rounding of f32's.
        assert_eq!(t16.dtype(), burn::tensor::DType::F32);
        assert_eq!(g16.dtype(), burn::tensor::DType::F32);
        let a = t32.into_data().to_vec::<f32>().unwrap();
        let b = t16.into_data().to_vec::<f32>().unwrap();
        let mean_abs = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32;
        assert!(mean_abs > 0.0 && mean_abs < 2e-2, "{mean_abs}");
        let (ga, gb) = (
            g32.into_data().to_vec::<f32>().unwrap(),
            g16.into_data().to_vec::<f32>().unwrap(),
        );
        let dot: f32 = ga.iter().zip(&gb).map(|(x, y)| x * y).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let cosine = dot / (norm(&ga) * norm(&gb));
        eprintln!(
            "bf16 vs f32: token mean |diff| {mean_abs:.2e}, qkv weight-gradient cosine {cosine:.5}"
        );
        assert!(
            gb.iter().all(|v| v.is_finite()) && cosine > 0.99,
            "{cosine}"
        );
    }
}
