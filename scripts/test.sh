#!/usr/bin/env bash
# All tests: set up .venv if needed, then the unit tests and `pytest --nbval notebooks/`
# (every notebook executed with its committed defaults) in one pytest run.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -x -k metrics
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest --nbval --nbval-current-env tests notebooks "$@"
