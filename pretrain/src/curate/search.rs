//! Exact k-nearest-neighbour search over embeddings: blocked matrix products on the burn device
//! and a streaming top-k per query on the host, so the pool is read block by block and never
//! held whole (cosine similarity or squared L2 distance).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::rows::{FeatureRows, RowsError, StoreRows};

/// How neighbours are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Cosine similarity of L2-normalised rows (higher is closer).
    Cosine,
    /// Squared Euclidean distance (lower is closer).
    L2,
}

/// Rows read in blocks: a feature file or a matrix in memory.
pub trait RowBlocks {
    fn rows(&self) -> usize;
    fn dim(&self) -> usize;
    fn block(&mut self, start: usize, count: usize) -> Result<Vec<f32>, RowsError>;
}

impl RowBlocks for FeatureRows {
    fn rows(&self) -> usize {
        self.rows
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn block(&mut self, start: usize, count: usize) -> Result<Vec<f32>, RowsError> {
        self.read(start, count)
    }
}

impl RowBlocks for StoreRows {
    fn rows(&self) -> usize {
        self.rows
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn block(&mut self, start: usize, count: usize) -> Result<Vec<f32>, RowsError> {
        self.read(start, count)
    }
}

/// A row-major matrix in memory.
pub struct InMemory<'a> {
    pub data: &'a [f32],
    pub dim: usize,
}

impl RowBlocks for InMemory<'_> {
    fn rows(&self) -> usize {
        self.data.len() / self.dim.max(1)
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn block(&mut self, start: usize, count: usize) -> Result<Vec<f32>, RowsError> {
        let end = (start + count).min(self.rows());
        Ok(self.data[start * self.dim..end * self.dim].to_vec())
    }
}

/// The k nearest pool rows of each query, best first: `indices[q * k + j]`, with the cosine
/// similarity or squared distance in `scores`. Slots beyond the pool size hold `u32::MAX`.
#[derive(Debug, Clone, PartialEq)]
pub struct Knn {
    pub k: usize,
    pub metric: Metric,
    pub indices: Vec<u32>,
    pub scores: Vec<f32>,
}

impl Knn {
    pub fn queries(&self) -> usize {
        self.indices.len() / self.k.max(1)
    }

    /// (pool index, score) of query `q`, best first.
    pub fn row(&self, q: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let r = q * self.k..(q + 1) * self.k;
        self.indices[r.clone()]
            .iter()
            .zip(&self.scores[r])
            .filter(|(i, _)| **i != u32::MAX)
            .map(|(i, s)| (*i as usize, *s))
    }
}

/// Row-wise L2 normalisation in place.
pub fn normalise(rows: &mut [f32], dim: usize) {
    rows.par_chunks_mut(dim).for_each(|r| {
        let n = squared_norm(r).sqrt().max(1e-12);
        r.iter_mut().for_each(|v| *v /= n);
    });
}

/// Query rows per product: keeps each [queries x pool block] score matrix near 64 MB.
const QUERY_BLOCK: usize = 4096;

/// Streaming top-k state: per query the k best (key, index), best first; a larger key is closer
/// and ties go to the lower index.
struct TopK {
    k: usize,
    keys: Vec<f32>,
    idx: Vec<u32>,
}

impl TopK {
    fn new(queries: usize, k: usize) -> Self {
        TopK {
            k,
            keys: vec![f32::NEG_INFINITY; queries * k],
            idx: vec![u32::MAX; queries * k],
        }
    }

    /// Merge the keys [rows, cols] of pool rows `offset..offset + cols` into queries
    /// `first..first + rows`; `skip` excludes the pairs query i / pool row i.
    fn merge(&mut self, first: usize, keys: &[f32], cols: usize, offset: usize, skip_self: bool) {
        let k = self.k;
        let rows = keys.len() / cols.max(1);
        let span = first * k..(first + rows) * k;
        self.keys[span.clone()]
            .par_chunks_mut(k)
            .zip(self.idx[span].par_chunks_mut(k))
            .zip(keys.par_chunks(cols))
            .enumerate()
            .for_each(|(r, ((bk, bi), row))| {
                let me = first + r;
                for (j, &key) in row.iter().enumerate() {
                    if key.is_nan() || key <= bk[k - 1] {
                        continue;
                    }
                    let index = offset + j;
                    if skip_self && index == me {
                        continue;
                    }
                    let mut p = k - 1;
                    while p > 0 && key > bk[p - 1] {
                        bk[p] = bk[p - 1];
                        bi[p] = bi[p - 1];
                        p -= 1;
                    }
                    bk[p] = key;
                    bi[p] = index as u32;
                }
            });
    }
}

/// Squared norms of rows.
pub(crate) fn squared_norms(rows: &[f32], dim: usize) -> Vec<f32> {
    rows.par_chunks(dim).map(squared_norm).collect()
}

/// Lanes of the partial sums below: 16 independent f32 accumulators let the compiler use one
/// AVX-512 (or two AVX2) registers; a single running sum would be a serial chain.
const LANES: usize = 16;

/// Squared L2 norm of `a`.
pub(crate) fn squared_norm(a: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    for c in a.chunks_exact(LANES) {
        for (s, v) in acc.iter_mut().zip(c) {
            *s += v * v;
        }
    }
    let tail: f32 = a[a.len() / LANES * LANES..].iter().map(|v| v * v).sum();
    acc.iter().sum::<f32>() + tail
}

/// Squared L2 distance of `a` and `b` (same length).
pub(crate) fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = a.len() / LANES;
    for (x, y) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for ((s, u), v) in acc.iter_mut().zip(x).zip(y) {
            let d = u - v;
            *s += d * d;
        }
    }
    let tail: f32 = a[chunks * LANES..]
        .iter()
        .zip(&b[chunks * LANES..])
        .map(|(u, v)| (u - v) * (u - v))
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// The exact k nearest rows of `pool` for every row of `queries` [m, dim]. With `skip_self`, the
/// queries are the pool itself and row i is not its own neighbour. `block_rows` pool rows are
/// read and multiplied at a time; `progress(rows_done)` is called after each block.
#[allow(clippy::too_many_arguments)]
pub fn search<B: Backend>(
    queries: &[f32],
    pool: &mut dyn RowBlocks,
    k: usize,
    metric: Metric,
    block_rows: usize,
    skip_self: bool,
    device: &B::Device,
    progress: &mut dyn FnMut(usize),
) -> Result<Knn, RowsError> {
    let dim = pool.dim();
    let m = queries.len() / dim.max(1);
    let k = k.max(1);
    let mut q = queries.to_vec();
    if metric == Metric::Cosine {
        normalise(&mut q, dim);
    }
    let q_norms = squared_norms(&q, dim);
    let q_blocks: Vec<(usize, Tensor<B, 2>)> = q
        .chunks(QUERY_BLOCK * dim)
        .enumerate()
        .map(|(b, c)| {
            let rows = c.len() / dim;
            let t = Tensor::from_data(TensorData::new(c.to_vec(), [rows, dim]), device);
            (b * QUERY_BLOCK, t)
        })
        .collect();
    let mut top = TopK::new(m, k);
    let block_rows = block_rows.max(1);
    let mut start = 0;
    while start < pool.rows() {
        let mut p = pool.block(start, block_rows)?;
        let cols = p.len() / dim;
        if metric == Metric::Cosine {
            normalise(&mut p, dim);
        }
        let p_norms = squared_norms(&p, dim);
        let pt = Tensor::<B, 2>::from_data(TensorData::new(p, [cols, dim]), device).transpose();
        for (first, qb) in &q_blocks {
            let dots = qb.clone().matmul(pt.clone());
            let mut keys = dots
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .expect("f32 scores");
            if metric == Metric::L2 {
                // -(|q|^2 - 2 q.p + |p|^2) ranks like -distance; |q|^2 is added back at the end.
                keys.par_chunks_mut(cols).for_each(|row| {
                    row.iter_mut()
                        .zip(&p_norms)
                        .for_each(|(s, pn)| *s = 2.0 * *s - pn);
                });
            }
            top.merge(*first, &keys, cols, start, skip_self);
        }
        start += cols;
        progress(start);
    }
    let scores = match metric {
        Metric::Cosine => top.keys,
        Metric::L2 => top
            .keys
            .iter()
            .enumerate()
            .map(|(i, key)| (q_norms[i / k] - key).max(0.0))
            .collect(),
    };
    Ok(Knn {
        k,
        metric,
        indices: top.idx,
        scores,
    })
}

/// [`search`] with the queries read `chunk` rows at a time from `queries`, so that memory is
/// bounded by the chunk and the pool block, not by the number of queries. With `self_rows` the
/// queries are the pool itself (query i is pool row i) and a row is not its own neighbour.
#[allow(clippy::too_many_arguments)]
pub fn search_chunked<B: Backend>(
    queries: &mut dyn RowBlocks,
    pool: &mut dyn RowBlocks,
    k: usize,
    metric: Metric,
    block_rows: usize,
    chunk: usize,
    self_rows: bool,
    device: &B::Device,
    progress: &mut dyn FnMut(usize),
) -> Result<Knn, RowsError> {
    let (m, k) = (queries.rows(), k.max(1));
    // One more neighbour when the query's own row has to be dropped from its list.
    let wide = k + usize::from(self_rows);
    let mut indices = Vec::with_capacity(m * k);
    let mut scores = Vec::with_capacity(m * k);
    let mut start = 0;
    while start < m {
        let q = queries.block(start, chunk.max(1))?;
        let rows = q.len() / queries.dim().max(1);
        if rows == 0 {
            break;
        }
        let knn = search::<B>(
            &q,
            pool,
            wide,
            metric,
            block_rows,
            false,
            device,
            &mut |_| {},
        )?;
        for i in 0..rows {
            let own = (start + i) as u32;
            let row = i * wide..(i + 1) * wide;
            let kept = knn.indices[row.clone()]
                .iter()
                .zip(&knn.scores[row])
                .filter(|(j, _)| !(self_rows && **j == own))
                .take(k);
            for (j, s) in kept {
                indices.push(*j);
                scores.push(*s);
            }
        }
        start += rows;
        progress(start);
    }
    Ok(Knn {
        k,
        metric,
        indices,
        scores,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n * dim)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect()
    }

    /// Brute force in f64: (index, score) sorted best first.
    fn brute(
        q: &[f32],
        p: &[f32],
        dim: usize,
        k: usize,
        metric: Metric,
        skip_self: bool,
    ) -> Vec<Vec<(usize, f64)>> {
        let norm = |r: &[f32]| -> Vec<f64> {
            let v: Vec<f64> = r.iter().map(|x| *x as f64).collect();
            match metric {
                Metric::Cosine => {
                    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
                    v.iter().map(|x| x / n).collect()
                }
                Metric::L2 => v,
            }
        };
        q.chunks(dim)
            .enumerate()
            .map(|(qi, qr)| {
                let a = norm(qr);
                let mut all: Vec<(usize, f64)> = p
                    .chunks(dim)
                    .enumerate()
                    .filter(|(j, _)| !(skip_self && *j == qi))
                    .map(|(j, pr)| {
                        let b = norm(pr);
                        let s = match metric {
                            Metric::Cosine => a.iter().zip(&b).map(|(x, y)| x * y).sum(),
                            Metric::L2 => a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum(),
                        };
                        (j, s)
                    })
                    .collect();
                all.sort_by(|x, y| match metric {
                    Metric::Cosine => y.1.total_cmp(&x.1),
                    Metric::L2 => x.1.total_cmp(&y.1),
                });
                all.truncate(k);
                all
            })
            .collect()
    }

    #[test]
    fn blocked_search_equals_brute_force() {
        let dim = 24;
        let pool = random(1000, dim, 1);
        let queries = random(70, dim, 2);
        for metric in [Metric::Cosine, Metric::L2] {
            let want = brute(&queries, &pool, dim, 5, metric, false);
            // Blocks that do not divide the pool, and more than one query block of work.
            let got = search::<Flex>(
                &queries,
                &mut InMemory { data: &pool, dim },
                5,
                metric,
                137,
                false,
                &Default::default(),
                &mut |_| {},
            )
            .unwrap();
            for (qi, w) in want.iter().enumerate() {
                let g: Vec<(usize, f32)> = got.row(qi).collect();
                assert_eq!(
                    g.iter().map(|x| x.0).collect::<Vec<_>>(),
                    w.iter().map(|x| x.0).collect::<Vec<_>>(),
                    "{metric:?} query {qi}"
                );
                for ((_, s), (_, t)) in g.iter().zip(w) {
                    assert!((*s as f64 - t).abs() < 1e-4, "{s} vs {t}");
                }
            }
        }
    }

    #[test]
    fn self_search_skips_the_query_and_small_pools_leave_empty_slots() {
        let dim = 8;
        let pool = random(3, dim, 3);
        let got = search::<Flex>(
            &pool,
            &mut InMemory { data: &pool, dim },
            4,
            Metric::Cosine,
            2,
            true,
            &Default::default(),
            &mut |_| {},
        )
        .unwrap();
        for q in 0..3 {
            let r: Vec<usize> = got.row(q).map(|x| x.0).collect();
            assert_eq!(r.len(), 2);
            assert!(!r.contains(&q));
        }
    }

    #[test]
    fn chunked_queries_give_the_same_neighbours() {
        let dim = 16;
        let pool = random(50, dim, 5);
        let queries = random(23, dim, 6);
        for metric in [Metric::Cosine, Metric::L2] {
            for (q, self_rows) in [(&pool, true), (&queries, false)] {
                let whole = search::<Flex>(
                    q,
                    &mut InMemory { data: &pool, dim },
                    5,
                    metric,
                    9,
                    self_rows,
                    &Default::default(),
                    &mut |_| {},
                )
                .unwrap();
                let chunked = search_chunked::<Flex>(
                    &mut InMemory { data: q, dim },
                    &mut InMemory { data: &pool, dim },
                    5,
                    metric,
                    9,
                    7,
                    self_rows,
                    &Default::default(),
                    &mut |_| {},
                )
                .unwrap();
                assert_eq!(
                    chunked.indices, whole.indices,
                    "{metric:?} self {self_rows}"
                );
                let close = chunked
                    .scores
                    .iter()
                    .zip(&whole.scores)
                    .all(|(a, b)| (a - b).abs() < 1e-5);
                assert!(close);
            }
        }
    }
}
