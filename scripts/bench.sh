#!/usr/bin/env bash
# Benchmarks: installs wrk if missing, then runs the hot paths side by side with the bare limit (per backend), token-free
# calls straight and through the server (streaming), the SCF runtime benchmark beside a null bootstrap
# (run scripts/package.sh first for the zip size).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq wrk
fi
cargo bench --bench hotpaths
cargo bench --bench streaming
cargo bench --bench runtime
cargo bench --bench faults
