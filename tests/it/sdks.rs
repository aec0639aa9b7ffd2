//! Real WeChat SDKs from the registries, unchanged, against the real server: Python `wechatpy` 1.8.18, Node
//! `wechat-api` 1.35.1 and `co-wechat-api` 3.11.0 (pinned in `tests/sdk/`, installed and cached by
//! `scripts/sdks.sh`). Each drives the token host and the pass-through (`tests/sdk/*_drive.*`): a message with
//! Chinese text, user info with an emoji, a 200 KB binary reply byte for byte, a 3 MB upload, a login through the
//! token host, an invalidation mid-run (twelve callers, one refresh), a superseded token (one upstream call).
//! A driver that fails, or an SDK that cannot be installed, fails the test.

use crate::both_backends;
use crate::cli::{db_env, run_ok, spawn_server, terminate, wafer};
use crate::fake_wechat::{business_entry, count_call, FakeState, FakeWeChat};
use crate::helpers::token_host_token;
use crate::helpers::{id, open_settings, Backend, TestApp, TestDb};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wafer_scf::handlers::Settings;
use wafer_scf::store::AgentRecord;

const APP: &str = "wx_sdk_app";
const SECRET: &str = "sdk-app-secret";
const NICKNAME: &str = "小程序用户🙂";
const WECOM_CORP: &str = "ww_sdk_corp";
const WECOM_AGENT: &str = "1000005";
const WECOM_SECRET: &str = "sdk-agent-secret";

/// The fake's code image: 200 KB, deterministic, a PNG by its signature.
fn code_image() -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend((0..200 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    png
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The part named `name` of a multipart/form-data body.
fn multipart_part(headers: &HeaderMap, body: &[u8], name: &str) -> Option<Vec<u8>> {
    let ct = headers.get("content-type")?.to_str().ok()?;
    let boundary = ct.split("boundary=").nth(1)?.trim_matches('"');
    let delimiter = format!("--{boundary}");
    let mut rest = body;
    while let Some(at) = find(rest, delimiter.as_bytes()) {
        rest = &rest[at + delimiter.len()..];
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&rest[..head_end]);
        let content = &rest[head_end + 4..];
        let end = find(content, format!("\r\n{delimiter}").as_bytes())?;
        if head.contains(&format!("name=\"{name}\"")) {
            return Some(content[..end].to_vec());
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

type Q = Query<HashMap<String, String>>;

/// The business APIs the SDKs call, and two test hooks the drivers use (`/__test/invalidate`, `/__test/calls`).
fn sdk_routes() -> Router<Arc<FakeState>> {
    async fn custom_send(State(st): State<Arc<FakeState>>, Query(q): Q, body: Bytes) -> Response {
        if let Some(r) = business_entry(&st, &q).await {
            return r;
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Json(json!({"errcode": 0, "errmsg": "ok", "touser": body["touser"], "text": body["text"]["content"]}))
            .into_response()
    }
    async fn user_info(State(st): State<Arc<FakeState>>, Query(q): Q) -> Response {
        if let Some(r) = business_entry(&st, &q).await {
            return r;
        }
        Json(json!({"subscribe": 1, "openid": q.get("openid"), "nickname": NICKNAME})).into_response()
    }
    async fn image(State(st): State<Arc<FakeState>>, Query(q): Q) -> Response {
        if let Some(r) = business_entry(&st, &q).await {
            return r;
        }
        ([("content-type", "image/png")], code_image()).into_response()
    }
    async fn media_upload(
        State(st): State<Arc<FakeState>>,
        Query(q): Q,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        if let Some(r) = business_entry(&st, &q).await {
            return r;
        }
        match multipart_part(&headers, &body, "media") {
            Some(media) if !media.is_empty() => {
                Json(json!({"type": q.get("type"), "media_id": sha256_hex(&media), "created_at": 1}))
                    .into_response()
            }
            _ => Json(json!({"errcode": 41005, "errmsg": "media data missing"})).into_response(),
        }
    }
    /// WeCom's mini-program login: it carries a WeCom token (not the app's secret, as WeChat's does).
    async fn wecom_login(State(st): State<Arc<FakeState>>, Query(q): Q) -> Response {
        if let Some(r) = business_entry(&st, &q).await {
            return r;
        }
        Json(json!({"errcode": 0, "errmsg": "ok", "corpid": WECOM_CORP, "userid": q.get("js_code"),
            "session_key": "c2Vzc2lvbi1rZXktd2Vjb20="}))
        .into_response()
    }
    async fn invalidate(State(st): State<Arc<FakeState>>, Query(q): Q) -> Response {
        st.invalidate_stable(q.get("appid").map(String::as_str).unwrap_or_default());
        count_call(&st, "/__test/invalidate");
        Json(json!({"ok": true})).into_response()
    }
    async fn calls(State(st): State<Arc<FakeState>>, Query(q): Q) -> Response {
        let key = q.get("key").map(String::as_str).unwrap_or_default();
        Json(json!({"calls": st.calls(key)})).into_response()
    }
    Router::new()
        .route("/cgi-bin/message/custom/send", post(custom_send))
        .route("/cgi-bin/user/info", get(user_info))
        .route("/cgi-bin/wxaapp/createwxaqrcode", post(image))
        .route("/cgi-bin/media/get", get(image))
        .route("/cgi-bin/media/upload", post(media_upload))
        .route("/cgi-bin/miniprogram/jscode2session", get(wecom_login))
        .route("/__test/invalidate", post(invalidate))
        .route("/__test/calls", get(calls))
        .layer(DefaultBodyLimit::max(16 << 20))
}

/// Install (or find cached) the pinned SDKs; their directory.
fn sdks() -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/sdks.sh");
    let out = std::process::Command::new("bash").arg(script).output().unwrap();
    assert!(out.status.success(), "installing the SDKs failed:\n{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Run a driver to its end; its output on failure.
async fn drive(program: PathBuf, script: &str, cwd: &Path, env: Vec<(&'static str, String)>) -> String {
    let script = format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    let cwd = cwd.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(program).arg(script).current_dir(cwd).envs(env).output().unwrap()
    })
    .await
    .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("all ok"), "the driver failed:\n{text}");
    text
}

async fn real_sdks_work_unchanged(b: Backend) {
    let sdk_dir = tokio::task::spawn_blocking(sdks).await.unwrap();
    let db = TestDb::new(b).await;
    let dir = tempfile::tempdir().unwrap();
    if b == Backend::Mysql {
        run_ok(db_env(&mut wafer(dir.path()), &db).arg("migrate"));
    }
    let wx = FakeWeChat::start_with(sdk_routes()).await;
    wx.register(APP, SECRET);
    run_ok(db_env(&mut wafer(dir.path()), &db).args(["app", "add", "--appid", APP, "--secret", SECRET]));
    let key =
        run_ok(db_env(&mut wafer(dir.path()), &db).args(["key", "add", "--name", "sdk", "--apps", APP]));
    let key = String::from_utf8_lossy(&key.stdout).trim().to_owned();
    let env = [
        ("WAFER_DATABASE_URL", db.url.as_str()),
        ("WAFER_WECHAT_BASE_URL", &wx.base_url),
        ("WAFER_TOKEN_HOST", "1"),
    ];
    let (mut server, url) = spawn_server(dir.path(), &env, false).await;
    let vars = vec![
        ("WAFER_URL", url.clone()),
        ("FAKE_URL", wx.base_url.clone()),
        ("APPID", APP.to_owned()),
        ("SECRET", SECRET.to_owned()),
        ("CALLER_KEY", key),
        ("QR_SHA256", sha256_hex(&code_image())),
    ];

    let python = drive(sdk_dir.join("venv/bin/python"), "wechatpy_drive.py", dir.path(), vars.clone()).await;
    let node_path = sdk_dir.join("node_modules").to_string_lossy().into_owned();
    let mut node_vars = vars;
    node_vars.push(("NODE_PATH", node_path));
    let node = drive(PathBuf::from("node"), "node_drive.js", dir.path(), node_vars).await;
    // An SDK switched to the pass-through whose cache still holds a real token is told so, not relayed.
    let http = reqwest::Client::new();
    let token = &token_host_token(&url, APP, SECRET).await;
    let business = wx.calls("/business");
    let r = http
        .get(format!("{url}wechat/{APP}/cgi-bin/user/info?openid=o&access_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["returnCode"], 1022);
    assert_eq!(wx.calls("/business"), business, "nothing relayed");
    assert!(terminate(&mut server).success());

    // What WeChat saw: the SDKs' token fetches never reached it; each login went up once; three token fetches in all
    // (the first, and one after each invalidation, for all twelve callers at once).
    assert_eq!(wx.calls("/cgi-bin/token"), 0, "no SDK fetched a token from WeChat");
    assert_eq!(wx.calls("/__test/invalidate"), 2);
    assert_eq!(wx.calls("/cgi-bin/stable_token"), 3, "{python}\n{node}");
    for sdk in ["wechatpy", "co-wechat-api"] {
        assert_eq!(wx.code_calls(&format!("ok:o_sdk_login:{sdk}")), 1, "{sdk}'s login went up once");
    }
    for sdk in ["wechatpy", "co-wechat-api", "wechat-api"] {
        for mode in ["token host", "pass-through"] {
            assert!(
                format!("{python}{node}").contains(&format!("ok {sdk} {mode}: upload")),
                "{sdk} {mode}: the driver ran its upload"
            );
        }
    }
}

/// WeCom's equivalent of the login an SDK sends to the token host: `gettoken` with the agent's secret, then
/// `/cgi-bin/miniprogram/jscode2session` with that token — relayed with the current token and answered, never
/// refused with a token error (the SDK would refetch and loop).
async fn wecom_logins_pass_through_the_token_host(b: Backend) {
    let settings = Settings { token_host: true, ..open_settings() };
    let t = TestApp::with_routes(b, settings, sdk_routes()).await;
    t.wx.register(WECOM_CORP, WECOM_SECRET);
    t.store
        .registry
        .put_agent(&AgentRecord {
            corpid: id(WECOM_CORP),
            agentid: id(WECOM_AGENT),
            secret: WECOM_SECRET.into(),
            remark: String::new(),
            created_at: 0,
            updated_at: 0,
        })
        .await
        .unwrap();
    let url = t.serve_http().await;
    let http = reqwest::Client::new();
    let get = |u: String| {
        let http = http.clone();
        async move { http.get(u).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let token = get(format!("{url}/cgi-bin/gettoken?corpid={WECOM_CORP}&corpsecret={WECOM_SECRET}")).await;
    let token = token["access_token"].as_str().unwrap_or_else(|| panic!("{token}")).to_owned();
    let login = |token: String| {
        get(format!(
            "{url}/cgi-bin/miniprogram/jscode2session?access_token={token}&js_code=zhangsan&grant_type=authorization_code"
        ))
    };
    let r = login(token.clone()).await;
    assert_eq!((r["errcode"].as_i64(), r["userid"].as_str()), (Some(0), Some("zhangsan")), "{r}");
    assert_eq!(t.wx.calls("/business"), 1);
    assert_eq!(t.wx.calls("/cgi-bin/gettoken"), 1, "the SDK's token came from the central cache");

    // WeCom drops the token early: the login is relayed with a fresh one, the SDK's old token still names the corp.
    t.wx.invalidate(&token);
    let r = login(token).await;
    assert_eq!(r["userid"], "zhangsan", "{r}");
    assert_eq!(t.wx.calls("/cgi-bin/gettoken"), 2, "one refresh");
}

both_backends!(real_sdks_work_unchanged, wecom_logins_pass_through_the_token_host);
