//! The plain-HTTP side of token-free calls: `/wechat/{appid}/…` and `/wecom/{corpid}/{agentid}/…` over HTTP mode and
//! gateway events (WeChat's reply as it came: status, content type, bytes); key path limits (`--apis`);
//! `qcloud.cam.phone`; and the drop-in token host (`WAFER_TOKEN_HOST=1`) serving four SDK-style clients at once
//! with one upstream token fetch.

use crate::both_backends;
use crate::helpers::token_host_token;
use crate::helpers::{add_key, scope};
use crate::helpers::{code, open_settings, Backend, TestApp};
use base64::Engine;
use serde_json::{json, Value};
use wafer_scf::auth::CallerAuthMode;
use wafer_scf::handlers::Settings;

const APP: &str = "wx_pass_app";
const SECRET: &str = "pass-secret";
const STABLE: &str = "/cgi-bin/stable_token";

async fn pass_through_returns_wechat_replies_as_sent(b: Backend) {
    let t = TestApp::new(b).await;
    t.add_app(APP, SECRET).await;
    let url = t.serve_http().await;
    let http = reqwest::Client::new();

    // A binary reply: status, content type and bytes as WeChat sent them.
    let r = http
        .post(format!("{url}/wechat/{APP}/wxa/getwxacodeunlimit"))
        .json(&json!({"scene": "a=1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert!(r.bytes().await.unwrap().starts_with(b"\x89PNG"));

    // A JSON reply, with the body forwarded (the fake echoes `touser`), and a query forwarded.
    let r: Value = post_json(
        &http,
        format!("{url}/wechat/{APP}/cgi-bin/message/subscribe/send?lang=zh_CN"),
        &json!({"touser": "o_pass"}),
    )
    .await;
    assert_eq!(r, json!({"errcode": 0, "errmsg": "ok", "touser": "o_pass"}));
    assert_eq!(t.wx.calls(STABLE), 1, "one token for both calls");

    // A token invalidated behind the server's back: refreshed once, the call retried, no 40001 seen.
    let token = t.call("qcloud.mimi.access_token", json!({"appid": APP})).await["returnData"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    t.wx.invalidate(&token);
    let r: Value = post_json(
        &http,
        format!("{url}/wechat/{APP}/cgi-bin/message/subscribe/send"),
        &json!({"touser": "o_after"}),
    )
    .await;
    assert_eq!(r["errcode"], 0, "{r}");
    assert_eq!(t.wx.calls(STABLE), 2, "exactly one refresh");

    // Refusals are ours, with a status that says so and an envelope that says why.
    for (path, status) in [
        (format!("/wechat/{APP}/cgi-bin/token"), 400),
        (format!("/wechat/{APP}/sns/jscode2session"), 400),
        ("/wechat/wx_unknown_app/cgi-bin/message/subscribe/send".to_owned(), 404),
    ] {
        let r = http.post(format!("{url}{path}")).body("{}").send().await.unwrap();
        assert_eq!(r.status(), status, "{path}");
        let env: Value = r.json().await.unwrap();
        assert_ne!(code(&env), 0, "{path}: {env}");
    }
    let r = http.put(format!("{url}/wechat/{APP}/cgi-bin/message/subscribe/send")).send().await.unwrap();
    assert_eq!(r.status(), 400, "only GET and POST");
    // An SDK's own `access_token` (its caller key, in a keyed deployment) is never forwarded: the real token is.
    let r: Value = http
        .post(format!("{url}/wechat/{APP}/cgi-bin/message/subscribe/send?access_token=mine"))
        .json(&json!({"touser": "o_sdk"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["touser"], "o_sdk", "sent with the real token, not the SDK's: {r}");

    // WeCom: the agent's token.
    let admin = "admin-token-for-passthrough-0123";
    let t2 = TestApp::with_settings(b, Settings { admin_token: Some(admin.into()), ..open_settings() }).await;
    t2.wx.register("ww_pass", "agent-secret");
    let init =
        json!({"corpid": "ww_pass", "agentid": 1000002, "agentsecret": "agent-secret", "admin_token": admin});
    assert_eq!(code(&t2.call("qcloud.work.initagent", init).await), 0);
    let url2 = t2.serve_http().await;
    let r: Value = post_json(
        &http,
        format!("{url2}/wecom/ww_pass/1000002/cgi-bin/message/send"),
        &json!({"touser": "u1"}),
    )
    .await;
    assert_eq!(r["touser"], "u1", "{r}");
}

async fn pass_through_works_from_gateway_events(b: Backend) {
    use wafer_scf::scf::runtime::{self, Invocation};
    let t = TestApp::new(b).await;
    t.add_app(APP, SECRET).await;
    let event = |path: &str, body: &str| {
        json!({"requestContext": {"requestId": "gw-pass", "sourceIp": "203.0.113.7"}, "httpMethod": "POST",
            "path": path, "headers": {"content-type": "application/json"},
            "queryString": {"lang": "zh_CN"}, "body": body, "isBase64Encoded": false})
        .to_string()
        .into_bytes()
    };
    let invoke = |ev: Vec<u8>| {
        let inv = Invocation {
            request_id: "rt".into(),
            time_limit_ms: Some(3000),
            memory_limit_mb: None,
            event: ev,
        };
        let svc = t.svc.clone();
        async move { serde_json::from_slice::<Value>(&runtime::handle(&svc, &inv).await).unwrap() }
    };
    let r = invoke(event(&format!("/wechat/{APP}/wxa/getwxacodeunlimit"), r#"{"scene":"x"}"#)).await;
    assert_eq!(r["statusCode"], 200, "{r}");
    assert_eq!(r["isBase64Encoded"], true, "bytes travel base64-encoded: {r}");
    assert_eq!(r["headers"]["Content-Type"], "image/png");
    let png = base64::engine::general_purpose::STANDARD.decode(r["body"].as_str().unwrap()).unwrap();
    assert!(png.starts_with(b"\x89PNG"));

    let r = invoke(event(
        &format!("/release/wechat/{APP}/cgi-bin/message/subscribe/send"),
        r#"{"touser":"o_gw"}"#,
    ))
    .await;
    assert_eq!(r["statusCode"], 200, "{r}");
    assert_eq!(r["isBase64Encoded"], false);
    let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["touser"], "o_gw");
}

async fn caller_keys_may_be_limited_to_api_paths(b: Backend) {
    let t =
        TestApp::with_settings(b, Settings { caller_auth: CallerAuthMode::Credentials, ..open_settings() })
            .await;
    t.add_app(APP, SECRET).await;
    add_key(&t.store, "codes-only", "wk_codes_only_key_000000000001", scope(&[APP], &[], false, &["/wxa/"]))
        .await;
    add_key(&t.store, "anything", "wk_anything_key_00000000000002", scope(&[APP], &[], false, &[])).await;
    let url = t.serve_http().await;
    let http = reqwest::Client::new();
    let post = |path: &str, key: Option<&str>| {
        let mut req = http.post(format!("{url}/wechat/{APP}{path}")).json(&json!({"touser": "o"}));
        if let Some(k) = key {
            req = req.header("X-Wafer-Key", k);
        }
        req.send()
    };
    assert_eq!(post("/wxa/getwxacodeunlimit", None).await.unwrap().status(), 401, "a key is needed");
    assert_eq!(
        post("/wxa/getwxacodeunlimit", Some("wk_codes_only_key_000000000001")).await.unwrap().status(),
        200
    );
    let r = post("/cgi-bin/message/subscribe/send", Some("wk_codes_only_key_000000000001")).await.unwrap();
    assert_eq!(r.status(), 403, "outside the key's paths");
    assert_eq!(code(&r.json().await.unwrap()), 1023);
    let r = post("/cgi-bin/message/subscribe/send", Some("wk_anything_key_00000000000002")).await.unwrap();
    assert_eq!(r.status(), 200, "a key without limits may call any path");
    // `?key=` is ours: it is not forwarded to WeChat (which would not mind, but it is a secret).
    let r = http
        .post(format!("{url}/wechat/{APP}/wxa/getwxacodeunlimit?key=wk_codes_only_key_000000000001"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The envelope interface obeys the same limits.
    let meta = wafer_scf::request::RequestMeta {
        caller_key: Some("wk_codes_only_key_000000000001".into()),
        ..Default::default()
    };
    let call = |path: &str| {
        crate::helpers::envelope("qcloud.mimi.call", json!({"appid": APP, "path": path, "body": {}}))
            .to_string()
    };
    let env = t.svc.handle(call("/cgi-bin/message/subscribe/send").as_bytes(), &meta).await;
    assert_eq!(env.return_code, 1023);
    let env = t.svc.handle(call("/wxa/getwxacodeunlimit").as_bytes(), &meta).await;
    assert_eq!(env.return_code, 0);
    assert_eq!(t.wx.calls("/business"), 4, "refused calls never reached WeChat");

    // A key limited to API paths never receives a raw token or ticket (it could call any API with it); a
    // signature, which reveals no credential, stays allowed. A key without path limits gets the token.
    let iface = |name: &str, para: Value| crate::helpers::envelope(name, para).to_string();
    for name in ["qcloud.mimi.access_token", "qcloud.mimi.jsapi_ticket"] {
        let env = t.svc.handle(iface(name, json!({"appid": APP})).as_bytes(), &meta).await;
        assert_eq!(env.return_code, 1023, "{name}");
    }
    let sign = json!({"appid": APP, "url": "https://example.com/page"});
    let env = t.svc.handle(iface("qcloud.mimi.jsapi_signature", sign).as_bytes(), &meta).await;
    assert_ne!(env.return_code, 1023, "a signature is not a credential");
    let unlimited = wafer_scf::request::RequestMeta {
        caller_key: Some("wk_anything_key_00000000000002".into()),
        ..Default::default()
    };
    let env =
        t.svc.handle(iface("qcloud.mimi.access_token", json!({"appid": APP})).as_bytes(), &unlimited).await;
    assert_eq!(env.return_code, 0);

    // Dot segments are refused as written, never sent normalised (which would reach /cgi-bin/token).
    for path in ["/cgi-bin/./token", "/wxa/../cgi-bin/token", "/wxa//x", "/cgi-bin%2Ftoken"] {
        let r = post(path, Some("wk_anything_key_00000000000002")).await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let env = t.svc.handle(call(path).as_bytes(), &unlimited).await;
        assert_eq!(env.return_code, 1003, "{path}");
    }
}

async fn phone_numbers_come_from_the_code_of_a_live_session(b: Backend) {
    let t = TestApp::new(b).await;
    t.add_app(APP, SECRET).await;
    let s = t.login(APP, "o_phone").await;
    let phone = |code: &str, skey: &Value| {
        t.call("qcloud.cam.phone", json!({"id": s["id"], "skey": skey, "code": code}))
    };
    let r = phone("phone:13800138000", &s["skey"]).await;
    assert_eq!(code(&r), 0, "{r}");
    assert_eq!(r["returnData"]["phoneNumber"], "+8613800138000");
    assert_eq!(r["returnData"]["purePhoneNumber"], "13800138000");
    assert_eq!(r["returnData"]["countryCode"], "86");

    // The session's openid goes with the code: another user's code is refused by WeChat.
    let r = phone("phone-for:o_phone:13900139000", &s["skey"]).await;
    assert_eq!(r["returnData"]["purePhoneNumber"], "13900139000", "{r}");
    let r = phone("phone-for:o_someone_else:13900139000", &s["skey"]).await;
    assert_eq!(code(&r), 40029, "{r}");
    // The paid quota's exhaustion says so, and what to do.
    let r = phone("phone-quota", &s["skey"]).await;
    assert_eq!(code(&r), 45009, "{r}");
    assert!(r["returnMessage"].as_str().unwrap().contains("paid quota for phone-number verification"), "{r}");

    let r = phone("used-or-wrong", &s["skey"]).await;
    assert_eq!(code(&r), 40029, "WeChat's code refusal has its own code: {r}");
    assert!(r["returnMessage"].as_str().unwrap().contains("phone code"), "{r}");
    let r = phone("phone-other:13800138000", &s["skey"]).await;
    assert_eq!(code(&r), 60021, "a watermark of another app is refused: {r}");
    let before = t.wx.calls("/business");
    let r = phone("phone:13800138000", &json!("wrong-skey")).await;
    assert_eq!(code(&r), 60012, "{r}");
    t.clock.advance(31 * 86_400);
    let r = phone("phone:13800138000", &s["skey"]).await;
    assert_eq!(code(&r), 60011, "{r}");
    assert_eq!(t.wx.calls("/business"), before, "no WeChat call without a live session");
}

async fn post_json(http: &reqwest::Client, url: String, body: &Value) -> Value {
    http.post(url).json(body).send().await.unwrap().json().await.unwrap()
}

async fn get_json(http: &reqwest::Client, url: String) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

async fn the_token_host_serves_sdks_from_the_central_cache(b: Backend) {
    let t = TestApp::with_settings(b, Settings { token_host: true, ..open_settings() }).await;
    t.add_app(APP, SECRET).await;
    let url = t.serve_http().await;
    let http = reqwest::Client::new();
    let classic = format!("{url}/cgi-bin/token?grant_type=client_credential&appid={APP}&secret={SECRET}");
    let stable = |force: bool| {
        http.post(format!("{url}/cgi-bin/stable_token"))
            .json(&json!({"grant_type": "client_credential", "appid": APP, "secret": SECRET, "force_refresh": force}))
            .send()
    };

    // Four SDK-style clients at once, classic and stable: one upstream fetch, one token for all.
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (http, classic) = (http.clone(), classic.clone());
        let body = json!({"grant_type": "client_credential", "appid": APP, "secret": SECRET});
        let stable_url = format!("{url}/cgi-bin/stable_token");
        tasks.push(tokio::spawn(async move {
            let r: Value = if i % 2 == 0 {
                http.get(classic).send().await.unwrap().json().await.unwrap()
            } else {
                http.post(stable_url).json(&body).send().await.unwrap().json().await.unwrap()
            };
            r
        }));
    }
    let mut tokens = std::collections::HashSet::new();
    for task in tasks {
        let r = task.await.unwrap();
        assert!(r["expires_in"].as_i64().unwrap() > 0, "{r}");
        tokens.insert(r["access_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(tokens.len(), 1, "no token overwritten");
    assert_eq!(t.wx.calls(STABLE) + t.wx.calls("/cgi-bin/token"), 1, "one upstream token fetch");
    let token = tokens.into_iter().next().unwrap();

    // The fleet sees 40001 at once and forces: one refresh, everyone gets the same new token.
    t.clock.advance(60);
    let forced: Vec<Value> = futures_util::future::join_all(
        (0..16).map(|_| async { stable(true).await.unwrap().json().await.unwrap() }),
    )
    .await;
    let new: std::collections::HashSet<_> =
        forced.iter().map(|r| r["access_token"].as_str().unwrap()).collect();
    assert_eq!(new.len(), 1, "{forced:?}");
    assert!(!new.contains(token.as_str()), "forced past the cooldown: a new token");
    // One refresh, done as WeChat documents it: normal mode (same token back), then force_refresh.
    assert_eq!(t.wx.calls(STABLE), 3, "one refresh for 16 forced requests");
    let current = new.into_iter().next().unwrap().to_owned();

    // Wrong secret and unknown app: one answer, so nobody can tell which apps are registered; wrong grant type:
    // WeChat's own answer.
    let wrong =
        get_json(&http, format!("{url}/cgi-bin/token?grant_type=client_credential&appid={APP}&secret=nope"))
            .await;
    assert_eq!(wrong["errcode"], 40125, "{wrong}");
    let unknown =
        get_json(&http, format!("{url}/cgi-bin/token?grant_type=client_credential&appid=wx_nobody&secret=x"))
            .await;
    assert_eq!(unknown, wrong, "an unknown app is answered exactly like a wrong secret");
    let r =
        get_json(&http, format!("{url}/cgi-bin/token?grant_type=other&appid={APP}&secret={SECRET}")).await;
    assert_eq!(r["errcode"], 40002, "{r}");

    // Calls carrying an issued token pass through; the JS-SDK ticket comes from the cache.
    let r: Value = post_json(
        &http,
        format!("{url}/cgi-bin/message/subscribe/send?access_token={current}"),
        &json!({"touser": "o_sdk"}),
    )
    .await;
    assert_eq!(r["touser"], "o_sdk", "{r}");
    let r =
        get_json(&http, format!("{url}/cgi-bin/ticket/getticket?access_token={current}&type=jsapi")).await;
    assert_eq!(r["errcode"], 0, "{r}");
    assert!(r["ticket"].as_str().is_some_and(|s| !s.is_empty()));

    // Any other token is refused without a call: no open relay.
    let business = t.wx.calls("/business");
    for foreign in ["not-ours", "", "x%20y"] {
        let r: Value = post_json(
            &http,
            format!("{url}/cgi-bin/message/subscribe/send?access_token={foreign}"),
            &json!({}),
        )
        .await;
        assert_eq!(r["errcode"], 40001, "{foreign}: {r}");
    }
    assert_eq!(t.wx.calls("/business"), business, "nothing relayed");

    // The previous token is still ours within its overlap (an SDK that has not refetched yet): it says whose call it
    // is, and the call goes up with the current token at once — the forced refresh made WeChat drop the old one, and
    // no call is spent finding that out.
    let r: Value = post_json(
        &http,
        format!("{url}/cgi-bin/message/subscribe/send?access_token={token}"),
        &json!({"touser": "o_old"}),
    )
    .await;
    assert_eq!(r["touser"], "o_old", "{r}");
    assert_eq!(t.wx.calls("/business"), business + 1, "one call, with the current token");
    assert_eq!(t.wx.calls(STABLE), 3, "no refresh for a superseded token");
}

async fn the_token_host_is_off_unless_asked_for(b: Backend) {
    let t = TestApp::new(b).await;
    t.add_app(APP, SECRET).await;
    let url = t.serve_http().await;
    let r =
        reqwest::get(format!("{url}/cgi-bin/token?grant_type=client_credential&appid={APP}&secret={SECRET}"))
            .await
            .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(t.wx.calls(STABLE), 0);
}

both_backends!(
    pass_through_returns_wechat_replies_as_sent,
    pass_through_works_from_gateway_events,
    caller_keys_may_be_limited_to_api_paths,
    phone_numbers_come_from_the_code_of_a_live_session,
    the_token_host_serves_sdks_from_the_central_cache,
    the_token_host_is_off_unless_asked_for,
    bodies_secrets_and_tokens_stay_out_of_the_logs,
);

/// A real server's log names the path and WeChat's errcode — never a request or reply body, a secret or a token.
async fn bodies_secrets_and_tokens_stay_out_of_the_logs(b: Backend) {
    use crate::cli::{db_env, run_ok, spawn_server, terminate, wafer};
    let db = crate::helpers::TestDb::new(b).await;
    let dir = tempfile::tempdir().unwrap();
    if b == Backend::Mysql {
        run_ok(db_env(&mut wafer(dir.path()), &db).arg("migrate"));
    }
    let wx = crate::fake_wechat::FakeWeChat::start().await;
    wx.register(APP, "log-secret-XYZ");
    run_ok(db_env(&mut wafer(dir.path()), &db).args([
        "app",
        "add",
        "--appid",
        APP,
        "--secret",
        "log-secret-XYZ",
    ]));
    let env = [
        ("WAFER_DATABASE_URL", db.url.as_str()),
        ("WAFER_WECHAT_BASE_URL", &wx.base_url),
        ("WAFER_TOKEN_HOST", "1"),
        ("WAFER_CALLER_AUTH", "off"),
    ];
    let (mut child, base) = spawn_server(dir.path(), &env, true).await;
    let http = reqwest::Client::new();
    let marker = "BODY-MARKER-13800138000";
    let r: Value = post_json(
        &http,
        format!("{base}wechat/{APP}/cgi-bin/message/subscribe/send"),
        &json!({"touser": marker}),
    )
    .await;
    assert_eq!(r["touser"], marker);
    let r = crate::helpers::post_envelope(
        &http,
        &base,
        "qcloud.mimi.call",
        json!({"appid": APP, "path": "/cgi-bin/message/subscribe/send", "body": {"touser": marker}}),
    )
    .await;
    assert_eq!(r["returnData"]["touser"], marker);
    let token = token_host_token(&base, APP, "log-secret-XYZ").await;
    assert!(terminate(&mut child).success());
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("/cgi-bin/message/subscribe/send"), "the path is named: {logs}");
    for secret in [marker, "log-secret-XYZ", token.as_str()] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs: {logs}");
    }
}

/// A proxy in the environment is ignored, named once in the log without its URL: tokens and token-free calls
/// both go straight to WeChat (a dead proxy here would fail either), from one egress address.
#[tokio::test]
async fn upstream_calls_ignore_a_proxy_in_the_environment() {
    use crate::cli::{run_ok, spawn_server, terminate, wafer};
    let dir = tempfile::tempdir().unwrap();
    let wx = crate::fake_wechat::FakeWeChat::start().await;
    wx.register(APP, SECRET);
    run_ok(wafer(dir.path()).args(["app", "add", "--appid", APP, "--secret", SECRET]));
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let proxy = format!("http://proxyuser:proxy-pw-XYZ@127.0.0.1:{dead}");
    let env = [
        ("WAFER_WECHAT_BASE_URL", wx.base_url.as_str()),
        ("WAFER_CALLER_AUTH", "off"),
        ("HTTPS_PROXY", proxy.as_str()),
        ("HTTP_PROXY", proxy.as_str()),
        ("ALL_PROXY", proxy.as_str()),
    ];
    let (mut child, base) = spawn_server(dir.path(), &env, true).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let r =
        crate::helpers::post_envelope(&http, &base, "qcloud.mimi.access_token", json!({"appid": APP})).await;
    assert_eq!(code(&r), 0, "the token is fetched straight: {r}");
    let r = crate::helpers::post_envelope(
        &http,
        &base,
        "qcloud.mimi.call",
        json!({"appid": APP, "path": "/cgi-bin/message/subscribe/send", "body": {"touser": "o1"}}),
    )
    .await;
    assert_eq!(code(&r), 0, "the call goes straight: {r}");
    assert_eq!(r["returnData"]["touser"], "o1");
    assert!(terminate(&mut child).success());
    let logs = String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned();
    assert!(logs.contains("HTTPS_PROXY") && logs.contains("ignored"), "the proxy is named: {logs}");
    assert!(!logs.contains("proxy-pw-XYZ"), "the proxy's URL stays out of the logs: {logs}");
}
