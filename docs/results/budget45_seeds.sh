#!/bin/bash
# The 45-minute budget's further seeds, as run on 2026-11-27 after docs/results/budget15_sweep.sh had made seed 0 of
# both cells in the same experiment folder: seed 1 of the default recipe (96 px) and of the same recipe at 128 px,
# then seed 2 of 128 px (seed 2 of 96 px did not fit in the session: each run takes ~40 minutes with its evaluations).
# Every run is scored on val, test and the shifted validation copy. The machine must be otherwise idle, above all in a
# run's first minute, when the budget is measured. As run, the shifted-validation scoring also ran once between the
# seeds. Run from a clone with a .venv: bash docs/results/budget45_seeds.sh <clone>
# Finished runs are skipped, so the missing run is: SEEDS=2 CELLS=96 bash docs/results/budget45_seeds.sh <clone>
source "$(cd "$(dirname "$0")" && pwd)/budget_env.sh" "$1"

date
for seed in ${SEEDS:-1 2}; do
  for cell in ${CELLS:-96 128}; do
    [ "$cell" = 96 ] && [ "$seed" = 2 ] && [ -z "${CELLS:-}" ] && continue   # as run: no time left for it
    if [ "$cell" = 96 ]; then GRID="[$REF]"; else GRID='[{"image_size": 128}]'; fi
    $PY -m skin_utils.sweep experiment --name budget45 --grid "$GRID" --seeds $seed --fixed "${FIXED}45}" --eval "$EVAL"
    date
  done
done
shifted_val budget45; date
