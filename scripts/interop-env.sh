#!/usr/bin/env bash
# The Python environment of the interop tests (tests/interop.rs) and the notebooks' test
# (tests/notebooks.rs): the real libraries that read what dinoadapt writes — transformers
# (+ torch), h5py, nibabel, rasterio, pandas — and the Jupyter pieces that run notebooks/
# headless (nbclient, nbformat, ipykernel, matplotlib), from PyPI, in a virtual environment
# outside the clone (reused between runs). Prints its python's path.
#   scripts/interop-env.sh            # create or update, then print the interpreter
set -euo pipefail
venv="${DINOADAPT_VENV:-$HOME/.cache/dinoadapt/venv}"
if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv --system-site-packages "$venv" >/dev/null 2>&1; then
    if command -v apt-get >/dev/null; then
      (apt-get update -qq && apt-get install -y -qq python3-venv python3-pip) >/dev/null
    fi
    python3 -m venv --system-site-packages "$venv"
  fi
fi
py="$venv/bin/python"
# Versions the tests were written against; the test prints the versions it ran with.
"$py" -m pip install -q --disable-pip-version-check \
  "transformers==5.25.0" "h5py>=3.10" "nibabel>=5.2" "rasterio>=1.4" "pandas>=2.2" \
  "pyarrow>=15" "safetensors>=0.4" "numpy>=1.26" "setuptools>=77" \
  "nbclient>=0.10" "nbformat>=5.10" "ipykernel>=6.29" "matplotlib>=3.8" >&2
# torch: the machine's own when it has one (the venv sees system packages), else PyPI's.
"$py" -c "import torch" 2>/dev/null || "$py" -m pip install -q --disable-pip-version-check torch >&2
echo "$py"
