//! Large bodies: the HTTP pass-through streams replies and uploads of any size with memory bounded (measured on
//! the release-style binary's peak RSS); an envelope (`qcloud.mimi.call`) or an SCF reply never carries more than
//! 4 MiB (`1027 REPLY_TOO_LARGE`, naming the limit); a streamed upload is never sent twice.

use crate::both_backends;
use crate::cli::{run_ok, spawn_server, terminate, wafer};
use crate::fake_wechat::{count_call, valid_token, FakeState, FakeWeChat};
use crate::helpers::{code, open_settings, Backend, TestApp};
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use futures_util::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const APP: &str = "wx_stream_app";
const SECRET: &str = "stream-secret";
const CHUNK: usize = 64 * 1024;
const MIB: u64 = 1024 * 1024;

/// The fake's media routes: `GET /cgi-bin/media/get?size=N[&length=1]` streams N bytes of a known pattern
/// (with a Content-Length when `length=1`, else chunked); `POST /cgi-bin/media/upload` reads the whole body and
/// answers its length and SHA-256.
fn media_routes() -> Router<Arc<FakeState>> {
    Router::new()
        .route("/cgi-bin/media/get", get(media_get))
        .route("/cgi-bin/media/upload", post(media_upload))
}

fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

async fn media_get(State(st): State<Arc<FakeState>>, Query(q): Query<HashMap<String, String>>) -> Response {
    if !valid_token(&st, q.get("access_token")) {
        return Json(json!({"errcode": 40001, "errmsg": "invalid credential"})).into_response();
    }
    let size: u64 = q.get("size").and_then(|s| s.parse().ok()).unwrap_or(0);
    let block: Bytes = (0..CHUNK as u64).map(pattern).collect::<Vec<u8>>().into();
    // 251 does not divide CHUNK: each chunk starts where the pattern stands.
    // `pace_ms`: a pause before each chunk (a slow WeChat, or a long download).
    let pace = Duration::from_millis(q.get("pace_ms").and_then(|p| p.parse().ok()).unwrap_or(0));
    let chunks = futures_util::stream::iter(0..size.div_ceil(CHUNK as u64)).then(move |n| {
        let block = block.clone();
        async move {
            if !pace.is_zero() {
                tokio::time::sleep(pace).await;
            }
            let start = n * CHUNK as u64;
            let len = (size - start).min(CHUNK as u64) as usize;
            let shift = (start % 251) as usize;
            let mut c = Vec::with_capacity(len);
            c.extend((0..len).map(|i| block[(i + shift) % 251]));
            Ok::<_, std::convert::Infallible>(Bytes::from(c))
        }
    });
    let mut resp = Body::from_stream(chunks).into_response();
    resp.headers_mut().insert("content-type", "application/octet-stream".parse().unwrap());
    if q.get("length").is_some_and(|l| l == "1") {
        resp.headers_mut().insert("content-length", size.into());
    }
    resp
}

async fn media_upload(
    State(st): State<Arc<FakeState>>,
    Query(q): Query<HashMap<String, String>>,
    body: Body,
) -> Response {
    count_call(&st, "/cgi-bin/media/upload");
    let mut stream = body.into_data_stream();
    let (mut len, mut sha) = (0u64, Sha256::new());
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return Json(json!({"errcode": -1, "errmsg": "body broken"})).into_response();
        };
        len += chunk.len() as u64;
        sha.update(&chunk);
    }
    if !valid_token(&st, q.get("access_token")) {
        return Json(json!({"errcode": 40001, "errmsg": "invalid credential"})).into_response();
    }
    Json(json!({"errcode": 0, "type": "image", "media_id": "m1", "received": len,
        "sha256": hex::encode(sha.finalize())}))
    .into_response()
}

/// Count and check a download's bytes as they arrive (never holding them).
async fn download(resp: reqwest::Response) -> (u64, bool) {
    let mut stream = resp.bytes_stream_compat();
    let (mut n, mut ok) = (0u64, true);
    while let Some(chunk) = stream.next().await {
        for b in chunk.unwrap() {
            ok &= b == pattern(n);
            n += 1;
        }
    }
    (n, ok)
}

/// `reqwest::Response::chunk` as a stream (the tests build reqwest without its `stream` feature, like the server).
trait ChunkStream {
    fn bytes_stream_compat(self) -> futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>;
}

impl ChunkStream for reqwest::Response {
    fn bytes_stream_compat(self) -> futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>> {
        Box::pin(futures_util::stream::unfold(self, |mut r| async move {
            match r.chunk().await {
                Ok(Some(c)) => Some((Ok(c), r)),
                Ok(None) => None,
                Err(e) => Some((Err(e), r)),
            }
        }))
    }
}

/// Peak resident memory of a process, in MiB (`VmHWM`).
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024
}

fn patterned(len: usize) -> Vec<u8> {
    (0..len as u64).map(pattern).collect()
}

/// The server as a process (embedded store), a 128 MiB reply twice (with and without a length), a 48 MiB upload:
/// every byte arrives intact and the server's peak RSS stays far inside a 128 MB SCF instance. The same reply
/// through `qcloud.mimi.call` is refused with 1027 without being read whole.
#[tokio::test]
async fn huge_replies_and_uploads_stream_through_with_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let wx = FakeWeChat::start_with(media_routes()).await;
    wx.register(APP, SECRET);
    run_ok(wafer(dir.path()).args(["app", "add", "--appid", APP, "--secret", SECRET]));
    let out = run_ok(wafer(dir.path()).args(["key", "add", "--name", "media", "--apps", APP]));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let key = stdout.split_whitespace().find(|w| w.starts_with("wk_")).expect("a key is printed").to_owned();
    let limit = (64 * MIB).to_string();
    let env = [("WAFER_WECHAT_BASE_URL", wx.base_url.as_str()), ("WAFER_PASSTHROUGH_BODY_LIMIT", &limit)];
    let (mut server, url) = spawn_server(dir.path(), &env, false).await;
    let http = reqwest::Client::new();

    let start = peak_rss_mib(server.id());
    let size = 128 * MIB;
    for length in ["1", "0"] {
        let r = http
            .get(format!("{url}wechat/{APP}/cgi-bin/media/get?size={size}&length={length}"))
            .header("X-Wafer-Key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/octet-stream");
        let (n, intact) = download(r).await;
        assert_eq!(n, size, "every byte arrives (length given: {length})");
        assert!(intact, "in order and unchanged");
    }

    let upload = patterned(48 * MIB as usize);
    let r: Value = http
        .post(format!("{url}wechat/{APP}/cgi-bin/media/upload?type=image"))
        .header("X-Wafer-Key", &key)
        .header("content-type", "application/octet-stream")
        .body(upload.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["received"], upload.len() as u64, "{r}");
    assert_eq!(r["sha256"], hex::encode(Sha256::digest(&upload)), "the upload arrives intact");
    drop(upload);

    // Over WAFER_PASSTHROUGH_BODY_LIMIT by its Content-Length: refused before anything is read or sent on (the
    // client may see the 413, or the connection closed under the body it is still writing).
    let uploads = wx.calls("/cgi-bin/media/upload");
    let r = http
        .post(format!("{url}wechat/{APP}/cgi-bin/media/upload?type=image"))
        .header("X-Wafer-Key", &key)
        .body(vec![0u8; (64 * MIB + 1) as usize])
        .send()
        .await;
    match r {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => assert!(format!("{e:?}").contains("BodyWrite"), "{e:?}"),
    }
    assert_eq!(wx.calls("/cgi-bin/media/upload"), uploads, "nothing sent on");

    let body = crate::helpers::envelope(
        "qcloud.mimi.call",
        json!({"appid": APP, "path": "/cgi-bin/media/get", "query": {"size": size, "length": "0"}}),
    );
    let r: Value =
        http.post(&url).header("X-Wafer-Key", &key).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(code(&r), 1027, "{r}");
    assert!(r["returnMessage"].as_str().unwrap().contains("4194304"), "names the limit: {r}");

    let peak = peak_rss_mib(server.id());
    println!("server peak RSS: {start} MiB at start, {peak} MiB after 256 MiB down and 48 MiB up");
    // Read whole, one 128 MiB reply alone would take the peak past 160 MiB; streamed, the growth is the
    // allocator's per-thread arenas and the connections' buffers, whatever the size (a debug build: the release
    // binary starts lower).
    assert!(peak - start < 40, "peak RSS grew {start} → {peak} MiB: bodies must stream, not sit in memory");
    assert!(peak < 100, "peak RSS {peak} MiB: inside a 128 MB instance");
    assert!(terminate(&mut server).success());
}

async fn envelope_and_scf_replies_are_capped(b: Backend) {
    use wafer_scf::scf::runtime::{self, Invocation};
    let t = TestApp::with_routes(b, open_settings(), media_routes()).await;
    t.add_app(APP, SECRET).await;
    let call = |size: u64| {
        t.call(
            "qcloud.mimi.call",
            json!({"appid": APP, "path": "/cgi-bin/media/get", "query": {"size": size}}),
        )
    };
    let r = call(3 * MIB).await;
    assert_eq!(code(&r), 0, "{r}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(r["returnData"]["data_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes, patterned(3 * MIB as usize), "a reply under the limit comes whole");
    let r = call(4 * MIB + 1).await;
    assert_eq!(code(&r), 1027, "one byte over 4 MiB: {r}");
    assert!(r["returnMessage"].as_str().unwrap().starts_with("REPLY_TOO_LARGE"), "{r}");

    // A Function URL event for the pass-through: SCF cannot stream, so the same cap applies.
    let invoke = |size: u64| {
        let event = json!({"requestContext": {"requestId": "gw-big", "sourceIp": "203.0.113.7"},
            "httpMethod": "GET", "path": format!("/wechat/{APP}/cgi-bin/media/get"),
            "headers": {}, "queryString": {"size": size.to_string()}, "body": "", "isBase64Encoded": false});
        let inv = Invocation {
            request_id: "rt".into(),
            time_limit_ms: Some(10_000),
            memory_limit_mb: None,
            event: event.to_string().into_bytes(),
        };
        let svc = t.svc.clone();
        async move { runtime::handle(&svc, &inv).await }
    };
    let reply = invoke(3 * MIB).await;
    assert!(reply.len() <= runtime::RESPONSE_LIMIT, "base64 of 3 MiB fits SCF's response");
    let r: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(r["statusCode"], 200, "{}", &r.to_string()[..200]);
    let reply = invoke(8 * MIB).await;
    let r: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(r["statusCode"], 502, "{r}");
    let env: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(code(&env), 1027, "{env}");
}

async fn current_token(t: &TestApp) -> String {
    let r = t.call("qcloud.mimi.access_token", json!({"appid": APP})).await;
    r["returnData"]["access_token"].as_str().unwrap_or_else(|| panic!("{r}")).to_owned()
}

async fn a_streamed_upload_is_never_sent_twice(b: Backend) {
    let t = TestApp::with_routes(b, open_settings(), media_routes()).await;
    t.add_app(APP, SECRET).await;
    let url = t.serve_http().await;
    let http = reqwest::Client::new();
    let upload = |body: Vec<u8>| {
        http.post(format!("{url}/wechat/{APP}/cgi-bin/media/upload?type=image")).body(body).send()
    };
    // Prime the token, then invalidate it behind the server's back.
    let r: Value = upload(b"small".to_vec()).await.unwrap().json().await.unwrap();
    assert_eq!(r["received"], 5, "{r}");
    t.wx.invalidate(&current_token(&t).await);

    let before = t.wx.calls("/cgi-bin/media/upload");
    // Past WAFER_BODY_LIMIT (64 KiB): streamed, so it cannot be sent again. WeChat's 40001 is not handed on (an SDK
    // would re-send from a file it has already read): the caller is told to send the upload again.
    let big = patterned(MIB as usize);
    let resp = upload(big.clone()).await.unwrap();
    assert_eq!(resp.status(), 502);
    let r: Value = resp.json().await.unwrap();
    assert_eq!(r["returnCode"], 1005, "{r}");
    assert!(r["returnMessage"].as_str().unwrap().contains("send the upload again"), "{r}");
    assert_eq!(t.wx.calls("/cgi-bin/media/upload") - before, 1, "sent once, never re-sent half-read");
    // The failing token was refreshed meanwhile: the caller's next attempt succeeds.
    let r: Value = upload(big.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(r["received"], big.len() as u64, "{r}");
    assert_eq!(r["sha256"], hex::encode(Sha256::digest(&big)));

    // A small body is whole: a rejected token is refreshed and the call sent again.
    t.wx.invalidate(&current_token(&t).await);
    let r: Value = upload(b"again".to_vec()).await.unwrap().json().await.unwrap();
    assert_eq!(r["received"], 5, "retried with the fresh token: {r}");
}

both_backends!(envelope_and_scf_replies_are_capped, a_streamed_upload_is_never_sent_twice);

/// A download that takes longer than the header timeout (which also closes idle connections) arrives whole: the
/// request is in hand until its reply has been written out, not only until the reply began.
#[tokio::test]
async fn a_download_longer_than_the_header_timeout_arrives_whole() {
    let dir = tempfile::tempdir().unwrap();
    let wx = FakeWeChat::start_with(media_routes()).await;
    wx.register(APP, SECRET);
    run_ok(wafer(dir.path()).args(["app", "add", "--appid", APP, "--secret", SECRET]));
    let env = [
        ("WAFER_WECHAT_BASE_URL", wx.base_url.as_str()),
        ("WAFER_HEADER_TIMEOUT_MS", "1000"),
        ("WAFER_CALLER_AUTH", "off"),
    ];
    let (mut server, url) = spawn_server(dir.path(), &env, false).await;
    let size = 2 * MIB;
    let started = std::time::Instant::now();
    // 32 chunks, 80 ms apart: about 2.6 s, well past the 1 s header timeout.
    let r = reqwest::Client::new()
        .get(format!("{url}wechat/{APP}/cgi-bin/media/get?size={size}&length=1&pace_ms=80"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (n, intact) = download(r).await;
    assert!(started.elapsed() > Duration::from_millis(2_000), "{:?}", started.elapsed());
    assert_eq!(n, size, "every byte arrives");
    assert!(intact);
    assert!(terminate(&mut server).success());
}
