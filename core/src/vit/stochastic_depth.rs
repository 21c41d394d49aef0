//! Stochastic depth: which images keep a residual branch in a training forward, and the two
//! forms of dropping them.
//!
//! The masked form computes the branch for every image and multiplies it by a 0/1 keep mask
//! scaled by 1/(1-p). The efficient form (the DINOv2 paper's "efficient stochastic depth",
//! `drop_add_residual_stochastic_depth` in the official `layers/block.py`) gathers the kept
//! images, runs the branch on them only and adds it back at their rows with the same scale, so
//! a dropped image costs nothing. Both draw the same keep decisions from the same generator
//! (one Bernoulli(1-p) per image, in order), so for a given draw they give the same output and
//! the same gradients; the official code instead keeps a fixed ⌊b(1-p)⌋ images per step, scaled
//! by b/kept — the same expectation, not the same draws. The efficient form runs at any rate
//! above 0, as the official list (`forward_nested`) path that DINOv2 training takes does (its
//! single-tensor path switches only above 0.1).
//!
//! The keep masks come from the backend's RNG, unless the running thread has its own seeded
//! draws installed ([`with_seeded_draws`]). Forwards that run concurrently, one chunk of the
//! batch per thread (`train::batch_chunks`), each install their own, so the masks of every chunk are
//! the same in every run whatever the threads' interleaving, and a resumed run repeats them.

use std::cell::RefCell;

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, IndexingUpdateOp, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// How a block drops residual branches while training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropPathForm {
    /// The branch runs on the kept images only.
    #[default]
    Efficient,
    /// The branch runs on every image and is multiplied by the keep mask.
    Masked,
}

impl DropPathForm {
    /// Whether a training forward at `rate` skips the dropped images' branches.
    pub fn skips<B: Backend>(self, rate: f64, device: &B::Device) -> bool {
        self == DropPathForm::Efficient && rate > 0.0 && B::ad_enabled(device)
    }
}

/// SplitMix64: a small, well-mixed generator for keep masks.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

thread_local! {
    static DRAWS: RefCell<Option<SplitMix64>> = const { RefCell::new(None) };
}

/// Run `f` with this thread's keep masks drawn from a generator seeded with `seed`. Nested
/// calls (rayon may run another slice's closure on this thread while this one waits inside a
/// parallel product) install their own generator and restore this one when they return.
pub fn with_seeded_draws<R>(seed: u64, f: impl FnOnce() -> R) -> R {
    let saved = DRAWS.with(|d| d.replace(Some(SplitMix64(seed))));
    let out = f();
    DRAWS.with(|d| *d.borrow_mut() = saved);
    out
}

/// This thread's seeded keep decisions for n images (1 kept, 0 dropped), if it has a generator.
fn seeded_keeps(n: usize, keep: f64) -> Option<Vec<f32>> {
    DRAWS.with(|d| {
        d.borrow_mut().as_mut().map(|rng| {
            (0..n)
                .map(|_| if rng.uniform() < keep { 1.0f32 } else { 0.0 })
                .collect()
        })
    })
}

/// [n] ones (kept, with probability `keep`) and zeros (dropped).
pub fn keep_mask<B: Backend>(n: usize, keep: f64, device: &B::Device) -> Tensor<B, 1> {
    match seeded_keeps(n, keep) {
        Some(values) => Tensor::from_data(TensorData::new(values, [n]), device),
        None => Tensor::random([n], Distribution::Bernoulli(keep), device),
    }
}

/// The images of n that keep their branch: the same draws as [`keep_mask`], as indices.
pub fn kept_images<B: Backend>(n: usize, keep: f64, device: &B::Device) -> Vec<usize> {
    let keeps = seeded_keeps(n, keep).unwrap_or_else(|| {
        keep_mask::<B>(n, keep, device)
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("a float keep mask")
    });
    (0..n).filter(|&i| keeps[i] > 0.5).collect()
}

/// `x + branch(x)` on the rows of `x` along `dim` listed in `rows` (the kept images' rows, in
/// order; `total` rows in all), the branch scaled by 1/`keep`, computed on those rows only; the
/// other rows pass through unchanged.
pub fn add_kept_branch<B: Backend>(
    x: Tensor<B, 3>,
    dim: usize,
    rows: &[usize],
    total: usize,
    keep: f64,
    branch: impl FnOnce(Tensor<B, 3>) -> Tensor<B, 3>,
) -> Tensor<B, 3> {
    if rows.is_empty() {
        return x;
    }
    if rows.len() == total {
        return x.clone() + branch(x).div_scalar(keep);
    }
    let index: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
    let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [rows.len()]), &x.device());
    let kept = branch(x.clone().select(dim, index.clone())).div_scalar(keep);
    x.select_assign(dim, index, kept, IndexingUpdateOp::Add)
}

/// Stochastic depth of one residual branch over [B, T, D] in its efficient form: the kept
/// images' branch only, added back at their rows.
pub fn drop_add_residual<B: Backend>(
    x: Tensor<B, 3>,
    rate: f64,
    branch: impl FnOnce(Tensor<B, 3>) -> Tensor<B, 3>,
) -> Tensor<B, 3> {
    let b = x.dims()[0];
    let keep = 1.0 - rate;
    let kept = kept_images::<B>(b, keep, &x.device());
    add_kept_branch(x, 0, &kept, b, keep, branch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_flex::Flex;

    fn draw(n: usize) -> Vec<f32> {
        keep_mask::<Flex>(n, 0.5, &Default::default())
            .into_data()
            .into_vec()
            .unwrap()
    }

    #[test]
    fn seeded_draws_repeat_and_nested_scopes_restore_the_outer_generator() {
        let plain = with_seeded_draws(7, || (draw(64), draw(64)));
        let nested = with_seeded_draws(7, || {
            let first = draw(64);
            let inner = with_seeded_draws(8, || draw(64));
            assert_ne!(inner, first, "another seed draws other masks");
            (first, draw(64))
        });
        assert_eq!(plain, nested);
        let kept = plain.0.iter().filter(|&&v| v == 1.0).count();
        assert!((16..=48).contains(&kept), "{kept} of 64 kept at p = 0.5");
        assert!(plain.0.iter().all(|&v| v == 0.0 || v == 1.0));
    }

    #[test]
    fn the_efficient_form_adds_the_branch_of_the_kept_images_only() {
        use burn::backend::Autodiff;
        type A = Autodiff<Flex>;
        let device = Default::default();
        // A strided view (as tokens are after a transpose), not a fresh buffer.
        let x = Tensor::<A, 3>::from_data(
            TensorData::new((0..24).map(|v| v as f32).collect::<Vec<_>>(), [3, 4, 2]),
            &device,
        )
        .swap_dims(0, 1);
        let branch = |x: Tensor<A, 3>| x.mul_scalar(2.0).add_scalar(1.0);
        let efficient = with_seeded_draws(3, || drop_add_residual(x.clone(), 0.5, branch));
        let masked = with_seeded_draws(3, || {
            x.clone() + crate::vit::layers::drop_path(branch(x.clone()), 0.5)
        });
        let kept = with_seeded_draws(3, || kept_images::<A>(4, 0.5, &device));
        let (e, m) = (
            efficient.into_data().to_vec::<f32>().unwrap(),
            masked.into_data().to_vec::<f32>().unwrap(),
        );
        assert_eq!(e, m, "kept {kept:?}");
    }
}
