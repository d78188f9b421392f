#!/usr/bin/env bash
# The main job: set up .venv if needed, then execute the notebooks 01-05 with papermill.
# Runs (checkpoints, metrics, figures, executed notebooks) land in reports/runs/<run>/, and
# reports/REPORT.md shows the latest one.
# Uses HAM10000 in data/ when present, the synthetic demo otherwise. Extra arguments go to
# `python -m skin_utils.sweep all`, e.g.  bash scripts/run_all.sh --epochs 5
#   bash scripts/run_all.sh --help     # the options; installs nothing
set -euo pipefail
cd "$(dirname "$0")/.."
for arg in "$@"; do
  if [ "$arg" = "-h" ] || [ "$arg" = "--help" ]; then
    cat <<'USAGE'
usage: bash scripts/run_all.sh [OPTIONS]

Creates .venv on first use (scripts/setup_env.sh), then runs notebooks/01_eda, 02_train,
03_evaluate, 04_inference and 05_experiments with papermill. 02_train trains a run into
reports/runs/<run-name>/ (checkpoints, metrics, figures, and the executed notebooks of 02-04 in
its notebooks/); 01_eda's and 05_experiments' executed copies go to reports/notebooks/, and
reports/REPORT.md shows the data and the latest run. Uses HAM10000 in data/ when it is there,
the synthetic demo otherwise. OPTIONS are those of `python -m skin_utils.sweep all`:

USAGE
    # The options come from the module's own argparse help, which imports nothing beyond the
    # standard library (the notebooks' defaults are read from their .py files): any Python 3.10+
    # prints it, before anything is installed.
    py=.venv/bin/python
    [ -x "$py" ] || py=${PYTHON:-python3}
    exec "$py" -m skin_utils.sweep all --help
  fi
done
bash scripts/setup_env.sh
exec .venv/bin/python -m skin_utils.sweep all "$@"
