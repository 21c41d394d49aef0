#!/usr/bin/env python3
"""Slides -> tile features with openslide-python + PyTorch: the plain pipeline a lab would write,
the reference for `dinoadapt pathology embed` end to end.

Per slide: tissue mask and tile grid as bench/openslide_tiles.py does them (HSV saturation, Otsu,
median filter, tiles at a target mpp above a tissue fraction), read_region at the best level,
bilinear resize to the tile size, ImageNet normalisation, then transformers' `Dinov2Model`
(random weights, the arch of bench/pytorch_embed.py) in batches, and the class tokens of the
slide saved as one .npy. One JSON line: slides, tiles, seconds, tiles/s.

    python bench/pathology_pipeline.py SLIDE [SLIDE ...] --arch vits14 --batch 16 --threads 2 \
        --out /tmp/features

Compare with, on the same slides and threads:

    RAYON_NUM_THREADS=2 dinoadapt pathology embed SLIDE ... --random-init --preset vits14 \
        --batch-size 16 --min-tissue 0.25 --out /tmp/features-dinoadapt --quiet
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from openslide_tiles import tiles_of  # noqa: E402
from pytorch_embed import build_model  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def tiles(path, mpp, size, threshold):
    """The slide's tiles as normalised [3, size, size] float32 arrays, in grid order."""
    s, coords, extent, level = tiles_of(path, mpp, size, threshold)
    side = int(math.ceil(extent / s.level_downsamples[level]))
    for x, y in coords:
        tile = s.read_region((x, y), level, (side, side)).convert("RGB")
        a = np.asarray(tile.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
        yield ((a - MEAN) / STD).transpose(2, 0, 1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("slides", nargs="+")
    p.add_argument("--arch", default="vits14")
    p.add_argument("--mpp", type=float, default=0.5)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threshold", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    a = p.parse_args()

    import torch
    import transformers

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = build_model(a.arch, "sdpa", transformers).eval()
    os.makedirs(a.out, exist_ok=True)
    t0 = time.perf_counter()
    n = 0
    for i, path in enumerate(a.slides):
        feats = []
        batch = []

        def flush():
            with torch.inference_mode():
                out = model(pixel_values=torch.from_numpy(np.stack(batch)))
            feats.append(out.last_hidden_state[:, 0].numpy())
            batch.clear()

        for t in tiles(path, a.mpp, a.size, a.threshold):
            batch.append(t)
            if len(batch) == a.batch:
                flush()
        if batch:
            flush()
        f = np.concatenate(feats) if feats else np.zeros((0, model.config.hidden_size), np.float32)
        np.save(os.path.join(a.out, f"{i:04d}.npy"), f)
        n += len(f)
    secs = time.perf_counter() - t0
    print(json.dumps({"impl": "openslide-python+pytorch", "torch": torch.__version__,
                      "arch": a.arch, "slides": len(a.slides), "tiles": n, "seconds": secs,
                      "tiles_per_s": n / secs, "batch": a.batch, "threads": a.threads,
                      "mpp": a.mpp, "size": a.size}))


if __name__ == "__main__":
    main()
