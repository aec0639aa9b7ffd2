//! WeChat and WeCom token rules as documented, against the fake: WeCom's 45009 is a short frequency limit while
//! WeChat's blocks until midnight unless an operator unblocks the app; stable-token force mode goes through normal
//! mode first and is capped per app per day across processes; a re-fetched token that did not change keeps its
//! expiry; refusals name the IP to whitelist; a secondary host takes over when the primary is unreachable.

use crate::both_backends;
use crate::fake_wechat::FakeWeChat;
use crate::helpers::id;
use crate::helpers::{app_record, build, code, open_settings, Backend, TestApp, T0};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use wafer_scf::handlers::Settings;
use wafer_scf::registry::Registry;

const APP: &str = "wx_rules_app";
const STABLE: &str = "/cgi-bin/stable_token";
const CORP: &str = "ww_rules";
const AGENT: &str = "1000007";
const ADMIN: &str = "admin-token-for-rules-0123456789";

async fn app(b: Backend) -> TestApp {
    let settings = Settings { admin_token: Some(ADMIN.into()), ..open_settings() };
    let t = TestApp::with_settings(b, settings).await;
    t.add_app(APP, "rules-secret").await;
    t.wx.register(CORP, "agent-secret");
    let init = json!({"corpid": CORP, "agentid": AGENT, "agentsecret": "agent-secret", "admin_token": ADMIN});
    assert_eq!(code(&t.call("qcloud.work.initagent", init).await), 0);
    t
}

async fn token(t: &TestApp, para: Value) -> Value {
    t.call("qcloud.mimi.access_token", para).await
}

async fn wecom_token(t: &TestApp) -> Value {
    t.call("qcloud.work.access_token", json!({"corpid": CORP, "agentid": AGENT})).await
}

async fn wecom_45009_is_a_short_growing_window_and_wechat_45009_waits_for_an_unblock(b: Backend) {
    let t = app(b).await;
    t.wx.fail_next("/cgi-bin/gettoken", 45009, 2);
    let r = wecom_token(&t).await;
    assert_eq!(code(&r), 45009);
    assert!(r["returnMessage"].as_str().unwrap().contains("frequency"), "{r}");
    assert_eq!(code(&wecom_token(&t).await), 45009, "remembered");
    assert_eq!(t.wx.calls("/cgi-bin/gettoken"), 1);
    t.clock.advance(6); // past the first 5 s window
    assert_eq!(code(&wecom_token(&t).await), 45009);
    assert_eq!(t.wx.calls("/cgi-bin/gettoken"), 2);
    t.clock.advance(6); // the second window is 10 s
    assert_eq!(code(&wecom_token(&t).await), 45009);
    assert_eq!(t.wx.calls("/cgi-bin/gettoken"), 2, "the window grew");
    t.clock.advance(5);
    assert_eq!(code(&wecom_token(&t).await), 0, "a WeCom app is not down for the rest of the day");

    // WeChat's 45009 is the daily quota: blocked until midnight, or until the operator unblocks the app.
    t.wx.fail_next(STABLE, 45009, 1);
    assert_eq!(code(&token(&t, json!({"appid": APP})).await), 45009);
    t.clock.advance(600); // T0 is 23:06 in Beijing: still before the reset
    let r = token(&t, json!({"appid": APP})).await;
    assert_eq!(code(&r), 45009);
    assert!(r["returnMessage"].as_str().unwrap().contains("daily quota"), "{r}");
    assert_eq!(t.wx.calls(STABLE), 1);
    let reg = Registry { store: &t.store, creds: Some(&t.svc.deps.creds), now: T0, dry_run: false };
    reg.unblock_app(&id(APP)).await.unwrap();
    assert_eq!(code(&token(&t, json!({"appid": APP})).await), 0, "after clear_quota and an unblock");
    assert_eq!(t.wx.calls(STABLE), 2);
}

async fn stable_force_uses_normal_mode_first_and_a_daily_budget_across_processes(b: Backend) {
    let t = app(b).await;
    let first =
        token(&t, json!({"appid": APP})).await["returnData"]["access_token"].as_str().unwrap().to_owned();
    let force_calls = || t.wx.calls(&format!("{STABLE}|{APP}|force"));

    // The token was replaced behind our back: normal mode already hands out the new one, no force_refresh.
    t.wx.invalidate(&first);
    t.clock.advance(11); // past the cooldown after the first fetch
    let r = token(&t, json!({"appid": APP, "force": true, "access_token": first})).await;
    assert_eq!(code(&r), 0);
    let second = r["returnData"]["access_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert_eq!(force_calls(), 0, "normal mode first");

    // A second process on the same database shares the budget (10 a day by default).
    let other = Arc::new(build(t.store.clone(), &t.wx.base_url, t.clock.clone(), open_settings()));
    let mut current = second;
    let mut forced = 0;
    // Right after a fetch, a force naming the token is not honoured (the cooldown): the same token comes back.
    let r = token(&t, json!({"appid": APP, "force": true, "access_token": current})).await;
    assert_eq!(r["returnData"]["access_token"], current.as_str());
    assert_eq!(force_calls(), 0, "cooldown");
    for i in 0..12 {
        t.clock.advance(11);
        let para = json!({"appid": APP, "force": true, "access_token": current});
        let body =
            json!({"interface": {"interfaceName": "qcloud.mimi.access_token", "para": para}}).to_string();
        let svc = if i % 2 == 0 { &t.svc } else { &other };
        let r: Value =
            serde_json::from_slice(&svc.handle(body.as_bytes(), &Default::default()).await.to_bytes())
                .unwrap();
        if code(&r) == 1025 {
            assert!(r["returnMessage"].as_str().unwrap().contains("forced token refreshes"), "{r}");
            break;
        }
        assert_eq!(code(&r), 0, "{r}");
        current = r["returnData"]["access_token"].as_str().unwrap().to_owned();
        forced += 1;
    }
    assert_eq!(forced, 10, "the daily budget holds across both processes");
    assert_eq!(force_calls(), 10);
    // Normal callers are unaffected.
    assert_eq!(code(&token(&t, json!({"appid": APP})).await), 0);
    // The next Beijing day has a fresh budget.
    t.clock.set(wafer_scf::tokens::next_quota_reset(T0) + 61);
    let r = token(&t, json!({"appid": APP, "force": true, "access_token": current})).await;
    assert_eq!(code(&r), 0, "{r}");
    assert_eq!(force_calls(), 11);
}

async fn forced_refreshes_have_an_hourly_budget_too(b: Backend) {
    let t = app(b).await;
    let svc = wafer_scf::startup::ServiceBuilder::new(t.store.clone(), &t.wx.base_url)
        .clock(t.clock.clone())
        .settings(open_settings())
        .policy(wafer_scf::tokens::Policy { force_per_hour: 2, ..Default::default() })
        .build()
        .unwrap();
    let force = |current: String| {
        let body = json!({"interface": {"interfaceName": "qcloud.mimi.access_token",
            "para": {"appid": APP, "force": true, "access_token": current}}})
        .to_string();
        let svc = &svc;
        async move {
            serde_json::from_slice::<Value>(
                &svc.handle(body.as_bytes(), &Default::default()).await.to_bytes(),
            )
            .unwrap()
        }
    };
    let mut current =
        token(&t, json!({"appid": APP})).await["returnData"]["access_token"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        t.clock.advance(11);
        let r = force(current.clone()).await;
        assert_eq!(code(&r), 0, "{r}");
        current = r["returnData"]["access_token"].as_str().unwrap().to_owned();
    }
    t.clock.advance(11);
    let r = force(current.clone()).await;
    assert_eq!(code(&r), 1025, "two an hour: {r}");
    assert!(r["returnMessage"].as_str().unwrap().contains("an hour"), "{r}");
    // The next hour.
    t.clock.advance(3600 - 33);
    let r = force(current).await;
    assert_ne!(code(&r), 1025, "a new hour: {r}");
}

async fn a_refetched_token_that_did_not_change_keeps_its_expiry(b: Backend) {
    let t = app(b).await;
    t.wx.state.wecom_fresh_expiry.store(true, Ordering::SeqCst);
    let r = wecom_token(&t).await;
    let (tok, exp) = (r["returnData"]["access_token"].clone(), r["returnData"]["exp"].as_i64().unwrap());
    assert_eq!(exp, T0 + 7200);
    // Inside the refresh margin: WeCom hands back the same token with a full expires_in.
    t.clock.advance(7200 - 200);
    let r = wecom_token(&t).await;
    assert_eq!(r["returnData"]["access_token"], tok);
    assert_eq!(r["returnData"]["exp"].as_i64().unwrap(), T0 + 7200, "not believed good for two more hours");
    assert_eq!(t.wx.calls("/cgi-bin/gettoken"), 2);
}

async fn a_classic_app_out_of_token_quota_falls_back_to_stable_where_wechat_says_so(b: Backend) {
    let t = app(b).await;
    let mut classic = app_record("wx_rules_classic", "classic-secret");
    classic.token_mode = wafer_scf::store::TokenMode::Classic;
    t.add_app_with(classic).await;
    t.wx.fail_next("/cgi-bin/token", 45009, 1);
    let r = token(&t, json!({"appid": "wx_rules_classic"})).await;
    assert_eq!(code(&r), 0, "{r}");
    assert!(r["returnData"]["access_token"].as_str().unwrap().starts_with("stable-"), "{r}");
    assert_eq!((t.wx.calls("/cgi-bin/token"), t.wx.calls(STABLE)), (1, 1));
}

async fn refusals_name_the_ip_to_whitelist(b: Backend) {
    let t = app(b).await;
    t.wx.fail_next(STABLE, 40164, 1);
    let r = token(&t, json!({"appid": APP})).await;
    assert_eq!(code(&r), 40164);
    assert!(r["returnMessage"].as_str().unwrap().contains("add 203.0.113.9 to the IP whitelist"), "{r}");
    t.wx.fail_next("/cgi-bin/gettoken", 60020, 1);
    let r = wecom_token(&t).await;
    assert_eq!(code(&r), 40164);
    assert!(r["returnMessage"].as_str().unwrap().contains("203.0.113.9"), "{r}");
}

async fn a_secondary_host_answers_when_the_primary_is_unreachable(b: Backend) {
    let db = crate::helpers::TestDb::new(b).await;
    let store = db.store().await;
    store.registry.put_app(&app_record(APP, "rules-secret")).await.unwrap();
    let secondary = FakeWeChat::start().await;
    secondary.register(APP, "rules-secret");
    // A port nobody listens on as the primary.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let clock = Arc::new(wafer_scf::clock::ManualClock::new(T0));
    let svc = wafer_scf::startup::ServiceBuilder::new(store, &closed)
        .wechat_fallback(Some(&secondary.base_url))
        .upstream_timeouts(wafer_scf::wechat::UpstreamTimeouts {
            connect: Duration::from_millis(500),
            total: Duration::from_millis(500),
        })
        .clock(clock)
        .settings(open_settings())
        .build()
        .unwrap();
    let body = json!({"interface": {"interfaceName": "qcloud.mimi.access_token", "para": {"appid": APP}}});
    let r: Value = serde_json::from_slice(
        &svc.handle(body.to_string().as_bytes(), &Default::default()).await.to_bytes(),
    )
    .unwrap();
    assert_eq!(code(&r), 0, "{r}");
    assert_eq!(secondary.calls(STABLE), 1);
    let login = json!({"interface": {"interfaceName": "qcloud.cam.id_skey",
        "para": {"appid": APP, "code": secondary.code_for("fallback_user")}}});
    let r: Value = serde_json::from_slice(
        &svc.handle(login.to_string().as_bytes(), &Default::default()).await.to_bytes(),
    )
    .unwrap();
    assert_eq!(code(&r), 0, "logins fail over too: nothing reached the primary: {r}");
}

both_backends!(
    wecom_45009_is_a_short_growing_window_and_wechat_45009_waits_for_an_unblock,
    stable_force_uses_normal_mode_first_and_a_daily_budget_across_processes,
    a_refetched_token_that_did_not_change_keeps_its_expiry,
    forced_refreshes_have_an_hourly_budget_too,
    refusals_name_the_ip_to_whitelist,
    a_classic_app_out_of_token_quota_falls_back_to_stable_where_wechat_says_so,
    a_secondary_host_answers_when_the_primary_is_unreachable,
);
