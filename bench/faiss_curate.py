"""faiss-cpu reference for `dinoadapt-dev bench curate`.

Measures, on the same safetensors files and with the same thread count as the Rust side:

* exact top-k nearest-neighbour search: `IndexFlatIP` over L2-normalised rows (`--metric cosine`,
  the default; scores are inner products = cosine similarities) or `IndexFlatL2` (`--metric l2`;
  scores are squared L2 distances). Only `index.search` is timed (best and median of `--repeat`
  runs); loading, normalising and `index.add` are reported separately as `prep_s`.
* k-means: `faiss.Kmeans(d, k, niter, seed, spherical=(metric == cosine))` trained on the whole
  pool (normalised for cosine). faiss' default subsampling to 256 rows per centroid is switched
  off unless `--kmeans-max-points-per-centroid` says otherwise, so both sides fit the same rows.
  `kmeans_s` is the `train` wall time; `kmeans_inertia` is computed the same way for both metrics
  as the Rust side does: the sum over pool rows of the squared L2 distance to the nearest final
  centroid (after normalisation for cosine). faiss' own final objective `obj[-1]` (for spherical
  k-means a sum of inner products, measured before the last centroid update) is `kmeans_obj`.

Inputs hold one float32 tensor named `cls` of shape [N, D]; without `--queries` the pool is its
own query set. `--write-results DIR` saves DIR/faiss_knn.safetensors (`indices` int64 [M, k],
`scores` float32 [M, k]) for comparison with the Rust results.

    dinoadapt-dev bench curate      # writes out/bench_curate/{pool,queries}.safetensors
    python bench/faiss_curate.py --pool out/bench_curate/pool.safetensors \\
        --queries out/bench_curate/queries.safetensors --threads 2 --json

Dependencies: numpy, safetensors, faiss-cpu (`pip install faiss-cpu`).
"""
import argparse
import json
import os
import statistics
import sys
import time


def default_threads():
    # Same default as rayon's global pool on the Rust side.
    env = os.environ.get("RAYON_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else (os.cpu_count() or 1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pool", required=True, help="safetensors file with float32 `cls` [N, D]")
    p.add_argument("--queries", help="safetensors file with float32 `cls` [M, D] (default: the pool)")
    p.add_argument("--metric", default="cosine", choices=["cosine", "l2"])
    p.add_argument("--k", type=int, default=4, help="neighbours per query")
    p.add_argument("--threads", type=int, default=default_threads(),
                   help="OpenMP threads (default: $RAYON_NUM_THREADS or all cores, like rayon)")
    p.add_argument("--repeat", type=int, default=3, help="timed search runs")
    p.add_argument("--kmeans-k", type=int, default=256)
    p.add_argument("--kmeans-iters", type=int, default=10)
    p.add_argument("--kmeans-max-points-per-centroid", type=int, default=0,
                   help="faiss subsampling cap (0 = train on the whole pool)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--write-results", metavar="DIR",
                   help="save DIR/faiss_knn.safetensors (indices int64, scores float32)")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    if a.threads < 1:
        sys.exit("--threads must be >= 1")
    # Before faiss/numpy load their OpenMP / BLAS runtimes.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(a.threads)

    import faiss
    import numpy as np
    from safetensors.numpy import load_file, save_file

    faiss.omp_set_num_threads(a.threads)

    def load(path):
        t = load_file(path)
        if "cls" not in t:
            sys.exit(f"{path}: no tensor named `cls` (has {sorted(t)})")
        x = t["cls"]
        if x.ndim != 2:
            sys.exit(f"{path}: `cls` has shape {x.shape}, expected [N, D]")
        return np.ascontiguousarray(x, dtype=np.float32)

    t0 = time.perf_counter()
    pool = load(a.pool)
    queries = pool if a.queries is None else load(a.queries)
    n, d = pool.shape
    m = queries.shape[0]
    if queries.shape[1] != d:
        sys.exit(f"queries have dim {queries.shape[1]}, pool has {d}")
    k = min(a.k, n)
    if a.metric == "cosine":
        pool = pool.copy()
        faiss.normalize_L2(pool)  # in place; zero rows stay zero
        if a.queries is None:
            queries = pool
        else:
            queries = queries.copy()
            faiss.normalize_L2(queries)
        index = faiss.IndexFlatIP(d)
    else:
        index = faiss.IndexFlatL2(d)
    index.add(pool)
    prep_s = time.perf_counter() - t0

    times = []
    scores = indices = None
    for _ in range(max(a.repeat, 1)):
        t0 = time.perf_counter()
        scores, indices = index.search(queries, k)
        times.append(time.perf_counter() - t0)

    if a.write_results:
        os.makedirs(a.write_results, exist_ok=True)
        save_file(
            {"indices": np.ascontiguousarray(indices, dtype=np.int64),
             "scores": np.ascontiguousarray(scores, dtype=np.float32)},
            os.path.join(a.write_results, "faiss_knn.safetensors"),
            metadata={"impl": "faiss", "faiss_version": faiss.__version__,
                      "metric": a.metric, "k": str(k)},
        )
    del index

    kk = min(a.kmeans_k, n)
    max_ppc = a.kmeans_max_points_per_centroid or -(-n // kk)  # ceil(n / k): no subsampling
    km = faiss.Kmeans(d, kk, niter=a.kmeans_iters, seed=a.seed,
                      spherical=a.metric == "cosine", verbose=False,
                      max_points_per_centroid=max_ppc, min_points_per_centroid=1)
    t0 = time.perf_counter()
    km.train(pool)
    kmeans_s = time.perf_counter() - t0
    obj = float(km.obj[-1]) if len(km.obj) else float("nan")

    t0 = time.perf_counter()
    cidx = faiss.IndexFlatL2(d)
    cidx.add(km.centroids)
    dist, _ = cidx.search(pool, 1)
    assign_s = time.perf_counter() - t0
    inertia = float(dist.astype(np.float64).sum())

    out = {
        "impl": "faiss",
        "faiss_version": faiss.__version__,
        "threads": a.threads,
        "pool": int(n),
        "queries": int(m),
        "dim": int(d),
        "k": int(k),
        "metric": a.metric,
        "search_s_best": min(times),
        "search_s_median": statistics.median(times),
        "queries_per_s": m / min(times),
        "kmeans_k": int(kk),
        "kmeans_iters": int(a.kmeans_iters),
        "kmeans_s": kmeans_s,
        "kmeans_inertia": inertia,
        "kmeans_obj": obj,
        "kmeans_train_rows": int(min(n, max_ppc * kk)),
        "kmeans_final_assign_s": assign_s,
        "prep_s": prep_s,
    }
    if a.json:
        print(json.dumps(out))
    else:
        for key, v in out.items():
            print(f"{key:>22}: {v}")


if __name__ == "__main__":
    main()
