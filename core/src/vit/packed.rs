//! Packed sequences: crops of several sizes through the ViT as one token sequence, without
//! padding, as the official DINOv2 code's `forward_nested` does with xformers.
//!
//! The tokens of every image of every group (e.g. the global crops [2n, 1+R+256, D] and the
//! local crops [8n, 1+R+49, D]) are laid end to end in one sequence [1, Σ b·t, D]. Everything
//! token-wise (norms, the qkv, projection and feed-forward products, LayerScale) runs once over
//! that sequence; attention sees a block-diagonal mask, each image attending to its own tokens
//! only, computed as one attention per group on the group's rows (no masked-out scores are
//! ever formed). Stochastic depth drops whole images, as in the per-size forward.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor};

use super::layers::{Attention, Block};
use super::model::{VisionTransformer, VitFeatures};
use super::precision::{linear, MatmulPrecision};
use super::stochastic_depth::{add_kept_branch, keep_mask, kept_images};

/// A batch of images [B, 3, H, W] with its optional iBOT mask [B, h*w].
pub type MaskedImages<B> = (Tensor<B, 4>, Option<Tensor<B, 2, Bool>>);

/// How a packed sequence is made of groups: (images, tokens per image) each, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packing {
    pub groups: Vec<(usize, usize)>,
}

impl Packing {
    /// Total tokens of the packed sequence.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|(b, t)| b * t).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The groups [b, t, D] laid end to end: [1, Σ b·t, D].
    pub fn pack<B: Backend>(xs: Vec<Tensor<B, 3>>) -> (Tensor<B, 3>, Packing) {
        let groups = xs
            .iter()
            .map(|x| {
                let [b, t, _] = x.dims();
                (b, t)
            })
            .collect();
        let flat = xs
            .into_iter()
            .map(|x| {
                let [b, t, d] = x.dims();
                x.reshape([1, b * t, d])
            })
            .collect();
        (Tensor::cat(flat, 1), Packing { groups })
    }

    /// The groups back from a packed [1, Σ b·t, C] sequence: [b, t, C] each.
    pub fn unpack<B: Backend>(&self, x: Tensor<B, 3>) -> Vec<Tensor<B, 3>> {
        let c = x.dims()[2];
        let mut start = 0;
        self.groups
            .iter()
            .map(|&(b, t)| {
                let part = x.clone().narrow(1, start, b * t).reshape([b, t, c]);
                start += b * t;
                part
            })
            .collect()
    }

    /// Stochastic depth on a packed branch output: each image kept with probability
    /// `1 - rate` (scaled by its inverse) or dropped whole. Identity outside training.
    fn drop_path<B: Backend>(&self, x: Tensor<B, 3>, rate: f64) -> Tensor<B, 3> {
        if rate <= 0.0 || !B::ad_enabled(&x.device()) {
            return x;
        }
        let device = x.device();
        let keep = 1.0 - rate;
        let scale = self
            .groups
            .iter()
            .map(|&(b, t)| {
                keep_mask::<B>(b, keep, &device)
                    .reshape([b, 1, 1])
                    .expand([b, t, 1])
                    .reshape([1, b * t, 1])
            })
            .collect();
        x * Tensor::cat(scale, 1).div_scalar(keep)
    }

    /// Efficient stochastic depth on a packed sequence: `x + branch(kept)` where `kept` packs
    /// the tokens of the images that keep the branch (the same draws as
    /// [`drop_path`](Packing::drop_path)), with their own packing; dropped images' tokens pass
    /// through and cost nothing.
    fn drop_add_residual<B: Backend>(
        &self,
        x: Tensor<B, 3>,
        rate: f64,
        branch: impl FnOnce(Tensor<B, 3>, &Packing) -> Tensor<B, 3>,
    ) -> Tensor<B, 3> {
        let device = x.device();
        let keep = 1.0 - rate;
        let (mut rows, mut groups, mut start) = (Vec::new(), Vec::new(), 0);
        for &(b, t) in &self.groups {
            let kept = kept_images::<B>(b, keep, &device);
            for &i in &kept {
                rows.extend(start + i * t..start + (i + 1) * t);
            }
            if !kept.is_empty() {
                groups.push((kept.len(), t));
            }
            start += b * t;
        }
        let kept = Packing { groups };
        add_kept_branch(x, 1, &rows, start, keep, |x| branch(x, &kept))
    }
}

impl<B: Backend> Attention<B> {
    /// Attention over a packed sequence [1, N, D]: the qkv and output projections over every
    /// token at once, the attention itself within each image.
    pub fn forward_packed(
        &self,
        x: Tensor<B, 3>,
        packing: &Packing,
        precision: MatmulPrecision,
    ) -> Tensor<B, 3> {
        let d = x.dims()[2];
        let mut qkv = linear(&self.qkv, x, precision);
        if matches!(precision, MatmulPrecision::Backend) {
            match super::cpu_attention_grad::attend_packed(qkv, &packing.groups, self.num_heads) {
                Ok(attended) => return linear(&self.proj, attended, precision),
                Err(back) => qkv = back,
            }
        }
        let attended = packing
            .unpack(qkv)
            .into_iter()
            .map(|g| {
                let [b, t, _] = g.dims();
                self.attend(g, precision).reshape([1, b * t, d])
            })
            .collect();
        linear(&self.proj, Tensor::cat(attended, 1), precision)
    }
}

impl<B: Backend> Block<B> {
    /// [`Block::forward`] over a packed sequence.
    pub fn forward_packed(
        &self,
        x: Tensor<B, 3>,
        packing: &Packing,
        precision: MatmulPrecision,
    ) -> Tensor<B, 3> {
        let attn =
            |x, p: &Packing| self.scale1(self.attn.forward_packed(self.norm1(x), p, precision));
        let ffn = |x, _: &Packing| self.scale2(self.mlp.forward(self.norm2(x), precision));
        let rate = self.drop_path;
        if self.drop_path_form.skips::<B>(rate, &x.device()) {
            let x = packing.drop_add_residual(x, rate, attn);
            return packing.drop_add_residual(x, rate, ffn);
        }
        let x = x.clone() + packing.drop_path(attn(x, packing), rate);
        x.clone() + packing.drop_path(ffn(x, packing), rate)
    }
}

impl<B: Backend> VisionTransformer<B> {
    /// [`forward_features`](VisionTransformer::forward_features) of several batches of
    /// different image sizes (each with its optional iBOT mask) in one packed pass; the
    /// features of each batch, in order (no intermediate layers).
    pub fn forward_packed(&self, inputs: Vec<MaskedImages<B>>) -> Vec<VitFeatures<B>> {
        let (tokens, grids): (Vec<_>, Vec<_>) = inputs
            .into_iter()
            .map(|(x, mask)| self.prepare_tokens(x, mask))
            .unzip();
        let (mut x, packing) = Packing::pack(tokens);
        for block in &self.blocks {
            x = block.forward_packed(x, &packing, self.precision);
        }
        packing
            .unpack(self.final_norm(x))
            .into_iter()
            .zip(grids)
            .map(|(tokens, grid)| VitFeatures {
                tokens,
                layers: Vec::new(),
                grid,
                num_registers: self.config.num_register_tokens,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vit::{FfnConfig, VitConfig};
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, TensorData};

    fn tiny() -> VitConfig {
        let mut cfg = VitConfig::preset("vits14_reg").unwrap();
        (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.pos_grid) = (32, 3, 4, 4);
        cfg.ffn = FfnConfig::mlp(32, 4.0);
        cfg
    }

    fn max_diff<B: Backend>(a: Tensor<B, 3>, b: Tensor<B, 3>) -> f32 {
        let a = a.into_data().to_vec::<f32>().unwrap();
        let b = b.into_data().to_vec::<f32>().unwrap();
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn a_packed_pass_equals_one_pass_per_size() {
        let device = Default::default();
        let model = VisionTransformer::<Flex>::init(&tiny(), &device);
        let g = Tensor::<Flex, 4>::random([2, 3, 56, 56], Distribution::Normal(0.0, 1.0), &device);
        let l = Tensor::<Flex, 4>::random([5, 3, 28, 42], Distribution::Normal(0.0, 1.0), &device);
        let mask: Vec<bool> = (0..2 * 16).map(|i| i % 3 == 0).collect();
        let mask = Tensor::<Flex, 2, Bool>::from_data(TensorData::new(mask, [2, 16]), &device);
        let packed = model.forward_packed(vec![(g.clone(), Some(mask.clone())), (l.clone(), None)]);
        let sg = model.forward_features(g, Some(mask), &[]);
        let sl = model.forward_features(l, None, &[]);
        assert_eq!(packed[0].grid, (4, 4));
        assert_eq!(packed[1].grid, (2, 3));
        assert!(max_diff(packed[0].tokens.clone(), sg.tokens) < 1e-5);
        assert!(max_diff(packed[1].tokens.clone(), sl.tokens) < 1e-5);
    }

    #[test]
    fn gradients_through_a_packed_pass_equal_those_of_one_pass_per_size() {
        type A = Autodiff<Flex>;
        let device = Default::default();
        let model = VisionTransformer::<A>::init(&tiny(), &device);
        let g = Tensor::<A, 4>::random([2, 3, 28, 28], Distribution::Normal(0.0, 1.0), &device);
        let l = Tensor::<A, 4>::random([3, 3, 14, 28], Distribution::Normal(0.0, 1.0), &device);
        let loss =
            |f: &[VitFeatures<A>]| f[0].cls().powf_scalar(2.0).sum() + f[1].patches().sin().sum();
        let packed = model.forward_packed(vec![(g.clone(), None), (l.clone(), None)]);
        let grads_p = loss(&packed).backward();
        let separate = [
            model.forward_features(g, None, &[]),
            model.forward_features(l, None, &[]),
        ];
        let grads_s = loss(&separate).backward();
        let w = model.blocks[1].attn.qkv.weight.val();
        let (gp, gs) = (
            w.grad(&grads_p).unwrap().unsqueeze_dim::<3>(0),
            w.grad(&grads_s).unwrap().unsqueeze_dim::<3>(0),
        );
        assert!(max_diff(gp, gs) < 1e-4);
    }

    #[test]
    fn packing_round_trips_and_drop_path_drops_whole_images() {
        type A = Autodiff<Flex>;
        let device = Default::default();
        let a = Tensor::<A, 3>::ones([3, 4, 2], &device);
        let b = Tensor::<A, 3>::ones([5, 2, 2], &device).mul_scalar(2.0);
        let (x, packing) = Packing::pack(vec![a.clone(), b.clone()]);
        assert_eq!(x.dims(), [1, 22, 2]);
        assert_eq!(packing.len(), 22);
        let back = packing.unpack(x.clone());
        assert_eq!(max_diff(back[0].clone(), a), 0.0);
        assert_eq!(max_diff(back[1].clone(), b), 0.0);
        let dropped = packing.unpack(packing.drop_path(x, 0.5));
        for part in dropped {
            let [n, t, c] = part.dims();
            let v = part.into_data().to_vec::<f32>().unwrap();
            for img in v.chunks(t * c) {
                // Each image is all zero or all scaled by 1 / keep.
                assert!(
                    img.iter().all(|&e| e == 0.0) || img.iter().all(|&e| e == img[0] && e > 1.0)
                );
            }
            assert_eq!(v.len(), n * t * c);
        }
    }

    /// Efficient stochastic depth equals the masked form for the same draw: outputs and the
    /// gradients of every block's weights, per size and packed, at a rate that drops some images
    /// and keeps others in each group.
    #[test]
    fn efficient_stochastic_depth_equals_the_masked_form_for_a_fixed_draw() {
        use crate::vit::layers::Ffn;
        use crate::vit::stochastic_depth::with_seeded_draws;
        use crate::vit::DropPathForm;
        type A = Autodiff<Flex>;
        let device = Default::default();
        let mut cfg = tiny();
        cfg.drop_path_rate = 0.4;
        cfg.layer_scale = true;
        let model = VisionTransformer::<A>::init(&cfg, &device);
        let g = Tensor::<A, 4>::random([6, 3, 28, 28], Distribution::Normal(0.0, 1.0), &device);
        let l = Tensor::<A, 4>::random([9, 3, 14, 28], Distribution::Normal(0.0, 1.0), &device);
        // Parameters are initialised lazily, at first use: once here, so that the clones below
        // share them rather than each drawing its own.
        let _ = model.forward_features(g.clone(), None, &[]);
        let run = |form: DropPathForm, packed: bool| {
            let m = model.clone().with_drop_path_form(form);
            with_seeded_draws(12, || {
                let f = if packed {
                    m.forward_packed(vec![(g.clone(), None), (l.clone(), None)])
                } else {
                    vec![
                        m.forward_features(g.clone(), None, &[]),
                        m.forward_features(l.clone(), None, &[]),
                    ]
                };
                let loss = f[0].cls().powf_scalar(2.0).sum() + f[1].patches().sin().sum();
                let grads = loss.backward();
                let grad_of = |w: Tensor<A, 2>| w.grad(&grads).unwrap().unsqueeze_dim::<3>(0);
                let weights: Vec<_> = m
                    .blocks
                    .iter()
                    .flat_map(|b| {
                        [
                            grad_of(b.attn.qkv.weight.val()),
                            grad_of(match &b.mlp {
                                Ffn::Mlp(m) => m.fc1.weight.val(),
                                Ffn::SwiGlu(_) => unreachable!("an MLP config"),
                            }),
                        ]
                    })
                    .collect();
                (
                    f[0].tokens.clone().inner(),
                    f[1].tokens.clone().inner(),
                    weights,
                )
            })
        };
        for packed in [false, true] {
            let (eg, el, ew) = run(DropPathForm::Efficient, packed);
            let (mg, ml, mw) = run(DropPathForm::Masked, packed);
            assert!(max_diff(eg, mg) < 1e-5, "packed {packed}");
            assert!(max_diff(el, ml) < 1e-5, "packed {packed}");
            for (e, m) in ew.into_iter().zip(mw) {
                assert!(max_diff(e, m) < 1e-4, "packed {packed}");
            }
        }
        // The draw drops some images and keeps others (else the test shows nothing).
        let kept = with_seeded_draws(12, || kept_images::<A>(6, 0.6, &device).len());
        assert!((1..6).contains(&kept), "{kept} of 6 kept");
    }
}
