#!/usr/bin/env bash
# Replay SCF events locally: builds the release binary, runs the real ./bootstrap under wafer-scf's emulator of the
# SCF runtime API (exactly as SCF runs it: SCF_RUNTIME_API/SCF_RUNTIME_API_PORT set, init/ready, next → response),
# feeds it event files and prints each reply.
#
#   scripts/replay.sh                       # every sample in events/, a throw-away embedded store in a temp dir
#   scripts/replay.sh events/02-*.json      # chosen events
#   REPLAY_DATABASE_URL=mysql://root@127.0.0.1:3306/replay scripts/replay.sh   # a database of your choosing
#
# Your WAFER_DATABASE_URL is never used: the replay writes (an app, sessions), so it only writes where
# REPLAY_DATABASE_URL says. Other WAFER_* variables reach the bootstrap (e.g. WAFER_WECHAT_BASE_URL).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin wafer-scf
BIN=target/release/wafer-scf
if [ -z "${REPLAY_DATABASE_URL:-}" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  export WAFER_DATABASE_URL="sqlite:$tmp/wafer.db"
else
  export WAFER_DATABASE_URL="$REPLAY_DATABASE_URL"
  "$BIN" migrate
fi
# Keep replays off the real WeChat unless asked: a closed local port makes upstream calls fail fast (1005).
export WAFER_WECHAT_BASE_URL="${WAFER_WECHAT_BASE_URL:-http://127.0.0.1:9}"
export WAFER_WECOM_BASE_URL="${WAFER_WECOM_BASE_URL:-http://127.0.0.1:9}"
"$BIN" app add --appid wx1234567890abcdef --secret replay-secret >/dev/null
if [ "$#" -eq 0 ]; then set -- events/*.json; fi
exec "$BIN" replay --bootstrap ./bootstrap "$@"
