#!/usr/bin/env python3
"""Cellularity classes for H&E tiles, a proxy label for kNN monitors on unannotated slides.

The shared slides carry no annotations, so the slide-tile measurements of issue 19 need a label
that nobody hand-made. This is the one used: the tile's *cellularity* (nuclear area fraction),
a quantity pathologists grade, computed by colour deconvolution — Ruifrok & Johnston's H&E-DAB
stain matrix (the one scikit-image's `rgb2hed` uses) —:

  1. optical density per pixel, OD = -log10((I + 1) / 256), and the hematoxylin concentration
     H = OD · inv(M)[:, 0];
  2. tissue pixels: total OD > 0.15 (glass and fat are near white);
  3. nuclear pixels: H above an Otsu threshold over the H of every tissue pixel of every tile;
  4. a tile's cellularity = nuclear pixels / tissue pixels; the classes are its terciles over
     the tiles (low, mid, high), so they are balanced.

Tiles are split into train and val by a checkerboard over the tile grid (neighbours go to
different splits; no tile is in both). The output is two image folders with one sub-folder per
class, the layout of `[monitor] train` / `val`.

Usage: label-tiles-cellularity.py TILE_IMAGES OUT
  TILE_IMAGES: a `pathology tile --images` folder (<row>_x<x>_y<y>.png)
"""
import re
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
TISSUE_OD = 0.15


def otsu(values, bins=256):
    hist, edges = np.histogram(values, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centers) - np.cumsum(hist * centers)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return centers[np.argmax(between[:-1])]


def main(src, out):
    pattern = re.compile(r"^(\d+)_x(-?\d+)_y(-?\d+)\.png$")
    tiles = []
    for p in sorted(Path(src).iterdir()):
        m = pattern.match(p.name)
        if m:
            tiles.append((p, int(m.group(2)), int(m.group(3))))
    if len(tiles) < 30:
        sys.exit(f"{src}: {len(tiles)} tile images; at least 30 are needed")
    h_of, tissue_of = [], []
    for p, _, _ in tiles:
        rgb = np.asarray(Image.open(p).convert("RGB"), dtype=np.float64)
        od = -np.log10((rgb + 1.0) / 256.0)
        h_of.append((od @ HED_FROM_RGB)[..., 0])
        tissue_of.append(od.sum(axis=-1) > TISSUE_OD)
    threshold = otsu(np.concatenate([h[t] for h, t in zip(h_of, tissue_of)]))
    cellularity = np.array(
        [((h > threshold) & t).sum() / max(t.sum(), 1) for h, t in zip(h_of, tissue_of)]
    )
    cuts = np.quantile(cellularity, [1 / 3, 2 / 3])
    classes = np.digitize(cellularity, cuts)
    names = ["0_low", "1_mid", "2_high"]
    xs = sorted({x for _, x, _ in tiles})
    step = min(b - a for a, b in zip(xs, xs[1:])) if len(xs) > 1 else 1
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    counts = {}
    for (p, x, y), c in zip(tiles, classes):
        split = "train" if (x // step + y // step) % 2 == 0 else "val"
        d = out / split / names[c]
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, d / p.name)
        counts[(split, names[c])] = counts.get((split, names[c]), 0) + 1
    print(f"{len(tiles)} tiles; hematoxylin Otsu threshold {threshold:.3f}; "
          f"cellularity terciles {cuts[0]:.3f} / {cuts[1]:.3f}")
    for (split, name), n in sorted(counts.items()):
        print(f"  {split:<5} {name:<7} {n}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
