#!/usr/bin/env bash
# The training family measured on the shared MNIST digits (issue 19): kNN accuracy of the
# teacher's class tokens (k = 20, 100 images per class) before and after
#   1. pre-training with a high-resolution stage: recipes/mnist_tiny.toml (56 px, 600 iterations)
#      then 150 iterations at 112 px; the kNN at 112 px of the model as it stood when the stage
#      began is the evaluate-at-high-resolution baseline;
#   2. continued pre-training from that teacher with fresh heads and a head warm-up
#      (recipes/mnist_continue.toml, kNN every 25 iterations: no collapse during the warm-up);
#   3. distillation of that run into a smaller student (32-d, 2 blocks), against the same
#      student trained alone for as long.
# Usage: scripts/measure-training-family.sh [BIN] [OUT]   (BIN: the dinoadapt binary)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/debug/dinoadapt}
out=${2:-$root/runs/training-family}
mkdir -p "$out"
lscpu | grep "Model name" || true

stage='stages=[{name = "high-res", iterations = 150, crops = {global_size = 112}, optim = {base_lr = 0.004, warmup_epochs = 0, epochs = 3}}]'
"$bin" pretrain --recipe "$root/recipes/mnist_tiny.toml" --quiet \
  --set "train.output_dir=\"$out/highres\"" --set "train.keep_last=20" --set "$stage"
"$bin" pretrain --recipe "$root/recipes/mnist_continue.toml" --quiet \
  --set "model.checkpoint=\"$out/highres/teacher\"" --set "train.output_dir=\"$out/continue\"" \
  --set "monitor.every=25"
"$bin" pretrain --recipe "$root/recipes/mnist_tiny.toml" --quiet \
  --set "train.output_dir=\"$out/distill\"" --set "model.embed_dim=32" --set "model.depth=2" \
  --set "model.num_heads=2" --set "optim.epochs=6" \
  --set "distillation.teacher=\"$out/highres\""
# The control: the same student trained alone for as long (no teacher run).
"$bin" pretrain --recipe "$root/recipes/mnist_tiny.toml" --quiet \
  --set "train.output_dir=\"$out/small_scratch\"" --set "model.embed_dim=32" --set "model.depth=2" \
  --set "model.num_heads=2" --set "optim.epochs=6"

python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
for run in ["highres", "continue", "distill", "small_scratch"]:
    s = json.load(open(f"{out}/{run}/summary.json"))
    print(f"{run}: {s['steps']} iterations, {s['images_per_s']:.1f} img/s")
    for p in s["knn"]:
        print(f"  {p['step']:>5}  {p['when']:<32} {p['accuracy']:.3f}")
PY
