#!/usr/bin/env bash
# Set up .venv and build the native clients, then serve the embedded demo model over shared
# memory, call it from the Python client and the C, Rust and Go clients, print outputs and a
# latency line, and stop the server cleanly (exit 0, /dev/shm clean).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build-clients.sh
exec .venv/bin/foundation demo "$@"
