//! Mini-program sessions end to end through the dispatcher: login, auth, decrypt, userinfo, expiry, binding,
//! multi-device, every code2session error class, and a fault-injected store.

use crate::both_backends;
use crate::helpers::encrypt_for_tests;
use crate::helpers::id;
use crate::helpers::{app_record, code, Backend, TestApp, T0};
use serde_json::{json, Value};
use wafer_scf::handlers::Settings;

const APP: &str = "wx_app_one";
const SECRET: &str = "secret-one-0123456789";
const IV: &str = "r7BXXKkLb8qrSNn05n0qiA==";

fn encrypted(session_key: &str, plaintext: &Value) -> String {
    encrypt_for_tests(session_key, IV, plaintext.to_string().as_bytes()).unwrap()
}

fn profile(appid: &str, nick: &str) -> Value {
    json!({"nickName": nick, "gender": 1, "watermark": {"appid": appid, "timestamp": T0}})
}

async fn login_then_auth_then_decrypt_then_userinfo(b: Backend) {
    let t = TestApp::new(b).await;
    t.add_app(APP, SECRET).await;
    let login = t.call("qcloud.cam.id_skey", json!({"appid": APP, "code": t.wx.code_for("u_alice")})).await;
    assert_eq!(code(&login), 0, "{login}");
    assert_eq!(login["returnMessage"], "NEW_SESSION_SUCCESS");
    let d = &login["returnData"];
    let keys: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["id", "skey", "appid", "openid", "unionid", "user_info", "duration"]);
    assert_eq!(d["id"].as_str().unwrap().len(), 32);
    assert_eq!(d["skey"].as_str().unwrap().len(), 40);
    assert_eq!(d["appid"], APP);
    assert_eq!(d["openid"], "u_alice");
    assert_eq!(d["unionid"], "union-u_alice");
    assert_eq!(d["user_info"], Value::Null);
    assert_eq!(d["duration"], 30 * 86_400);
    assert!(
        !login.to_string().contains(&t.wx.session_key("u_alice")),
        "session_key must never leave the server"
    );

    let auth = t.auth(d).await;
    assert_eq!(code(&auth), 0, "{auth}");
    assert_eq!(auth["returnMessage"], "AUTH_SUCCESS");
    assert_eq!(
        auth["returnData"],
        json!({"user_info": null, "appid": APP, "openid": "u_alice", "unionid": "union-u_alice"})
    );

    let sk = t.wx.session_key("u_alice");
    let werun = json!({"stepInfoList": [{"timestamp": T0, "step": 100}], "watermark": {"appid": APP, "timestamp": T0}});
    let dec = t
        .call(
            "qcloud.cam.decrypt",
            json!({"id": d["id"], "skey": d["skey"], "encrypt_data": encrypted(&sk, &werun), "iv": IV}),
        )
        .await;
    assert_eq!(code(&dec), 0, "{dec}");
    assert_eq!(dec["returnMessage"], "DECRYPT_SUCCESS");
    assert_eq!(dec["returnData"], werun);

    let p = profile(APP, "小明😀🎉");
    let ui = t
        .call(
            "qcloud.cam.userinfo",
            json!({"id": d["id"], "skey": d["skey"], "encrypt_data": encrypted(&sk, &p), "iv": IV}),
        )
        .await;
    assert_eq!(code(&ui), 0, "{ui}");
    assert_eq!(ui["returnMessage"], "UPDATE_USERINFO_SUCCESS");
    assert_eq!(ui["returnData"], json!({"id": d["id"], "skey": d["skey"], "appid": APP, "user_info": p}));

    let auth2 = t.auth(d).await;
    assert_eq!(
        auth2["returnData"]["user_info"]["nickName"], "小明😀🎉",
        "emoji must round-trip through storage"
    );
}

async fn official_vector_decrypts_through_a_session(b: Backend) {
    // The session_key of the official WXBizDataCrypt vector, planted on a real session of its appid.
    let t = TestApp::new(b).await;
    let appid = "wx4f4bc4dec97d474b";
    t.add_app(appid, "s").await;
    let d = t.login(appid, "vector_user").await;
    let mut view = t.store.sessions.get_session(d["id"].as_str().unwrap()).await.unwrap().unwrap();
    view.session.id = "vector-session".into();
    view.session.session_key = "tiihtNczf5v6AKRyjwEUhQ==".into();
    view.session.openid = "oGZUI0egBJY1zhBYw2KhdUfwVJJE".into();
    t.store.sessions.create_session(&view.session, 5, T0).await.unwrap();
    let data = "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew==";
    // The skey of the copied session is the original's: its hash was copied with it.
    let r = t
        .call("qcloud.cam.decrypt", json!({"id": "vector-session", "skey": d["skey"], "encrypt_data": data, "iv": "r7BXXKkLb8qrSNn05n0qiA=="}))
        .await;
    assert_eq!(code(&r), 0, "{r}");
    assert_eq!(r["returnData"]["nickName"], "Band");
    assert_eq!(r["returnData"]["unionId"], "ocMvos6NjeKLIBqg5Mr9QjxrP1FA");
}

async fn login_with_encrypted_profile_stores_user_info(b: Backend) {
    let t = TestApp::new(b).await;
    t.add_app(APP, SECRET).await;
    // WeChat's session_key for a login is known only after the call; the fake derives it from openid and count.
    let code_ = t.wx.code_for("bob");
    let sk = {
        use base64::Engine;
        use sha2::Digest;
        let digest = sha2::Sha256::digest(b"bob/1");
        base64::engine::general_purpose::STANDARD.encode(&digest[..16])
    };
    let p = profile(APP, "Bob 🚀");
    let r = t
        .call(
            "qcloud.cam.id_skey",
            json!({"appid": APP, "code": code_, "encrypt_data": encrypted(&sk, &p), "iv": IV}),
        )
        .await;
    assert_eq!(code(&r), 0, "{r}");
    assert_eq!(r["returnData"]["user_info"], p);
    let a = t.auth(&r["returnData"]).await;
    assert_eq!(a["returnData"]["user_info"]["nickName"], "Bob 🚀");

    let wrong = profile("wx_someone_else", "x");
    let r = t
        .call("qcloud.cam.id_skey", json!({"appid": APP, "code": t.wx.code_for("carol"), "encrypt_data": encrypted(&t.wx.session_key("bob"), &wrong), "iv": IV}))
        .await;
    assert_eq!(code(&r), 60021, "{r}");
}

async fn login_without_appid_uses_the_default_app(b: Backend) {
    let t = TestApp::new(b).await;
    let r = t.call("qcloud.cam.id_skey", json!({"code": "whatever"})).await;
    assert_eq!(code(&r), 1003);
    assert!(r["returnMessage"].as_str().unwrap().contains("appid"));

    t.add_app(APP, SECRET).await;
    let r = t.call("qcloud.cam.id_skey", json!({"code": t.wx.code_for("dan")})).await;
    assert_eq!(code(&r), 0, "the only registered app is the default: {r}");
    assert_eq!(r["returnData"]["appid"], APP);

    t.add_app("wx_app_two", "s2").await;
    let r = t.call("qcloud.cam.id_skey", json!({"code": t.wx.code_for("dan")})).await;
    assert_eq!(code(&r), 1003, "two apps and no configured default: {r}");

    let settings =
        Settings { default_appid: Some("wx_app_two".parse().unwrap()), ..crate::helpers::open_settings() };
    let t2 = TestApp::with_settings(b, settings).await;
    t2.add_app(APP, SECRET).await;
    t2.add_app("wx_app_two", "s2").await;
    let r = t2.call("qcloud.cam.id_skey", json!({"code": t2.wx.code_for("erin")})).await;
    assert_eq!(code(&r), 0, "{r}");
    assert_eq!(r["returnData"]["appid"], "wx_app_two");
}

async fn unknown_appid_is_no_appid(b: Backend) {
    let t = TestApp::new(b).await;
    t.add_app(APP, SECRET).await;
    let r = t.call("qcloud.cam.id_skey", json!({"appid": "wx_nobody", "code": "c"})).await;
    assert_eq!(code(&r), 1012);
    assert_eq!(t.wx.calls("/sns/jscode2session"), 0);
}

async fn code2session_errors_map_to_classes_and_are_never_retried(b: Backend) {
    let t = TestApp::new(b).await;
    t.add_app(APP, SECRET).await;
    let cases = [
        ("err:40029", 40029),
        ("err:40163", 40029),
        ("err:40226", 40029),
        ("err:40013", 40013),
        ("err:40164", 40164),
        ("err:45011", 45011),
        ("err:-1", 1005),
        ("err:12345", 1007),
        ("nonjson", 1007),
        ("nofields", 1007),
        ("http500", 1005),
    ];
    for (c, want) in cases {
        let r = t.call("qcloud.cam.id_skey", json!({"appid": APP, "code": c})).await;
        assert_eq!(code(&r), want, "code {c}: {r}");
        assert_eq!(t.wx.code_calls(c), 1, "code {c} must be sent exactly once");
        let msg = r["returnMessage"].as_str().unwrap();
        assert!(
            !msg.contains("fake error") && !msg.contains(SECRET),
            "no upstream errmsg or secret in {msg}"
        );
    }
    let ip = t.call("qcloud.cam.id_skey", json!({"appid": APP, "code": "err:40164"})).await;
    assert!(ip["returnMessage"].as_str().unwrap().contains("whitelist"));

    // A wrong secret at WeChat: 40125 → credentials error (written through this process's storage: another
    // process's change is seen within the app cache's 2 s).
    t.svc.deps.store.registry.put_app(&app_record(APP, "not-the-secret")).await.unwrap();
    let r = t.call("qcloud.cam.id_skey", json!({"appid": APP, "code": t.wx.code_for("x")})).await;
    assert_eq!(code(&r), 40013, "{r}");

    // A used code: 40163 → 40029, and the session store is untouched.
    t.svc.deps.store.registry.put_app(&app_record(APP, SECRET)).await.unwrap();
    let c = t.wx.code_for("y");
    assert_eq!(code(&t.call("qcloud.cam.id_skey", json!({"appid": APP, "code": c})).await), 0);
    assert_eq!(code(&t.call("qcloud.cam.id_skey", json!({"appid": APP, "code": c})).await), 40029);
}

async fn slow_or_unreachable_wechat_is_a_net_error_within_the_deadline(b: Backend) {
    let t = TestApp::new(b).await;
    t.add_app(APP, SECRET).await;
    let started = std::time::Instant::now();
    let r = t.call("qcloud.cam.id_skey", json!({"appid": APP, "code": "slow"})).await;
    assert_eq!(code(&r), 1005, "{r}");
    assert!(started.elapsed() < std::time::Duration::from_millis(2500), "the 500 ms deadline applies");
    assert_eq!(t.wx.code_calls("slow"), 1);

    // Nothing listens on this port.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let svc = crate::helpers::build(
        t.store.clone(),
        &format!("http://{closed}"),
        t.clock.clone(),
        Settings::default(),
    );
    let env = svc
        .handle(
            json!({"interface": {"interfaceName": "qcloud.cam.id_skey", "para": {"appid": APP, "code": "c"}}}).to_string().as_bytes(),
            &Default::default(),
        )
        .await;
    assert_eq!(env.return_code, 1005);
}

async fn sessions_expire_by_login_age_and_by_idle_time(b: Backend) {
    let t = TestApp::new(b).await;
    let mut app = app_record(APP, SECRET);
    app.login_duration_secs = 10 * 86_400;
    app.session_duration_secs = 3_600;
    t.add_app_with(app).await;
    let d = t.login(APP, "frank").await;
    assert_eq!(d["duration"], 10 * 86_400);

    // Idle rule: an auth every 50 minutes keeps it alive past one hour...
    for _ in 0..5 {
        t.clock.advance(50 * 60);
        let r = t.auth(&d).await;
        assert_eq!(code(&r), 0, "{r}");
    }
    // ...but 61 idle minutes end it.
    t.clock.advance(61 * 60);
    let r = t.auth(&d).await;
    assert_eq!(code(&r), 60011, "{r}");

    // Login-age rule: active every 30 minutes, still ends after 10 days.
    let d = t.login(APP, "frank").await;
    let mut last = 0;
    for _ in 0..(10 * 48 + 2) {
        t.clock.advance(30 * 60);
        last = code(&t.auth(&d).await);
        if last != 0 {
            break;
        }
    }
    assert_eq!(last, 60011);
    let age = t.store.sessions.get_session(d["id"].as_str().unwrap()).await.unwrap().unwrap();
    assert!(t.clock_now() - age.session.created_at > 10 * 86_400);

    // decrypt and userinfo need a live session too.
    let sk = t.wx.session_key("frank");
    let r = t
        .call("qcloud.cam.decrypt", json!({"id": d["id"], "skey": d["skey"], "encrypt_data": encrypted(&sk, &profile(APP, "f")), "iv": IV}))
        .await;
    assert_eq!(code(&r), 60011);
    let r = t
        .call("qcloud.cam.userinfo", json!({"id": d["id"], "skey": d["skey"], "encrypt_data": encrypted(&sk, &profile(APP, "f")), "iv": IV}))
        .await;
    assert_eq!(code(&r), 60011);
}

impl TestApp {
    fn clock_now(&self) -> i64 {
        use wafer_scf::clock::Clock;
        self.clock.now()
    }
}

async fn wrong_skey_unknown_id_and_other_apps_appid_are_auth_errors(b: Backend) {
    let t = TestApp::new(b).await;
    t.add_app(APP, SECRET).await;
    t.add_app("wx_app_two", "s2").await;
    let d = t.login(APP, "gina").await;
    let mut bad = d.clone();
    let skey = d["skey"].as_str().unwrap();
    // Change the last character (to one it is not: a fixed replacement equals the original 1 time in 16).
    let last = if skey.ends_with('0') { '1' } else { '0' };
    bad["skey"] = json!(format!("{}{last}", &skey[..skey.len() - 1]));
    assert_eq!(code(&t.auth(&bad).await), 60012);
    let r = t.call("qcloud.cam.auth", json!({"id": "0".repeat(32), "skey": skey})).await;
    assert_eq!(code(&r), 60012);
    let r = t.call("qcloud.cam.auth", json!({"id": d["id"], "skey": skey, "appid": "wx_app_two"})).await;
    assert_eq!(code(&r), 60012);
    let r = t.call("qcloud.cam.auth", json!({"id": d["id"], "skey": skey, "appid": APP})).await;
    assert_eq!(code(&r), 0);
    let sk = t.wx.session_key("gina");
    let other = json!({"a": 1, "watermark": {"appid": "wx_app_two", "timestamp": T0}});
    let r = t
        .call(
            "qcloud.cam.decrypt",
            json!({"id": d["id"], "skey": skey, "encrypt_data": encrypted(&sk, &other), "iv": IV}),
        )
        .await;
    assert_eq!(code(&r), 60021, "watermark of another app: {r}");
    let r = t
        .call(
            "qcloud.cam.decrypt",
            json!({"id": d["id"], "skey": skey, "encrypt_data": "bm90IGJsb2Nrcw==", "iv": IV}),
        )
        .await;
    assert_eq!(code(&r), 60021);
}

async fn a_second_login_keeps_the_first_session_alive_within_the_bound(b: Backend) {
    let t = TestApp::new(b).await;
    t.add_app(APP, SECRET).await;
    let first = t.login(APP, "hank").await;
    t.clock.advance(1);
    let second_env = t.call("qcloud.cam.id_skey", json!({"appid": APP, "code": t.wx.code_for("hank")})).await;
    assert_eq!(second_env["returnMessage"], "UPDATE_SESSION_SUCCESS");
    let second = &second_env["returnData"];
    assert_ne!(first["id"], second["id"]);
    assert_eq!(code(&t.auth(&first).await), 0, "first device still logged in");
    assert_eq!(code(&t.auth(second).await), 0);

    // The first device decrypts data encrypted with WeChat's newest session_key.
    let sk = t.wx.session_key("hank");
    let r = t
        .call("qcloud.cam.decrypt", json!({"id": first["id"], "skey": first["skey"], "encrypt_data": encrypted(&sk, &profile(APP, "h")), "iv": IV}))
        .await;
    assert_eq!(code(&r), 0, "{r}");

    // Bound: 5 per user. Four more logins push the first out.
    let mut later = vec![second.clone()];
    for _ in 0..4 {
        t.clock.advance(1);
        later.push(t.login(APP, "hank").await);
    }
    assert_eq!(code(&t.auth(&first).await), 60012, "oldest session dropped beyond the bound");
    for s in &later {
        assert_eq!(code(&t.auth(s).await), 0);
    }
}

async fn auth_writes_last_visit_at_most_once_a_minute(b: Backend) {
    let t = TestApp::new(b).await;
    t.add_app(APP, SECRET).await;
    let d = t.login(APP, "ivy").await;
    let id = d["id"].as_str().unwrap();
    let visit = |t: &TestApp| {
        let id = id.to_owned();
        let store = t.store.clone();
        async move { store.sessions.get_session(&id).await.unwrap().unwrap().session.last_visit_at }
    };
    t.clock.advance(30);
    assert_eq!(code(&t.auth(&d).await), 0);
    assert_eq!(visit(&t).await, T0, "no write within the minute");
    t.clock.advance(31);
    assert_eq!(code(&t.auth(&d).await), 0);
    assert_eq!(visit(&t).await, T0 + 61, "written once the minute has passed");
    t.clock.advance(1);
    assert_eq!(code(&t.auth(&d).await), 0);
    assert_eq!(visit(&t).await, T0 + 61);

    // An app with a 5-minute idle timeout gets 30-second granularity.
    let mut short = app_record("wx_short", "s");
    short.session_duration_secs = 300;
    t.add_app_with(short).await;
    let d = t.login("wx_short", "ivy").await;
    t.clock.advance(30);
    assert_eq!(code(&t.auth(&d).await), 0);
    let v =
        t.store.sessions.get_session(d["id"].as_str().unwrap()).await.unwrap().unwrap().session.last_visit_at;
    assert_eq!(v, T0 + 62 + 30);
}

/// Auth is answered from a short-lived in-process cache; every change this process makes is seen at once (a pruned
/// session, a new profile, an app removed), a change made elsewhere within the cache's lifetime.
async fn the_session_cache_never_outlives_a_change(b: Backend) {
    let admin = "admin-token-session-cache-0123456";
    let settings = Settings {
        max_sessions_per_user: 1,
        admin_token: Some(admin.into()),
        ..crate::helpers::open_settings()
    };
    let t = TestApp::with_settings(b, settings).await;
    t.add_app(APP, SECRET).await;
    let first = t.login(APP, "o_cached").await;
    assert_eq!(code(&t.auth(&first).await), 0, "cached now");
    let second = t.login(APP, "o_cached").await;
    assert_eq!(code(&t.auth(&first).await), 60012, "pruned by the login: gone at once");
    assert_eq!(code(&t.auth(&second).await), 0);

    // A profile stored here is what the next auth returns.
    let key = t.wx.session_key("o_cached");
    let profile =
        json!({"openId": "o_cached", "nickName": "new name", "watermark": {"appid": APP, "timestamp": T0}});
    let r = t
        .call("qcloud.cam.userinfo", json!({"id": second["id"], "skey": second["skey"], "encrypt_data": encrypted(&key, &profile), "iv": IV}))
        .await;
    assert_eq!(code(&r), 0, "{r}");
    assert_eq!(t.auth(&second).await["returnData"]["user_info"]["nickName"], "new name");

    // Removed by another process (straight in the store): served for at most the cache's lifetime.
    let other = t.login(APP, "o_other").await;
    assert_eq!(code(&t.auth(&other).await), 0);
    t.store.registry.remove_app(&id(APP)).await.unwrap();
    t.clock.advance(wafer_scf::store::cache::TTL_SECS);
    assert_ne!(code(&t.auth(&other).await), 0, "stale for at most {} s", wafer_scf::store::cache::TTL_SECS);

    // Removed through this process: at once.
    t.add_app(APP, SECRET).await;
    let third = t.login(APP, "o_third").await;
    assert_eq!(code(&t.auth(&third).await), 0);
    let r = t.call("qcloud.admin.app.remove", json!({"appid": APP, "admin_token": admin})).await;
    assert_eq!(code(&r), 0, "{r}");
    assert_ne!(code(&t.auth(&third).await), 0, "gone at once");
}

/// WeChat's session-key checks for a live session: `check_session` signs with the stored key and says whether WeChat
/// still holds it; `reset_session_key` has WeChat issue a new one, stored (and used by `decrypt`), never returned.
async fn session_keys_are_checked_and_reset_through_wechat(b: Backend) {
    let t = TestApp::new(b).await;
    t.add_app(APP, SECRET).await;
    let d = t.login(APP, "o_sk").await;
    let ask = |name: &'static str, skey: Value| t.call(name, json!({"id": d["id"], "skey": skey}));
    let r = ask("qcloud.cam.check_session", d["skey"].clone()).await;
    assert_eq!((code(&r), &r["returnData"]), (0, &json!({"valid": true})), "{r}");

    // A reset: WeChat's new key is stored for the user and never returned; the old one no longer decrypts.
    let old = t.wx.session_key("o_sk");
    let r = ask("qcloud.cam.reset_session_key", d["skey"].clone()).await;
    assert_eq!((code(&r), &r["returnData"]), (0, &json!({"reset": true})), "{r}");
    let new = t.wx.session_key("o_sk");
    assert_ne!(old, new);
    assert!(!r.to_string().contains(&new), "the key stays here");
    let decrypt = |key: &str| {
        t.call("qcloud.cam.decrypt", json!({"id": d["id"], "skey": d["skey"], "encrypt_data": encrypted(key, &profile(APP, "k")), "iv": IV}))
    };
    assert_eq!(code(&decrypt(&new).await), 0);
    assert_eq!(code(&decrypt(&old).await), 60021);
    assert_eq!(ask("qcloud.cam.check_session", d["skey"].clone()).await["returnData"]["valid"], true);

    // WeChat's key changed on its side: the stored one is reported invalid, and cannot be reset.
    t.wx.rotate_session_key("o_sk");
    let r = ask("qcloud.cam.check_session", d["skey"].clone()).await;
    assert_eq!((code(&r), &r["returnData"]), (0, &json!({"valid": false})), "{r}");
    let r = ask("qcloud.cam.reset_session_key", d["skey"].clone()).await;
    assert_eq!(code(&r), 1007, "{r}");
    assert!(r["returnMessage"].as_str().unwrap().contains("log in again"), "{r}");

    // A live session is needed, as for decrypt: no WeChat call otherwise.
    let before = t.wx.calls("/business");
    assert_eq!(code(&ask("qcloud.cam.check_session", json!("wrong-skey")).await), 60012);
    assert_eq!(code(&ask("qcloud.cam.reset_session_key", json!("wrong-skey")).await), 60012);
    assert_eq!(t.wx.calls("/business"), before);
}

both_backends!(
    session_keys_are_checked_and_reset_through_wechat,
    the_session_cache_never_outlives_a_change,
    login_then_auth_then_decrypt_then_userinfo,
    official_vector_decrypts_through_a_session,
    login_with_encrypted_profile_stores_user_info,
    login_without_appid_uses_the_default_app,
    unknown_appid_is_no_appid,
    code2session_errors_map_to_classes_and_are_never_retried,
    slow_or_unreachable_wechat_is_a_net_error_within_the_deadline,
    sessions_expire_by_login_age_and_by_idle_time,
    wrong_skey_unknown_id_and_other_apps_appid_are_auth_errors,
    a_second_login_keeps_the_first_session_alive_within_the_bound,
    auth_writes_last_visit_at_most_once_a_minute,
);

mod faults {
    //! A store that fails on demand: storage failures become DB_ERR / CHANGE_SESSION_ERR, never a crash.
    use super::*;
    use crate::faulty::Faulty;
    use std::sync::atomic::Ordering;

    #[tokio::test]
    async fn storage_failures_are_reported_as_wafer_errors_and_recover() {
        let t = TestApp::new(Backend::Sqlite).await;
        t.add_app(APP, SECRET).await;
        let d = t.login(APP, "jay").await;
        let failing = Faulty::new(t.store.clone());
        failing.sessions.store(true, Ordering::SeqCst);
        let svc = crate::helpers::build(
            failing.storage(),
            &t.wx.base_url,
            t.clock.clone(),
            crate::helpers::open_settings(),
        );
        let call = |iface: &str, para: Value| {
            let body = json!({"interface": {"interfaceName": iface, "para": para}}).to_string();
            let svc = &svc;
            async move { svc.handle(body.as_bytes(), &Default::default()).await }
        };
        let r = call("qcloud.cam.auth", json!({"id": d["id"], "skey": d["skey"]})).await;
        assert_eq!(r.return_code, 1001);
        assert_eq!(r.return_message, "DB_ERR: storage failure", "no internals leak");
        let r = call("qcloud.cam.id_skey", json!({"appid": APP, "code": t.wx.code_for("jay")})).await;
        assert_eq!(r.return_code, 1006);
        failing.sessions.store(false, Ordering::SeqCst);
        let r = call("qcloud.cam.auth", json!({"id": d["id"], "skey": d["skey"]})).await;
        assert_eq!(r.return_code, 0, "recovers once storage is back");
    }
}
