"""faiss-cpu reference for `dinoadapt bench curate`: exact top-k search (IndexFlatIP on
L2-normalised rows = cosine, or IndexFlatL2) and k-means (faiss.Kmeans, spherical for cosine)
on the same safetensors files (float32 tensor `cls`) with the same thread count.

    dinoadapt bench curate                       # writes out/bench_curate/{pool,queries}.safetensors
    python bench/faiss_curate.py --pool out/bench_curate/pool.safetensors \
        --queries out/bench_curate/queries.safetensors --threads 2 --json
"""
import argparse
import json
import os
import statistics
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pool", required=True)
    p.add_argument("--queries")
    p.add_argument("--metric", default="cosine", choices=["cosine", "l2"])
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--kmeans-k", type=int, default=256)
    p.add_argument("--kmeans-iters", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    import faiss
    import numpy as np
    from safetensors.numpy import load_file

    faiss.omp_set_num_threads(a.threads)
    pool = np.ascontiguousarray(load_file(a.pool)["cls"], dtype=np.float32)
    queries = pool if a.queries is None else np.ascontiguousarray(load_file(a.queries)["cls"], dtype=np.float32)
    d = pool.shape[1]
    if a.metric == "cosine":
        pool = pool / np.linalg.norm(pool, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        index = faiss.IndexFlatIP(d)
    else:
        index = faiss.IndexFlatL2(d)
    index.add(pool)
    times = []
    for _ in range(max(a.repeat, 1)):
        t0 = time.perf_counter()
        index.search(queries, a.k)
        times.append(time.perf_counter() - t0)
    km = faiss.Kmeans(d, a.kmeans_k, niter=a.kmeans_iters, seed=a.seed, spherical=a.metric == "cosine", verbose=False)
    t0 = time.perf_counter()
    km.train(pool)
    kmeans_s = time.perf_counter() - t0
    l2 = faiss.IndexFlatL2(d)
    l2.add(km.centroids)
    dist, _ = l2.search(pool, 1)
    out = {
        "impl": "faiss", "faiss_version": faiss.__version__, "threads": a.threads,
        "pool": int(pool.shape[0]), "queries": int(queries.shape[0]), "dim": d, "k": a.k,
        "metric": a.metric, "search_s_best": min(times), "search_s_median": statistics.median(times),
        "queries_per_s": queries.shape[0] / min(times), "kmeans_k": a.kmeans_k,
        "kmeans_iters": a.kmeans_iters, "kmeans_s": kmeans_s, "kmeans_inertia": float(dist.sum()),
    }
    print(json.dumps(out) if a.json else out)


if __name__ == "__main__":
    main()
