#!/usr/bin/env bash
# The training family measured on slide tiles (issue 19): the shared real H&E slide
# (CMU-1-Small-Region.svs) tiled at 0.5 µm/px, 96 px, its tiles labelled by cellularity
# terciles (scripts/label-tiles-cellularity.py says why and how: no annotation exists) and split
# by a checkerboard into kNN train / val folders. kNN of the teacher's class tokens (k = 20)
# before and after:
#   1. pre-training a tiny ViT from scratch on the slide's tiles (online sampling at 0.5 µm/px,
#      96-px tiles, 48-px global crops), then a high-resolution stage at 96 px; the kNN at 96 px
#      of the model as it stood when the stage began is the evaluate-at-high-resolution baseline;
#   2. continued pre-training from that teacher with fresh heads and a head warm-up (kNN every
#      25 iterations: no collapse during the warm-up);
#   3. distillation of that run into a smaller student (48-d, 2 blocks) against the same student
#      trained alone for as long.
# Usage: scripts/measure-training-family-slides.sh [BIN] [OUT]   (BIN: the dinoadapt binary)
# Needs python3 with numpy and Pillow (PYTHON=..., default: the interop venv's when present).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/debug/dinoadapt}
out=${2:-$root/runs/training-family-slides}
shared=${DINOADAPT_SHARED:-$root/../shared}
py=${PYTHON:-$HOME/.cache/dinoadapt/venv/bin/python}
[ -x "$py" ] || py=python3
slide=$shared/data/pathology/CMU-1-Small-Region.svs
mkdir -p "$out"
lscpu | grep "Model name" || true

"$bin" pathology tile "$slide" -o "$out/tiles" --target-mpp 0.5 --size 96 --images --quiet
"$py" "$root/scripts/label-tiles-cellularity.py" \
  "$out/tiles/tile_images/CMU-1-Small-Region" "$out/labelled"

cat >"$out/slide_tiles_tiny.toml" <<EOF
name = "slide-tiles-tiny"
[model]
arch = "vits14"
embed_dim = 96
depth = 4
num_heads = 3
patch_size = 8
img_size = 48
mlp_ratio = 2.0
[heads]
prototypes = 256
hidden_dim = 256
bottleneck_dim = 64
[data]
batch_size = 32
[data.source]
domain = "pathology"
paths = ["$slide"]
mpp = [0.5]
tile_size = 96
tiles_per_epoch = 1600
[crops]
global_size = 48
local_size = 24
local_crops = 4
[optim]
epochs = 8
epoch_length = 50
warmup_epochs = 1
base_lr = 0.004
freeze_last_layer_epochs = 0
[teacher]
momentum_teacher = 0.95
warmup_teacher_temp = 0.04
teacher_temp = 0.04
warmup_teacher_temp_epochs = 0
[train]
seed = 0
output_dir = "$out/highres"
checkpoint_every = 100
keep_last = 20
log_every = 50
[monitor]
train = "$out/labelled/train"
val = "$out/labelled/val"
every = 100
k = 20
EOF
recipe=$out/slide_tiles_tiny.toml

stage='stages=[{name = "high-res", iterations = 100, crops = {global_size = 96}, optim = {base_lr = 0.002, warmup_epochs = 0, epochs = 2}, data = {batch_size = 16}}]'
"$bin" pretrain --recipe "$recipe" --quiet --set "$stage"
# Continued pre-training: fresh heads warmed up for 100 iterations with the backbone frozen,
# then 200 joint iterations at a lower, layer-wise-decayed lr.
"$bin" pretrain --recipe "$recipe" --quiet \
  --set "model.checkpoint=\"$out/highres/teacher\"" --set "train.output_dir=\"$out/continue\"" \
  --set "train.head_warmup_iterations=100" --set "optim.epochs=6" --set "optim.warmup_epochs=3" \
  --set "optim.base_lr=0.002" --set "optim.layerwise_decay=0.75" --set "monitor.every=25" \
  --set "train.seed=1"
small=(--set "model.embed_dim=48" --set "model.depth=2" --set "model.num_heads=2" --set "optim.epochs=6")
"$bin" pretrain --recipe "$recipe" --quiet --set "train.output_dir=\"$out/distill\"" "${small[@]}" \
  --set "distillation.teacher=\"$out/highres\""
# The control: the same student trained alone for as long (no teacher run). It may stop on the
# collapse guard; that is a result too (its summary then says so).
"$bin" pretrain --recipe "$recipe" --quiet --set "train.output_dir=\"$out/small_scratch\"" "${small[@]}" ||
  echo "small_scratch: stopped (see above)"

"$py" - "$out" <<'PY'
import json, sys
out = sys.argv[1]
for run in ["highres", "continue", "distill", "small_scratch"]:
    try:
        s = json.load(open(f"{out}/{run}/summary.json"))
    except FileNotFoundError:
        print(f"{run}: no summary (the run stopped)")
        continue
    print(f"{run}: {s['steps']} iterations, {s['images_per_s']:.1f} img/s")
    for p in s["knn"]:
        print(f"  {p['step']:>5}  {p['when']:<32} {p['accuracy']:.3f}")
PY
