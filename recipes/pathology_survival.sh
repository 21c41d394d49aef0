#!/usr/bin/env bash
# Pathology, part 2: slide feature bags + a clinical table -> survival (ABMIL, k-fold by
# patient) with Kaplan-Meier curves, the C-index, and risk + attention per slide.
#
#   BAGS=runs/path/slides CLINICAL=clinical.csv OUT=runs/survival bash recipes/pathology_survival.sh
#
# BAGS: the output of `pathology embed` (or a folder of CLAM / TRIDENT .h5 bags); CLINICAL: CSV
# or Parquet with slide_id, patient_id, time, event. `dinoadapt demo` runs this on a cohort it
# makes from the sample slide (see the demo's report); at scale, only FOLDS and EPOCHS change.
set -euo pipefail
: "${BAGS:?set BAGS: the slide feature bags}"
: "${CLINICAL:?set CLINICAL: slide_id, patient_id, time, event}"
: "${OUT:?set OUT: the output folder}"
DINOADAPT=${DINOADAPT:-dinoadapt}
FOLDS=${FOLDS:-5}
EPOCHS=${EPOCHS:-30}
LOSS=${LOSS:-cox}                  # cox (partial likelihood) or nll (discrete time)

echo "== survival head, $FOLDS-fold cross-validation by patient"
"$DINOADAPT" heads train --task survival --bags "$BAGS" --clinical "$CLINICAL" \
    --loss "$LOSS" --folds "$FOLDS" --epochs "$EPOCHS" -o "$OUT/head" --quiet
echo "== risk and attention per slide"
"$DINOADAPT" heads predict --head "$OUT/head" --bags "$BAGS" -o "$OUT/risk.parquet"
