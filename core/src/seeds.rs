//! Seeds derived from a run's seed: one independent stream per key, so that everything a run
//! draws depends only on what it is for (the iteration, the image, the block), never on the
//! order in which threads or devices happen to draw it.

/// SplitMix64 of `seed` mixed with `a` and `b`: independent streams per (seed, a, b).
pub fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform number in [0, 1) from the 53 high bits of a mixed key.
pub fn unit_interval(key: u64) -> f64 {
    (key >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_give_distinct_uniform_streams() {
        let draws: Vec<f64> = (0..4096).map(|i| unit_interval(mix(7, 1, i))).collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        assert_ne!(mix(7, 1, 2), mix(7, 2, 1), "the two keys are not symmetric");
        assert_ne!(mix(7, 1, 2), mix(8, 1, 2));
    }
}
