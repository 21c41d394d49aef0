#!/usr/bin/env bash
# dinoadapt vs PyTorch + transformers on this machine's CPU, same arch/batch/res/threads, the
# two alternating (twice each) in one run. Prints each JSON line and the ratio of the medians
# (dinoadapt images/s / PyTorch images/s). Needs the venv of bench/README.md and a release build
# of the developer tools (`cargo build --release -p dinoadapt-devtools`: `dinoadapt-dev`).
#   bench/compare_cpu.sh vits14 [batch] [res] [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
arch="${1:-vits14}"; batch="${2:-8}"; res="${3:-224}"; threads="${4:-2}"
py="${PYREF:-/work/pyref/bin/python}"
bin="${DINOADAPT_DEV:-${CARGO_TARGET_DIR:-target}/release/dinoadapt-dev}"
ours=(); theirs=()
for round in 1 2; do
  t=$("$py" bench/pytorch_embed.py --arch "$arch" --batch "$batch" --res "$res" --threads "$threads" --target-seconds 20)
  echo "$t"; theirs+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["images_per_s"])' "$t")")
  o=$("$bin" bench embed --arch "$arch" --batch "$batch" --res "$res" --threads "$threads" --warmup 2 --iters 8 2>/dev/null | tail -n1)
  echo "$o"; ours+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["images_per_s"])' "$o")")
done
python3 - "$arch" "${ours[*]}" "${theirs[*]}" <<'PY'
import statistics, sys
arch, ours, theirs = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
o, t = statistics.median(ours), statistics.median(theirs)
print(f"{arch}: dinoadapt {o:.2f} img/s, pytorch {t:.2f} img/s, ratio {o / t:.2f}x")
PY
