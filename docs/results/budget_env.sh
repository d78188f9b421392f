# Sourced by the budget sweep scripts: `source docs/results/budget_env.sh <clone>` (from the scripts' own folder).
# The clone to run in, its python, the data, the fixed split, the default recipe, the fixed parameters (the
# budget in minutes is appended: "${FIXED}45}") and the evaluation parameters; shifted_val scores finished runs
# on the shifted validation copy (python -m skin_utils.prepare shift, see docs/data.md, "A shifted copy of a split").
set -u
# Paths come from the environment, never from the machine it first ran on:
#   HAM10000_DIR  the HAM10000 folder (images/, masks/, HAM10000_metadata.csv), required
#   SPLIT         the fixed lesion-level split, default <clone>/reports/experiments/budget_split.csv
#                 (made there by the first run with split_seed 2026)
#   SHIFTED_VAL   the shifted validation copy (python -m skin_utils.prepare shift), default <clone>/reports/shifted_val
CLONE=$1; cd "$CLONE"; export PYTHONPATH=$CLONE
PY=.venv/bin/python
DATA=${HAM10000_DIR:?set HAM10000_DIR to the HAM10000 folder (images/, masks/, HAM10000_metadata.csv)}
EXP=$CLONE/reports/experiments; SPLIT=${SPLIT:-$EXP/budget_split.csv}
SHIFTED_VAL=${SHIFTED_VAL:-$CLONE/reports/shifted_val}
REF='{"class_balance": "weighted_loss", "balance_power": 0.4}'
FIXED='{"data_dir": "'$DATA'", "split_seed": 2026, "calibrate_tta": false, "split_path": "'$SPLIT'", "time_budget": '
EVAL='{"tta": false, "cam_max_images": 64, "n_bootstrap": 1000}'

shifted_val() {  # score every finished run of experiment $1 on the shifted validation copy
  for run in $EXP/$1/runs/*_seed*; do
    [ -f $run/metrics/evaluate_external_shifted_val.json ] && continue
    $PY -m papermill notebooks/03_evaluate.ipynb $run/notebooks/03_shifted_val.ipynb -p run $run \
      -p data_dir "$SHIFTED_VAL" -p split all -p tta False -p cam_max_images 64 -p n_bootstrap 1000 \
      --cwd $CLONE > $run/shifted_val.log 2>&1 || echo "FAILED shifted val $run"
  done
}
