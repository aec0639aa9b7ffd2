//! Who may call what, on both backends: the caller-key scope matrix in each mode, keys stored only as hashes,
//! secrets sealed at rest under a master key (moved ciphertexts rejected, legacy rows upgraded), and oversized or
//! deeply nested requests refused in both transports.

use crate::both_backends;
use crate::cli::{run_ok, wafer};
use crate::helpers::id;
use crate::helpers::{add_key, build, code, envelope, open_settings, scope, Backend, TestApp, TestDb, T0};
use serde_json::{json, Value};
use wafer_scf::auth::CallerAuthMode;
use wafer_scf::handlers::Settings;
use wafer_scf::request::RequestMeta;
use wafer_scf::service::Service;
use wafer_scf::store::sealed::Sealer;
use wafer_scf::store::{AgentRecord, CosKeyRecord, StoreOptions};

const A: &str = "wx_sec_a";
const B: &str = "wx_sec_b";
const CORP: &str = "ww_sec";
const COS: &str = "1250000000";
const ADMIN: &str = "sec-admin-token-0123456789";
const MASTER: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

async fn call(svc: &Service, iface: &str, para: Value, key: Option<&str>) -> Value {
    let body = envelope(iface, para);
    // A direct invocation (para.admin_token is accepted there) that presents a caller key.
    let meta = RequestMeta { caller_key: key.map(str::to_owned), direct: true, ..Default::default() };
    serde_json::from_slice(&svc.handle(body.to_string().as_bytes(), &meta).await.to_bytes()).unwrap()
}

/// The security suite's world: two apps, a WeCom agent and held COS keys.
async fn world(b: Backend, opts: StoreOptions) -> TestApp {
    let w = TestApp::with_store_options(b, opts, open_settings()).await;
    for (a, s) in [(A, "secret-a-123"), (B, "secret-b-456")] {
        w.add_app(a, s).await;
    }
    w.wx.register(CORP, "agent-secret-789");
    w.store
        .registry
        .put_agent(&AgentRecord {
            corpid: CORP.parse().unwrap(),
            agentid: "1".parse().unwrap(),
            secret: "agent-secret-789".into(),
            remark: String::new(),
            created_at: T0,
            updated_at: T0,
        })
        .await
        .unwrap();
    w.store
        .registry
        .put_cos_key(&CosKeyRecord {
            appid: COS.parse().unwrap(),
            secret_id: "AKIDsec".into(),
            secret_key: "cos-secret-key-000".into(),
            created_at: T0,
            updated_at: T0,
        })
        .await
        .unwrap();
    w
}

fn service(w: &TestApp, mode: CallerAuthMode) -> Service {
    build(
        w.store.clone(),
        &w.wx.base_url,
        w.clock.clone(),
        Settings { caller_auth: mode, admin_token: Some(ADMIN.into()), ..Settings::default() },
    )
}

async fn the_scope_matrix_holds_in_every_mode(b: Backend) {
    let w = world(b, StoreOptions::default()).await;
    add_key(&w.store, "team-a", "wk_a", scope(&[A, COS], &[], false, &[])).await;
    add_key(&w.store, "team-corp", "wk_c", scope(&[], &[CORP], false, &[])).await;
    add_key(&w.store, "ops", "wk_all", scope(&[], &[], true, &[])).await;
    add_key(&w.store, "old", "wk_old", scope(&[A], &[], false, &[])).await;
    w.store.keys.revoke_caller_key("old", T0).await.unwrap();

    let tok = |app: &str| json!({"appid": app});
    let work = json!({"corpid": CORP, "agentid": "1"});
    let cos = json!({"appid": COS, "bucket": "b", "expiration": T0 + 60});

    let svc = service(&w, CallerAuthMode::Credentials);
    let cases: Vec<(&str, Value, Option<&str>, i64)> = vec![
        ("qcloud.mimi.access_token", tok(A), Some("wk_a"), 0),
        ("qcloud.mimi.access_token", tok(B), Some("wk_a"), 1023),
        ("qcloud.mimi.access_token", tok("wx_not_registered"), Some("wk_a"), 1023),
        ("qcloud.mimi.access_token", tok(A), None, 1021),
        ("qcloud.mimi.access_token", tok(A), Some("wk_old"), 1022),
        ("qcloud.mimi.access_token", tok(A), Some("wk_garbage"), 1022),
        ("qcloud.mimi.access_token", tok(B), Some("wk_all"), 0),
        ("qcloud.mimi.jsapi_signature", json!({"appid": B, "url": "https://x/"}), Some("wk_a"), 1023),
        ("qcloud.work.access_token", work.clone(), Some("wk_a"), 1023),
        ("qcloud.work.access_token", work.clone(), Some("wk_c"), 0),
        ("qcloud.work.agent.ticket", work.clone(), None, 1021),
        ("qcloud.cos.auth.reusable", cos.clone(), Some("wk_a"), 0),
        ("qcloud.cos.auth.reusable", cos.clone(), Some("wk_c"), 1023),
        ("qcloud.cos.auth.reusable", cos.clone(), None, 1021),
        // Sessions stay open for unmodified SDKs.
        ("qcloud.cam.id_skey", json!({"appid": A, "code": w.wx.code_for("s1")}), None, 0),
        ("qcloud.cam.auth", json!({"id": "0".repeat(32), "skey": "0".repeat(40)}), None, 60012),
        // Admin interfaces need the admin token, not a key.
        (
            "qcloud.work.initagent",
            json!({"corpid": "ww_new", "agentid": "2", "agentsecret": "s", "admin_token": ADMIN}),
            None,
            0,
        ),
    ];
    for (iface, para, key, want) in &cases {
        let r = call(&svc, iface, para.clone(), *key).await;
        assert_eq!(code(&r), *want, "credentials mode: {iface} {para} key {key:?}: {r}");
    }
    // A direct invocation has no headers: para.caller_key carries the key; over HTTP it does not count.
    let mut p = tok(A);
    p["caller_key"] = json!("wk_a");
    assert_eq!(code(&call(&svc, "qcloud.mimi.access_token", p.clone(), None).await), 0);
    let body = json!({"interface": {"interfaceName": "qcloud.mimi.access_token", "para": p}}).to_string();
    let http: Value =
        serde_json::from_slice(&svc.handle(body.as_bytes(), &RequestMeta::default()).await.to_bytes())
            .unwrap();
    assert_eq!(code(&http), 1021, "{http}");
    // Refusals read the same whether or not the app exists.
    let r1 = call(&svc, "qcloud.mimi.access_token", tok(B), Some("wk_a")).await;
    let r2 = call(&svc, "qcloud.mimi.access_token", tok("wx_not_registered"), Some("wk_a")).await;
    assert_eq!(r1, r2);

    let all = service(&w, CallerAuthMode::All);
    let login =
        call(&all, "qcloud.cam.id_skey", json!({"appid": A, "code": w.wx.code_for("s2")}), Some("wk_a"))
            .await;
    assert_eq!(code(&login), 0, "{login}");
    let d = login["returnData"].clone();
    let session = json!({"id": d["id"], "skey": d["skey"]});
    assert_eq!(code(&call(&all, "qcloud.cam.auth", session.clone(), None).await), 1021);
    assert_eq!(code(&call(&all, "qcloud.cam.auth", session.clone(), Some("wk_a")).await), 0);
    assert_eq!(
        code(&call(&all, "qcloud.cam.auth", session.clone(), Some("wk_c")).await),
        1023,
        "checked against the session's app"
    );
    // decrypt answers the decrypted payload: the scope is checked against its watermark (the session's app).
    let sk = w.wx.session_key("s2");
    let payload = json!({"stepInfoList": [], "watermark": {"appid": A, "timestamp": T0}});
    let ct =
        crate::helpers::encrypt_for_tests(&sk, "r7BXXKkLb8qrSNn05n0qiA==", payload.to_string().as_bytes())
            .unwrap();
    let para =
        json!({"id": d["id"], "skey": d["skey"], "encrypt_data": ct, "iv": "r7BXXKkLb8qrSNn05n0qiA=="});
    assert_eq!(code(&call(&all, "qcloud.cam.decrypt", para.clone(), Some("wk_c")).await), 1023);
    assert_eq!(code(&call(&all, "qcloud.cam.decrypt", para, Some("wk_a")).await), 0);
    let before = w.wx.calls("/sns/jscode2session");
    let r = call(&all, "qcloud.cam.id_skey", json!({"appid": A, "code": w.wx.code_for("s3")}), Some("wk_c"))
        .await;
    assert_eq!(code(&r), 1023);
    assert_eq!(w.wx.calls("/sns/jscode2session"), before, "refused before any upstream call");
    assert_eq!(code(&call(&all, "qcloud.mimi.access_token", tok(A), Some("wk_old")).await), 1022);

    let off = service(&w, CallerAuthMode::Off);
    assert_eq!(code(&call(&off, "qcloud.mimi.access_token", tok(B), None).await), 0);
    assert_eq!(code(&call(&off, "qcloud.cos.auth.reusable", cos.clone(), Some("anything")).await), 0);

    // A revocation reaches a running server within the key cache's lifetime.
    add_key(&w.store, "temp", "wk_temp", scope(&[A], &[], false, &[])).await;
    assert_eq!(code(&call(&svc, "qcloud.mimi.access_token", tok(A), Some("wk_temp")).await), 0);
    w.store.keys.revoke_caller_key("temp", T0).await.unwrap();
    w.clock.advance(wafer_scf::auth::KEY_CACHE_SECS + 1);
    assert_eq!(code(&call(&svc, "qcloud.mimi.access_token", tok(A), Some("wk_temp")).await), 1022);
}

async fn keys_are_stored_only_as_hashes_and_never_printed(b: Backend) {
    let db = TestDb::new(b).await;
    let dir = tempfile::tempdir().unwrap();
    db.store().await;
    let out = run_ok(
        wafer(dir.path())
            .env("WAFER_DATABASE_URL", &db.url)
            .args(["key", "add", "--name", "team-x", "--apps", "wx1,wx2"]),
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("wk_") && key.len() >= 48, "{key}");
    let dump = db.raw_dump().await;
    assert!(!dump.contains(&key), "the key itself is not stored");
    assert!(dump.contains(&wafer_scf::crypto::sha256_hex(key.as_bytes())));
    let list = run_ok(wafer(dir.path()).env("WAFER_DATABASE_URL", &db.url).args(["key", "list"]));
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("team-x") && text.contains("apps=wx1,wx2") && !text.contains(&key), "{text}");
    let dup = wafer(dir.path())
        .env("WAFER_DATABASE_URL", &db.url)
        .args(["key", "add", "--name", "team-x", "--all"])
        .output()
        .unwrap();
    assert!(!dup.status.success(), "names are unique");
    run_ok(wafer(dir.path()).env("WAFER_DATABASE_URL", &db.url).args(["key", "revoke", "--name", "team-x"]));
    let list = run_ok(wafer(dir.path()).env("WAFER_DATABASE_URL", &db.url).args(["key", "list"]));
    let line =
        String::from_utf8_lossy(&list.stdout).lines().find(|l| l.contains("team-x")).unwrap().to_owned();
    assert!(!line.trim_end().ends_with('-'), "revocation time shown: {line}");
}

async fn a_master_key_seals_every_secret_at_rest(b: Backend) {
    let sealer = Sealer::from_base64(MASTER).unwrap();
    let w = world(b, StoreOptions { sealer: sealer.clone(), ..StoreOptions::default() }).await;
    let svc = service(&w, CallerAuthMode::Off);
    let login =
        call(&svc, "qcloud.cam.id_skey", json!({"appid": A, "code": w.wx.code_for("sealed_user")}), None)
            .await;
    assert_eq!(code(&login), 0, "{login}");
    let d = login["returnData"].clone();
    let token = call(&svc, "qcloud.mimi.access_token", json!({"appid": A}), None).await["returnData"]
        ["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let wtoken = call(&svc, "qcloud.work.access_token", json!({"corpid": CORP, "agentid": "1"}), None).await
        ["returnData"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let session_key = w.wx.session_key("sealed_user");

    let dump = w.db.raw_dump().await;
    for secret in [
        "secret-a-123",
        "secret-b-456",
        "agent-secret-789",
        "cos-secret-key-000",
        &session_key,
        &token,
        &wtoken,
    ] {
        assert!(!dump.contains(secret), "{secret} is in the clear in the database");
    }
    assert!(dump.contains("enc1:"));

    // Everything still works through the sealing store, from a fresh process-like service (no memory caches).
    let fresh = service(&w, CallerAuthMode::Off);
    assert_eq!(
        code(&call(&fresh, "qcloud.cam.auth", json!({"id": d["id"], "skey": d["skey"]}), None).await),
        0
    );
    let p = json!({"a": 1, "watermark": {"appid": A, "timestamp": T0}});
    let ct =
        crate::helpers::encrypt_for_tests(&session_key, "r7BXXKkLb8qrSNn05n0qiA==", p.to_string().as_bytes())
            .unwrap();
    let r = call(
        &fresh,
        "qcloud.cam.decrypt",
        json!({"id": d["id"], "skey": d["skey"], "encrypt_data": ct, "iv": "r7BXXKkLb8qrSNn05n0qiA=="}),
        None,
    )
    .await;
    assert_eq!(code(&r), 0, "the sealed session key decrypts: {r}");
    let r = call(&fresh, "qcloud.mimi.access_token", json!({"appid": A}), None).await;
    assert_eq!(
        (r["returnMessage"].as_str(), r["returnData"]["access_token"].as_str()),
        (Some("OLD_TOKEN_SUCCESS"), Some(token.as_str()))
    );
    assert_eq!(
        code(
            &call(
                &fresh,
                "qcloud.cos.auth.reusable",
                json!({"appid": COS, "bucket": "b", "expiration": T0 + 60}),
                None
            )
            .await
        ),
        0
    );

    // A ciphertext copied to another row does not open.
    w.db.raw_exec(&format!(
        "UPDATE wafer_apps SET secret = (SELECT s FROM (SELECT secret AS s FROM wafer_apps WHERE appid = '{A}') AS x) WHERE appid = '{B}'"
    ))
    .await;
    let r = call(&fresh, "qcloud.mimi.access_token", json!({"appid": B}), None).await;
    assert_eq!(code(&r), 1001, "{r}");
    assert_eq!(
        w.wx.calls(&format!("/cgi-bin/stable_token|{B}")),
        0,
        "nothing was sent upstream with the moved secret"
    );
    let r = call(&fresh, "qcloud.cam.id_skey", json!({"appid": B, "code": w.wx.code_for("x")}), None).await;
    assert_eq!(code(&r), 1001);
}

async fn rows_written_before_the_master_key_keep_working_and_reencrypt_seals_them(b: Backend) {
    let w = world(b, StoreOptions::default()).await;
    let svc = service(&w, CallerAuthMode::Off);
    let login =
        call(&svc, "qcloud.cam.id_skey", json!({"appid": A, "code": w.wx.code_for("legacy_user")}), None)
            .await;
    let d = login["returnData"].clone();
    call(&svc, "qcloud.mimi.access_token", json!({"appid": A}), None).await;
    assert!(w.db.raw_dump().await.contains("secret-a-123"), "stored in the clear without a master key");

    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(
        wafer(dir.path())
            .env("WAFER_DATABASE_URL", &w.db.url)
            .env("WAFER_MASTER_KEY", MASTER)
            .arg("reencrypt"),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 apps, 1 agents, 1 COS keys, 1 cached credentials, 1 users"), "{text}");
    let again = run_ok(
        wafer(dir.path())
            .env("WAFER_DATABASE_URL", &w.db.url)
            .env("WAFER_MASTER_KEY", MASTER)
            .arg("reencrypt"),
    );
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing to seal"),
        "a second run has nothing to do"
    );
    let dump = w.db.raw_dump().await;
    for secret in [
        "secret-a-123",
        "secret-b-456",
        "agent-secret-789",
        "cos-secret-key-000",
        &w.wx.session_key("legacy_user"),
    ] {
        assert!(!dump.contains(secret), "{secret} still in the clear after reencrypt");
    }
    let sealed = w
        .db
        .store_with(StoreOptions { sealer: Sealer::from_base64(MASTER).unwrap(), ..StoreOptions::default() })
        .await;
    let after = build(sealed, &w.wx.base_url, w.clock.clone(), crate::helpers::open_settings());
    assert_eq!(
        code(&call(&after, "qcloud.cam.auth", json!({"id": d["id"], "skey": d["skey"]}), None).await),
        0
    );
    assert_eq!(
        call(&after, "qcloud.mimi.access_token", json!({"appid": A}), None).await["returnMessage"],
        "OLD_TOKEN_SUCCESS"
    );
    // Without the key, sealed rows are refused rather than sent upstream as garbage.
    let no_key = service(&w, CallerAuthMode::Off);
    assert_eq!(code(&call(&no_key, "qcloud.mimi.access_token", json!({"appid": B}), None).await), 1001);
}

const NEW_MASTER: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

fn with_key(w: &TestApp, key: Option<&str>, previous: Option<&str>) -> StoreOptions {
    let _ = w;
    let sealer = key.map_or_else(Sealer::disabled, |k| Sealer::from_base64(k).unwrap());
    let previous = previous.map(|p| Sealer::from_base64(p).unwrap());
    StoreOptions { sealer: sealer.with_previous(previous.as_ref()), ..StoreOptions::default() }
}

/// The master key's life cycle: auth never needs it, a rotation reads old rows with the previous key until
/// `reencrypt` moves them, a run without the key refuses to write secrets in the clear next to sealed ones, and
/// errors never name a user.
async fn the_master_key_can_be_lost_for_auth_rotated_and_never_mixed_with_clear_secrets(b: Backend) {
    let w =
        world(b, StoreOptions { sealer: Sealer::from_base64(MASTER).unwrap(), ..StoreOptions::default() })
            .await;
    let svc = service(&w, CallerAuthMode::Off);
    let login =
        call(&svc, "qcloud.cam.id_skey", json!({"appid": A, "code": w.wx.code_for("o_private_user")}), None)
            .await;
    assert_eq!(code(&login), 0, "{login}");
    let d = login["returnData"].clone();
    let sk = w.wx.session_key("o_private_user");
    let enc = crate::helpers::encrypt_for_tests(
        &sk,
        "r7BXXKkLb8qrSNn05n0qiA==",
        format!(r#"{{"v":1,"watermark":{{"appid":"{A}","timestamp":1}}}}"#).as_bytes(),
    )
    .unwrap();
    let decrypt =
        json!({"id": d["id"], "skey": d["skey"], "encrypt_data": enc, "iv": "r7BXXKkLb8qrSNn05n0qiA=="});

    // Without the key (or with a wrong one): auth still works; what needs a secret fails without naming the user.
    for key in [None, Some(NEW_MASTER)] {
        let store = w.db.store_with(with_key(&w, key, None)).await;
        let s = build(store, &w.wx.base_url, w.clock.clone(), crate::helpers::open_settings());
        let r = call(&s, "qcloud.cam.auth", json!({"id": d["id"], "skey": d["skey"]}), None).await;
        assert_eq!(code(&r), 0, "auth does not unseal: {r}");
        let r = call(&s, "qcloud.cam.decrypt", decrypt.clone(), None).await;
        assert_eq!(code(&r), 1001, "{r}");
    }
    // A run without the key refuses to write a secret in the clear next to sealed ones.
    let bare = w.db.store_with(with_key(&w, None, None)).await;
    let e =
        bare.registry.put_app(&crate::helpers::app_record("wx_new_clear", "clear-secret")).await.unwrap_err();
    assert!(e.to_string().contains("WAFER_MASTER_KEY"), "{e}");
    assert!(!w.db.raw_dump().await.contains("clear-secret"));

    // Rotation: the new key writes, the previous one still reads.
    let rotated = w.db.store_with(with_key(&w, Some(NEW_MASTER), Some(MASTER))).await;
    let s = build(rotated.clone(), &w.wx.base_url, w.clock.clone(), crate::helpers::open_settings());
    assert_eq!(code(&call(&s, "qcloud.cam.decrypt", decrypt.clone(), None).await), 0);
    assert_eq!(code(&call(&s, "qcloud.mimi.access_token", json!({"appid": B}), None).await), 0);
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(
        wafer(dir.path())
            .env("WAFER_DATABASE_URL", &w.db.url)
            .env("WAFER_MASTER_KEY", NEW_MASTER)
            .env("WAFER_MASTER_KEY_PREVIOUS", MASTER)
            .arg("reencrypt"),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 apps, 1 agents, 1 COS keys"), "every row moved to the new key: {text}");
    // Only the new key from now on.
    let only_new = w.db.store_with(with_key(&w, Some(NEW_MASTER), None)).await;
    let s = build(only_new.clone(), &w.wx.base_url, w.clock.clone(), crate::helpers::open_settings());
    assert_eq!(code(&call(&s, "qcloud.cam.decrypt", decrypt.clone(), None).await), 0);
    assert_eq!(
        only_new.registry.get_agent(&id(CORP), &id("1")).await.unwrap().unwrap().secret,
        "agent-secret-789"
    );
    assert_eq!(
        only_new.registry.get_cos_key(&id(COS)).await.unwrap().unwrap().secret_key,
        "cos-secret-key-000"
    );
    // The old key alone no longer opens anything, and says so without naming the user.
    let old_only = w.db.store_with(with_key(&w, Some(MASTER), None)).await;
    let e = old_only.registry.get_app(&id(A)).await.unwrap_err().to_string();
    assert!(e.contains("failed authentication"), "{e}");
    let s = build(old_only, &w.wx.base_url, w.clock.clone(), crate::helpers::open_settings());
    let r = call(&s, "qcloud.cam.decrypt", decrypt, None).await;
    assert_eq!(code(&r), 1001);
    assert!(!r.to_string().contains("o_private_user"));
}

/// Identifiers have their real shapes at the edge, so composite keys (`wc:token:{corpid}:{agentid}`, sealing labels
/// `agent/{corpid}/{agentid}/secret`) cannot collide.
async fn identifiers_are_checked_to_their_real_shapes(b: Backend) {
    let w = world(b, StoreOptions::default()).await;
    let svc = service(&w, CallerAuthMode::Off);
    for (iface, para) in [
        ("qcloud.work.access_token", json!({"corpid": "ww:1", "agentid": "2"})),
        ("qcloud.work.access_token", json!({"corpid": CORP, "agentid": "1:2"})),
        ("qcloud.work.access_token", json!({"corpid": CORP, "agentid": "abc"})),
        ("qcloud.work.ticket", json!({"corpid": "ww/x", "agentid": 1})),
        ("qcloud.mimi.access_token", json!({"appid": "wx:a"})),
        ("qcloud.mimi.jsapi_ticket", json!({"appid": "wx/a"})),
    ] {
        let r = call(&svc, iface, para.clone(), None).await;
        assert_eq!(code(&r), 1003, "{iface} {para}: {r}");
    }
    assert_eq!(
        code(&call(&svc, "qcloud.work.access_token", json!({"corpid": CORP, "agentid": 1}), None).await),
        0
    );
    // An agent removed by another process stops being served from memory within OWNER_RECHECK_SECS.
    assert_eq!(
        code(&call(&svc, "qcloud.work.access_token", json!({"corpid": CORP, "agentid": 1}), None).await),
        0
    );
    assert!(w.store.registry.remove_agent(&id(CORP), &id("1")).await.unwrap());
    w.clock.advance(wafer_scf::tokens::OWNER_RECHECK_SECS + 1);
    let r = call(&svc, "qcloud.work.access_token", json!({"corpid": CORP, "agentid": 1}), None).await;
    assert_eq!(code(&r), 1012, "{r}");
    // The registry takes only parsed identifiers: malformed ones never get that far.
    assert!("12a".parse::<wafer_scf::ids::AgentId>().is_err());
    assert!("ww:2".parse::<wafer_scf::ids::CorpId>().is_err());
}

/// The open login interface: with caller keys on, an unregistered app, a misconfigured one and a bad code answer
/// alike; the per-app and per-source login limits (off by default) answer `1026`.
async fn logins_reveal_no_registration_and_can_be_rate_limited(b: Backend) {
    let w = world(b, StoreOptions::default()).await;
    w.store
        .registry
        .put_app(&crate::helpers::app_record("wx_sec_misconf", "not-what-wechat-has"))
        .await
        .unwrap();
    w.wx.register("wx_sec_misconf", "what-wechat-has");
    let svc = service(&w, CallerAuthMode::Credentials);
    let answers: Vec<Value> = {
        let mut v = Vec::new();
        for appid in ["wx_not_registered", "wx_sec_misconf", A] {
            let r =
                call(&svc, "qcloud.cam.id_skey", json!({"appid": appid, "code": "junk-code"}), None).await;
            v.push(json!([r["returnCode"], r["returnMessage"]]));
        }
        v
    };
    assert_eq!(answers[0], answers[1], "unregistered and misconfigured answer alike");
    assert_eq!(answers[1], answers[2], "and like a bad code");

    let settings = Settings {
        caller_auth: CallerAuthMode::Off,
        login_limit_per_app: Some(3),
        login_limit_per_ip: Some(5),
        ..Settings::default()
    };
    let limited = build(w.store.clone(), &w.wx.base_url, w.clock.clone(), settings);
    let login = |appid: &'static str, ip: &'static str| {
        let body = json!({"interface": {"interfaceName": "qcloud.cam.id_skey", "para": {"appid": appid, "code": "junk"}}}).to_string();
        let meta = RequestMeta { source_ip: Some(ip.into()), ..Default::default() };
        let svc = &limited;
        async move {
            serde_json::from_slice::<Value>(&svc.handle(body.as_bytes(), &meta).await.to_bytes()).unwrap()
        }
    };
    for _ in 0..3 {
        assert_ne!(code(&login(A, "198.51.100.1").await), 1026);
    }
    let r = login(A, "198.51.100.2").await;
    assert_eq!(code(&r), 1026, "per app: {r}");
    for _ in 0..2 {
        assert_ne!(code(&login(B, "198.51.100.1").await), 1026);
    }
    assert_eq!(code(&login(B, "198.51.100.1").await), 1026, "per address: 5 a minute");
    w.clock.advance(60);
    assert_ne!(code(&login(A, "198.51.100.3").await), 1026, "a new minute");
}

both_backends!(
    logins_reveal_no_registration_and_can_be_rate_limited,
    identifiers_are_checked_to_their_real_shapes,
    the_master_key_can_be_lost_for_auth_rotated_and_never_mixed_with_clear_secrets,
    the_scope_matrix_holds_in_every_mode,
    keys_are_stored_only_as_hashes_and_never_printed,
    a_master_key_seals_every_secret_at_rest,
    rows_written_before_the_master_key_keep_working_and_reencrypt_seals_them,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_deeply_nested_requests_are_refused_in_both_transports() {
    let t = crate::helpers::TestApp::new(Backend::Sqlite).await;
    let ok = json!({"interface": {"interfaceName": "qcloud.cam.auth", "para": {"id": "x", "skey": "y"}}})
        .to_string();
    let big =
        json!({"interface": {"interfaceName": "qcloud.cam.auth", "para": {"pad": "p".repeat(100_000)}}})
            .to_string();
    let deep = format!("{{\"interface\":{}{}}}", "{\"a\":".repeat(200), "1}".repeat(200));
    for (name, body, want) in [("oversized", &big, 1020), ("deeply nested", &deep, 1020)] {
        let ev = json!({"requestContext": {}, "httpMethod": "POST", "headers": {}, "body": body})
            .to_string()
            .into_bytes();
        let inv = wafer_scf::scf::runtime::Invocation {
            request_id: "r".into(),
            time_limit_ms: Some(3000),
            memory_limit_mb: None,
            event: ev,
        };
        let reply: Value =
            serde_json::from_slice(&wafer_scf::scf::runtime::handle(&t.svc, &inv).await).unwrap();
        let env: Value = serde_json::from_str(reply["body"].as_str().unwrap()).unwrap();
        assert_eq!(env["returnCode"], want, "SCF {name}");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(wafer_scf::serve::serve(listener, t.svc.clone(), std::future::pending()));
    let client = reqwest::Client::new();
    let r = client.post(&url).body(big.clone()).send().await.unwrap();
    assert_eq!(r.status(), 413);
    let r: Value = client.post(&url).body(deep.clone()).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["returnCode"], 1020);
    let r: Value = client.post(&url).body(ok).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["returnCode"], 60012, "still healthy: {r}");
}
