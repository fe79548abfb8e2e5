#!/usr/bin/env bash
# Run the CUDA-only tests and benchmarks/cuda_ipc.py on a machine with a GPU and a CUDA build of
# PyTorch already installed (CI has no GPU, so these run by hand where one is lent).
#
# It installs foundation, every plugin and the shm transport (built here, with its C hot path) into
# a target folder on PYTHONPATH, next to the system's torch, and never touches the system's
# packages. Dependencies the machine lacks are taken from wheels in $WHEELS (default .whl/) when
# that folder exists. On a GPU machine without network access, fetch them beforehand where pip
# works, for that machine's Python (3.12 here), pinned as in constraints-dev.txt:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl cattrs==26.2.1 structlog==26.1.0 dynaconf==3.3.5 \
#     posix-ipc==1.3.2 tenacity==9.2.1 pybreaker==1.4.1 orjson==3.13.0
#
#   bash scripts/cuda-check.sh            # tests, then the benchmark (JSON on stdout's last line)
#   OUT=/tmp/out bash scripts/cuda-check.sh   # also keeps logs and the JSON under $OUT
#   bash scripts/cuda-check.sh --install-only  # install, then run your own checks with
#                                              # PYTHONPATH=/tmp/foundation-site
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/foundation-site}
WHEELS=${WHEELS:-.whl}
OUT=${OUT:-/tmp/foundation-cuda-check}
mkdir -p "$OUT" "$SITE"

"$PY" - <<'EOF' || exit 2
import sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)
if not torch.cuda.is_available():
    sys.exit("cuda-check: torch sees no CUDA device; nothing to check here")
print("device:", torch.cuda.get_device_name(0), "count", torch.cuda.device_count())
EOF

pip_args=(-q --disable-pip-version-check --no-compile --upgrade --target "$SITE")
if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install "${pip_args[@]}" --no-index --no-deps "$WHEELS"/*.whl || exit 2
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
pkgs=(.)
for d in plugins/*/ transports/*/; do [ -f "$d/pyproject.toml" ] && pkgs+=("$d"); done
"$PY" -m pip install "${pip_args[@]}" --no-deps --no-build-isolation "${pkgs[@]}" >"$OUT/install.log" 2>&1 \
  || { cat "$OUT/install.log"; exit 2; }
# the installed copies must be the ones imported, not the checkout's sources
cd "$OUT" && "$PY" -c "import foundation_shm._accel as a, foundation_core; print('shm hot path:', a.implementation())" \
  && cd - >/dev/null || exit 2

[ "${1:-}" = "--install-only" ] && { echo "cuda-check: installed in $SITE"; exit 0; }

rc=0
"$PY" -m pytest -p no:cacheprovider -q -m cuda \
  transports/shm/tests/test_cuda_ipc_gpu.py tests/ml/test_cuda_runtime.py plugins/torch/tests \
  2>&1 | tee "$OUT/pytest-cuda.log" || rc=1
# everything else of the transport, the runtime and the torch backend must hold where a GPU is
# present too (their "auto" modes see a device there)
"$PY" -m pytest -p no:cacheprovider -q -m "not cuda" transports/shm tests/ml plugins/torch \
  2>&1 | tee "$OUT/pytest-rest.log" || rc=1
"$PY" benchmarks/cuda_ipc.py --json 2>"$OUT/bench.err" | tee "$OUT/cuda_ipc.json" || rc=1
ls /dev/shm | grep -i fdn && { echo "cuda-check: objects left in /dev/shm"; rc=1; }
exit $rc
