//! WeChat's API security end to end, against a fake WeChat that enforces it ([`crate::fake_secure`]): every way a
//! call leaves the server — `qcloud.mimi.call`, the `/wechat/{appid}/` pass-through, the token host relaying an
//! SDK's call, the server's own `qcloud.cam.phone` — is encrypted and signed once the app's keys are registered,
//! and the caller gets WeChat's plain reply; a reply that does not verify is never passed on; a certificate
//! rotation is followed and reported; WeChat's security-layer refusals come back with a hint.

use crate::both_backends;
use crate::fake_secure::{mint, ConsoleKeys, Minted, PlatformKey, SecureFake, Tamper};
use crate::fake_wechat::{business_entry, FakeState};
use crate::helpers::token_host_token;
use crate::helpers::{code, id, open_settings, Backend, TestApp};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use wafer_scf::crypto::pki::RsaSigner;
use wafer_scf::handlers::Settings;
use wafer_scf::store::StoreOptions;

pub const APP: &str = "wx_secure_app";
const SECRET: &str = "secure-app-secret";
pub const ADMIN: &str = "admin-token-for-api-security-tests";
pub const SYM_SN: &str = "fa05fe1e5bcc79b81ad5ad4b58acf787";
pub const KEY_SN: &str = "97845f6ed842ea860df6fdf65941ff56";
pub const CERT_SN: &str = "79ba700ea147819f640941bceb38b1d1";
pub const NEW_CERT_SN: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const RISK: &str = "/wxa/getuserriskrank";

/// The fake's routes for the APIs these tests call: each echoes the fields it received.
pub fn routes() -> Router<Arc<FakeState>> {
    async fn echo(
        State(st): State<Arc<FakeState>>,
        Query(q): Query<HashMap<String, String>>,
        body: String,
    ) -> Response {
        if let Some(r) = business_entry(&st, &q).await {
            return r;
        }
        let got: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        Json(json!({"errcode": 0, "errmsg": "getuserriskrank succ", "risk_rank": 1, "got": got}))
            .into_response()
    }
    Router::new().route(RISK, post(echo)).route("/cgi-bin/express/intracity/createorder", post(echo))
}

/// An app's material as the console gives it.
pub struct Material {
    pub sym_key: [u8; 32],
    pub app_key: Minted,
    pub platform: Minted,
}

impl Material {
    pub fn new() -> Self {
        let mut sym_key = [0u8; 32];
        getrandom::fill(&mut sym_key).unwrap();
        Self { sym_key, app_key: mint(true), platform: mint(false) }
    }

    pub fn sym_b64(&self) -> String {
        STANDARD.encode(self.sym_key)
    }

    /// The admin operation's `para` registering it (with the platform certificates given).
    pub fn para(&self, certs: &[(&str, &str)]) -> Value {
        let certs: Vec<Value> = certs.iter().map(|(sn, pem)| json!({"sn": sn, "pem": pem})).collect();
        json!({"appid": APP, "sym_key": self.sym_b64(), "sym_sn": SYM_SN, "private_key": self.app_key.key_pem,
               "private_key_sn": KEY_SN, "certs": certs, "admin_token": ADMIN})
    }

    /// The fake console: the switch on for the app, and the platform's key.
    pub fn install(&self, sf: &SecureFake) {
        let public_key = RsaSigner::from_pem(&self.app_key.key_pem).unwrap().public_key();
        let keys =
            ConsoleKeys { sym_key: self.sym_key, sym_sn: SYM_SN.into(), public_key, key_sn: KEY_SN.into() };
        sf.apps.lock().unwrap().insert(APP.into(), keys);
        let signer = RsaSigner::from_pem(&self.platform.key_pem).unwrap();
        *sf.platform.lock().unwrap() = vec![PlatformKey { signer, sn: CERT_SN.into() }];
    }
}

struct World {
    t: TestApp,
    sf: Arc<SecureFake>,
    m: Material,
}

async fn world(b: Backend) -> World {
    let sf = Arc::new(SecureFake::default());
    let m = Material::new();
    m.install(&sf);
    let settings = Settings { token_host: true, admin_token: Some(ADMIN.into()), ..open_settings() };
    let t = TestApp::secured(b, StoreOptions::default(), settings, sf.clone(), routes()).await;
    t.add_app(APP, SECRET).await;
    let r = t.call("qcloud.admin.app.api_security", m.para(&[(CERT_SN, &m.platform.cert_pem)])).await;
    assert_eq!(code(&r), 0, "{r}");
    assert_eq!(r["returnData"]["api_security"]["certs"][0]["sn"], CERT_SN, "{r}");
    assert!(!r.to_string().contains(&m.sym_b64()), "no key in the reply");
    World { t, sf, m }
}

fn risk_call(extra_query: Value) -> Value {
    json!({"appid": APP, "path": RISK, "query": extra_query,
           "body": {"openid": "o_secure", "scene": 0, "client_ip": "127.0.0.1"}})
}

async fn post_json(url: String, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new().post(url).json(body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn every_caller_signs_and_gets_the_verified_reply(b: Backend) {
    let World { t, sf, .. } = world(b).await;
    // qcloud.mimi.call: the body and the query (but access_token) are the plaintext; the reply is WeChat's own.
    let r = t.call("qcloud.mimi.call", risk_call(json!({"lang": "zh_CN"}))).await;
    assert_eq!(code(&r), 0, "{r}");
    let data = &r["returnData"];
    assert_eq!(data["risk_rank"], 1, "{r}");
    assert_eq!(
        data["got"],
        json!({"openid": "o_secure", "scene": 0, "client_ip": "127.0.0.1", "lang": "zh_CN"})
    );
    assert!(data.get("_n").is_none() && data.get("_appid").is_none(), "the scheme's fields are removed: {r}");

    // The pass-through and the token host (an SDK that knows nothing of API security).
    let url = t.serve_http().await;
    let body = json!({"openid": "o_http", "scene": 1});
    let (status, reply) = post_json(format!("{url}/wechat/{APP}{RISK}"), &body).await;
    assert_eq!((status, &reply["got"]), (200, &body), "{reply}");
    let token = &token_host_token(&url, APP, SECRET).await;
    let (status, reply) = post_json(format!("{url}{RISK}?access_token={token}"), &body).await;
    assert_eq!((status, &reply["risk_rank"]), (200, &json!(1)), "{reply}");

    // The server's own call: a phone number.
    let login = t.login(APP, "o_phone");
    let login = login.await;
    let r = t
        .call(
            "qcloud.cam.phone",
            json!({"id": login["id"], "skey": login["skey"], "code": "phone:13800138000"}),
        )
        .await;
    assert_eq!(r["returnData"]["purePhoneNumber"], "13800138000", "{r}");

    assert_eq!(sf.signed_calls(RISK), 3);
    assert_eq!(sf.signed_calls("/wxa/business/getuserphonenumber"), 1);
    assert_eq!(sf.refused_plain(RISK) + sf.refused_plain("/wxa/business/getuserphonenumber"), 0);

    // A path outside the table goes plain.
    let r = t
        .call(
            "qcloud.mimi.call",
            json!({"appid": APP, "path": "/cgi-bin/message/send", "body": {"touser": "u"}}),
        )
        .await;
    assert_eq!(r["returnData"]["touser"], "u", "{r}");
    assert_eq!(sf.signed_calls("/cgi-bin/message/send"), 0);

    // Switched off here while the console still requires it: WeChat's refusal, with what to do.
    let off = t
        .call("qcloud.admin.app.api_security", json!({"appid": APP, "off": true, "admin_token": ADMIN}))
        .await;
    assert_eq!(off["returnData"]["outcome"], "off", "{off}");
    let r = t.call("qcloud.mimi.call", risk_call(json!({}))).await;
    assert_eq!(r["returnData"]["errcode"], 934011, "{r}");
    let errmsg = r["returnData"]["errmsg"].as_str().unwrap();
    assert!(errmsg.contains("wafer-scf: this API needs API security: register the app's keys"), "{errmsg}");
    assert_eq!(sf.refused_plain(RISK), 1);
}

fn rejected_so_far() -> f64 {
    let text = wafer_scf::metrics::text();
    text.lines()
        .find(|l| l.starts_with("wafer_api_security_replies_total{result=\"rejected\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

async fn a_reply_that_does_not_verify_is_never_passed_on(b: Backend) {
    let World { t, sf, .. } = world(b).await;
    let url = t.serve_http().await;
    let token = token_host_token(&url, APP, SECRET).await;
    let before = rejected_so_far();
    let cases = [
        (Tamper::Body, "does not verify"),
        (Tamper::Appid, "does not verify"),
        (Tamper::OldTimestamp, "from this server's clock"),
        (Tamper::Unsigned, "an unsigned reply"),
        (Tamper::UnknownCert, "not registered here"),
    ];
    for (tamper, reason) in cases {
        *sf.tamper.lock().unwrap() = Some(tamper);
        let r = t.call("qcloud.mimi.call", risk_call(json!({}))).await;
        assert_eq!(code(&r), 1029, "{tamper:?}: {r}");
        let msg = r["returnMessage"].as_str().unwrap();
        assert!(msg.contains(reason) && msg.contains(RISK), "{tamper:?}: {msg}");
        assert!(!r.to_string().contains("getuserriskrank succ"), "nothing of the reply: {r}");
        let (status, reply) = post_json(format!("{url}/wechat/{APP}{RISK}"), &json!({"openid": "o"})).await;
        assert_eq!((status, code(&reply)), (502, 1029), "{tamper:?}: {reply}");
        let (status, reply) =
            post_json(format!("{url}{RISK}?access_token={token}"), &json!({"openid": "o"})).await;
        assert_eq!((status, &reply["errcode"]), (200, &json!(-1)), "{tamper:?}: {reply}");
        assert!(reply["errmsg"].as_str().unwrap().contains("1029 REPLY_UNVERIFIED"), "{reply}");
    }
    assert!(rejected_so_far() - before >= 15.0, "counted in /metrics");
    *sf.tamper.lock().unwrap() = None;
    assert_eq!(code(&t.call("qcloud.mimi.call", risk_call(json!({}))).await), 0, "verifies again");
}

async fn a_certificate_rotation_is_followed_and_reported(b: Backend) {
    let World { t, sf, m } = world(b).await;
    let status = || t.call("qcloud.admin.status", json!({"admin_token": ADMIN}));
    assert_eq!(status().await["returnData"]["process"]["certificate_rotations"], json!([]));
    // WeChat starts signing with a new certificate, and with the old one as the deprecated pair.
    let new = mint(false);
    let old_signer = RsaSigner::from_pem(&m.platform.key_pem).unwrap();
    *sf.platform.lock().unwrap() = vec![
        PlatformKey { signer: RsaSigner::from_pem(&new.key_pem).unwrap(), sn: NEW_CERT_SN.into() },
        PlatformKey { signer: old_signer, sn: CERT_SN.into() },
    ];
    let r = t.call("qcloud.mimi.call", risk_call(json!({}))).await;
    assert_eq!(r["returnData"]["risk_rank"], 1, "verified with the deprecated pair: {r}");
    let s = status().await;
    assert_eq!(
        s["returnData"]["process"]["certificate_rotations"],
        json!([format!("{APP}: {NEW_CERT_SN}")]),
        "{s}"
    );

    // The operator registers both; then WeChat retires the old one.
    let both = m.para(&[(NEW_CERT_SN, &new.cert_pem), (CERT_SN, &m.platform.cert_pem)]);
    let r = t.call("qcloud.admin.app.api_security", both).await;
    assert_eq!(r["returnData"]["api_security"]["certs"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(code(&t.call("qcloud.mimi.call", risk_call(json!({}))).await), 0);
    assert_eq!(
        status().await["returnData"]["process"]["certificate_rotations"],
        json!([]),
        "nothing pending"
    );
    sf.platform.lock().unwrap().truncate(1);
    assert_eq!(code(&t.call("qcloud.mimi.call", risk_call(json!({}))).await), 0, "the new one alone");

    // Keys that know only the retired certificate refuse the new signatures.
    let r = t.call("qcloud.admin.app.api_security", m.para(&[(CERT_SN, &m.platform.cert_pem)])).await;
    assert_eq!(code(&r), 0);
    let r = t.call("qcloud.mimi.call", risk_call(json!({}))).await;
    assert_eq!(code(&r), 1029, "{r}");
    assert!(r["returnMessage"]
        .as_str()
        .unwrap()
        .contains(&format!("SN {NEW_CERT_SN}, which is not registered")));
}

async fn wechats_security_refusals_say_what_to_check(b: Backend) {
    let World { t, sf, m } = world(b).await;
    // A private key that is not the one whose public key is in the console: 40234, explained.
    let wrong = mint(true);
    let mut para = m.para(&[(CERT_SN, &m.platform.cert_pem)]);
    para["private_key"] = json!(wrong.key_pem);
    assert_eq!(code(&t.call("qcloud.admin.app.api_security", para).await), 0);
    let r = t.call("qcloud.mimi.call", risk_call(json!({}))).await;
    assert_eq!(r["returnData"]["errcode"], 40234, "{r}");
    assert!(r["returnData"]["errmsg"]
        .as_str()
        .unwrap()
        .contains("the private key registered here is not the one"));
    // A symmetric key that is not the console's: 40235.
    let mut para = m.para(&[(CERT_SN, &m.platform.cert_pem)]);
    para["sym_key"] = json!(STANDARD.encode([7u8; 32]));
    assert_eq!(code(&t.call("qcloud.admin.app.api_security", para).await), 0);
    let r = t.call("qcloud.mimi.call", risk_call(json!({}))).await;
    assert_eq!(r["returnData"]["errcode"], 40235, "{r}");
    assert!(r["returnData"]["errmsg"].as_str().unwrap().contains("symmetric key or its SN"));
    // Intracity delivery needs it even with the console switch off.
    sf.apps.lock().unwrap().clear();
    sf.always.lock().unwrap().insert("/cgi-bin/express/intracity/createorder".into());
    assert_eq!(
        code(
            &t.call(
                "qcloud.admin.app.api_security",
                json!({"appid": APP, "off": true, "admin_token": ADMIN})
            )
            .await
        ),
        0
    );
    let r = t
        .call(
            "qcloud.mimi.call",
            json!({"appid": APP, "path": "/cgi-bin/express/intracity/createorder", "body": {}}),
        )
        .await;
    assert_eq!(r["returnData"]["errcode"], 934011, "{r}");
}

async fn bad_key_material_is_refused_naming_the_field(b: Backend) {
    let World { t, m, .. } = world(b).await;
    let cases = [
        ("sym_key", json!(STANDARD.encode([1u8; 16])), "para.sym_key: 16 bytes where AES-256 takes 32"),
        ("private_key", json!(m.platform.cert_pem), "para.private_key: not a PEM private key"),
        ("sym_sn", json!("xyz"), "para.sym_sn: must be the 32 hexadecimal"),
    ];
    for (field, value, says) in cases {
        let mut para = m.para(&[(CERT_SN, &m.platform.cert_pem)]);
        para[field] = value;
        let r = t.call("qcloud.admin.app.api_security", para).await;
        assert_eq!(code(&r), 1003, "{field}: {r}");
        assert!(r["returnMessage"].as_str().unwrap().contains(says), "{field}: {r}");
    }
    let r = t
        .call(
            "qcloud.admin.app.api_security",
            m.para(&[(CERT_SN, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")]),
        )
        .await;
    assert!(r["returnMessage"].as_str().unwrap().contains("para.certs[0].pem"), "{r}");
    let mut para = m.para(&[(CERT_SN, &m.platform.cert_pem)]);
    para["appid"] = json!("wx_not_registered");
    assert_eq!(code(&t.call("qcloud.admin.app.api_security", para).await), 1012);
    // Nothing was replaced: calls still verify, and removing the app removes its keys.
    assert_eq!(code(&t.call("qcloud.mimi.call", risk_call(json!({}))).await), 0);
    assert!(t.store.registry.get_api_security(&id(APP)).await.unwrap().is_some());
    assert!(t.store.registry.remove_app(&id(APP)).await.unwrap());
    assert!(t.store.registry.get_api_security(&id(APP)).await.unwrap().is_none());
}

/// The operator's path, through the binary: files registered with a master key (an error names the file), sealed
/// at rest, shown by `app list` as SNs and expiry; a deployed server signing its calls and refusing a tampered
/// reply with a log line that names the path and the reason — and no key anywhere in its output.
async fn the_cli_registers_keys_from_files_and_the_server_uses_them(b: Backend) {
    use crate::cli::{db_env, run_ok, spawn_server, terminate, wafer};
    const MASTER: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let db = crate::helpers::TestDb::new(b).await;
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let mut c = wafer(dir.path());
        db_env(&mut c, &db).env("WAFER_MASTER_KEY", MASTER).args(args);
        c
    };
    if b == Backend::Mysql {
        run_ok(&mut cli(&["migrate"]));
    }
    run_ok(&mut cli(&["app", "add", "--appid", APP, "--secret", SECRET]));
    let m = Material::new();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let sym = file("sym.txt", &format!("{}\n", m.sym_b64()));
    let key = file("app.key", &m.app_key.key_pem);
    let cert = file("wechat.pem", &m.platform.cert_pem);
    let register = |sym: &str, key: &str, cert: &str| {
        cli(&[
            "app",
            "api-security",
            "--appid",
            APP,
            "--sym-key-file",
            sym,
            "--sym-sn",
            SYM_SN,
            "--private-key-file",
            key,
            "--private-key-sn",
            KEY_SN,
            "--cert-file",
            cert,
            "--cert-sn",
            CERT_SN,
        ])
        .output()
        .unwrap()
    };
    // Bad files: refused before anything is stored, naming the file.
    let short = file("short.txt", &STANDARD.encode([1u8; 16]));
    let garbage = file("garbage.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    for (out, says) in [
        (register(&short, &key, &cert), format!("--sym-key-file {short}: 16 bytes where AES-256 takes 32")),
        (register(&sym, &cert, &cert), format!("--private-key-file {cert}: not a PEM private key")),
        (register(&sym, &key, &garbage), format!("--cert-file {garbage}: not an X.509 certificate")),
        (
            register(&sym, &dir.path().join("none").to_string_lossy(), &cert),
            "none: cannot be read".to_owned(),
        ),
    ] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(&says), "{says}: {stderr}");
    }
    assert!(String::from_utf8_lossy(&run_ok(&mut cli(&["app", "list"])).stdout)
        .lines()
        .all(|l| !l.contains("API security")));

    let out = register(&sym, &key, &cert);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expires = wafer_scf::clock::format_utc(
        wafer_scf::crypto::pki::Certificate::from_pem(&m.platform.cert_pem).unwrap().not_after,
    );
    let shown = format!("API security on, certificate SN {CERT_SN}, expires {expires}");
    assert!(stdout.contains(&shown), "{stdout}");
    let list = String::from_utf8_lossy(&run_ok(&mut cli(&["app", "list"])).stdout).into_owned();
    assert!(list.contains(&shown), "{list}");
    let dump = db.raw_dump().await;
    let key_body = m.app_key.key_pem.lines().nth(1).unwrap();
    for secret in [m.sym_b64().as_str(), key_body] {
        assert!(!dump.contains(secret), "in the clear at rest");
        assert!(!stdout.contains(secret) && !list.contains(secret));
    }
    assert!(dump.contains(CERT_SN), "SNs and certificates are public");

    // A deployed server signs; a tampered reply is refused and logged.
    let sf = Arc::new(SecureFake::default());
    m.install(&sf);
    let wx = crate::fake_wechat::FakeWeChat::start_secured(routes(), sf.clone()).await;
    wx.register(APP, SECRET);
    let env = [
        ("WAFER_DATABASE_URL", db.url.as_str()),
        ("WAFER_MASTER_KEY", MASTER),
        ("WAFER_WECHAT_BASE_URL", &wx.base_url),
        ("WAFER_CALLER_AUTH", "off"),
    ];
    let (mut server, url) = spawn_server(dir.path(), &env, true).await;
    let (status, reply) = post_json(format!("{url}wechat/{APP}{RISK}"), &json!({"openid": "o_bin"})).await;
    assert_eq!((status, &reply["got"]["openid"]), (200, &json!("o_bin")), "{reply}");
    *sf.tamper.lock().unwrap() = Some(Tamper::Body);
    let (status, reply) = post_json(format!("{url}wechat/{APP}{RISK}"), &json!({"openid": "o_bin"})).await;
    assert_eq!((status, code(&reply)), (502, 1029), "{reply}");
    assert!(terminate(&mut server).success());
    let logs = String::from_utf8_lossy(&server.wait_with_output().unwrap().stderr).into_owned();
    let refused = logs.lines().find(|l| l.contains("did not verify")).unwrap_or_else(|| panic!("{logs}"));
    assert!(refused.contains(RISK) && refused.contains("the signature does not verify"), "{refused}");
    for secret in [m.sym_b64().as_str(), key_body, SECRET] {
        assert!(!logs.contains(secret), "a key in the logs: {logs}");
    }
    assert_eq!(sf.signed_calls(RISK), 2);

    let out = run_ok(&mut cli(&["app", "api-security", "--appid", APP, "--off"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("API security off"));
    assert!(!db.raw_dump().await.contains(CERT_SN), "deleted");
}

both_backends!(
    every_caller_signs_and_gets_the_verified_reply,
    a_reply_that_does_not_verify_is_never_passed_on,
    a_certificate_rotation_is_followed_and_reported,
    wechats_security_refusals_say_what_to_check,
    bad_key_material_is_refused_naming_the_field,
    the_cli_registers_keys_from_files_and_the_server_uses_them,
);
