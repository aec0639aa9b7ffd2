//! Access tokens, tickets and JS-SDK signatures through the dispatcher, on both backends: caching, single-flight,
//! refresh ahead of expiry on injected time, force semantics, compare-then-expire on tickets, error classes,
//! quotas and budgets, WeCom agents and the admin credential.

use crate::both_backends;
use crate::faulty::Faulty;
use crate::helpers::id;
use crate::helpers::{app_record, code, Backend, TestApp, T0};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use wafer_scf::handlers::Settings;
use wafer_scf::request::RequestMeta;
use wafer_scf::store::TokenMode;

const APP: &str = "wx_cred_app";
const SECRET: &str = "cred-secret-123";
const STABLE: &str = "/cgi-bin/stable_token";
const CORP: &str = "ww_corp_1";
const AGENT: &str = "1000002";
const AGENT_SECRET: &str = "agent-secret-abc";
const ADMIN: &str = "admin-token-for-tests-0123456789";

async fn app(b: Backend) -> TestApp {
    let settings = Settings { admin_token: Some(ADMIN.into()), ..crate::helpers::open_settings() };
    let t = TestApp::with_settings(b, settings).await;
    t.add_app(APP, SECRET).await;
    t
}

async fn token(t: &TestApp, para: Value) -> Value {
    t.call("qcloud.mimi.access_token", para).await
}

async fn access_token_is_fetched_once_then_cached_and_refreshed_ahead_of_expiry(b: Backend) {
    let t = app(b).await;
    let r = token(&t, json!({"appid": APP})).await;
    assert_eq!(code(&r), 0, "{r}");
    assert_eq!(r["returnMessage"], "NEW_TOKEN_SUCCESS");
    let keys: Vec<&str> = r["returnData"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["appid", "access_token", "exp"]);
    assert_eq!(r["returnData"]["exp"], T0 + 7200);
    let first = r["returnData"]["access_token"].clone();

    for _ in 0..5 {
        let r = token(&t, json!({"appid": APP, "force": "false"})).await;
        assert_eq!(r["returnMessage"], "OLD_TOKEN_SUCCESS");
        assert_eq!(r["returnData"]["access_token"], first);
    }
    assert_eq!(t.wx.calls(STABLE), 1);

    // Still valid but inside the 5-minute margin: refreshed ahead of expiry (injected time, no sleeping).
    t.clock.advance(7200 - 299);
    let r = token(&t, json!({"appid": APP})).await;
    assert_eq!(r["returnMessage"], "NEW_TOKEN_SUCCESS");
    assert_eq!(t.wx.calls(STABLE), 2);
    // A stable token inside its window comes back the same, with its remaining lifetime.
    assert_eq!(r["returnData"]["access_token"], first);
}

async fn classic_mode_uses_cgi_bin_token(b: Backend) {
    let t = app(b).await;
    let mut a = app_record("wx_classic", "classic-secret");
    a.token_mode = TokenMode::Classic;
    t.add_app_with(a).await;
    let r = token(&t, json!({"appid": "wx_classic"})).await;
    assert_eq!(code(&r), 0, "{r}");
    assert!(r["returnData"]["access_token"].as_str().unwrap().starts_with("classic-"));
    assert_eq!(t.wx.calls("/cgi-bin/token"), 1);
    assert_eq!(t.wx.calls(STABLE), 0);
}

async fn concurrent_callers_in_one_process_cause_one_fetch(b: Backend) {
    let t = app(b).await;
    t.wx.delay(STABLE, std::time::Duration::from_millis(200), 1);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let svc = t.svc.clone();
        tasks.push(tokio::spawn(async move {
            let body =
                json!({"interface": {"interfaceName": "qcloud.mimi.access_token", "para": {"appid": APP}}});
            let env = svc.handle(body.to_string().as_bytes(), &RequestMeta::default()).await;
            assert_eq!(env.return_code, 0, "{}", env.return_message);
            env.return_data.to_value()["access_token"].as_str().unwrap().to_owned()
        }));
    }
    let mut tokens = std::collections::HashSet::new();
    for task in tasks {
        tokens.insert(task.await.unwrap());
    }
    assert_eq!(tokens.len(), 1, "every caller gets the same token");
    assert_eq!(t.wx.calls(STABLE), 1, "exactly one upstream fetch");
}

async fn a_burst_of_force_calls_refreshes_at_most_once(b: Backend) {
    let t = app(b).await;
    let old =
        token(&t, json!({"appid": APP})).await["returnData"]["access_token"].as_str().unwrap().to_owned();
    t.clock.advance(60);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let svc = t.svc.clone();
        let old = old.clone();
        tasks.push(tokio::spawn(async move {
            // Half name the bad token, half do not.
            let para = if i % 2 == 0 {
                json!({"appid": APP, "force": true, "access_token": old})
            } else {
                json!({"appid": APP, "force": "1"})
            };
            let body = json!({"interface": {"interfaceName": "qcloud.mimi.access_token", "para": para}});
            let env = svc.handle(body.to_string().as_bytes(), &RequestMeta::default()).await;
            assert_eq!(env.return_code, 0, "{}", env.return_message);
            env.return_data.to_value()["access_token"].as_str().unwrap().to_owned()
        }));
    }
    let mut tokens = std::collections::HashSet::new();
    for task in tasks {
        tokens.insert(task.await.unwrap());
    }
    assert_eq!(t.wx.calls(&format!("{STABLE}|{APP}|force")), 1, "one forced refresh for the whole burst");
    assert_eq!(tokens.len(), 1, "everyone got the new token");
    assert!(!tokens.contains(&old));

    // A force naming a value that is no longer current serves the current one without calling upstream.
    let r = token(&t, json!({"appid": APP, "force": true, "access_token": old})).await;
    assert_eq!(r["returnMessage"], "OLD_TOKEN_SUCCESS");
    // A force naming nothing inside the cooldown does not refresh either.
    let r = token(&t, json!({"appid": APP, "force": true})).await;
    assert_eq!(r["returnMessage"], "OLD_TOKEN_SUCCESS");
    // The first fetch, the burst's normal-mode call (which handed back the bad token), its one forced call.
    assert_eq!(t.wx.calls(STABLE), 3);
}

async fn a_ticket_fetch_rejected_for_the_token_refreshes_it_once_and_retries(b: Backend) {
    let t = app(b).await;
    let tok =
        token(&t, json!({"appid": APP})).await["returnData"]["access_token"].as_str().unwrap().to_owned();
    t.wx.invalidate(&tok);
    let r = t.call("qcloud.mimi.jsapi_ticket", json!({"appid": APP})).await;
    assert_eq!(code(&r), 0, "{r}");
    assert_eq!(r["returnMessage"], "NEW_TICKET_SUCCESS");
    let keys: Vec<&str> = r["returnData"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["appid", "ticket", "exp"]);
    assert_eq!(t.wx.calls("/cgi-bin/ticket/getticket"), 2, "failed once, retried once");
    // WeChat's normal mode already hands out a new token once the old one is invalid: no force_refresh needed.
    assert_eq!(t.wx.calls(STABLE), 2, "the token was refreshed exactly once");
    assert_eq!(t.wx.calls(&format!("{STABLE}|{APP}|force")), 0, "normal mode first");
    let new_tok =
        token(&t, json!({"appid": APP})).await["returnData"]["access_token"].as_str().unwrap().to_owned();
    assert_ne!(new_tok, tok);
    assert!(t.wx.token_valid(&new_tok));

    // A ticket that keeps failing after the retry is reported, not looped on.
    let t2 = app(b).await;
    t2.wx.fail_next("/cgi-bin/ticket/getticket", 40001, 5);
    let r = t2.call("qcloud.mimi.jsapi_ticket", json!({"appid": APP})).await;
    assert_eq!(code(&r), 40014, "{r}");
    assert_eq!(t2.wx.calls("/cgi-bin/ticket/getticket"), 2);
}

async fn jsapi_signature_signs_with_the_managed_ticket(b: Backend) {
    let t = app(b).await;
    let ticket = t.call("qcloud.mimi.jsapi_ticket", json!({"appid": APP})).await["returnData"]["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = t
        .call("qcloud.mimi.jsapi_signature", json!({"appid": APP, "url": "https://example.com/page?a=1#frag", "noncestr": "Wm3WZYTPz0wzccnW", "timestamp": "1414587457"}))
        .await;
    assert_eq!(code(&r), 0, "{r}");
    let d = &r["returnData"];
    let keys: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["appId", "timestamp", "nonceStr", "signature", "url"]);
    assert_eq!(d["url"], "https://example.com/page?a=1");
    assert_eq!(d["timestamp"], 1414587457);
    let expected = wafer_scf::crypto::sha1_hex(
        format!("jsapi_ticket={ticket}&noncestr=Wm3WZYTPz0wzccnW&timestamp=1414587457&url=https://example.com/page?a=1").as_bytes(),
    );
    assert_eq!(d["signature"], expected);
    assert!(!r.to_string().contains(&ticket), "the ticket never leaves the server");

    let r = t.call("qcloud.mimi.jsapi_signature", json!({"appid": APP, "url": "https://example.com/"})).await;
    let nonce = r["returnData"]["nonceStr"].as_str().unwrap();
    assert_eq!(nonce.len(), 16);
    assert_eq!(r["returnData"]["timestamp"], T0);
    for bad in ["ftp://x", "javascript:alert(1)", ""] {
        let r = t.call("qcloud.mimi.jsapi_signature", json!({"appid": APP, "url": bad})).await;
        assert_eq!(code(&r), 1003, "{bad}");
    }
    assert_eq!(t.wx.calls("/cgi-bin/ticket/getticket"), 1);
}

async fn init_agent(t: &TestApp, secret: &str) -> Value {
    t.call("qcloud.work.initagent", json!({"corpid": CORP, "agentid": AGENT, "agentsecret": secret, "remark": "OA app", "admin_token": ADMIN})).await
}

async fn wecom_tokens_tickets_and_signatures(b: Backend) {
    let t = app(b).await;
    t.wx.register(CORP, &format!("{AGENT_SECRET},second-secret"));
    let r = init_agent(&t, AGENT_SECRET).await;
    assert_eq!(code(&r), 0, "{r}");
    assert_eq!(r["returnMessage"], "INIT_APPINFO_SUCCESS");
    assert_eq!(r["returnData"], "");

    let para = json!({"corpid": CORP, "agentid": 1000002});
    let r = t.call("qcloud.work.access_token", para.clone()).await;
    assert_eq!(code(&r), 0, "{r}");
    let keys: Vec<&str> = r["returnData"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["corpid", "agentid", "access_token", "exp"]);
    assert_eq!(r["returnData"]["agentid"], AGENT);
    let wtok = r["returnData"]["access_token"].as_str().unwrap().to_owned();

    let r = t.call("qcloud.work.ticket", para.clone()).await;
    assert_eq!(code(&r), 0, "{r}");
    assert_eq!(r["returnMessage"], "NEW_TICKET_SUCCESS");
    let corp_ticket = r["returnData"]["ticket"].as_str().unwrap().to_owned();
    let r = t.call("qcloud.work.agent.ticket", para.clone()).await;
    assert_eq!(code(&r), 0, "{r}");
    assert_eq!(r["returnMessage"], "NEW_AGENT_TICKET_SUCCESS");
    let keys: Vec<&str> = r["returnData"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["corpid", "agentid", "agent_ticket", "exp"]);
    let agent_ticket = r["returnData"]["agent_ticket"].as_str().unwrap().to_owned();
    assert_ne!(corp_ticket, agent_ticket, "the agent ticket is its own");
    assert_eq!(t.wx.calls("/cgi-bin/gettoken"), 1, "both tickets used the one cached token");

    for (ty, ticket) in [("config", &corp_ticket), ("agent_config", &agent_ticket)] {
        let r = t
            .call("qcloud.work.jsapi_signature", json!({"corpid": CORP, "agentid": AGENT, "url": "https://oa.example.com/x", "noncestr": "n1", "timestamp": 100, "type": ty}))
            .await;
        assert_eq!(code(&r), 0, "{r}");
        assert_eq!(r["returnData"]["appId"], CORP);
        let expected = wafer_scf::crypto::jsapi_signature(ticket, "n1", 100, "https://oa.example.com/x");
        assert_eq!(r["returnData"]["signature"], expected, "{ty}");
    }
    let r = t
        .call(
            "qcloud.work.jsapi_signature",
            json!({"corpid": CORP, "agentid": AGENT, "url": "https://x/", "type": "other"}),
        )
        .await;
    assert_eq!(code(&r), 1003);

    // Replacing the secret drops the cached token and tickets.
    let r = init_agent(&t, "second-secret").await;
    assert_eq!(code(&r), 0);
    let r = t.call("qcloud.work.access_token", para.clone()).await;
    assert_eq!(r["returnMessage"], "NEW_TOKEN_SUCCESS");
    assert_ne!(r["returnData"]["access_token"], json!(wtok));
    assert_eq!(t.wx.calls("/cgi-bin/gettoken"), 2);

    // An unknown agent or app is NO_APPID, and leaves nothing behind: no credential row, no upstream call.
    let r = t.call("qcloud.work.access_token", json!({"corpid": CORP, "agentid": "999"})).await;
    assert_eq!(code(&r), 1012);
    let before = t.wx.calls(STABLE);
    for i in 0..20 {
        let r = token(&t, json!({"appid": format!("wx_unknown_{i}")})).await;
        assert_eq!(code(&r), 1012);
        let r = t.call("qcloud.mimi.jsapi_ticket", json!({"appid": format!("wx_unknown_{i}")})).await;
        assert_eq!(code(&r), 1012);
    }
    assert_eq!(t.wx.calls(STABLE), before);
    let rows = t.store.credentials.list_credentials().await.unwrap();
    assert!(rows.iter().all(|r| !r.key.contains("unknown") && !r.key.contains(":999")), "{rows:?}");
}

async fn initagent_needs_the_admin_token(b: Backend) {
    let t = app(b).await;
    let para = |tok: Option<&str>| {
        let mut p = json!({"corpid": CORP, "agentid": AGENT, "agentsecret": "s", "remark": "r"});
        if let Some(tok) = tok {
            p["admin_token"] = json!(tok);
        }
        p
    };
    assert_eq!(code(&t.call("qcloud.work.initagent", para(None)).await), 1024);
    assert_eq!(code(&t.call("qcloud.work.initagent", para(Some("wrong"))).await), 1024);
    assert!(
        t.store.registry.get_agent(&id(CORP), &id(AGENT)).await.unwrap().is_none(),
        "nothing written without the admin token"
    );
    // Header form (X-Wafer-Admin-Token) through the request metadata.
    let body = json!({"interface": {"interfaceName": "qcloud.work.initagent", "para": para(None)}});
    let meta = RequestMeta { admin_token: Some(ADMIN.into()), ..Default::default() };
    assert_eq!(t.svc.handle(body.to_string().as_bytes(), &meta).await.return_code, 0);
    assert_eq!(code(&t.call("qcloud.work.initagent", para(Some(ADMIN))).await), 0);

    // With no admin token configured, admin interfaces are off.
    let off = TestApp::new(b).await;
    let r = off.call("qcloud.work.initagent", para(Some(ADMIN))).await;
    assert_eq!(code(&r), 1024);
    assert!(r["returnMessage"].as_str().unwrap().contains("disabled"));
}

async fn upstream_errors_are_classified_retried_or_blocked(b: Backend) {
    let t = app(b).await;
    for (errcode, want) in [(40164, 40164), (40013, 40013), (40125, 40013), (45011, 45011)] {
        // Past the window in which the previous failure is remembered.
        t.clock.advance(60);
        let before = t.wx.calls(STABLE);
        t.wx.fail_next(STABLE, errcode, 1);
        let r = token(&t, json!({"appid": APP})).await;
        assert_eq!(code(&r), want, "errcode {errcode}: {r}");
        assert_eq!(t.wx.calls(STABLE), before + 1, "errcode {errcode} is not retried");
    }
    let r = {
        t.clock.advance(60);
        t.wx.fail_next(STABLE, 40164, 1);
        token(&t, json!({"appid": APP})).await
    };
    assert!(r["returnMessage"].as_str().unwrap().contains("whitelist"), "{r}");
    assert!(!r["returnMessage"].as_str().unwrap().contains("scripted"), "no upstream errmsg");

    // -1 is retried with backoff, a bounded number of times.
    t.clock.advance(60);
    let before = t.wx.calls(STABLE);
    t.wx.fail_next(STABLE, -1, 2);
    assert_eq!(code(&token(&t, json!({"appid": APP})).await), 0);
    assert_eq!(t.wx.calls(STABLE), before + 3);

    let t = app(b).await;
    t.wx.fail_next(STABLE, -1, 10);
    assert_eq!(code(&token(&t, json!({"appid": APP})).await), 1005);
    assert_eq!(t.wx.calls(STABLE), 3);

    // 45009: no more upstream calls for this app until the quota resets.
    let t = app(b).await;
    t.wx.fail_next(STABLE, 45009, 1);
    assert_eq!(code(&token(&t, json!({"appid": APP})).await), 45009);
    assert_eq!(code(&token(&t, json!({"appid": APP})).await), 45009);
    assert_eq!(t.wx.calls(STABLE), 1, "blocked after the quota refusal");
    t.clock.set(wafer_scf::tokens::next_quota_reset(T0) + 1);
    assert_eq!(code(&token(&t, json!({"appid": APP})).await), 0, "calls resume after the reset");
    assert_eq!(t.wx.calls(STABLE), 2);
}

async fn ticket_fetches_respect_the_hourly_budget(b: Backend) {
    let t = app(b).await;
    let mut last = String::new();
    for _ in 0..100 {
        let r = t.call("qcloud.mimi.jsapi_ticket", json!({"appid": APP, "force": true})).await;
        assert_eq!(code(&r), 0, "{r}");
        last = r["returnData"]["ticket"].as_str().unwrap().to_owned();
        t.clock.advance(31);
    }
    let calls = t.wx.calls("/cgi-bin/ticket/getticket");
    assert!(calls <= 100, "{calls}");
    let r = t.call("qcloud.mimi.jsapi_ticket", json!({"appid": APP, "force": true})).await;
    assert_eq!(code(&r), 0, "{r}");
    assert_eq!(r["returnData"]["ticket"], json!(last), "budget used up: the current ticket is served");
    assert_eq!(t.wx.calls("/cgi-bin/ticket/getticket"), calls, "no call beyond the budget");
}

both_backends!(
    access_token_is_fetched_once_then_cached_and_refreshed_ahead_of_expiry,
    classic_mode_uses_cgi_bin_token,
    concurrent_callers_in_one_process_cause_one_fetch,
    a_burst_of_force_calls_refreshes_at_most_once,
    a_ticket_fetch_rejected_for_the_token_refreshes_it_once_and_retries,
    jsapi_signature_signs_with_the_managed_ticket,
    wecom_tokens_tickets_and_signatures,
    initagent_needs_the_admin_token,
    upstream_errors_are_classified_retried_or_blocked,
    ticket_fetches_respect_the_hourly_budget,
);

#[tokio::test]
async fn a_credential_storage_failure_is_change_token_err() {
    let t = app(Backend::Sqlite).await;
    t.store
        .registry
        .put_agent(&wafer_scf::store::AgentRecord {
            corpid: CORP.parse().unwrap(),
            agentid: AGENT.parse().unwrap(),
            secret: AGENT_SECRET.into(),
            remark: String::new(),
            created_at: T0,
            updated_at: T0,
        })
        .await
        .unwrap();
    let faulty = Faulty::new(t.store.clone());
    faulty.credentials.store(true, Ordering::SeqCst);
    let svc = crate::helpers::build(
        faulty.storage(),
        &t.wx.base_url,
        t.clock.clone(),
        crate::helpers::open_settings(),
    );
    let body = json!({"interface": {"interfaceName": "qcloud.mimi.access_token", "para": {"appid": APP}}});
    let env = svc.handle(body.to_string().as_bytes(), &RequestMeta::default()).await;
    assert_eq!(env.return_code, 1014);
    let body = json!({"interface": {"interfaceName": "qcloud.work.agent.ticket", "para": {"corpid": CORP, "agentid": AGENT}}});
    assert_eq!(svc.handle(body.to_string().as_bytes(), &RequestMeta::default()).await.return_code, 1016);
}

#[tokio::test]
async fn a_cached_token_is_served_from_memory_without_touching_storage() {
    let t = app(Backend::Sqlite).await;
    let faulty = Faulty::new(t.store.clone());
    let svc = crate::helpers::build(
        faulty.storage(),
        &t.wx.base_url,
        t.clock.clone(),
        crate::helpers::open_settings(),
    );
    let body = json!({"interface": {"interfaceName": "qcloud.mimi.access_token", "para": {"appid": APP}}})
        .to_string();
    let first = svc.handle(body.as_bytes(), &RequestMeta::default()).await;
    assert_eq!(first.return_code, 0);
    // Storage now fails every credential operation: hits must still be answered, from memory.
    faulty.credentials.store(true, Ordering::SeqCst);
    for _ in 0..100 {
        let env = svc.handle(body.as_bytes(), &RequestMeta::default()).await;
        assert_eq!(env.return_code, 0, "{}", env.return_message);
        assert_eq!(env.return_data.to_value()["access_token"], first.return_data.to_value()["access_token"]);
    }
    // After the revalidation interval the process reads storage again (and reports its failure).
    t.clock.advance(61);
    let env = svc.handle(body.as_bytes(), &RequestMeta::default()).await;
    assert_eq!(env.return_code, 1014);
}
