"""Reference values for the dense-head metrics (heads/src/segmentation_metrics.rs and
heads/src/regression_metrics.rs), from scikit-learn and numpy on fixed seeded inputs.

    /work/pyref/bin/python heads/tests/data/make_dense_reference.py

writes heads/tests/data/dense_reference.json beside this script. Inputs are float32-exact
values (multiples of 1/64, stored as JSON numbers, NaN as null) so Rust reads exactly what scikit-learn saw.
"""

import json
import os

import numpy as np
import sklearn
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    jaccard_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
)

rng = np.random.default_rng(20240607)

# Segmentation: 5 classes, 4000 pixels, ~10% ignored (255); predictions right ~60% of the time.
classes, ignore, n = 5, 255, 4000
truth = rng.integers(0, classes, n)
pred = np.where(rng.random(n) < 0.6, truth, rng.integers(0, classes, n))
truth = np.where(rng.random(n) < 0.1, ignore, truth)
keep = truth != ignore
labels = list(range(classes))
jac = jaccard_score(truth[keep], pred[keep], labels=labels, average=None)
f1 = f1_score(truth[keep], pred[keep], labels=labels, average=None)
segmentation = {
    "classes": classes,
    "ignore_index": ignore,
    "truth": truth.tolist(),
    "predicted": pred.tolist(),
    "pixels": int(keep.sum()),
    "jaccard": jac.tolist(),
    "f1": f1.tolist(),
    "accuracy": float(accuracy_score(truth[keep], pred[keep])),
    "miou": float(jac.mean()),
    "mean_dice": float(f1.mean()),
}

# Regression: 2 images of 110 x 105 px (2 x 2 whole 50-px blocks each), heights 0..40 m with a
# smooth field, predictions = truth + noise + bias, NaN targets in a stripe and scattered.
images, h, w, block = 2, 110, 105, 50
yy, xx = np.mgrid[0:h, 0:w]
target = np.stack(
    [20 + 15 * np.sin(xx / 17 + k) * np.cos(yy / 23 - k) + rng.normal(0, 3, (h, w)) for k in range(images)]
)
predicted = target + rng.normal(0.5, 4, target.shape)
# Multiples of 1/64: exact in float32 and short in JSON.
target = (np.round(target * 64) / 64).astype(np.float32)
predicted = (np.round(predicted * 64) / 64).astype(np.float32)
target[0, 10:14, :] = np.nan  # a stripe through two blocks of image 0
target[1, 60, 60] = np.nan  # one nodata pixel drops its block
margin = target[:, 100:, :].reshape(-1)  # a copy: rows below the last whole block
margin[rng.choice(margin.size, 12, replace=False)] = np.nan
target[:, 100:, :] = margin.reshape(images, h - 100, w)
valid = np.isfinite(target)
t64, p64 = target[valid].astype(np.float64), predicted[valid].astype(np.float64)

bp, bt = [], []
for k in range(images):
    for by in range(h // block):
        for bx in range(w // block):
            ts = target[k, by * block:(by + 1) * block, bx * block:(bx + 1) * block].astype(np.float64)
            ps = predicted[k, by * block:(by + 1) * block, bx * block:(bx + 1) * block].astype(np.float64)
            if np.isfinite(ts).all():
                bp.append(ps.mean())
                bt.append(ts.mean())

regression = {
    "height": h,
    "width": w,
    "block": block,
    "predicted": [float(v) for v in predicted.ravel()],
    "target": [None if not np.isfinite(v) else float(v) for v in target.ravel()],
    "pixels": int(valid.sum()),
    "mae": float(mean_absolute_error(t64, p64)),
    "rmse": float(np.sqrt(mean_squared_error(t64, p64))),
    "r2": float(r2_score(t64, p64)),
    "bias": float(np.mean(p64 - t64)),
    "blocks": len(bt),
    "block_r2": float(r2_score(bt, bp)),
}

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dense_reference.json")
with open(out, "w") as f:
    json.dump(
        {
            "generator": "make_dense_reference.py",
            "sklearn": sklearn.__version__,
            "numpy": np.__version__,
            "segmentation": segmentation,
            "regression": regression,
        },
        f,
    )
print(out, segmentation["miou"], regression["r2"], regression["block_r2"], regression["blocks"])
