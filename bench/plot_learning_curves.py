#!/usr/bin/env python3
"""Overlay the learning curves of official-DINOv2 runs (bench/official_pretrain.py) and
dinoadapt runs (`dinoadapt pretrain`) in one PNG with two panels:

* kNN top-1 of the teacher's class token vs iteration;
* the DINO local-crops loss vs iteration, with its value at the uniform fixed point,
  ln K * 2L / (2L + 2) (K prototypes, L local crops), as a dashed line.

Each ``--run`` is one of

* an official run folder: ``curve.csv`` (iteration,knn) and ``losses.csv``
  (iteration, ..., dino_local_crops_loss, ...), plus ``recipe.json`` for K and L;
* a dinoadapt output folder: kNN from ``summary.json`` (``knn``: [{step, when, accuracy}])
  or, while a run is unfinished, from the newest checkpoint's meta; a kNN column of
  ``metrics.parquet`` is used instead if there is one; losses from ``metrics.parquet``
  (``step``, ``dino_local_crops_loss``); K and L from ``recipe.toml`` or the checkpoint's
  recipe if present, else ``--prototypes/--local-crops``;
* a CSV file with ``iteration,knn`` columns (and optionally ``dino_local_crops_loss``).

A label can be given as ``LABEL=PATH``.

    python3 bench/plot_learning_curves.py --run official=/tmp/official_run \\
        --run dinoadapt=runs/mnist_tiny --out /tmp/curves.png
"""

import argparse
import csv
import glob
import json
import math
import os
import tomllib


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows


def col(rows, name):
    out = []
    for r in rows:
        v = r.get(name)
        if v is None or v == "":
            continue
        out.append(float(v))
    return out


def shares_from_recipe(recipe):
    """(K, L) from a recipe dict (dinoadapt TOML or official recipe.json)."""
    heads = recipe.get("heads", {}) or {}
    crops = recipe.get("crops", {}) or {}
    return heads.get("prototypes", 65536), crops.get("local_crops", 8)


def load_official(folder):
    knn = read_csv(os.path.join(folder, "curve.csv"))
    run = {"knn": (col(knn, "iteration"), col(knn, "knn"))}
    lp = os.path.join(folder, "losses.csv")
    if os.path.exists(lp):
        rows = read_csv(lp)
        run["loss"] = (col(rows, "iteration"), col(rows, "dino_local_crops_loss"))
    rj = os.path.join(folder, "recipe.json")
    if os.path.exists(rj):
        with open(rj) as f:
            run["K"], run["L"] = shares_from_recipe(json.load(f))
    return run


def dinoadapt_knn_from_meta(folder):
    """kNN points from the newest checkpoint's meta (an unfinished run has no summary.json)."""
    metas = sorted(glob.glob(os.path.join(folder, "**", "*.json"), recursive=True), key=os.path.getmtime)
    for m in reversed(metas):
        try:
            with open(m) as f:
                meta = json.load(f)
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(meta, dict) and isinstance(meta.get("knn"), list) and meta["knn"]:
            pts = meta["knn"]
            if isinstance(pts[0], list):  # (step, when, accuracy)
                return [p[0] for p in pts], [p[2] for p in pts], meta
            return [p["step"] for p in pts], [p["accuracy"] for p in pts], meta
    return None


def load_dinoadapt(folder):
    import pandas as pd

    run = {}
    pq = os.path.join(folder, "metrics.parquet")
    df = pd.read_parquet(pq) if os.path.exists(pq) else None
    step_col = None
    if df is not None:
        step_col = next((c for c in ("step", "iteration") if c in df.columns), df.columns[0])
        # metrics.parquet records iteration `step` (0-based) after it ran: done = step + 1.
        done = df[step_col].astype(float) + (1 if step_col == "step" else 0)
        if "dino_local_crops_loss" in df.columns:
            run["loss"] = (list(done), list(df["dino_local_crops_loss"].astype(float)))
        knn_cols = [c for c in df.columns if "knn" in c.lower()]
        if knn_cols:
            s = df[[step_col, knn_cols[0]]].dropna()
            run["knn"] = (list(s[step_col].astype(float) + 1), list(s[knn_cols[0]].astype(float)))
    recipe = None
    sj = os.path.join(folder, "summary.json")
    if "knn" not in run and os.path.exists(sj):
        with open(sj) as f:
            pts = json.load(f).get("knn", [])
        run["knn"] = ([p["step"] for p in pts], [p["accuracy"] for p in pts])
    if "knn" not in run:
        found = dinoadapt_knn_from_meta(folder)
        if found:
            run["knn"] = (found[0], found[1])
            if isinstance(found[2].get("recipe"), str):
                recipe = tomllib.loads(found[2]["recipe"])
    for name in ("recipe.toml",):
        p = os.path.join(folder, name)
        if recipe is None and os.path.exists(p):
            with open(p, "rb") as f:
                recipe = tomllib.load(f)
    if recipe is not None:
        run["K"], run["L"] = shares_from_recipe(recipe)
    if "knn" in run:  # one point per iteration (start/periodic/end may repeat a step)
        seen = {}
        for s, a in zip(*run["knn"]):
            seen[s] = a
        xs = sorted(seen)
        run["knn"] = (xs, [seen[x] for x in xs])
    return run


def load_csv(path):
    rows = read_csv(path)
    it = "iteration" if "iteration" in rows[0] else "step"
    run = {"knn": ([float(r[it]) for r in rows if r.get("knn")], col(rows, "knn"))}
    if "dino_local_crops_loss" in rows[0]:
        run["loss"] = (
            [float(r[it]) for r in rows if r.get("dino_local_crops_loss")],
            col(rows, "dino_local_crops_loss"),
        )
    return run


def load(path):
    if os.path.isfile(path):
        return load_csv(path)
    if os.path.exists(os.path.join(path, "curve.csv")):
        return load_official(path)
    return load_dinoadapt(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", required=True, metavar="[LABEL=]PATH")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--prototypes", type=int, default=None, help="K when no recipe says it")
    ap.add_argument("--local-crops", type=int, default=None, help="L when no recipe says it")
    ap.add_argument("--smooth", type=int, default=10, help="moving average of the loss (iterations)")
    ap.add_argument("--title", default="")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    shares = set()
    for spec in args.run:
        label, path = spec.split("=", 1) if "=" in spec and not os.path.exists(spec) else (None, spec)
        label = label or os.path.basename(os.path.normpath(path))
        run = load(path)
        if "knn" in run and run["knn"][0]:
            (line,) = ax1.plot(run["knn"][0], run["knn"][1], marker="o", ms=3, label=label)
            color = line.get_color()
        else:
            color = None
        if "loss" in run and run["loss"][0]:
            xs, ys = run["loss"]
            n = max(1, args.smooth)
            sm = [sum(ys[max(0, i - n + 1) : i + 1]) / len(ys[max(0, i - n + 1) : i + 1]) for i in range(len(ys))]
            ax2.plot(xs, sm, label=label, color=color, lw=1.2)
        K = args.prototypes or run.get("K")
        L = args.local_crops if args.local_crops is not None else run.get("L")
        if K and L:
            shares.add((K, L))
    for K, L in sorted(shares):
        v = math.log(K) * 2 * L / (2 * L + 2)
        ax2.axhline(v, ls="--", color="grey", lw=1)
        ax2.text(0.01, v, f" ln K share (K={K}, L={L}): {v:.3f}", va="bottom", fontsize=8,
                 color="grey", transform=ax2.get_yaxis_transform())
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("kNN top-1 (teacher CLS)")
    ax1.set_title("kNN accuracy")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("dino_local_crops_loss" + (f" ({args.smooth}-it mean)" if args.smooth > 1 else ""))
    ax2.set_title("DINO local-crops loss")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
