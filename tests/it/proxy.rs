//! Token-free WeChat calls: a backend calls WeChat / WeCom through wafer-scf and never handles a token; JSON and
//! binary replies come back as WeChat sent them; a token invalidated behind the server's back while 64 calls run
//! costs one refresh and surfaces no 40001; paths that issue credentials are refused; scoping as for tokens.

use crate::both_backends;
use crate::helpers::{code, open_settings, Backend, TestApp};
use base64::Engine;
use serde_json::{json, Value};
use wafer_scf::handlers::Settings;

const APP: &str = "wx_proxy_app";
const STABLE: &str = "/cgi-bin/stable_token";

async fn token_free_calls_return_what_wechat_sent(b: Backend) {
    let t = TestApp::new(b).await;
    t.add_app(APP, "proxy-secret").await;
    let r = t
        .call(
            "qcloud.mimi.call",
            json!({"appid": APP, "path": "/cgi-bin/message/subscribe/send", "body": {"touser": "o_someone", "template_id": "t"}}),
        )
        .await;
    assert_eq!(code(&r), 0, "{r}");
    assert_eq!(
        r["returnData"],
        json!({"errcode": 0, "errmsg": "ok", "touser": "o_someone"}),
        "as WeChat sent it"
    );

    let r = t
        .call(
            "qcloud.mimi.call",
            json!({"appid": APP, "path": "/wxa/getwxacodeunlimit", "body": {"scene": "a=1"}}),
        )
        .await;
    assert_eq!(code(&r), 0, "{r}");
    assert_eq!(r["returnData"]["content_type"], "image/png");
    let png = base64::engine::general_purpose::STANDARD
        .decode(r["returnData"]["data_base64"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    assert_eq!(t.wx.calls(STABLE), 1, "one token for both calls");

    // WeCom: the agent's token.
    t.wx.register("ww_proxy", "agent-secret");
    let admin = "admin-token-for-proxy-0123456789";
    let settings = Settings { admin_token: Some(admin.into()), ..open_settings() };
    let t2 = TestApp::with_settings(b, settings).await;
    t2.wx.register("ww_proxy", "agent-secret");
    let init = json!({"corpid": "ww_proxy", "agentid": 1000002, "agentsecret": "agent-secret", "admin_token": admin});
    assert_eq!(code(&t2.call("qcloud.work.initagent", init).await), 0);
    let r = t2
        .call("qcloud.work.call", json!({"corpid": "ww_proxy", "agentid": 1000002, "path": "/cgi-bin/message/send", "body": {"touser": "u1"}}))
        .await;
    assert_eq!(code(&r), 0, "{r}");
    assert_eq!(r["returnData"]["touser"], "u1");

    // Paths that issue credentials or need the secret, a token in the query, odd paths: refused before WeChat.
    for (path, query) in [
        ("/cgi-bin/token", json!({})),
        ("/cgi-bin/stable_token", json!({})),
        ("/sns/jscode2session", json!({})),
        ("/sns/oauth2/access_token", json!({})),
        ("/cgi-bin/message/subscribe/send", json!({"access_token": "mine"})),
        ("/wxa/../cgi-bin/token", json!({})),
        ("wxa/getwxacode", json!({})),
    ] {
        let r = t.call("qcloud.mimi.call", json!({"appid": APP, "path": path, "query": query})).await;
        assert_eq!(code(&r), 1003, "{path}: {r}");
    }
}

async fn an_invalidated_token_costs_one_refresh_for_64_concurrent_calls(b: Backend) {
    let t = TestApp::new(b).await;
    t.add_app(APP, "proxy-secret").await;
    let first = t.call("qcloud.mimi.access_token", json!({"appid": APP})).await["returnData"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Another party refreshes behind the server's back: the cached token is now invalid at WeChat.
    t.wx.invalidate(&first);
    t.clock.advance(11); // past the force cooldown (the refresh below is an upstream rejection anyway)
    let mut tasks = Vec::new();
    for i in 0..64 {
        let svc = t.svc.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"interface": {"interfaceName": "qcloud.mimi.call",
                "para": {"appid": APP, "path": "/cgi-bin/message/subscribe/send", "body": {"touser": format!("o{i}")}}}});
            let env = svc.handle(body.to_string().as_bytes(), &Default::default()).await;
            serde_json::from_slice::<Value>(&env.to_bytes()).unwrap()
        }));
    }
    for task in tasks {
        let r = task.await.unwrap();
        assert_eq!(code(&r), 0, "{r}");
        assert_eq!(r["returnData"]["errcode"], 0, "no call surfaces 40001: {r}");
    }
    assert_eq!(t.wx.calls(STABLE), 2, "exactly one refresh after the invalidation");
}

async fn proxied_calls_need_a_key_covering_the_app(b: Backend) {
    let settings = Settings { caller_auth: wafer_scf::auth::CallerAuthMode::Credentials, ..open_settings() };
    let t = TestApp::with_settings(b, settings).await;
    t.add_app(APP, "proxy-secret").await;
    let r = t
        .call(
            "qcloud.mimi.call",
            json!({"appid": APP, "path": "/cgi-bin/message/subscribe/send", "body": {}}),
        )
        .await;
    assert_eq!(code(&r), 1021, "{r}");
    assert_eq!(t.wx.calls("/business"), 0);
}

both_backends!(
    token_free_calls_return_what_wechat_sent,
    an_invalidated_token_costs_one_refresh_for_64_concurrent_calls,
    proxied_calls_need_a_key_covering_the_app,
);
