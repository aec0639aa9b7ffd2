#!/usr/bin/env bash
# Installs the pinned WeChat SDKs that tests/it/sdks.rs drives unchanged — Python wechatpy into a virtual
# environment, Node wechat-api and co-wechat-api into a scratch project — from PyPI and npm, and prints the
# directory holding them. Cached by the hash of the pinned files (tests/sdk/requirements.txt, package.json,
# package-lock.json) under $WAFER_SDK_CACHE (default ~/.cache/wafer-scf/sdks): a second run installs nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
sdk="$here/tests/sdk"
cache="${WAFER_SDK_CACHE:-$HOME/.cache/wafer-scf/sdks}"
sum=$(cat "$sdk/requirements.txt" "$sdk/package.json" "$sdk/package-lock.json" | sha256sum | cut -c1-16)
dir="$cache/$sum"
mkdir -p "$cache"
# One installer at a time (parallel tests call this at once); the others wait and find it ready.
exec 9>"$cache/.lock"
flock 9
if [ ! -f "$dir/.ready" ]; then
  rm -rf "$dir"
  mkdir -p "$dir"
  python3 -m venv "$dir/venv" >&2
  "$dir/venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$sdk/requirements.txt" >&2
  cp "$sdk/package.json" "$sdk/package-lock.json" "$dir/"
  (cd "$dir" && npm ci --silent --no-audit --no-fund >&2)
  touch "$dir/.ready"
fi
echo "$dir"
