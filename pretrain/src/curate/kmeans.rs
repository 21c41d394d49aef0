//! k-means over embeddings: k-means++ initialisation (on a seeded sample of the pool), then Lloyd
//! iterations whose assignment step is the blocked product of [`super::search`] on the burn
//! device. With [`Metric::Cosine`] the rows are normalised and centroids re-normalised after each
//! update (spherical k-means).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::rows::RowsError;
use super::search::{normalise, squared_distance, squared_norms, Metric, RowBlocks};

/// A fitted clustering.
#[derive(Debug, Clone)]
pub struct KMeans {
    pub k: usize,
    pub dim: usize,
    pub metric: Metric,
    /// [k, dim]
    pub centroids: Vec<f32>,
    /// Cluster of each pool row.
    pub assignments: Vec<u32>,
    /// Squared L2 distance of each pool row to its centroid (after normalisation for cosine).
    pub distances: Vec<f32>,
    /// Sum of `distances`.
    pub inertia: f64,
    pub iterations: usize,
}

/// Pools up to this size (f32 bytes) are held in memory during the Lloyd iterations.
const CACHE_BYTES: usize = 2 << 30;

/// Pool rows sampled for the k-means++ seeding: enough for every cluster, bounded in cost.
const SEEDING_SAMPLE_PER_CLUSTER: usize = 64;

/// k-means++ on `rows` [n, dim]: the first centre uniformly, each next one with probability
/// proportional to the squared distance to the nearest centre chosen so far.
fn plus_plus(rows: &[f32], dim: usize, k: usize, rng: &mut StdRng) -> Vec<f32> {
    let n = rows.len() / dim;
    let mut centres = Vec::with_capacity(k * dim);
    let first = rng.random_range(0..n);
    centres.extend_from_slice(&rows[first * dim..(first + 1) * dim]);
    let mut nearest: Vec<f32> = rows
        .par_chunks(dim)
        .map(|r| squared_distance(r, &centres[..dim]))
        .collect();
    for _ in 1..k {
        let total: f64 = nearest.iter().map(|d| *d as f64).sum();
        let pick = if total > 0.0 {
            let mut target = rng.random_range(0.0..total);
            nearest
                .iter()
                .position(|d| {
                    target -= *d as f64;
                    target < 0.0
                })
                .unwrap_or(n - 1)
        } else {
            rng.random_range(0..n)
        };
        let c = rows[pick * dim..(pick + 1) * dim].to_vec();
        nearest
            .par_iter_mut()
            .zip(rows.par_chunks(dim))
            .for_each(|(d, r)| *d = d.min(squared_distance(r, &c)));
        centres.extend(c);
    }
    centres
}

/// A block of rows on the device with their squared norms.
struct Block<B: Backend> {
    rows: Tensor<B, 2>,
    norms: Vec<f32>,
}

impl<B: Backend> Block<B> {
    fn new(x: &[f32], dim: usize, device: &B::Device) -> Self {
        let n = x.len() / dim;
        Block {
            rows: Tensor::from_data(TensorData::new(x.to_vec(), [n, dim]), device),
            norms: squared_norms(x, dim),
        }
    }
}

/// Centroids on the device, ready to score blocks of rows.
struct Scorer<B: Backend> {
    /// [dim, k]
    ct: Tensor<B, 2>,
    norms: Vec<f32>,
    k: usize,
}

impl<B: Backend> Scorer<B> {
    fn new(centroids: &[f32], dim: usize, device: &B::Device) -> Self {
        let k = centroids.len() / dim;
        Scorer {
            ct: Tensor::<B, 2>::from_data(TensorData::new(centroids.to_vec(), [k, dim]), device)
                .transpose(),
            norms: squared_norms(centroids, dim),
            k,
        }
    }

    /// Nearest centroid of each row of `x` (already normalised for cosine): (cluster, squared
    /// distance), appended to `labels` / `dists`.
    fn nearest(
        &self,
        x: &[f32],
        dim: usize,
        device: &B::Device,
        labels: &mut Vec<u32>,
        dists: &mut Vec<f32>,
    ) {
        let block = Block::new(x, dim, device);
        self.nearest_block(&block, labels, dists);
    }

    /// As [`Scorer::nearest`] for a block already on the device.
    fn nearest_block(&self, x: &Block<B>, labels: &mut Vec<u32>, dists: &mut Vec<f32>) {
        let x_norms = &x.norms;
        let dots = x
            .rows
            .clone()
            .matmul(self.ct.clone())
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("f32");
        let best: Vec<(u32, f32)> = dots
            .par_chunks(self.k)
            .zip(x_norms.par_iter())
            .map(|(row, xn)| {
                let (c, key) = row.iter().zip(&self.norms).enumerate().fold(
                    (0usize, f32::NEG_INFINITY),
                    |best, (c, (dot, cn))| {
                        let key = 2.0 * dot - cn;
                        if key > best.1 {
                            (c, key)
                        } else {
                            best
                        }
                    },
                );
                (c as u32, (xn - key).max(0.0))
            })
            .collect();
        for (c, d) in best {
            labels.push(c);
            dists.push(d);
        }
    }
}

/// Per-cluster sums (f64) and counts of rows, accumulated in parallel.
fn accumulate(
    x: &[f32],
    labels: &[u32],
    dim: usize,
    k: usize,
    sums: &mut [f64],
    counts: &mut [usize],
) {
    let rows_per_task = (labels.len() / rayon::current_num_threads().max(1)).max(256);
    let (s, c) = x
        .par_chunks(rows_per_task * dim)
        .zip(labels.par_chunks(rows_per_task))
        .map(|(xs, ls)| {
            // f32 within a task (a few thousand rows: vectorises), f64 across tasks.
            let mut s32 = vec![0f32; k * dim];
            let mut c = vec![0usize; k];
            for (row, &l) in xs.chunks(dim).zip(ls) {
                let l = l as usize;
                c[l] += 1;
                for (a, v) in s32[l * dim..(l + 1) * dim].iter_mut().zip(row) {
                    *a += *v;
                }
            }
            (s32.into_iter().map(f64::from).collect::<Vec<f64>>(), c)
        })
        .reduce(
            || (vec![0f64; k * dim], vec![0usize; k]),
            |(mut s1, mut c1), (s2, c2)| {
                s1.iter_mut().zip(&s2).for_each(|(a, b)| *a += b);
                c1.iter_mut().zip(&c2).for_each(|(a, b)| *a += b);
                (s1, c1)
            },
        );
    sums.iter_mut().zip(&s).for_each(|(a, b)| *a += b);
    counts.iter_mut().zip(&c).for_each(|(a, b)| *a += b);
}

/// Nearest centroid of every row of `pool` (blocked on the device): (cluster, squared distance).
pub fn assign<B: Backend>(
    pool: &mut dyn RowBlocks,
    centroids: &[f32],
    metric: Metric,
    block_rows: usize,
    device: &B::Device,
) -> Result<(Vec<u32>, Vec<f32>), RowsError> {
    let dim = pool.dim();
    let scorer = Scorer::<B>::new(centroids, dim, device);
    let (mut labels, mut dists) = (
        Vec::with_capacity(pool.rows()),
        Vec::with_capacity(pool.rows()),
    );
    let mut start = 0;
    while start < pool.rows() {
        let mut x = pool.block(start, block_rows.max(1))?;
        if metric == Metric::Cosine {
            normalise(&mut x, dim);
        }
        scorer.nearest(&x, dim, device, &mut labels, &mut dists);
        start += x.len() / dim;
    }
    Ok((labels, dists))
}

/// Fit `k` clusters on `pool` with `iterations` Lloyd steps.
#[allow(clippy::too_many_arguments)]
pub fn kmeans<B: Backend>(
    pool: &mut dyn RowBlocks,
    k: usize,
    iterations: usize,
    metric: Metric,
    seed: u64,
    block_rows: usize,
    device: &B::Device,
    progress: &mut dyn FnMut(usize),
) -> Result<KMeans, RowsError> {
    let (n, dim) = (pool.rows(), pool.dim());
    let k = k.clamp(1, n.max(1));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut picked = sample(&mut rng, n, (SEEDING_SAMPLE_PER_CLUSTER * k).min(n)).into_vec();
    picked.sort_unstable();
    let mut sampled = Vec::with_capacity(picked.len() * dim);
    for i in picked {
        sampled.extend(pool.block(i, 1)?);
    }
    if metric == Metric::Cosine {
        normalise(&mut sampled, dim);
    }
    let mut centroids = plus_plus(&sampled, dim, k, &mut rng);
    let mut assignments = Vec::new();
    let mut distances = Vec::new();
    let mut done = 0;
    // Pools that fit the in-memory budget are read (and normalised) once, not every pass.
    let cached = if n * dim * 4 <= CACHE_BYTES {
        let mut rows = Vec::with_capacity(n * dim);
        let mut start = 0;
        while start < n {
            let x = pool.block(start, block_rows.max(1))?;
            start += x.len() / dim;
            rows.extend(x);
        }
        if metric == Metric::Cosine {
            normalise(&mut rows, dim);
        }
        // ... and put on the device once, with their norms.
        let blocks: Vec<Block<B>> = rows
            .chunks(block_rows.max(1) * dim)
            .map(|x| Block::new(x, dim, device))
            .collect();
        Some((rows, blocks))
    } else {
        None
    };
    // One pass per iteration: each block is assigned to the current centroids and, in the
    // same pass, summed into the next centroids (Lloyd's update from that assignment).
    for it in 0..=iterations {
        let last = it == iterations;
        let scorer = Scorer::<B>::new(&centroids, dim, device);
        assignments = Vec::with_capacity(n);
        distances = Vec::with_capacity(n);
        let mut sums = vec![0f64; if last { 0 } else { k * dim }];
        let mut counts = vec![0usize; if last { 0 } else { k }];
        let mut start = 0;
        let mut index = 0;
        while start < n {
            let block = match &cached {
                Some((rows, blocks)) => {
                    let end = (start + block_rows.max(1)).min(n);
                    scorer.nearest_block(&blocks[index], &mut assignments, &mut distances);
                    std::borrow::Cow::Borrowed(&rows[start * dim..end * dim])
                }
                None => {
                    let mut x = pool.block(start, block_rows.max(1))?;
                    if metric == Metric::Cosine {
                        normalise(&mut x, dim);
                    }
                    scorer.nearest(&x, dim, device, &mut assignments, &mut distances);
                    std::borrow::Cow::Owned(x)
                }
            };
            index += 1;
            if !last {
                accumulate(
                    &block,
                    &assignments[start..],
                    dim,
                    k,
                    &mut sums,
                    &mut counts,
                );
            }
            start += block.len() / dim;
        }
        if last {
            break;
        }
        // Empty clusters keep their centroid.
        for c in 0..k {
            if counts[c] > 0 {
                for d in 0..dim {
                    centroids[c * dim + d] = (sums[c * dim + d] / counts[c] as f64) as f32;
                }
            }
        }
        if metric == Metric::Cosine {
            normalise(&mut centroids, dim);
        }
        done = it + 1;
        progress(done);
    }
    let inertia = distances.iter().map(|d| *d as f64).sum();
    Ok(KMeans {
        k,
        dim,
        metric,
        centroids,
        assignments,
        distances,
        inertia,
        iterations: done,
    })
}

#[cfg(test)]
mod tests {
    use super::super::search::InMemory;
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn finds_planted_clusters() {
        // Four tight blobs around far-apart centres, 50 points each, shuffled order.
        let dim = 6;
        let mut rng = StdRng::seed_from_u64(4);
        let centres: Vec<Vec<f32>> = (0..4)
            .map(|c| (0..dim).map(|d| if d == c { 10.0 } else { 0.0 }).collect())
            .collect();
        let mut truth = Vec::new();
        let mut data = Vec::new();
        for i in 0..200 {
            let c = (i * 7) % 4;
            truth.push(c);
            data.extend(
                centres[c]
                    .iter()
                    .map(|v| v + rng.random_range(-0.5f32..0.5)),
            );
        }
        for metric in [Metric::L2, Metric::Cosine] {
            let km = kmeans::<Flex>(
                &mut InMemory { data: &data, dim },
                4,
                10,
                metric,
                1,
                64,
                &Default::default(),
                &mut |_| {},
            )
            .unwrap();
            // Same partition as the truth, up to the cluster names.
            for i in 0..200 {
                for j in 0..200 {
                    assert_eq!(
                        truth[i] == truth[j],
                        km.assignments[i] == km.assignments[j],
                        "{metric:?} {i} {j}"
                    );
                }
            }
            assert!(km.inertia.is_finite());
        }
    }
}
