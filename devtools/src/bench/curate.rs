//! `dinoadapt-dev bench curate`: exact top-k search and k-means over a synthetic embedding pool
//! (written to safetensors so `bench/faiss_curate.py` times faiss on the same data).

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use dinoadapt_core::backend::{keep_freed_memory, on_device, peak_rss_mib, BackendJob, DeviceSpec};
use dinoadapt_core::checkpoint::safetensors_io::write_safetensors;
use dinoadapt_core::checkpoint::HostTensor;
use dinoadapt_pretrain::curate::kmeans::kmeans;
use dinoadapt_pretrain::curate::rows::FeatureRows;
use dinoadapt_pretrain::curate::search::{search, InMemory, Metric};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

#[derive(Args, Debug, Clone)]
pub struct BenchCurateArgs {
    #[arg(long, default_value_t = 100_000)]
    pub pool_size: usize,
    #[arg(long, default_value_t = 10_000)]
    pub queries: usize,
    #[arg(long, default_value_t = 384)]
    pub dim: usize,
    #[arg(long, default_value_t = 4)]
    pub k: usize,
    #[arg(long, default_value_t = 256)]
    pub kmeans_k: usize,
    #[arg(long, default_value_t = 10)]
    pub kmeans_iters: usize,
    /// Where pool.safetensors and queries.safetensors are written (and reused if present).
    #[arg(long, default_value = "out/bench_curate")]
    pub data_dir: PathBuf,
    #[arg(long, default_value_t = 4096)]
    pub block_rows: usize,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
}

/// Rows around 1000 random centres with noise: clustered like real embeddings.
fn synthetic(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let centres: Vec<f32> = (0..1000 * dim)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = rng.random_range(0..1000);
        out.extend(
            centres[c * dim..(c + 1) * dim]
                .iter()
                .map(|v| v + rng.random_range(-0.5f32..0.5)),
        );
    }
    out
}

fn ensure(path: &std::path::Path, n: usize, dim: usize, seed: u64) -> anyhow::Result<()> {
    if let Ok(r) = FeatureRows::open(path, "cls") {
        if r.rows == n && r.dim == dim {
            return Ok(());
        }
    }
    let t = HostTensor::new(vec![n, dim], synthetic(n, dim, seed));
    write_safetensors(path, &[("cls".to_string(), t)], Default::default())?;
    Ok(())
}

struct BenchCurateJob(BenchCurateArgs);

impl BackendJob for BenchCurateJob {
    type Output = anyhow::Result<serde_json::Value>;

    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device) -> Self::Output {
        let a = self.0;
        std::fs::create_dir_all(&a.data_dir)?;
        let (pool_path, query_path) = (
            a.data_dir.join("pool.safetensors"),
            a.data_dir.join("queries.safetensors"),
        );
        ensure(&pool_path, a.pool_size, a.dim, 1)?;
        ensure(&query_path, a.queries, a.dim, 2)?;
        let queries = FeatureRows::open(&query_path, "cls")?.read_all()?;
        let mut times = Vec::new();
        for _ in 0..a.repeat.max(1) {
            let mut pool = FeatureRows::open(&pool_path, "cls")?;
            let t0 = Instant::now();
            let knn = search::<B>(
                &queries,
                &mut pool,
                a.k,
                Metric::Cosine,
                a.block_rows,
                false,
                &device,
                &mut |_| {},
            )?;
            times.push(t0.elapsed().as_secs_f64());
            std::hint::black_box(knn);
        }
        times.sort_by(f64::total_cmp);
        let pool_rows = FeatureRows::open(&pool_path, "cls")?.read_all()?;
        let t0 = Instant::now();
        let km = kmeans::<B>(
            &mut InMemory {
                data: &pool_rows,
                dim: a.dim,
            },
            a.kmeans_k,
            a.kmeans_iters,
            Metric::Cosine,
            0,
            a.block_rows,
            &device,
            &mut |_| {},
        )?;
        let kmeans_s = t0.elapsed().as_secs_f64();
        Ok(json!({
            "impl": "dinoadapt",
            "threads": rayon::current_num_threads(),
            "pool": a.pool_size,
            "queries": a.queries,
            "dim": a.dim,
            "k": a.k,
            "metric": "cosine",
            "search_s_best": times[0],
            "search_s_median": times[times.len() / 2],
            "queries_per_s": a.queries as f64 / times[0],
            "kmeans_k": km.k,
            "kmeans_iters": km.iterations,
            "kmeans_s": kmeans_s,
            "kmeans_inertia": km.inertia,
            "peak_rss_mib": peak_rss_mib(),
            "data_dir": a.data_dir,
        }))
    }
}

pub fn run(args: BenchCurateArgs) -> anyhow::Result<serde_json::Value> {
    keep_freed_memory();
    eprintln!(
        "bench curate: top-{} of {} queries over {} x {} (cosine), k-means k={} x {} iterations, {} threads",
        args.k, args.queries, args.pool_size, args.dim, args.kmeans_k, args.kmeans_iters,
        rayon::current_num_threads()
    );
    on_device(args.device, BenchCurateJob(args))?
}
