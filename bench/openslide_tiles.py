#!/usr/bin/env python3
"""openslide-python + numpy/PIL reference for `dinoadapt-dev bench pathology`.

Does the same work as dinoadapt's tissue + tiling + tile read/decode path on the same slides:
tissue mask on a thumbnail (HSV saturation, Otsu, median filter), the tile grid at a target
mpp, and for every tile above the tissue threshold: read_region at the best level, resize to
the tile size (PIL, bilinear on a box-filtered read) and convert to a float32 array scaled to
[0, 1] (what a model batch needs). Prints one JSON line with tiles/s.

    python bench/openslide_tiles.py SLIDE [SLIDE ...] --mpp 0.5 --size 224 --workers 2 --repeat 5
"""
import argparse
import json
import math
import time
from multiprocessing import Pool

import numpy as np
import openslide
from PIL import Image, ImageFilter


def otsu(values):
    hist, edges = np.histogram(values, bins=256, range=(0, 256))
    total = values.size
    sum_all = np.dot(np.arange(256), hist)
    w0 = np.cumsum(hist)
    sum0 = np.cumsum(np.arange(256) * hist)
    w1 = total - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        m0 = sum0 / w0
        m1 = (sum_all - sum0) / w1
        between = w0 * w1 * (m0 - m1) ** 2
    return int(np.nanargmax(between))


def slide_mpp(s):
    mpp = s.properties.get(openslide.PROPERTY_NAME_MPP_X)
    return float(mpp) if mpp else None


def tissue_mask(s, max_side=2048):
    w, h = s.dimensions
    scale = max(w, h) / max_side if max(w, h) > max_side else 1.0
    thumb = s.get_thumbnail((int(w / scale), int(h / scale))).convert("RGB")
    sat = np.asarray(thumb.convert("HSV"))[..., 1]
    sat = np.asarray(Image.fromarray(sat).filter(ImageFilter.MedianFilter(7)))
    mask = sat > otsu(sat)
    return mask, w / mask.shape[1], h / mask.shape[0]


def tiles_of(path, target_mpp, size, threshold):
    s = openslide.OpenSlide(path)
    mpp = slide_mpp(s)
    mask, fx, fy = tissue_mask(s)
    extent = size * target_mpp / mpp  # level-0 px per tile
    w, h = s.dimensions
    out = []
    for y in range(0, int(h - extent) + 1, int(round(extent))):
        for x in range(0, int(w - extent) + 1, int(round(extent))):
            m = mask[int(y / fy):int(math.ceil((y + extent) / fy)), int(x / fx):int(math.ceil((x + extent) / fx))]
            if m.size and m.mean() >= threshold:
                out.append((x, y))
    # the best level: the coarsest whose downsample does not exceed the wanted one
    want = extent / size
    level = max(i for i, d in enumerate(s.level_downsamples) if d <= want + 1e-9) if s.level_downsamples[0] <= want else 0
    return s, out, extent, level


def read_tiles(args):
    path, target_mpp, size, threshold = args
    s, coords, extent, level = tiles_of(path, target_mpp, size, threshold)
    d = s.level_downsamples[level]
    side = int(math.ceil(extent / d))
    total = 0.0
    for x, y in coords:
        tile = s.read_region((x, y), level, (side, side)).convert("RGB").resize((size, size), Image.BILINEAR)
        a = np.asarray(tile, dtype=np.float32) / 255.0
        total += float(a[0, 0, 0])
    return len(coords)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("slides", nargs="+")
    p.add_argument("--mpp", type=float, default=0.5)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threshold", type=float, default=0.25)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--repeat", type=int, default=1)
    a = p.parse_args()
    jobs = [(s, a.mpp, a.size, a.threshold) for s in a.slides] * a.repeat
    t0 = time.perf_counter()
    if a.workers > 1:
        with Pool(a.workers) as pool:
            counts = pool.map(read_tiles, jobs)
    else:
        counts = [read_tiles(j) for j in jobs]
    secs = time.perf_counter() - t0
    n = sum(counts)
    print(json.dumps({"impl": "openslide-python", "openslide": openslide.__library_version__,
                      "slides": len(jobs), "tiles": n, "seconds": secs, "tiles_per_s": n / secs,
                      "workers": a.workers, "mpp": a.mpp, "size": a.size}))


if __name__ == "__main__":
    main()
