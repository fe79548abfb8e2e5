#!/usr/bin/env bash
# Create .venv and install foundation, every plugin and transport (editable) with dev tools,
# pinned by constraints-dev.txt; install the system packages the native clients need.
# Idempotent: a second run only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null || need_apt+=(gcc libc6-dev)
command -v make >/dev/null || need_apt+=(make)
# the shm transport's C hot path (transports/shm/foundation_shm/_hot.c) links zlib
[ -f /usr/include/zlib.h ] || need_apt+=(zlib1g-dev)
if [ -d clients/go ] && ! command -v go >/dev/null; then need_apt+=(golang-go); fi
# The machine image ships rustup's cargo in ~/.cargo/bin; Debian's cargo is the fallback.
if [ -d clients/rust ] && ! command -v cargo >/dev/null && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
  need_apt+=(cargo)
fi
PY=${PYTHON:-python3}
# Debian's python3 makes no venv without python3-venv (it holds ensurepip)
if [ ! -x .venv/bin/python ] && ! "$PY" -c "import ensurepip, venv" 2>/dev/null; then
  need_apt+=(python3-venv)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
pkgs=(-e ".[dev]")
for d in plugins/*/ transports/*/; do
  [ -f "$d/pyproject.toml" ] && pkgs+=(-e "$d")
done
# a failed build of the shm C hot path fails the install instead of falling back to pure Python
export FDN_SHM_REQUIRE_C="${FDN_SHM_REQUIRE_C:-1}"
echo "setup: pip install ${pkgs[*]}"
# pip's indented lines are setuptools' build chatter on success; on failure they hold the error,
# so its whole output is shown then
log=$(mktemp)
if ! .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints-dev.txt "${pkgs[@]}" torch \
  >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  echo "setup: pip install failed (its output above)" >&2
  exit 1
fi
grep -v -E "^(WARNING: Location|  )" "$log" || true
rm -f "$log"
.venv/bin/python -c "import foundation_core, torch; print('setup: ok, torch', torch.__version__)"
# the shm hot path must be C (FDN_SHM_PURE, if set here, would only force the pure path)
env -u FDN_SHM_PURE .venv/bin/python -c "import sys; from foundation_shm import _accel as a
print('setup: shm hot path:', a.summary())
required = '$FDN_SHM_REQUIRE_C'.lower() in ('1', 'true', 'yes')  # as setup.py reads it
sys.exit(required and a.implementation() != 'c' and 'setup: the shm C hot path is missing (FDN_SHM_REQUIRE_C=1)')"
