#!/usr/bin/env bash
# An offline demo that succeeds: a local stand-in for WeChat (examples/fake_wechat.rs, the fake the tests use), the
# server on a throw-away embedded store, an app, a caller key and an admin token registered over the wire
# (`--server`), then login → auth → decrypt → access token → JS-SDK signature → COS signature, each request and
# reply printed. Exits non-zero if any step does not answer returnCode 0. Needs curl, openssl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "demo: building wafer-scf and the fake WeChat (the first build takes a few minutes)…" >&2
cargo build --locked --quiet --bin wafer-scf --example fake_wechat
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN="$TARGET/debug/wafer-scf"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

APPID=wxdemo0000000001
SECRET=demo-app-secret
ADMIN=$(openssl rand -hex 16)
"$TARGET/debug/examples/fake_wechat" "$APPID=$SECRET" > "$work/fake.url" &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/fake.url" ] && break; sleep 0.1; done
FAKE=$(cat "$work/fake.url")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT/"
WAFER_DATABASE_URL="sqlite:$work/demo.db" WAFER_WECHAT_BASE_URL="$FAKE" WAFER_WECOM_BASE_URL="$FAKE" \
  WAFER_ADMIN_TOKEN="$ADMIN" WAFER_LISTEN="127.0.0.1:$PORT" WAFER_LOG=warn "$BIN" serve &
pids+=($!)
for _ in $(seq 100); do curl -sf "${URL}healthz" >/dev/null && break; sleep 0.1; done

step() { echo; echo "== $*"; }
export WAFER_SERVER="$URL" WAFER_ADMIN_TOKEN="$ADMIN"
step "register the app and a caller key over the wire (wafer-scf --server …)"
"$BIN" app add --appid "$APPID" --secret "$SECRET"
"$BIN" cos add --appid 1250000000 --secret-id AKIDdemo --secret-key demo-cos-secret-key
KEY=$("$BIN" key add --name demo-backend --apps "$APPID,1250000000" 2>/dev/null)
echo "caller key: ${KEY:0:8}… (shown once)"

# POST an envelope; print it and the reply; fail unless returnCode is 0. Sets REPLY.
call() {
  local iface=$1 para=$2 key=${3:-}
  local body="{\"version\":1,\"componentName\":\"MA\",\"interface\":{\"interfaceName\":\"$iface\",\"para\":$para}}"
  echo "-> $body"
  if [ -n "$key" ]; then
    REPLY=$(curl -s -H 'Content-Type: application/json' -H "X-Wafer-Key: $key" -d "$body" "$URL")
  else
    REPLY=$(curl -s -H 'Content-Type: application/json' -d "$body" "$URL")
  fi
  echo "<- $REPLY"
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); sys.exit(0 if r["returnCode"]==0 else 1)' "$REPLY" \
    || { echo "demo step $iface failed" >&2; exit 1; }
}
field() { python3 -c 'import json,sys; d=json.loads(sys.argv[1])["returnData"]; print(d[sys.argv[2]])' "$REPLY" "$1"; }

step "1. login: the mini-program's wx.login code (the stand-in accepts ok:<openid>:<n>)"
call qcloud.cam.id_skey "{\"appid\":\"$APPID\",\"code\":\"ok:demo_user:1\"}"
ID=$(field id); SKEY=$(field skey)

step "2. auth: the business server checks id/skey on every request"
call qcloud.cam.auth "{\"id\":\"$ID\",\"skey\":\"$SKEY\"}"

step "3. decrypt: encrypted data of that user (session_key stays on the server)"
# The stand-in derives the session key as the first 16 bytes of sha256("<openid>/<login n>").
KEYHEX=$(printf 'demo_user/1' | openssl dgst -sha256 -binary | head -c 16 | od -An -tx1 | tr -d ' \n')
IVHEX=00112233445566778899aabbccddeeff
PLAIN="{\"stepCount\":4321,\"watermark\":{\"appid\":\"$APPID\",\"timestamp\":1700000000}}"
DATA=$(printf '%s' "$PLAIN" | openssl enc -aes-128-cbc -K "$KEYHEX" -iv "$IVHEX" | base64 -w0)
IV=$(python3 -c 'import base64,sys; print(base64.b64encode(bytes.fromhex(sys.argv[1])).decode())' "$IVHEX")
call qcloud.cam.decrypt "{\"id\":\"$ID\",\"skey\":\"$SKEY\",\"encrypt_data\":\"$DATA\",\"iv\":\"$IV\"}"

step "4. access token (needs the caller key; fetched once, then served from memory)"
call qcloud.mimi.access_token "{\"appid\":\"$APPID\"}" "$KEY"
call qcloud.mimi.access_token "{\"appid\":\"$APPID\"}" "$KEY"

step "5. JS-SDK signature (the ticket never leaves the server)"
call qcloud.mimi.jsapi_signature "{\"appid\":\"$APPID\",\"url\":\"https://example.com/page?x=1\"}" "$KEY"

step "6. COS upload signature (the business server asks with its key, hands the URL to the mini-program)"
call qcloud.cos.auth.v5 "{\"appid\":\"1250000000\",\"bucket\":\"photos-1250000000\",\"region\":\"ap-guangzhou\",\"method\":\"PUT\",\"path\":\"/uploads/a.jpg\"}" "$KEY"

step "status"
"$BIN" status
echo
echo "demo: every step succeeded"
