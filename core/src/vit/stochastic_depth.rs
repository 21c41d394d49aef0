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
//! draws installed ([`with_seeded_draws`], [`with_image_draws`]). Seeded draws are keyed by
//! (call, crop, image of the whole batch), not drawn in sequence: a chunk of the batch on
//! another thread (`train::batch_chunks`) or a data-parallel replica's shard
//! (`train::replicas`) draws for its images exactly what the whole batch on one device draws
//! for them, whatever the threads' interleaving, and a resumed run repeats them.

use std::cell::RefCell;

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, IndexingUpdateOp, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::seeds::{mix, unit_interval};

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

/// The images a forward holds: `count` consecutive images of the whole batch, starting at its
/// image `first` (a chunk of the batch, or one replica's shard of the global batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSpan {
    pub first: usize,
    pub count: usize,
}

/// A thread's seeded draws: the iteration's seed, the draws made so far (one per call, in the
/// model's order of blocks and crop groups), and the images its rows stand for.
#[derive(Debug, Clone)]
struct SeededDraws {
    seed: u64,
    calls: u64,
    span: Option<ImageSpan>,
}

impl SeededDraws {
    /// Keep decisions for the `n` rows of the next call. With a span, the rows are crop-major
    /// (crop j of each of its images, then crop j + 1, as every group of a multi-crop batch
    /// is), and each decision is keyed by (call, crop, image of the whole batch): a chunk or a
    /// replica's shard draws for its images exactly what the whole batch draws for them.
    fn keeps(&mut self, n: usize, keep: f64) -> Vec<f32> {
        self.calls += 1;
        let call = mix(self.seed, 0x5D, self.calls);
        (0..n)
            .map(|i| {
                let (crop, image) = match self.span {
                    Some(s) if s.count > 0 && n.is_multiple_of(s.count) => {
                        (i / s.count, s.first + i % s.count)
                    }
                    _ => (0, i),
                };
                if unit_interval(mix(call, crop as u64, image as u64)) < keep {
                    1.0
                } else {
                    0.0
                }
            })
            .collect()
    }
}

thread_local! {
    static DRAWS: RefCell<Option<SeededDraws>> = const { RefCell::new(None) };
}

/// Run `f` with this thread's keep masks drawn from `seed`, keyed by row. Nested calls (rayon
/// may run another slice's closure on this thread while this one waits inside a parallel
/// product) install their own draws and restore these when they return.
pub fn with_seeded_draws<R>(seed: u64, f: impl FnOnce() -> R) -> R {
    install(seed, None, f)
}

/// [`with_seeded_draws`] for a forward over `span`'s images of a batch: the keep decisions
/// of an image are those the whole batch's forward draws for it.
pub fn with_image_draws<R>(seed: u64, span: ImageSpan, f: impl FnOnce() -> R) -> R {
    install(seed, Some(span), f)
}

fn install<R>(seed: u64, span: Option<ImageSpan>, f: impl FnOnce() -> R) -> R {
    let draws = SeededDraws {
        seed,
        calls: 0,
        span,
    };
    let saved = DRAWS.with(|d| d.replace(Some(draws)));
    let out = f();
    DRAWS.with(|d| *d.borrow_mut() = saved);
    out
}

/// This thread's seeded keep decisions for n images (1 kept, 0 dropped), if it has draws.
fn seeded_keeps(n: usize, keep: f64) -> Option<Vec<f32>> {
    DRAWS.with(|d| d.borrow_mut().as_mut().map(|draws| draws.keeps(n, keep)))
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
    fn a_span_of_images_draws_what_the_whole_batch_draws_for_them() {
        // Two crop groups of a 6-image batch: 2 global crops (12 rows), 3 local (18 rows).
        let draws = |span: ImageSpan| {
            with_image_draws(5, span, || (draw(2 * span.count), draw(3 * span.count)))
        };
        let (g, l) = draws(ImageSpan { first: 0, count: 6 });
        // Images 2..5 of the batch, as a chunk or a replica's shard holds them.
        let (gs, ls) = draws(ImageSpan { first: 2, count: 3 });
        let rows = |crops: usize| -> Vec<usize> {
            (0..crops)
                .flat_map(|c| (2..5).map(move |i| c * 6 + i))
                .collect()
        };
        assert_eq!(gs, rows(2).iter().map(|&r| g[r]).collect::<Vec<_>>());
        assert_eq!(ls, rows(3).iter().map(|&r| l[r]).collect::<Vec<_>>());
        assert_ne!(g[..6], g[6..], "the two crops of an image draw apart");
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
