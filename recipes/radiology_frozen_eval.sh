#!/usr/bin/env bash
# Radiology: DICOM series / NIfTI volumes -> slices -> frozen features -> a slice probe (kNN,
# linear) and a segmentation head -> label maps back as NIfTI on the source grid.
#
#   VOLUMES="ct/ more.nii.gz" LABELS=slices.csv SEGMENTATION=organs.nii.gz \
#       MODEL_ARGS="--model dinov2-vitb14/" OUT=runs/rad bash recipes/radiology_frozen_eval.sh
#
# LABELS: CSV `slice,split,label` (slice = <volume id>:<index>, or <volume id> for every slice
# of a volume; ids are the pseudonymous ids `radiology embed` gives, same ID_SALT).
# SEGMENTATION: a label volume on the grid of the first volume (whole numbers). `dinoadapt
# demo` runs this at tiny scale; at scale, change SIZE and the model only.
set -euo pipefail
: "${VOLUMES:?set VOLUMES: NIfTI files or DICOM folders}"
: "${LABELS:?set LABELS: the slice labels CSV}"
: "${SEGMENTATION:?set SEGMENTATION: a label volume for the first volume}"
: "${OUT:?set OUT: the output folder}"
DINOADAPT=${DINOADAPT:-dinoadapt}
MODEL_ARGS=${MODEL_ARGS:---random-init --preset vits14}
SIZE=${SIZE:-224}                  # model input side, pixels
INTENSITY=${INTENSITY:-mr}         # CT window (lung, abdomen, ...) or MR percentiles
ID_SALT=${ID_SALT:-${DINOADAPT_ID_SALT:-dinoadapt}}
EPOCHS=${EPOCHS:-40}
K=${K:-20}                         # kNN neighbours

read -r -a volumes <<<"$VOLUMES"
read -r -a model <<<"$MODEL_ARGS"
export DINOADAPT_ID_SALT="$ID_SALT"

echo "== slices through the frozen backbone"
"$DINOADAPT" radiology embed "${model[@]}" "${volumes[@]}" --size "$SIZE" --intensity "$INTENSITY" \
    --layers last:4 -o "$OUT/embed" --quiet
echo "== slice probe (kNN, linear)"
"$DINOADAPT" heads train --task classify --train "$OUT/embed" --val "$OUT/embed" \
    --labels "csv:$LABELS" --unit slices --k "$K" -o "$OUT/probe" > "$OUT/probe.json"
echo "== segmentation head"
first=$(ls "$OUT"/embed/*.safetensors | grep -v '/volumes.safetensors$' | head -n 1)
"$DINOADAPT" heads train --task segment --head-kind ms --embeddings "$first" \
    --volume "${volumes[0]}" --targets "$SEGMENTATION" --epochs "$EPOCHS" -o "$OUT/segment" --quiet
echo "== label maps on the source grid"
"$DINOADAPT" heads predict --head "$OUT/segment" --input "${volumes[0]}" "${model[@]}" -o "$OUT/labels" --quiet
