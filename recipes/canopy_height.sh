#!/usr/bin/env bash
# Remote sensing: a raster + aligned canopy heights (a lidar canopy height model) -> a
# canopy-height head (DPT on frozen features) -> a stitched height map (COG) + its error report.
#
#   RASTER=scene.tif HEIGHTS=chm.tif MODEL_ARGS="--model dinov2-vitl14/" OUT=runs/canopy \
#       bash recipes/canopy_height.sh
#
# HEIGHTS: metres, on any grid (warped onto the raster's, bilinear; its nodata ignored).
# `dinoadapt demo` runs this at tiny scale with heights it derives from the sample raster's
# vegetation index; at scale, change SIZE, BANDS and the model only.
set -euo pipefail
: "${RASTER:?set RASTER: the imagery (GeoTIFF / COG)}"
: "${HEIGHTS:?set HEIGHTS: canopy heights in metres}"
: "${OUT:?set OUT: the output folder}"
DINOADAPT=${DINOADAPT:-dinoadapt}
MODEL_ARGS=${MODEL_ARGS:---random-init --preset vits14}
SIZE=${SIZE:-224}                  # chip side, pixels
BANDS=${BANDS:-1,2,3}
MAX_HEIGHT=${MAX_HEIGHT:-60}
BINS=${BINS:-256}                  # height bins of the DPT output
DPT_FEATURES=${DPT_FEATURES:-256}  # DPT fusion width
EPOCHS=${EPOCHS:-40}

read -r -a model <<<"$MODEL_ARGS"
mkdir -p "$OUT"
echo "== chips through the frozen backbone"
"$DINOADAPT" satellite embed "${model[@]}" "$RASTER" --size "$SIZE" --bands "$BANDS" \
    --layers last:4 -o "$OUT/chips.safetensors" --quiet
echo "== canopy-height head (DPT)"
"$DINOADAPT" heads train --task canopy --head-kind dpt --embeddings "$OUT/chips.safetensors" \
    --targets "$HEIGHTS" --max-height "$MAX_HEIGHT" --bins "$BINS" --dpt-features "$DPT_FEATURES" \
    --epochs "$EPOCHS" -o "$OUT/head" --quiet
echo "== height map (COG)"
"$DINOADAPT" heads predict --head "$OUT/head" --input "$RASTER" "${model[@]}" --cog -o "$OUT/heights.tif" --quiet
echo "== error report"
"$DINOADAPT" heads eval --head "$OUT/head" --embeddings "$OUT/chips.safetensors" --targets "$HEIGHTS" > "$OUT/errors.json"
