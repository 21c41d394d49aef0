//! Stochastic depth: which images keep a residual branch in a training forward.
//!
//! The keep masks come from the backend's RNG, unless the running thread has its own seeded
//! draws installed ([`with_seeded_draws`]). Forwards that run concurrently, one chunk of the
//! batch per thread (`train::batch_chunks`), each install their own, so the masks of every chunk are
//! the same in every run whatever the threads' interleaving, and a resumed run repeats them.

use std::cell::RefCell;

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};

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

/// [n] ones (kept, with probability `keep`) and zeros (dropped).
pub fn keep_mask<B: Backend>(n: usize, keep: f64, device: &B::Device) -> Tensor<B, 1> {
    let seeded = DRAWS.with(|d| {
        d.borrow_mut().as_mut().map(|rng| {
            (0..n)
                .map(|_| if rng.uniform() < keep { 1.0f32 } else { 0.0 })
                .collect::<Vec<_>>()
        })
    });
    match seeded {
        Some(values) => Tensor::from_data(TensorData::new(values, [n]), device),
        None => Tensor::random([n], Distribution::Bernoulli(keep), device),
    }
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
}
