//! iBOT block masking, bit-exact with the official `MaskingGenerator` and
//! `collate_data_and_cast` (see `../shared/fixtures/README.md` §9). The reference draws from
//! Python's `random` module, so [`PyRandom`] reproduces CPython's Mersenne Twister and the
//! `uniform` / `randint` / `shuffle` methods on top of it: the same seed gives the same masks.

/// CPython's `random.Random` (MT19937 and its derived methods).
#[derive(Debug, Clone)]
pub struct PyRandom {
    mt: [u32; 624],
    index: usize,
}

impl PyRandom {
    /// `random.seed(n)` for a non-negative integer.
    pub fn seed(n: u64) -> Self {
        let mut key: Vec<u32> = Vec::new();
        let mut v = n;
        loop {
            key.push(v as u32);
            v >>= 32;
            if v == 0 {
                break;
            }
        }
        let mut r = PyRandom {
            mt: [0; 624],
            index: 624,
        };
        r.init_genrand(19_650_218);
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..624.max(key.len()) {
            let prev = r.mt[i - 1] ^ (r.mt[i - 1] >> 30);
            r.mt[i] = (r.mt[i] ^ prev.wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= 624 {
                r.mt[0] = r.mt[623];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..623 {
            let prev = r.mt[i - 1] ^ (r.mt[i - 1] >> 30);
            r.mt[i] = (r.mt[i] ^ prev.wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= 624 {
                r.mt[0] = r.mt[623];
                i = 1;
            }
        }
        r.mt[0] = 0x8000_0000;
        r
    }

    fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..624 {
            let prev = self.mt[i - 1] ^ (self.mt[i - 1] >> 30);
            self.mt[i] = 1_812_433_253u32.wrapping_mul(prev).wrapping_add(i as u32);
        }
        self.index = 624;
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            for k in 0..624 {
                let y = (self.mt[k] & 0x8000_0000) | (self.mt[(k + 1) % 624] & 0x7fff_ffff);
                let mut v = self.mt[(k + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= 0x9908_b0df;
                }
                self.mt[k] = v;
            }
            self.index = 0;
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `random.random()`: 53-bit float in [0, 1).
    pub fn random(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }

    /// `random.uniform(a, b)` = a + (b - a) * random().
    pub fn uniform(&mut self, a: f64, b: f64) -> f64 {
        a + (b - a) * self.random()
    }

    /// `random._randbelow(n)` (rejection sampling on getrandbits(bit_length(n))).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let k = 64 - n.leading_zeros();
        loop {
            let r = if k <= 32 {
                (self.next_u32() >> (32 - k)) as u64
            } else {
                let lo = self.next_u32() as u64;
                let hi = (self.next_u32() >> (64 - k)) as u64;
                lo | (hi << 32)
            };
            if r < n {
                return r;
            }
        }
    }

    /// `random.randint(a, b)`, both ends included.
    pub fn randint(&mut self, a: i64, b: i64) -> i64 {
        a + self.below((b - a + 1) as u64) as i64
    }

    /// `random.shuffle(x)`.
    pub fn shuffle<T>(&mut self, x: &mut [T]) {
        for i in (1..x.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            x.swap(i, j);
        }
    }
}

/// The official `MaskingGenerator`: random rectangles of patches on a (height, width) grid.
#[derive(Debug, Clone)]
pub struct MaskingGenerator {
    pub height: usize,
    pub width: usize,
    pub min_num_patches: f64,
    pub max_num_patches: f64,
    pub log_aspect_ratio: (f64, f64),
}

impl MaskingGenerator {
    /// As `train.py` builds it: `max_num_patches = 0.5 * G²`, `min_num_patches = 4`, aspect
    /// ratios in [0.3, 1/0.3].
    pub fn dinov2(grid: usize) -> Self {
        MaskingGenerator {
            height: grid,
            width: grid,
            min_num_patches: 4.0,
            max_num_patches: 0.5 * (grid * grid) as f64,
            log_aspect_ratio: (0.3f64.ln(), (1.0 / 0.3f64).ln()),
        }
    }

    fn place(&self, rng: &mut PyRandom, mask: &mut [bool], max_mask_patches: f64) -> usize {
        let mut delta = 0;
        for _ in 0..10 {
            let target_area = rng.uniform(self.min_num_patches, max_mask_patches);
            let aspect = rng
                .uniform(self.log_aspect_ratio.0, self.log_aspect_ratio.1)
                .exp();
            let h = (target_area * aspect).sqrt().round_ties_even() as usize;
            let w = (target_area / aspect).sqrt().round_ties_even() as usize;
            if w < self.width && h < self.height {
                let top = rng.randint(0, (self.height - h) as i64) as usize;
                let left = rng.randint(0, (self.width - w) as i64) as usize;
                let already = (top..top + h)
                    .flat_map(|i| (left..left + w).map(move |j| (i, j)))
                    .filter(|&(i, j)| mask[i * self.width + j])
                    .count();
                let fresh = (h * w - already) as f64;
                if 0.0 < fresh && fresh <= max_mask_patches {
                    for i in top..top + h {
                        for j in left..left + w {
                            if !mask[i * self.width + j] {
                                mask[i * self.width + j] = true;
                                delta += 1;
                            }
                        }
                    }
                }
                if delta > 0 {
                    break;
                }
            }
        }
        delta
    }

    /// A mask with (at most) `num_masking_patches` patches, row-major (height * width).
    pub fn generate(&self, rng: &mut PyRandom, num_masking_patches: usize) -> Vec<bool> {
        let mut mask = vec![false; self.height * self.width];
        let mut count = 0;
        while count < num_masking_patches {
            let max = ((num_masking_patches - count) as f64).min(self.max_num_patches);
            let delta = self.place(rng, &mut mask, max);
            if delta == 0 {
                break;
            }
            count += delta;
        }
        mask
    }
}

/// The masks of one batch, as `collate_data_and_cast` builds them.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchMasks {
    /// [images][tokens], images in global-crop order.
    pub masks: Vec<Vec<bool>>,
    /// Flat indices (image * tokens + token) of the masked patches, ascending.
    pub indices: Vec<usize>,
    /// 1 / masked patches of the image, per masked patch.
    pub weights: Vec<f32>,
    /// Sum over masked images of int(N * upper ratio): the gather buffer size.
    pub upperbound: usize,
}

/// torch.linspace(start, end, steps) in float32, with PyTorch's symmetric formula.
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (steps - i - 1) as f32
            }
        })
        .collect()
}

/// Masks for `n_images` global-crop images of `generator`'s grid: a fraction `mask_probability`
/// of them get a mask ratio drawn in consecutive slices of `ratio` (float32, as the reference),
/// the rest none, then the list is shuffled.
pub fn collate_masks(
    rng: &mut PyRandom,
    generator: &MaskingGenerator,
    n_images: usize,
    mask_probability: f64,
    ratio: (f32, f32),
) -> BatchMasks {
    let n = generator.height * generator.width;
    let n_masked = (n_images as f64 * mask_probability) as usize;
    let probs = linspace_f32(ratio.0, ratio.1, n_masked + 1);
    let mut upperbound = 0;
    let mut masks = Vec::with_capacity(n_images);
    for i in 0..n_masked {
        let (lo, hi) = (probs[i], probs[i + 1]);
        // random.uniform on float32 tensors: lo + (hi - lo) * random(), in float32.
        let u = rng.random() as f32;
        let target = (n as f32 * (lo + (hi - lo) * u)) as usize;
        masks.push(generator.generate(rng, target));
        upperbound += (n as f32 * hi) as usize;
    }
    for _ in n_masked..n_images {
        masks.push(vec![false; n]);
    }
    rng.shuffle(&mut masks);
    BatchMasks::of(masks, upperbound)
}

impl BatchMasks {
    /// The masks `masks` with their masked-patch indices and iBOT weights.
    fn of(masks: Vec<Vec<bool>>, upperbound: usize) -> Self {
        let mut indices = Vec::new();
        let mut weights = Vec::new();
        for (b, m) in masks.iter().enumerate() {
            let n = m.len();
            let count = m.iter().filter(|v| **v).count();
            let w = 1.0 / (count.max(1) as f32);
            for (t, _) in m.iter().enumerate().filter(|(_, v)| **v) {
                indices.push(b * n + t);
                weights.push(w);
            }
        }
        BatchMasks {
            masks,
            indices,
            weights,
            upperbound,
        }
    }

    /// The masks of the given global-crop rows, in that order (a data-parallel replica's
    /// shard of the global batch's masks). `upperbound` stays the whole batch's.
    pub fn select_rows(&self, rows: &[usize]) -> Self {
        let masks = rows.iter().map(|&r| self.masks[r].clone()).collect();
        BatchMasks::of(masks, self.upperbound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selected_rows_keep_their_masks_and_weights() {
        let mut rng = PyRandom::seed(4);
        let all = collate_masks(&mut rng, &MaskingGenerator::dinov2(4), 8, 0.5, (0.1, 0.5));
        let part = all.select_rows(&[1, 2, 5, 6]);
        assert_eq!(part.masks.len(), 4);
        assert_eq!(part.masks[2], all.masks[5]);
        let weights_of = |m: &BatchMasks, row: usize| -> Vec<f32> {
            m.indices
                .iter()
                .zip(&m.weights)
                .filter(|(i, _)| **i / 16 == row)
                .map(|(_, w)| *w)
                .collect()
        };
        for (k, row) in [1, 2, 5, 6].into_iter().enumerate() {
            assert_eq!(weights_of(&part, k), weights_of(&all, row));
        }
    }

    #[test]
    fn matches_cpython_random() {
        // python3 -c "import random; random.seed(1900); print(random.random(), random.randint(0, 9), random.uniform(2, 3))"
        // -> 0.044218483322778224 2 2.6771606371418004 (CPython 3.11)
        let mut r = PyRandom::seed(1900);
        assert_eq!(r.random(), 0.044218483322778224);
        assert_eq!(r.randint(0, 9), 2);
        assert_eq!(r.uniform(2.0, 3.0), 2.6771606371418004);
        let mut v: Vec<u32> = (0..10).collect();
        // python3 -c "import random; random.seed(7); x=list(range(10)); random.shuffle(x); print(x)"
        PyRandom::seed(7).shuffle(&mut v);
        assert_eq!(v, SHUFFLED_7);
    }

    const SHUFFLED_7: [u32; 10] = [8, 3, 1, 4, 7, 0, 9, 6, 2, 5];

    #[test]
    fn linspace_is_symmetric_like_pytorch() {
        let v = linspace_f32(0.1, 0.5, 5);
        assert_eq!(v[0], 0.1);
        assert_eq!(v[4], 0.5);
        assert_eq!(v.len(), 5);
    }
}
