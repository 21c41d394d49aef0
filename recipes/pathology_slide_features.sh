#!/usr/bin/env bash
# Pathology, part 1: slides -> tissue -> tiles -> curated tile pool -> pre-training -> slide
# feature bags (what survival and slide classification train on).
#
#   SLIDES="slides/" OUT=runs/path MODEL_ARGS="--model weights/uni/pytorch_model.bin" \
#       RECIPE=recipes/pathology_curated_tiles.toml bash recipes/pathology_slide_features.sh
#
# Steps: `pathology tile` (tissue masks, QC thumbnails, tiles at TILE_MPP), `pathology embed`
# of the tile pool with the starting backbone (MODEL_ARGS: the checkpoint the recipe continues),
# `curate --mode dedup` (near-duplicate tiles removed), `pretrain --recipe RECIPE` on exactly
# the kept tiles (`data.source.tiles` is set to the curated manifest and `data.source.paths` to
# SLIDES), then `pathology embed` with the trained teacher: OUT/slides/features/<slide>
# .safetensors (+ OUT/slides/h5/<slide>.h5, CLAM / TRIDENT). `dinoadapt demo` runs this at tiny
# scale (recipes/demo_pathology_pretrain.toml: a 96-wide, 4-block ViT from scratch, 200
# iterations); at scale, change the sizes and the recipe only.
set -euo pipefail
: "${SLIDES:?set SLIDES: slide files, folders or CSV lists}"
: "${OUT:?set OUT: the output folder}"
: "${RECIPE:?set RECIPE: the pre-training recipe (TOML)}"
DINOADAPT=${DINOADAPT:-dinoadapt}
MODEL_ARGS=${MODEL_ARGS:---random-init --preset vits14} # the pool's backbone (e.g. --model uni/)
TILE_MPP=${TILE_MPP:-0.5}          # µm/px of the tiles (0.5 = 20x)
TILE_SIZE=${TILE_SIZE:-224}        # tile side in pixels
TILE_STRIDE=${TILE_STRIDE:-$TILE_SIZE}
DEDUP=${DEDUP:-0.95}               # cosine similarity above which tiles are near duplicates
PRETRAIN_SETS=${PRETRAIN_SETS:-}   # extra `--set KEY=VALUE` for the recipe, space-separated

read -r -a slides <<<"$SLIDES"
read -r -a model <<<"$MODEL_ARGS"
quoted=()
for s in "${slides[@]}"; do quoted+=("\"$s\""); done
sets=(--set "data.source.tiles=\"$OUT/curated.parquet\""
      --set "data.source.paths=[$(IFS=,; echo "${quoted[*]}")]")
for s in $PRETRAIN_SETS; do sets+=(--set "$s"); done
tiling=(--target-mpp "$TILE_MPP" --size "$TILE_SIZE" --stride "$TILE_STRIDE")

echo "== tissue and tiles"
"$DINOADAPT" pathology tile "${slides[@]}" -o "$OUT/tiles" "${tiling[@]}" --quiet
echo "== tile pool through the starting backbone"
"$DINOADAPT" pathology embed "${model[@]}" "${slides[@]}" -o "$OUT/pool" "${tiling[@]}" --no-h5 --quiet
echo "== curation: near-duplicate tiles"
"$DINOADAPT" curate --pool "$OUT/pool" --mode dedup --dedup-threshold "$DEDUP" -o "$OUT/curated.parquet"
echo "== pre-training on the curated tiles"
"$DINOADAPT" pretrain --recipe "$RECIPE" --output "$OUT/pretrain" "${sets[@]}" --quiet
echo "== slide features with the trained teacher"
"$DINOADAPT" pathology embed --model "$OUT/pretrain/teacher" "${slides[@]}" -o "$OUT/slides" "${tiling[@]}" --quiet
