#!/usr/bin/env bash
# Create .venv (when there is none) with the pinned torch/torchvision pair and skin_utils[dev].
# Re-running is cheap: it reinstalls only when pyproject.toml changed.
#   PYTHON=python3.11 bash scripts/setup_env.sh          # choose the interpreter
#   TORCH_SPEC="torch torchvision" bash scripts/setup_env.sh   # another torch pair
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  cat <<'USAGE'
usage: bash scripts/setup_env.sh

Creates .venv (when there is none) with the pinned torch/torchvision pair and skin_utils[dev]
(pip install -e ".[dev]"); reinstalls only when pyproject.toml is newer than the last install.
Environment variables:
  PYTHON=python3.11                    the interpreter that creates .venv (default: python3)
  TORCH_SPEC="torch torchvision"       what to pip install for torch (default: the pinned pair)
USAGE
  exit 0
fi
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
marker=.venv/.skin_utils_installed
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
if [ ! -f "$marker" ] || [ pyproject.toml -nt "$marker" ]; then
  echo "== installing $TORCH_SPEC and skin_utils[dev] into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  # shellcheck disable=SC2086
  .venv/bin/python -m pip install -q $TORCH_SPEC 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import torch, torchvision, skin_utils, papermill, nbval" \
    || { echo "setup_env: the installation is incomplete (see the pip messages above)" >&2; exit 1; }
  touch "$marker"
fi
