#!/usr/bin/env bash
# Runs the user-facing commands whose outputs must not change under a refactor on the shared
# samples, then prints one `sha256  path` line per output file (sorted), so two builds can be
# compared with `diff`:
#   scripts/output-digests.sh BIN OUTDIR > before.txt   (old build)
#   scripts/output-digests.sh BIN OUTDIR > after.txt    (new build); diff before.txt after.txt
# Provenance keys that record the program itself are listed separately by the caller's diff.
set -euo pipefail
bin="$(realpath "$1")"; out="$(realpath -m "$2")"
shared="$(realpath "$(dirname "$0")/../../shared")"
m="$shared/fixtures/hf_dinov2_reg"; d="$shared/data"
rm -rf "$out"; mkdir -p "$out"; cd "$out"
q() { "$bin" "$@" >/dev/null 2>>"$out/stderr.log" || echo "exit $? : $*" >>"$out/exits.log"; }

q embed --model "$m" --output embed/features.safetensors "$d/pathology"
mkdir -p mnist/train mnist/val
for s in train val; do for c in 0 1 2 3; do
  mkdir -p "mnist/$s/$c"; ls "$d/mnist5k/$s/$c" | head -12 | while read f; do cp "$d/mnist5k/$s/$c/$f" "mnist/$s/$c/"; done
done; done
q embed --model "$m" --output feats/train.safetensors mnist/train
q embed --model "$m" --output feats/val.safetensors mnist/val
rm -rf mnist
q heads train --task classify --train feats/train.safetensors --val feats/val.safetensors -o heads/classify --quiet
q pathology embed --model "$m" --out pathology --quiet --layers last:2 "$d/pathology/CMU-1-Small-Region.svs"
q radiology embed --model "$m" --out radiology --quiet --size 56 "$d/nifti/anatomical.nii" "$d/dicom/series_ct5n"
q satellite embed --model "$m" --size 56 --layers last:2 -o satellite/chips.safetensors --quiet "$d/satellite/rmnp-rgb.tif"
q satellite predict --model "$m" --size 56 --out satellite/pca.tif --quiet "$d/satellite/rmnp-rgb.tif"
# The DPT head reads 4 layers: a random-init ViT-S/14 (the fixture has 2 blocks).
r="--random-init --preset vits14"
q satellite embed $r --size 56 --layers last:4 --norm-layers -o satellite/layers.safetensors --quiet "$d/satellite/rmnp-rgb.tif"
q heads train --task canopy --embeddings satellite/layers.safetensors --targets "$d/satellite/rmnp-dem.tif" \
  --bins 8 --min-height 2000 --max-height 4500 --dpt-features 8 --epochs 1 -o heads/canopy --quiet
q satellite predict $r --size 56 --head heads/canopy --out satellite/canopy.tif --quiet "$d/satellite/rmnp-rgb.tif"
# Segmentation heads on volume slices (a planted label volume: voxels above the median) and on
# slide tiles (the tissue contours `pathology embed` wrote, as GeoJSON annotations); eval's
# metrics are kept as JSON files.
q radiology embed --model "$m" --out volume --quiet --size 56 --layers last:1 "$d/nifti/anatomical.nii"
python3 - "$d/nifti/anatomical.nii" labels.nii <<'PY'
import struct, sys
import numpy as np
src, out = sys.argv[1], sys.argv[2]
b = open(src, "rb").read()
e = "<" if struct.unpack("<i", b[:4])[0] == 348 else ">"
dim = struct.unpack(e + "8h", b[40:56])
dt, bitpix = struct.unpack(e + "hh", b[70:74])
off, n = int(struct.unpack(e + "f", b[108:112])[0]), int(np.prod(dim[1:1 + dim[0]]))
kind = np.dtype({2: "u1", 4: "i2", 16: "f4", 512: "u2"}[dt]).newbyteorder(e)
v = np.frombuffer(b[off:off + n * bitpix // 8], dtype=kind)
h = bytearray(b[:348])
h[70:74] = struct.pack(e + "hh", 2, 8)
h[108:120] = struct.pack(e + "fff", 352.0, 1.0, 0.0)
labels = (v > np.sort(v)[len(v) // 2]).astype("u1")
open(out, "wb").write(bytes(h) + bytes(4) + labels.tobytes())
PY
vf="$(ls volume/*.safetensors | grep -v volumes.safetensors | head -1)"
q heads train --task segment --embeddings "$vf" --volume "$d/nifti/anatomical.nii" --targets labels.nii \
  --class-names dark,bright --epochs 2 -o heads/volume --quiet
"$bin" heads eval --head heads/volume --embeddings "$vf" --volume "$d/nifti/anatomical.nii" \
  --targets labels.nii > heads/volume.eval.json 2>>"$out/stderr.log" || echo "exit $? : eval volume" >>"$out/exits.log"
q heads predict --head heads/volume --input "$d/nifti/anatomical.nii" --model "$m" -o volume-pred --quiet
rm -f labels.nii
sf=pathology/features/CMU-1-Small-Region.safetensors; sa=pathology/tissue/CMU-1-Small-Region.geojson
q heads train --task segment --embeddings "$sf" --targets "$sa" --epochs 2 -o heads/slide --quiet
"$bin" heads eval --head heads/slide --embeddings "$sf" --targets "$sa" \
  > heads/slide.eval.json 2>>"$out/stderr.log" || echo "exit $? : eval slide" >>"$out/exits.log"
q heads predict --head heads/slide --input "$d/pathology/CMU-1-Small-Region.svs" --model "$m" -o slide-pred --quiet
# Wall-clock columns/keys (`seconds`) differ between any two runs: tables and JSON files are
# digested on their content without them (pandas), every other file byte for byte.
find . -type f ! -name '*.log' | sort | python3 -c '
import hashlib, json, sys
import pandas as pd
TIMING = {"seconds"}
for path in sys.stdin.read().split():
    if path.endswith(".parquet"):
        df = pd.read_parquet(path)
        data = df.drop(columns=[c for c in df.columns if c in TIMING]).to_csv().encode()
        kind = "table"
    elif path.endswith(".json"):
        obj = json.load(open(path))
        if isinstance(obj, dict):
            obj = {k: v for k, v in obj.items() if k not in TIMING}
        data, kind = json.dumps(obj, sort_keys=True).encode(), "json"
    else:
        data, kind = open(path, "rb").read(), "bytes"
    print(hashlib.sha256(data).hexdigest(), kind, path)
'
