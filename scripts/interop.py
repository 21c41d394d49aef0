"""Reads what dinoadapt wrote with the libraries users read it with (tests/interop.rs).

    python interop.py transformers EXPORT_DIR PIXELS.safetensors KEY OURS.safetensors
    python interop.py h5 BAG.h5 ROWS DIM
    python interop.py nifti FILE.nii.gz INSPECT.json
    python interop.py raster FILE.tif
    python interop.py parquet FILE.parquet COLUMN...

Each prints one JSON object (what was checked, the library versions) and exits 1 on a mismatch.
"""
import json
import sys

import numpy as np


def done(check, ok, **facts):
    print(json.dumps({"check": check, "ok": bool(ok), **facts}))
    sys.exit(0 if ok else 1)


def transformers_export(export_dir, io_path, key, ours_path):
    import torch
    import transformers
    from safetensors.numpy import load_file
    from transformers import AutoModel

    model = AutoModel.from_pretrained(export_dir).eval()
    io = load_file(io_path)
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(io[key]))
    theirs = out.last_hidden_state.numpy()
    ours = load_file(ours_path)
    cls = np.abs(theirs[:, 0] - ours["cls"]).max()
    reg = model.config.to_dict().get("num_register_tokens", 0)
    patch = np.abs(theirs[:, 1 + reg :] - ours["patch"]).max()
    done(
        "transformers",
        max(cls, patch) < 1e-4,
        model=type(model).__name__,
        max_abs_diff_cls=float(cls),
        max_abs_diff_patch=float(patch),
        transformers=transformers.__version__,
        torch=torch.__version__,
    )


def h5_bag(path, rows, dim):
    import h5py

    with h5py.File(path, "r") as f:
        feats, coords = f["features"], f["coords"]
        ok = (
            feats.shape == (int(rows), int(dim))
            and coords.shape == (int(rows), 2)
            and coords.dtype == np.int64
            and np.isfinite(feats[()]).all()
        )
        attrs = sorted(coords.attrs.keys())
        done("h5py", ok and "patch_size_level0" in attrs, features=list(feats.shape),
             coords_attrs=attrs, h5py=h5py.__version__)


def nifti(path, inspect_json):
    import nibabel as nib

    img = nib.load(path)
    want = json.load(open(inspect_json))
    affine = np.array(want["affine_ras"])
    diff = float(np.abs(img.affine - affine).max())
    data = np.asanyarray(img.dataobj)
    ok = list(img.shape[:3]) == list(want["shape"][:3]) and diff < 1e-4 and np.isfinite(data).all()
    done("nibabel", ok, shape=list(img.shape), affine_max_diff=diff, nibabel=nib.__version__)


def raster(path):
    import rasterio

    with rasterio.open(path) as r:
        a = r.read(1, masked=True)
        ok = r.crs is not None and r.transform.a != 0 and r.count >= 1 and a.count() > 0
        done("rasterio", ok, crs=str(r.crs), count=r.count, size=[r.width, r.height],
             rasterio=rasterio.__version__, gdal=rasterio.__gdal_version__)


def parquet(path, *columns):
    import pandas as pd

    df = pd.read_parquet(path)
    missing = [c for c in columns if c not in df.columns]
    done("pandas", not missing and len(df) > 0, rows=len(df), missing=missing,
         pandas=pd.__version__)


if __name__ == "__main__":
    kind, *args = sys.argv[1:]
    {"transformers": transformers_export, "h5": h5_bag, "nifti": nifti, "raster": raster,
     "parquet": parquet}[kind](*args)
