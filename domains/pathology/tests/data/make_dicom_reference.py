"""Pixels OpenSlide 4 reads from the shared DICOM whole-slide image (boxes_0.dcm + boxes_1.dcm),
to check dinoadapt's dicom-rs reader against: the whole level 0 and a region hanging over its
bottom-right edge (outside the slide: transparent in OpenSlide, white once composited).

    pip install openslide-python openslide-bin   # OpenSlide 4.0.1 wheels
    python make_dicom_reference.py ../../../../../shared/data/pathology > dicom_openslide4.json
"""
import json
import sys

import numpy as np
import openslide


def rgb_over_white(region):
    a = np.asarray(region, dtype=np.float64)
    alpha = a[..., 3:4] / 255.0
    # OpenSlide returns premultiplied-then-unpremultiplied RGBA; composite over white.
    return np.rint(a[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(int)


def main(folder):
    out = {"openslide": openslide.__library_version__, "regions": []}
    for name in ["boxes_0.dcm", "boxes_1.dcm"]:
        s = openslide.OpenSlide(f"{folder}/{name}")
        w, h = s.dimensions
        for x, y, rw, rh in [(0, 0, w, h), (w // 2, h // 2, w, h)]:
            out["regions"].append({
                "file": name,
                "level": 0,
                "x": x, "y": y, "width": rw, "height": rh,
                "rgb": rgb_over_white(s.read_region((x, y), 0, (rw, rh))).reshape(-1).tolist(),
            })
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
