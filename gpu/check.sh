#!/usr/bin/env bash
# Run on the GPU machine (after gpu/prepare.sh here), with the developer tools' `dinoadapt-dev`
# that gpu/prepare.sh builds in the release target (`cargo build --release -p dinoadapt-devtools
# --features cuda`) and bundles: parity of every fixture on CUDA (f32-accurate split products, and
# raw TF32 for comparison) and CPU, then inference throughput and peak GPU memory for ViT-S/14 and
# ViT-B/14 against PyTorch + transformers on the same GPU (when transformers is installed there),
# and DINOv2 training-step throughput against the PyTorch step; on a machine with several GPUs,
# embedding and data-parallel training across all of them against one. Results go to $OUT. Each
# step has its own time limit, cut to what is left of the whole check's 470 s (under the device
# tool's 8 minutes per call); a step with under 10 s left is skipped and says so.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu/out}"
mkdir -p "$out"
work="$(mktemp -d)"
tar -C "$work" -xzf gpu/carry/bundle.tar.gz
bin="$work/dinoadapt-dev"
fixtures="$work/fixtures"
start=$(date +%s)
# cubecl autotunes every new matmul shape by compiling and timing its candidate kernels; on a
# fresh machine that dominates short runs. Minimal tuning keeps the check inside its budget.
export CUBECL_AUTOTUNE_LEVEL="${CUBECL_AUTOTUNE_LEVEL:-minimal}"
log() { echo "== [$(( $(date +%s) - start ))s] $*" | tee -a "$out/summary.txt"; }
# `limit N`: N seconds, or what is left of the check's budget when that is less.
budget="${CHECK_BUDGET_S:-470}"
limit() {
  local left=$(( budget - ($(date +%s) - start) ))
  if [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
}
# `within N CMD...`: run CMD under `timeout $(limit N)`, or skip it when under 10 s are left.
within() {
  local t; t=$(limit "$1"); shift
  if [ "$t" -lt 10 ]; then
    log "skipped (the check's ${budget}s are spent): $*"
    return 124
  fi
  timeout "$t" "$@"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"

# Peak GPU memory of a command: poll nvidia-smi while it runs.
peak_mem() {
  local f="$out/mem.$$"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$f" &
  local pid=$!
  "$@"
  local rc=$?
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  echo "peak_gpu_mib $(sort -n "$f" | tail -1) rc $rc" | tee -a "$out/summary.txt"
  rm -f "$f"
}

log "parity on cuda:0 (split f32 products)"
within 150 "$bin" parity --fixtures "$fixtures" --device cuda:0 --json "$out/parity_cuda.json" > "$out/parity_cuda.txt" 2> >(tee "$out/parity_cuda.progress" >&2)
grep -v "^    " "$out/parity_cuda.txt" | tee -a "$out/summary.txt"
log "parity on cuda:0 --tf32"
within 60 "$bin" parity --fixtures "$fixtures" --device cuda:0 --tf32 --json "$out/parity_cuda_tf32.json" 2>&1 | tail -1 | tee -a "$out/summary.txt"
have_torch=0
python3 -c "import torch, transformers" 2>/dev/null && have_torch=1
bench() {
  log "dinoadapt-dev bench embed --arch $1 --batch $2 ${3:-}"
  peak_mem within 90 "$bin" bench embed --arch "$1" --batch "$2" --res 224 --device cuda:0 --warmup 3 --iters 20 ${3:-} 2>&1 | tee -a "$out/summary.txt"
}
torch_bench() {
  if [ "$have_torch" = 1 ]; then
    log "pytorch $1 batch $2"
    peak_mem within 60 python3 "$work/pytorch_embed.py" --arch "$1" --batch "$2" --res 224 --device cuda --warmup 3 --iters 20 2>&1 | tee -a "$out/summary.txt"
  else
    log "torch/transformers not importable here: no PyTorch baseline"
  fi
}
bench vits14 64
bench vits14 64 --tf32
torch_bench vits14 64
bench vitb14 64
torch_bench vitb14 64
bench vitb14 64 --tf32
log "dinoadapt-dev bench train (ViT-S/14, batch 8, 2x224 + 8x98)"
peak_mem within 120 "$bin" bench train --arch vits14 --batch 8 --local-crops 8 --device cuda:0 --warmup 2 --steps 5 2>&1 | tee -a "$out/summary.txt"
log "dinoadapt-dev bench train, bf16 mixed precision"
peak_mem within 90 "$bin" bench train --arch vits14 --batch 8 --local-crops 8 --device cuda:0 --warmup 2 --steps 5 --precision bf16 2>&1 | tee -a "$out/summary.txt"
log "dinoadapt-dev bench train, stochastic depth 0.4 in every block: masked vs efficient"
peak_mem within 90 "$bin" bench train --arch vits14 --batch 8 --local-crops 8 --device cuda:0 --warmup 1 --steps 3 --drop-path 0.4 --drop-path-uniform --drop-path-form both 2>&1 | tee -a "$out/summary.txt"
if [ "$have_torch" = 1 ]; then
  log "pytorch train step (same shapes)"
  peak_mem within 90 python3 "$work/pytorch_train.py" --device cuda --warmup 2 --steps 5 --json 2>&1 | tail -1 | tee -a "$out/summary.txt"
  log "pytorch train step, bf16 autocast"
  peak_mem within 90 python3 "$work/pytorch_train.py" --device cuda --warmup 2 --steps 5 --bf16 --json 2>&1 | tail -1 | tee -a "$out/summary.txt"
fi
ngpu=$(nvidia-smi -L | grep -c "^GPU")
if [ "$ngpu" -ge 2 ]; then
  log "multi-device: bench embed ViT-B/14 batch 64 per device on all $ngpu GPUs (one model each)"
  peak_mem within 90 "$bin" bench embed --arch vitb14 --batch 64 --res 224 --device cuda:0 --devices all --warmup 3 --iters 20 2>&1 | tee -a "$out/summary.txt"
  log "multi-device: bench train ViT-S/14, batch 8 per device, data parallel on all $ngpu GPUs"
  peak_mem within 120 "$bin" bench train --arch vits14 --batch 8 --local-crops 8 --device cuda:0 --devices all --warmup 2 --steps 5 2>&1 | tee -a "$out/summary.txt"
else
  log "one GPU here: the multi-device section (embed and data-parallel training on every GPU) is skipped"
fi
log "parity on cpu"
within 40 "$bin" parity --fixtures "$fixtures" --device cpu --json "$out/parity_cpu.json" 2>&1 | tail -1 | tee -a "$out/summary.txt"
log "done"
