#!/usr/bin/env bash
# The main job: set up .venv if needed, then execute the four notebooks with papermill.
# Executed notebooks, figures, metrics and reports/REPORT.md land in reports/.
# Uses HAM10000 in data/ when present, the synthetic demo otherwise. Extra arguments go to
# `python -m skin_utils.run_notebooks` (see --help), e.g.  bash scripts/run_all.sh --epochs 5
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m skin_utils.run_notebooks "$@"
