#!/usr/bin/env bash
# All tests: set up .venv if needed, then the unit tests and `pytest --nbval notebooks/`
# (every notebook executed with its committed defaults) in one pytest run.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -x -k metrics
#   bash scripts/test.sh --help     # this usage; installs nothing
set -euo pipefail
cd "$(dirname "$0")/.."
for arg in "$@"; do
  if [ "$arg" = "-h" ] || [ "$arg" = "--help" ]; then
    cat <<'USAGE'
usage: bash scripts/test.sh [PYTEST_ARGS...]

Creates .venv on first use (scripts/setup_env.sh), then runs
  .venv/bin/python -m pytest --nbval --nbval-current-env tests notebooks [PYTEST_ARGS...]
the unit tests in tests/ and every notebook in notebooks/ with its committed defaults.
CI (.ci/run) runs exactly `bash scripts/test.sh`. Example:
  bash scripts/test.sh -x -k metrics     # stop at the first failure; only tests matching "metrics"
pytest's own options: .venv/bin/python -m pytest --help
USAGE
    exit 0
  fi
done
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest --nbval --nbval-current-env tests notebooks "$@"
