//! The trust boundary, third round: what a token holder keeps after the app changes (a removed or re-keyed app's
//! issued tokens forgotten on every instance), clients that never follow a redirect, `reencrypt` against
//! concurrent writers, the admin token's strength and failed attempts, and the login limiter's bounded memory.

use crate::both_backends;
use crate::cli::wafer;
use crate::fake_wechat::FakeState;
use crate::helpers::id;
use crate::helpers::{app_record, code, open_settings, Backend, TestApp};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use wafer_scf::clock::Clock;
use wafer_scf::handlers::Settings;
use wafer_scf::registry::{AppChanges, Registry};
use wafer_scf::store::{AppRecord, TokenMode};

const APP: &str = "wx_boundary_app";
const SECRET: &str = "boundary-secret";

async fn relay(http: &reqwest::Client, url: &str, token: &str) -> Value {
    http.post(format!("{url}/cgi-bin/message/subscribe/send?access_token={token}"))
        .json(&json!({"touser": "o_1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn classic(http: &reqwest::Client, url: &str, secret: &str) -> Value {
    let u = format!("{url}/cgi-bin/token?grant_type=client_credential&appid={APP}&secret={secret}");
    http.get(u).send().await.unwrap().json().await.unwrap()
}

/// Another instance changes the registry (no word reaches this process's caches): within the documented 10 s
/// a token issued for the old registration is no longer relayed.
async fn a_removed_or_rekeyed_app_stops_relaying_within_ten_seconds(b: Backend) {
    let t = TestApp::with_settings(b, Settings { token_host: true, ..open_settings() }).await;
    // Classic tokens: a fetch after the re-key gets a new token (a stable token would come back the same).
    t.add_app_with(AppRecord { token_mode: TokenMode::Classic, ..app_record(APP, SECRET) }).await;
    let url = t.serve_http().await;
    let http = reqwest::Client::new();
    let elsewhere = Registry { store: &t.store, creds: None, now: t.clock.now(), dry_run: false };

    let old = classic(&http, &url, SECRET).await["access_token"].as_str().unwrap().to_owned();
    assert_eq!(relay(&http, &url, &old).await["errcode"], 0);

    // Re-keyed elsewhere: the stored token is dropped there, a caller with the new secret gets a new one.
    t.wx.register(APP, "boundary-secret-2");
    let change = AppChanges { secret: Some("boundary-secret-2".into()), ..AppChanges::default() };
    elsewhere.put_app(&id(APP), &change, TokenMode::Classic).await.unwrap();
    t.clock.advance(11);
    let new = classic(&http, &url, "boundary-secret-2").await;
    let new = new["access_token"].as_str().unwrap_or_else(|| panic!("{new}")).to_owned();
    assert_ne!(new, old);
    let r = relay(&http, &url, &old).await;
    assert_eq!(r["errcode"], 40001, "the old registration's token is forgotten: {r}");
    assert_eq!(relay(&http, &url, &new).await["errcode"], 0, "the new one relays");

    // Removed elsewhere: 10 s later its tokens are refused, with the token host's own answer.
    elsewhere.remove_app(&id(APP)).await.unwrap();
    t.clock.advance(11);
    let r = relay(&http, &url, &new).await;
    assert_eq!(r["errcode"], 40001, "{r}");
    assert!(r["errmsg"].as_str().unwrap().contains("issued"), "{r}");
}

/// Removed through this process (the admin interface, the CLI against this server): forgotten at once.
async fn a_removal_here_forgets_issued_tokens_at_once(b: Backend) {
    let t = TestApp::with_settings(b, Settings { token_host: true, ..open_settings() }).await;
    t.add_app(APP, SECRET).await;
    let url = t.serve_http().await;
    let http = reqwest::Client::new();
    let token = classic(&http, &url, SECRET).await["access_token"].as_str().unwrap().to_owned();
    assert_eq!(relay(&http, &url, &token).await["errcode"], 0);
    let here = Registry {
        store: &t.svc.deps.store,
        creds: Some(&t.svc.deps.creds),
        now: t.clock.now(),
        dry_run: false,
    };
    here.remove_app(&id(APP)).await.unwrap();
    assert_eq!(relay(&http, &url, &token).await["errcode"], 40001, "no wait");
    let r = t.call("qcloud.mimi.access_token", json!({"appid": APP})).await;
    assert_eq!(code(&r), 1012, "{r}");
}

/// A listener that records every request it gets (what a redirect would have leaked to it): its base URL and the
/// requests' lines and headers.
async fn recorder() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(format!("{} {} {:?}", req.method(), req.uri(), req.headers()));
            "recorded"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// A route of the fake WeChat that redirects (as a compromised or misconfigured upstream might) to `target`.
fn redirecting(path: &'static str, status: u16, target: String) -> axum::Router<Arc<FakeState>> {
    axum::Router::new().route(
        path,
        axum::routing::any(move || {
            let target = target.clone();
            async move {
                let status = axum::http::StatusCode::from_u16(status).unwrap();
                (status, [("location", format!("{target}/steal?next=1"))], "")
            }
        }),
    )
}

/// WeChat answering a token-free call with a redirect: not followed (the token would travel in the URL and the
/// Referer), an error naming the host, through the pass-through and `qcloud.mimi.call` alike.
async fn no_upstream_redirect_is_followed(b: Backend) {
    let (target, seen) = recorder().await;
    let t = TestApp::with_routes(b, open_settings(), redirecting("/wxa/moved", 302, target.clone())).await;
    t.add_app(APP, SECRET).await;
    let url = t.serve_http().await;
    let r =
        reqwest::Client::new().post(format!("{url}/wechat/{APP}/wxa/moved")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 502);
    let env: Value = r.json().await.unwrap();
    assert_eq!(code(&env), 1005, "{env}");
    assert!(
        env["returnMessage"].as_str().unwrap().contains("redirect to 127.0.0.1"),
        "names the host: {env}"
    );
    let r = t.call("qcloud.mimi.call", json!({"appid": APP, "path": "/wxa/moved", "body": {}})).await;
    assert_eq!(code(&r), 1005, "{r}");
    assert!(!r.to_string().contains("access_token="), "no token in the error: {r}");
    assert!(seen.lock().unwrap().is_empty(), "the redirect target got nothing: {:?}", seen.lock().unwrap());
}

const MASTER: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// A write landing between `reencrypt`'s read and its write (an admin changing the secret on a running server)
/// is kept: the compare-and-swap fails, the row is read again, and the newer value — already sealed — stays.
async fn reencrypt_never_overwrites_a_concurrent_write(b: Backend) {
    use wafer_scf::store::sealed::{Sealed, Sealer};
    use wafer_scf::store::{SealedField, StoreOptions};
    let db = crate::helpers::TestDb::new(b).await;
    let raw = wafer_scf::store::open_raw(&db.database_url(), &StoreOptions::default()).await.unwrap();
    raw.schema.migrate().await.unwrap();
    raw.registry.put_app(&app_record(APP, "secret-in-the-clear")).await.unwrap();
    let sealer = || Sealer::from_base64(MASTER).unwrap();
    let sealed = Sealed::new(raw.clone(), sealer()).into_storage();

    // The plain CAS: a stale `old` changes nothing.
    let field = SealedField::AppSecret { appid: &id(APP) };
    assert!(!raw.schema.swap_sealed(field, "not-what-is-stored", "x").await.unwrap());
    assert_eq!(raw.registry.get_app(&id(APP)).await.unwrap().unwrap().secret, "secret-in-the-clear");

    let faulty = crate::faulty::Faulty::new(raw.clone());
    let newer = AppRecord { secret: "the-newer-secret".into(), ..app_record(APP, "") };
    *faulty.before_swap.lock().unwrap() = Some((sealed.clone(), newer));
    let n = wafer_scf::store::reencrypt::reencrypt(&faulty.storage(), &sealer()).await.unwrap();
    assert_eq!(n.retried, 1, "the conflict was seen and the row read again: {n:?}");
    assert_eq!(n.apps, 0, "the newer value was sealed already: nothing left to do");
    assert_eq!(
        sealed.registry.get_app(&id(APP)).await.unwrap().unwrap().secret,
        "the-newer-secret",
        "not overwritten"
    );
    let dump = db.raw_dump().await;
    assert!(!dump.contains("the-newer-secret") && !dump.contains("secret-in-the-clear"), "sealed at rest");
}

both_backends!(
    reencrypt_never_overwrites_a_concurrent_write,
    failed_admin_authentications_are_limited_per_address,
    logins_for_unknown_apps_are_not_tracked,
    the_client_address_is_the_one_the_proxy_appended,
    logins_through_the_token_host_work,
    a_removed_or_rekeyed_app_stops_relaying_within_ten_seconds,
    a_removal_here_forgets_issued_tokens_at_once,
    no_upstream_redirect_is_followed,
);

/// `--server` answered with a 307 (which would re-send the admin token and the secret): the CLI stops and names
/// the host; the target sees nothing.
#[tokio::test]
async fn the_cli_does_not_follow_a_redirecting_server() {
    let (target, seen) = recorder().await;
    let app =
        axum::Router::new().fallback(move || {
            let target = target.clone();
            async move {
                (axum::http::StatusCode::TEMPORARY_REDIRECT, [("location", format!("{target}/admin"))], "")
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        wafer(dir.path())
            .env("WAFER_SERVER", &server)
            .env("WAFER_ADMIN_TOKEN", "an-admin-token-of-at-least-32-characters")
            .args(["app", "add", "--appid", "wx_redirected", "--secret", "secret-not-to-leak"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("redirect to 127.0.0.1; not followed"), "{err}");
    assert!(seen.lock().unwrap().is_empty(), "nothing reached the target: {:?}", seen.lock().unwrap());
}

fn from(ip: &str, admin_token: Option<&str>) -> wafer_scf::request::RequestMeta {
    wafer_scf::request::RequestMeta {
        source_ip: Some(ip.into()),
        admin_token: admin_token.map(str::to_owned),
        ..Default::default()
    }
}

async fn envelope(
    t: &TestApp,
    interface: &str,
    para: Value,
    meta: &wafer_scf::request::RequestMeta,
) -> Value {
    let body = crate::helpers::envelope(interface, para);
    serde_json::from_slice(&t.svc.handle(body.to_string().as_bytes(), meta).await.to_bytes()).unwrap()
}

/// Ten wrong admin tokens from one address lock that address out for the minute — the right token included —
/// while other addresses are unaffected.
async fn failed_admin_authentications_are_limited_per_address(b: Backend) {
    const ADMIN: &str = "an-admin-token-of-at-least-32-characters!";
    let settings = Settings { admin_token: Some(ADMIN.to_owned().into()), ..open_settings() };
    let t = TestApp::with_settings(b, settings).await;
    let t = &t;
    let list = |meta| async move { envelope(t, "qcloud.admin.app.list", json!({}), &meta).await };
    assert_eq!(code(&list(from("198.51.100.1", Some(ADMIN))).await), 0);
    for _ in 0..wafer_scf::auth::ADMIN_FAILURES_PER_MINUTE {
        let r = list(from("198.51.100.1", Some("a-guess"))).await;
        assert_eq!(code(&r), 1024, "{r}");
    }
    let r = list(from("198.51.100.1", Some(ADMIN))).await;
    assert_eq!(code(&r), 1024, "locked out, even with the right token: {r}");
    assert!(r["returnMessage"].as_str().unwrap().contains("too many failed"), "{r}");
    assert_eq!(code(&list(from("198.51.100.2", Some(ADMIN))).await), 0, "another address is not");
    t.clock.advance(60);
    assert_eq!(code(&list(from("198.51.100.1", Some(ADMIN))).await), 0, "the next minute");
}

/// A flood of logins for appids that are not registered adds nothing to the per-app counts (only the one
/// per-address entry), so it cannot grow the limiter's memory; a registered app is counted.
async fn logins_for_unknown_apps_are_not_tracked(b: Backend) {
    let settings =
        Settings { login_limit_per_app: Some(1_000), login_limit_per_ip: Some(100_000), ..open_settings() };
    let t = TestApp::with_settings(b, settings).await;
    t.add_app(APP, SECRET).await;
    let limiter = &t.svc.deps.login_limiter;
    for i in 0..500 {
        let para = json!({"appid": format!("wx_made_up_{i}"), "code": "c"});
        let r = envelope(&t, "qcloud.cam.id_skey", para, &from("203.0.113.5", None)).await;
        assert_eq!(code(&r), 1012, "{r}");
    }
    assert_eq!(limiter.tracked(), 1, "only the address is counted");
    let para = json!({"appid": APP, "code": t.wx.code_for("o_limited")});
    assert_eq!(code(&envelope(&t, "qcloud.cam.id_skey", para, &from("203.0.113.5", None)).await), 0);
    assert_eq!(limiter.tracked(), 2, "a registered app is");
}

/// The start-up check: an admin token under 32 characters stops the server, naming the setting, never its value.
#[test]
fn a_short_admin_token_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let out = wafer(dir.path()).env("WAFER_ADMIN_TOKEN", "Sh0rtToken").arg("serve").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WAFER_ADMIN_TOKEN") && err.contains("32"), "{err}");
    assert!(!err.contains("Sh0rtToken"), "the value is never echoed: {err}");
}

/// The per-address login limit counts the address the platform appended: in `forwarded` mode the last
/// X-Forwarded-For entry (entries before it are the client's own and change nothing), in `peer` mode the TCP peer
/// whatever the header says.
async fn the_client_address_is_the_one_the_proxy_appended(b: Backend) {
    use wafer_scf::request::ClientAddress;
    let settings = Settings { login_limit_per_ip: Some(1), ..open_settings() };
    let t = TestApp::with_settings(b, settings.clone()).await;
    t.add_app(APP, SECRET).await;
    let serve = |mode| {
        let svc = crate::helpers::builder(t.store.clone(), &t.wx.base_url, t.clock.clone(), settings.clone())
            .client_address(mode)
            .build()
            .unwrap();
        let svc = Arc::new(svc);
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/", listener.local_addr().unwrap());
            tokio::spawn(wafer_scf::serve::serve(listener, svc, std::future::pending()));
            url
        }
    };
    let http = reqwest::Client::new();
    let login = |url: String, xff: &'static str| {
        let body = crate::helpers::envelope(
            "qcloud.cam.id_skey",
            json!({"appid": APP, "code": t.wx.code_for("o_addr")}),
        );
        let req = http.post(url).header("x-forwarded-for", xff).json(&body);
        async move { code(&req.send().await.unwrap().json::<Value>().await.unwrap()) }
    };
    let url = serve(ClientAddress::Forwarded).await;
    assert_eq!(login(url.clone(), "10.0.0.1, 198.51.100.7").await, 0);
    assert_eq!(
        login(url.clone(), "10.0.0.2, 198.51.100.7").await,
        1026,
        "a made-up first entry changes nothing"
    );
    assert_eq!(
        login(url.clone(), "10.0.0.1, 198.51.100.8").await,
        0,
        "another appended address is another client"
    );
    let url = serve(ClientAddress::Peer).await;
    assert_eq!(login(url.clone(), "192.0.2.1").await, 0);
    assert_eq!(login(url, "192.0.2.2").await, 1026, "peer mode ignores the header");
}

/// An SDK logging in through the token host (`/sns/jscode2session` on the same base, possibly with a token
/// attached): answered like WeChat for a registered app's secret — never a token error the SDK would loop on.
async fn logins_through_the_token_host_work(b: Backend) {
    let t = TestApp::with_settings(b, Settings { token_host: true, ..open_settings() }).await;
    t.add_app(APP, SECRET).await;
    let url = t.serve_http().await;
    let http = reqwest::Client::new();
    let login = |secret: &str, code: String| {
        let u = format!(
            "{url}/sns/jscode2session?appid={APP}&secret={secret}&js_code={code}&grant_type=authorization_code&access_token=stale"
        );
        let http = http.clone();
        async move { http.get(u).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let r = login(SECRET, t.wx.code_for("o_sdk_login")).await;
    assert_eq!(r["openid"], "o_sdk_login", "{r}");
    assert_eq!(r["session_key"], t.wx.session_key("o_sdk_login"));
    assert_eq!(login("wrong", t.wx.code_for("o_x")).await["errcode"], 40125, "the secret is checked");
    let r = login(SECRET, "not-a-code".into()).await;
    assert!(r["errcode"].as_i64().is_some_and(|c| c != 0 && c != 40001), "WeChat's own refusal: {r}");
}
