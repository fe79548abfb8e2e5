#!/usr/bin/env bash
# Set up, then run what CI runs: lint, format check, type check, and every test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy  # the packages listed in pyproject.toml [tool.mypy] files
set +e
.venv/bin/python -m pytest --durations=25 "$@"  # the slowest tests, to see where CI time goes
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi
[ "$rc" -eq 0 ] || exit "$rc"
if [ $# -eq 0 ]; then
  # the shm transport again on its pure-Python path (FDN_SHM_PURE=1): the fallback where the C
  # hot path was not built must pass the same tests
  FDN_SHM_PURE=1 .venv/bin/python -m pytest -q transports/shm/tests
fi
