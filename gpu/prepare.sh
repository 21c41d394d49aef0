#!/usr/bin/env bash
# Run HERE (the build machine): build the CUDA release binary of the developer tools
# (`dinoadapt-dev`: parity, benchmarks; with burn-collective for the multi-GPU section) and
# pack what the GPU check needs into gpu/carry/bundle.tar.gz (git-ignored; the device tool carries at most 64 MiB), which the
# device tool carries to the GPU machine. That machine has CUDA and PyTorch but no Rust
# toolchain and no network.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p dinoadapt-devtools --features cuda,collective
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/fixtures"
strip -o "$stage/dinoadapt-dev" "$target/release/dinoadapt-dev"
for d in ../shared/fixtures/hf_* ../shared/fixtures/official_* ../shared/fixtures/timm_*; do
  cp -r "$d" "$stage/fixtures/"
done
cp bench/pytorch_embed.py bench/pytorch_train.py "$stage/"
rm -rf gpu/carry
mkdir -p gpu/carry
tar -C "$stage" -czf gpu/carry/bundle.tar.gz .
du -sh gpu/carry/bundle.tar.gz
