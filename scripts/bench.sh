#!/usr/bin/env bash
# Benchmarks: installs wrk if missing, then runs the cached-token HTTP benchmark and the SCF runtime benchmark
# (run scripts/package.sh first for the zip size).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq wrk
fi
cargo bench --bench tokens
cargo bench --bench runtime
cargo bench --bench faults
