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
