#!/bin/bash
# Recipe sweep for a 15-minute budget on this 2-core CPU, as run on 2026-11-26, then the 45-minute run.
# Reference: the 10-minute winner (96 px, augment=camera, Shades of Gray, class weights at power 0.4).
# Candidate: the same with the logit-adjusted cross-entropy at tau 1 (a loss made for balanced error).
# Seed 0 of both cells ran first; the candidate did not raise validation balanced accuracy (0.572 against 0.586),
# lost macro AUC (0.899 against 0.916) and cut validation accuracy from 0.76 to 0.45, so its seeds 1 and 2 were
# dropped and the time went to the reference's seeds and to one 45-minute run of the reference and one of the
# same recipe at 128 px (whether the image-size choice made at 10 minutes still holds when there is time for ~25
# epochs at 128 px). Each run is scored on val, test and the shifted validation
# copy. The machine must be otherwise idle, above all in a run's first minute, when the budget is measured.
# Run from a clone with a .venv: bash budget15_sweep.sh <clone>
source "$(cd "$(dirname "$0")" && pwd)/budget_env.sh" "$1"
CAND='{"class_balance": "logit_adjusted", "balance_power": 1.0}'

date
if [ "${SKIP_SEED0:-0}" != 1 ]; then
  $PY -m skin_utils.sweep experiment --name budget15 --grid "[$REF, $CAND]" --seeds 0 --fixed "${FIXED}15}" --eval "$EVAL" --reference "$REF"
fi
$PY -m skin_utils.sweep experiment --name budget15 --grid "[$REF]" --seeds 1 2 --fixed "${FIXED}15}" --eval "$EVAL"
shifted_val budget15; date
$PY -m skin_utils.sweep experiment --name budget45 --grid "[$REF]" --seeds 0 --fixed "${FIXED}45}" --eval "$EVAL"
$PY -m skin_utils.sweep experiment --name budget45 --grid '[{"image_size": 128}]' --seeds 0 --fixed "${FIXED}45}" --eval "$EVAL"
shifted_val budget45; date
