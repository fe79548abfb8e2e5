#!/usr/bin/env bash
# Build the native clients' fdn-client drivers (C, Rust, Go), as docs/clients.md describes.
# A toolchain that is missing is reported and skipped; a build that fails stops the script.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
export GOFLAGS="${GOFLAGS:--mod=mod}" GOPROXY="${GOPROXY:-off}" GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

if command -v make >/dev/null && command -v cc >/dev/null; then
  echo "build-clients: C"; make -s -C clients/c >/dev/null
else
  echo "build-clients: no C compiler or make; skipping the C client"
fi
if command -v cargo >/dev/null; then
  echo "build-clients: Rust"
  cargo build -q --release --offline --manifest-path clients/rust/Cargo.toml --example fdn-client
else
  echo "build-clients: no cargo; skipping the Rust client"
fi
if command -v go >/dev/null; then
  echo "build-clients: Go"; (cd clients/go && go build -o bin/fdn-client ./cmd/fdn-client)
else
  echo "build-clients: no go; skipping the Go client"
fi
