#!/bin/bash
# Recipe sweep for a 10-minute budget on this 2-core CPU, 3 cells x 3 seeds (seed-major), then every run
# scored on shifted copies of the validation and test splits. Run from a second clone, on a quiet machine:
#   HAM10000_DIR=<the HAM10000 folder> SHIFTED=<folder of shifted_val/, shifted_test/> bash docs/results/budget10_sweep.sh <clone>
# (the shifted copies: python -m skin_utils.prepare shift, see docs/data.md, "A shifted copy of a split")
set -u
CLONE=$1; cd "$CLONE"; export PYTHONPATH=$CLONE
PY=.venv/bin/python
DATA=${HAM10000_DIR:?set HAM10000_DIR to the HAM10000 folder (images/, masks/, HAM10000_metadata.csv)}
SHIFTED=${SHIFTED:?set SHIFTED to the folder that holds shifted_val/ and shifted_test/}
EXP=$CLONE/reports/experiments; NAME=budget10; SPLIT=${SPLIT:-$EXP/budget_split.csv}
GRID='[{"image_size": 128}, {"image_size": 96}, {"image_size": 96, "augment": "camera", "colour_constancy": "shades_of_gray"}]'
FIXED='{"data_dir": "'$DATA'", "time_budget": 10, "split_seed": 2026, "calibrate_tta": false, "split_path": "'$SPLIT'"}'
EVAL='{"tta": false, "cam_max_images": 64, "n_bootstrap": 1000}'
date
for s in 0 1 2; do
  $PY -m skin_utils.sweep experiment --name $NAME --grid "$GRID" --seeds $s --fixed "$FIXED" --eval "$EVAL" --reference '{"image_size": 128}'
  for run in $EXP/$NAME/runs/*_seed$s; do
    for part in val test; do
      out=$run/notebooks/03_shifted_$part.ipynb
      [ -f $run/metrics/evaluate_external_shifted_$part.json ] && continue
      $PY -m papermill notebooks/03_evaluate.ipynb $out -p run $run -p data_dir "$SHIFTED/shifted_$part" -p split all \
        -p tta False -p cam_max_images 64 -p n_bootstrap 1000 --cwd $CLONE > $run/shifted_$part.log 2>&1 || echo "FAILED shifted $part $run"
    done
  done
  date
done
$PY -m skin_utils.sweep experiment --name $NAME --grid "$GRID" --seeds 0 1 2 --fixed "$FIXED" --eval "$EVAL" --reference '{"image_size": 128}' --markdown $CLONE/docs/results/budget10.md
date
