#!/usr/bin/env bash
# The Debian packages dinoadapt builds against, installed only when missing:
#   libgdal-dev  the satellite plugin (GDAL: GeoTIFF, COG, VRT, JP2; warping; CRS)
#   pkg-config   how gdal-sys finds libgdal
#   cmake, g++   CharLS (JPEG-LS decoding of DICOM), built from source by the charls crate
#   libopenslide-dev, libclang-dev   the pathology plugin (OpenSlide; bindgen needs libclang)
#   libhdf5-dev  the .h5 feature bags CLAM/TRIDENT-style MIL code reads
#   mesa-vulkan-drivers, libvulkan1   Mesa's software Vulkan driver (lavapipe) and the Vulkan
#                loader: the wgpu backend's GPU code path runs on them in CI (devtools/tests/wgpu.rs)
set -euo pipefail
packages=(libgdal-dev pkg-config cmake g++ libopenslide-dev libclang-dev libhdf5-dev
    mesa-vulkan-drivers libvulkan1)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
