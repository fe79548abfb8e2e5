#!/usr/bin/env bash
# Build the sdist and wheel of every distribution in this repository (foundation, plugins/*,
# transports/*) into dist/ (or $1), so the extras resolve without a package index:
#   bash scripts/build-dists.sh && pip install --find-links dist -c constraints-dev.txt "foundation[shm,torch]"
# Needs .venv (scripts/setup.sh): it builds with .venv's `build` and setuptools, without isolation.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
mkdir -p "$out"
for d in . plugins/*/ transports/*/; do
  [ -f "$d/pyproject.toml" ] || continue
  echo "build-dists: $d"
  if ! log=$(.venv/bin/python -m build --no-isolation --outdir "$out" "$d" 2>&1); then
    echo "$log" >&2
    exit 1
  fi
done
ls "$out"
