"""Drives wechatpy 1.8.18, unchanged, against wafer-scf (tests/it/sdks.rs starts the server and the fake WeChat).

The only adaptation is the README's: wechatpy addresses https://api.weixin.qq.com (its token URL is hard-coded,
and several sub-APIs keep their own base), so a requests adapter sends whatever it addresses there to wafer-scf.

Two deployments: the token host (the SDK keeps its appid and secret; wafer-scf answers /cgi-bin/token from the
central cache and relays calls carrying tokens it issued), and the pass-through (the SDK holds only a caller key as
its "token" and talks to /wechat/{appid}/). Exits non-zero on the first failure.
"""

import hashlib
import json
import os
import sys
import tempfile
import threading

import requests
from requests.adapters import HTTPAdapter
from wechatpy import WeChatClient

WAFER = os.environ["WAFER_URL"].rstrip("/")
FAKE = os.environ["FAKE_URL"].rstrip("/")
APPID = os.environ["APPID"]
SECRET = os.environ["SECRET"]
KEY = os.environ["CALLER_KEY"]
QR_SHA256 = os.environ["QR_SHA256"]  # the fake's 200 KB code image
OPENID = "o_sdk_user"


class ToWafer(HTTPAdapter):
    """Sends what wechatpy addresses to api.weixin.qq.com to wafer-scf (the README's few lines)."""

    def __init__(self, base):
        super().__init__()
        self.base = base

    def send(self, request, **kwargs):
        request.url = self.base + request.url[len("https://api.weixin.qq.com"):]
        return super().send(request, **kwargs)


def pointed(client, base):
    client._http.mount("https://api.weixin.qq.com/", ToWafer(base))
    return client


def fake_calls(key):
    return requests.get(FAKE + "/__test/calls", params={"key": key}).json()["calls"]


def check(what, ok, detail=""):
    if not ok:
        print(f"FAILED {what}: {detail}", flush=True)
        sys.exit(1)
    print(f"ok {what}", flush=True)


def exercise(client, mode):
    # A message with Chinese text, and user info with an emoji: UTF-8 both ways.
    r = client.message.send_text(OPENID, "你好，世界 🌏")
    check(f"{mode}: message", r.get("text") == "你好，世界 🌏", r)
    user = client.user.get(OPENID)
    check(f"{mode}: user info", user.get("nickname") == "小程序用户🙂", user)
    # A binary reply (a 200 KB code image), byte for byte.
    image = client.wxa.create_qrcode("pages/index/index", 430)
    body = image.content if hasattr(image, "content") else image
    check(f"{mode}: binary reply", hashlib.sha256(body).hexdigest() == QR_SHA256, len(body))
    # An upload of a few MB (multipart, past the envelope's 64 KiB), intact.
    data = bytes((i * 7 + 3) % 256 for i in range(3 * 1024 * 1024))
    with tempfile.NamedTemporaryFile(suffix=".jpg") as f:
        f.write(data)
        f.flush()
        with open(f.name, "rb") as media:
            r = client.media.upload("image", media)
    check(f"{mode}: upload", r.get("media_id") == hashlib.sha256(data).hexdigest(), r)


def main():
    # --- the token host: the SDK as it is, its base moved ---
    host = pointed(WeChatClient(APPID, SECRET), WAFER)
    exercise(host, "wechatpy token host")
    session = host.wxa.code_to_session("ok:o_sdk_login:wechatpy")
    check("wechatpy token host: login", session.get("openid") == "o_sdk_login" and session.get("session_key"), session)

    # WeChat invalidates the token behind everyone's back; twelve callers holding it at once: one refresh.
    fetches = fake_calls("/cgi-bin/stable_token")
    requests.post(FAKE + "/__test/invalidate", params={"appid": APPID}).raise_for_status()
    errors = []

    def one(i):
        try:
            r = host.message.send_text(OPENID, f"after the invalidation {i}")
            if r.get("errcode", 0) != 0:
                errors.append(r)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check("wechatpy token host: twelve callers after an invalidation", not errors, errors)
    check("wechatpy token host: one refresh for them", fake_calls("/cgi-bin/stable_token") - fetches == 1,
          fake_calls("/cgi-bin/stable_token") - fetches)
    # The SDK still holds the superseded token (it never refetched): one upstream call per request, not two.
    business = fake_calls("/business")
    r = host.message.send_text(OPENID, "with a superseded token")
    check("wechatpy token host: a superseded token costs one call", fake_calls("/business") - business == 1,
          fake_calls("/business") - business)
    check("wechatpy token host: still no second refresh", fake_calls("/cgi-bin/stable_token") - fetches == 1)

    # --- the pass-through: the SDK holds only a caller key as its token ---
    keyed = pointed(WeChatClient(APPID, None, access_token=KEY, auto_retry=False), f"{WAFER}/wechat/{APPID}")
    exercise(keyed, "wechatpy pass-through")
    print("all ok", flush=True)


if __name__ == "__main__":
    main()
