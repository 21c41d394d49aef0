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
use super::search::{normalise, squared_norms, Metric, RowBlocks};

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

/// Pool rows sampled for the k-means++ seeding: enough for every cluster, bounded in cost.
const SEEDING_SAMPLE_PER_CLUSTER: usize = 64;

fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

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

/// Nearest centroid of every row of `pool` (blocked on the device): (cluster, squared distance).
pub fn assign<B: Backend>(
    pool: &mut dyn RowBlocks,
    centroids: &[f32],
    metric: Metric,
    block_rows: usize,
    device: &B::Device,
) -> Result<(Vec<u32>, Vec<f32>), RowsError> {
    let dim = pool.dim();
    let k = centroids.len() / dim;
    let c_norms = squared_norms(centroids, dim);
    let ct = Tensor::<B, 2>::from_data(TensorData::new(centroids.to_vec(), [k, dim]), device)
        .transpose();
    let (mut labels, mut dists) = (
        Vec::with_capacity(pool.rows()),
        Vec::with_capacity(pool.rows()),
    );
    let mut start = 0;
    while start < pool.rows() {
        let mut x = pool.block(start, block_rows.max(1))?;
        let n = x.len() / dim;
        if metric == Metric::Cosine {
            normalise(&mut x, dim);
        }
        let x_norms = squared_norms(&x, dim);
        let dots = Tensor::<B, 2>::from_data(TensorData::new(x, [n, dim]), device)
            .matmul(ct.clone())
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("f32");
        let best: Vec<(u32, f32)> = dots
            .par_chunks(k)
            .zip(x_norms.par_iter())
            .map(|(row, xn)| {
                let (c, key) = row.iter().zip(&c_norms).enumerate().fold(
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
        start += n;
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
    for it in 0..=iterations {
        (assignments, distances) = assign::<B>(pool, &centroids, metric, block_rows, device)?;
        if it == iterations {
            break;
        }
        // Update: the mean of each cluster's rows (empty clusters keep their centroid).
        let mut sums = vec![0f64; k * dim];
        let mut counts = vec![0usize; k];
        let mut start = 0;
        while start < n {
            let mut x = pool.block(start, block_rows.max(1))?;
            if metric == Metric::Cosine {
                normalise(&mut x, dim);
            }
            for (r, row) in x.chunks(dim).enumerate() {
                let c = assignments[start + r] as usize;
                counts[c] += 1;
                sums[c * dim..(c + 1) * dim]
                    .iter_mut()
                    .zip(row)
                    .for_each(|(s, v)| *s += *v as f64);
            }
            start += x.len() / dim;
        }
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
