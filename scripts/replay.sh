#!/usr/bin/env bash
# Replay SCF events locally: builds the release binary, runs the real ./bootstrap under wafer-scf's emulator of the
# SCF runtime API (exactly as SCF runs it: SCF_RUNTIME_API/SCF_RUNTIME_API_PORT set, init/ready, next → response),
# feeds it event files and prints each reply.
#
#   scripts/replay.sh                       # every sample in events/, embedded store in a temp dir
#   scripts/replay.sh events/02-*.json      # chosen events
#   WAFER_DATABASE_URL=mysql://root@127.0.0.1:3306/wafer scripts/replay.sh   # against MariaDB (migrated first)
#
# Any WAFER_* variable set here reaches the bootstrap (e.g. WAFER_WECHAT_BASE_URL to point at a fake WeChat).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin wafer-scf
BIN=target/release/wafer-scf
if [ -z "${WAFER_DATABASE_URL:-}" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  export WAFER_DATABASE_URL="sqlite:$tmp/wafer.db"
else
  "$BIN" migrate
fi
# Keep replays off the real WeChat unless asked: a closed local port makes upstream calls fail fast (1005).
export WAFER_WECHAT_BASE_URL="${WAFER_WECHAT_BASE_URL:-http://127.0.0.1:9}"
export WAFER_WECOM_BASE_URL="${WAFER_WECOM_BASE_URL:-http://127.0.0.1:9}"
"$BIN" app add --appid wx1234567890abcdef --secret replay-secret >/dev/null
if [ "$#" -eq 0 ]; then set -- events/*.json; fi
exec "$BIN" replay --bootstrap ./bootstrap "$@"
