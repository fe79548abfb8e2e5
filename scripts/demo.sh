#!/usr/bin/env bash
# Set up .venv, then serve the embedded demo model over shared memory, call it from the Python
# client, print outputs and a latency line, and stop the server cleanly (exit 0, /dev/shm clean).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/foundation demo "$@"
