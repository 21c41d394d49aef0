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
        MatmulPrecision::Split => {
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
}
