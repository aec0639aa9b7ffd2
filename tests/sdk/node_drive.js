// Drives co-wechat-api 3.11.0 and wechat-api 1.35.1, unchanged, against wafer-scf (tests/it/sdks.rs starts the
// server and the fake WeChat). The only adaptations are the README's: co-wechat-api's per-family prefixes, and
// wechat-api's `endpoint` set directly (its setEndpoint() forces https).
//
// Two deployments each: the token host (the SDK keeps its appid and secret; wafer-scf answers /cgi-bin/token from
// the central cache), and the pass-through (the SDK holds only a caller key, handed over by its getToken hook, and
// talks to /wechat/{appid}/). Exits non-zero on the first failure.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { promisify } = require('util');
const CoAPI = require('co-wechat-api');
const CbAPI = require('wechat-api');

const WAFER = process.env.WAFER_URL.replace(/\/$/, '');
const FAKE = process.env.FAKE_URL.replace(/\/$/, '');
const APPID = process.env.APPID;
const SECRET = process.env.SECRET;
const KEY = process.env.CALLER_KEY;
const QR_SHA256 = process.env.QR_SHA256;
const OPENID = 'o_sdk_user';
const FOREVER = Date.now() + 10 * 365 * 24 * 3600 * 1000;

function check(what, ok, detail) {
  if (!ok) {
    console.log(`FAILED ${what}: ${JSON.stringify(detail)}`);
    process.exit(1);
  }
  console.log(`ok ${what}`);
}

async function fakeCalls(key) {
  const r = await fetch(`${FAKE}/__test/calls?key=${encodeURIComponent(key)}`);
  return (await r.json()).calls;
}

const sha256 = (b) => crypto.createHash('sha256').update(b).digest('hex');
const upload = Buffer.from(Array.from({ length: 3 * 1024 * 1024 }, (_, i) => (i * 7 + 3) % 256));

// co-wechat-api keeps a prefix per API family: point the ones used at `base`.
function coPointed(api, base) {
  api.prefix = `${base}/cgi-bin/`;
  api.snsPrefix = `${base}/sns/`;
  api.wxaPrefix = `${base}/wxa/`;
  return api;
}

async function coExercise(api, mode) {
  const sent = await api.sendText(OPENID, '你好，世界 🌏');
  check(`co-wechat-api ${mode}: message`, sent.text === '你好，世界 🌏', sent);
  const user = await api.getUser(OPENID);
  check(`co-wechat-api ${mode}: user info`, user.nickname === '小程序用户🙂', user);
  const image = await api.createWXAQRCode('pages/index/index', 430);
  check(`co-wechat-api ${mode}: binary reply`, Buffer.isBuffer(image) && sha256(image) === QR_SHA256, image.length);
  const media = await api.uploadMedia(upload, 'image', 'big.jpg', 'image/jpeg');
  check(`co-wechat-api ${mode}: upload`, media.media_id === sha256(upload), media);
}

async function cbExercise(api, mode) {
  const call = (name, ...args) => promisify(api[name]).apply(api, args);
  const sent = await call('sendText', OPENID, '你好，世界 🌏');
  check(`wechat-api ${mode}: message`, sent.text === '你好，世界 🌏', sent);
  const user = await call('getUser', OPENID);
  check(`wechat-api ${mode}: user info`, user.nickname === '小程序用户🙂', user);
  const image = await call('getMedia', 'any-media-id');
  check(`wechat-api ${mode}: binary reply`, Buffer.isBuffer(image) && sha256(image) === QR_SHA256, image.length);
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'wafer-sdk-')), 'big.jpg');
  fs.writeFileSync(file, upload);
  const media = await call('uploadMedia', file, 'image');
  check(`wechat-api ${mode}: upload`, media.media_id === sha256(upload), media);
}

async function main() {
  // --- co-wechat-api, token host: the SDK as it is, its prefixes moved ---
  const host = coPointed(new CoAPI(APPID, SECRET), WAFER);
  await coExercise(host, 'token host');
  const session = await host.code2Session('ok:o_sdk_login:co-wechat-api');
  check('co-wechat-api token host: login', session.openid === 'o_sdk_login' && !!session.session_key, session);

  // The token is invalidated behind everyone's back; twelve callers at once: one refresh, no error.
  const fetches = await fakeCalls('/cgi-bin/stable_token');
  const r = await fetch(`${FAKE}/__test/invalidate?appid=${APPID}`, { method: 'POST' });
  check('invalidate', r.ok, r.status);
  const results = await Promise.allSettled(
    Array.from({ length: 12 }, (_, i) => host.sendText(OPENID, `after the invalidation ${i}`)));
  const failed = results.filter((x) => x.status !== 'fulfilled').map((x) => String(x.reason));
  check('co-wechat-api token host: twelve callers after an invalidation', failed.length === 0, failed);
  const refreshes = (await fakeCalls('/cgi-bin/stable_token')) - fetches;
  check('co-wechat-api token host: one refresh for them', refreshes === 1, refreshes);
  // The SDK still holds the superseded token: one upstream call per request, not two.
  const business = await fakeCalls('/business');
  await host.sendText(OPENID, 'with a superseded token');
  const spent = (await fakeCalls('/business')) - business;
  check('co-wechat-api token host: a superseded token costs one call', spent === 1, spent);

  // --- co-wechat-api, pass-through: its getToken hook hands over a caller key; tokenFromCustom: never fetch ---
  const keyed = coPointed(
    new CoAPI(APPID, null, async () => ({ accessToken: KEY, expireTime: FOREVER }), async () => {}, true),
    `${WAFER}/wechat/${APPID}`);
  await coExercise(keyed, 'pass-through');

  // --- wechat-api, token host: `endpoint` set directly (setEndpoint would force https) ---
  const cb = new CbAPI(APPID, SECRET);
  cb.endpoint = WAFER;
  await cbExercise(cb, 'token host');

  // --- wechat-api, pass-through: its getToken hook hands over the caller key ---
  const cbKeyed = new CbAPI(APPID, null, (done) => done(null, { accessToken: KEY, expireTime: FOREVER }),
    (token, done) => done(null));
  cbKeyed.endpoint = `${WAFER}/wechat/${APPID}`;
  await cbExercise(cbKeyed, 'pass-through');
  console.log('all ok');
}

main().catch((e) => {
  console.log(`FAILED: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
