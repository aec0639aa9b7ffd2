#!/usr/bin/env bash
# Replay SCF events locally: builds the release binary, runs the real ./bootstrap under wafer-scf's emulator of the
# SCF runtime API (exactly as SCF runs it: SCF_RUNTIME_API/SCF_RUNTIME_API_PORT set, init/ready, next → response),
# feeds it event files and prints each reply.
#
#   scripts/replay.sh                       # every sample in events/, a throw-away embedded store in a temp dir
#   scripts/replay.sh events/02-*.json      # chosen events
#   REPLAY_DATABASE_URL=mysql://root@127.0.0.1:3306/replay scripts/replay.sh   # a database of your choosing
#
# Your WAFER_DATABASE_URL is never used: the replay writes (an app, a caller key, sessions), so it only writes where
# REPLAY_DATABASE_URL says. Unless WAFER_WECHAT_BASE_URL is set, a local stand-in for WeChat
# (examples/fake_wechat.rs) answers, and the samples are filled in as a deployment would send them — the caller
# key and admin token in headers, a login code the stand-in accepts, the id/skey of a real session, data encrypted
# with that session's key — so every sample but the GET (405) succeeds.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin wafer-scf
cargo build --locked --quiet --example fake_wechat
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN="$TARGET/release/wafer-scf"
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
if [ -z "${REPLAY_DATABASE_URL:-}" ]; then
  export WAFER_DATABASE_URL="sqlite:$tmp/wafer.db"
else
  export WAFER_DATABASE_URL="$REPLAY_DATABASE_URL"
  "$BIN" migrate
fi
APPID=wx1234567890abcdef CORPID=ww0123456789abcdef
if [ -z "${WAFER_WECHAT_BASE_URL:-}" ]; then
  "$TARGET/debug/examples/fake_wechat" "$APPID=replay-secret" "$CORPID=replay-agent-secret" > "$tmp/fake.url" &
  pids+=($!)
  for _ in $(seq 50); do [ -s "$tmp/fake.url" ] && break; sleep 0.1; done
  export WAFER_WECHAT_BASE_URL=$(cat "$tmp/fake.url")
  export WAFER_WECOM_BASE_URL="${WAFER_WECOM_BASE_URL:-$WAFER_WECHAT_BASE_URL}"
fi
export WAFER_ADMIN_TOKEN="${WAFER_ADMIN_TOKEN:-$(openssl rand -hex 16)}"
"$BIN" app add --appid "$APPID" --secret replay-secret >/dev/null
"$BIN" cos add --appid 1250000000 --secret-id AKIDreplay --secret-key replay-cos-key >/dev/null
KEY=$("$BIN" key add --name "replay-$(date +%s%N)" --all 2>/dev/null)
# A real session for the samples that need one (the stand-in's first login of replay_user).
echo "{\"interface\":{\"interfaceName\":\"qcloud.cam.id_skey\",\"para\":{\"appid\":\"$APPID\",\"code\":\"ok:replay_user:0\"}}}" > "$tmp/login.json"
LOGIN=$("$BIN" invoke "$tmp/login.json" 2>/dev/null)
# Event 01 logs replay_user in again (login 2): the stand-in's session key is then sha256("replay_user/2")[..16].
KEYHEX=$(printf 'replay_user/2' | openssl dgst -sha256 -binary | head -c 16 | od -An -tx1 | tr -d ' \n')
IVHEX=00112233445566778899aabbccddeeff
encrypt() { printf '%s' "$1" | openssl enc -aes-128-cbc -K "$KEYHEX" -iv "$IVHEX" | base64 -w0; }
DATA=$(encrypt "{\"stepCount\":4321,\"watermark\":{\"appid\":\"$APPID\",\"timestamp\":1700000000}}")
PROFILE=$(encrypt "{\"nickName\":\"回放\",\"watermark\":{\"appid\":\"$APPID\",\"timestamp\":1700000000}}")
if [ "$#" -eq 0 ]; then set -- events/*.json; fi
mkdir -p "$tmp/events"
python3 - "$tmp/events" "$LOGIN" "$KEY" "$WAFER_ADMIN_TOKEN" "$DATA" "$PROFILE" "$IVHEX" "$@" <<'PY'
import base64, json, os, sys, time
out, login, key, admin, data, profile, ivhex, *files = sys.argv[1:]
session = json.loads(login)["returnData"]
iv = base64.b64encode(bytes.fromhex(ivhex)).decode()
def fill(env):
    p = env.get("interface", {}).get("para", {})
    if "skey" in p and "id" in p:
        p["id"], p["skey"] = session["id"], session["skey"]
    if p.get("code"):
        p["code"] = "ok:replay_user:1"
    if "encrypt_data" in p:
        p["encrypt_data"], p["iv"] = (profile if env["interface"]["interfaceName"].endswith("userinfo") else data), iv
    if "agentsecret" in p:
        p["agentsecret"] = "replay-agent-secret"
    if "expiration" in p:  # a reusable COS signature: an hour from now
        p["expiration"] = int(time.time()) + 3600
    return env
for f in files:
    ev = json.load(open(f))
    if "httpMethod" in ev:  # Function URL / gateway: credentials travel in headers
        ev.setdefault("headers", {}).update({"x-wafer-key": key, "x-wafer-admin-token": admin})
        if ev.get("body"):
            ev["body"] = json.dumps(fill(json.loads(ev["body"])), ensure_ascii=False)
    else:  # a direct invocation has no headers: para carries them
        fill(ev)["interface"]["para"].update({"caller_key": key, "admin_token": admin})
    json.dump(ev, open(os.path.join(out, os.path.basename(f)), "w"), ensure_ascii=False, indent=1)
PY
files=()
for f in "$@"; do files+=("$tmp/events/$(basename "$f")"); done
"$BIN" replay --bootstrap ./bootstrap "${files[@]}"
