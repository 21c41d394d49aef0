#!/usr/bin/env bash
# Run on the GPU machine (after gpu/prepare.sh here): parity of every fixture on CUDA and CPU,
# then inference throughput and peak GPU memory for ViT-S/14 and ViT-B/14, against PyTorch +
# transformers on the same GPU when transformers is installed there. Results go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=gpu/carry/dinoadapt
out="${OUT:-gpu/out}"
mkdir -p "$out"
log() { echo "== $*" | tee -a "$out/summary.txt"; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"

log "parity on cuda:0"
timeout 180 "$bin" parity --fixtures gpu/carry/fixtures --device cuda:0 --json "$out/parity_cuda.json" 2>&1 | tee -a "$out/summary.txt"
log "parity on cpu"
timeout 60 "$bin" parity --fixtures gpu/carry/fixtures --device cpu --json "$out/parity_cpu.json" 2>&1 | tail -1 | tee -a "$out/summary.txt"

# Peak GPU memory of a command: poll nvidia-smi while it runs.
peak_mem() {
  local f="$out/mem.$$"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$f" &
  local pid=$!
  "$@"
  local rc=$?
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  echo "peak_gpu_mib $(sort -n "$f" | tail -1)" | tee -a "$out/summary.txt"
  rm -f "$f"
  return $rc
}

have_torch=0
python3 -c "import torch, transformers" 2>/dev/null && have_torch=1
for arch in vits14 vitb14; do
  for batch in 8 64; do
    log "dinoadapt bench embed --arch $arch --batch $batch --res 224 --device cuda:0"
    peak_mem timeout 120 "$bin" bench embed --arch "$arch" --batch "$batch" --res 224 --device cuda:0 --warmup 3 --iters 20 2>&1 | tee -a "$out/summary.txt" "$out/bench.jsonl"
    if [ "$have_torch" = 1 ]; then
      log "pytorch $arch batch $batch"
      peak_mem timeout 120 python3 gpu/carry/pytorch_embed.py --arch "$arch" --batch "$batch" --res 224 --device cuda --warmup 3 --iters 20 2>&1 | tee -a "$out/summary.txt" "$out/bench.jsonl"
    fi
  done
done
[ "$have_torch" = 1 ] || log "torch/transformers not importable here: no PyTorch baseline"
log "done"
