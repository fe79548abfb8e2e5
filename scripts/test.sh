#!/usr/bin/env bash
# Set up, then run what CI runs: lint, format check, type check, and every test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy  # the packages listed in pyproject.toml [tool.mypy] files
pure=""
if [ $# -eq 0 ]; then
  # the shm transport again on its pure-Python path (FDN_SHM_PURE=1): the fallback where the C
  # hot path was not built must pass the same tests. It runs beside the main run (its objects
  # are named by its own pid, so the two never meet) and is reported after it: the two
  # together take about the main run's time on two cores, one after the other ~4 minutes more.
  pure_log=$(mktemp)
  FDN_SHM_PURE=1 .venv/bin/python -m pytest -q -p no:cacheprovider transports/shm/tests >"$pure_log" 2>&1 &
  pure=$!
  trap 'kill "$pure" 2>/dev/null; rm -f "$pure_log"' EXIT
fi
set +e
.venv/bin/python -m pytest --durations=25 "$@"  # the slowest tests, to see where CI time goes
rc=$?
prc=0
if [ -n "$pure" ]; then
  wait "$pure"
  prc=$?
  trap 'rm -f "$pure_log"' EXIT
  echo "=== the shm suite on its pure-Python path (FDN_SHM_PURE=1) ==="
  cat "$pure_log"
fi
set -e
for code in "$rc" "$prc"; do
  if [ "$code" -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi
done
[ "$rc" -eq 0 ] || exit "$rc"
[ "$prc" -eq 0 ] || exit "$prc"
