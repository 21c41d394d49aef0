#!/usr/bin/env bash
# Run HERE (the build machine): build the CUDA release binary and gather what the GPU check
# needs into gpu/carry (git-ignored), which the device tool carries to the GPU machine. That
# machine has CUDA and PyTorch but no Rust toolchain and no network.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --features cuda
rm -rf gpu/carry
mkdir -p gpu/carry/fixtures
cp "$target/release/dinoadapt" gpu/carry/
for d in ../shared/fixtures/hf_* ../shared/fixtures/official_* ../shared/fixtures/timm_*; do
  cp -r "$d" gpu/carry/fixtures/
done
cp bench/pytorch_embed.py gpu/carry/
du -sh gpu/carry
