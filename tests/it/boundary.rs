//! The trust boundary, third round: what a token holder keeps after the app changes (a removed or re-keyed app's
//! issued tokens forgotten on every instance), clients that never follow a redirect, `reencrypt` against
//! concurrent writers, the admin token's strength and failed attempts, and the login limiter's bounded memory.

use crate::both_backends;
use crate::cli::wafer;
use crate::fake_wechat::FakeState;
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
    let elsewhere = Registry { store: &*t.store, creds: None, now: t.clock.now(), dry_run: false };

    let old = classic(&http, &url, SECRET).await["access_token"].as_str().unwrap().to_owned();
    assert_eq!(relay(&http, &url, &old).await["errcode"], 0);

    // Re-keyed elsewhere: the stored token is dropped there, a caller with the new secret gets a new one.
    t.wx.register(APP, "boundary-secret-2");
    let change = AppChanges { secret: Some("boundary-secret-2".into()), ..AppChanges::default() };
    elsewhere.put_app(APP, &change, TokenMode::Classic).await.unwrap();
    t.clock.advance(11);
    let new = classic(&http, &url, "boundary-secret-2").await;
    let new = new["access_token"].as_str().unwrap_or_else(|| panic!("{new}")).to_owned();
    assert_ne!(new, old);
    let r = relay(&http, &url, &old).await;
    assert_eq!(r["errcode"], 40001, "the old registration's token is forgotten: {r}");
    assert_eq!(relay(&http, &url, &new).await["errcode"], 0, "the new one relays");

    // Removed elsewhere: 10 s later its tokens are refused, with the token host's own answer.
    elsewhere.remove_app(APP).await.unwrap();
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
    let here =
        Registry { store: &*t.store, creds: Some(&t.svc.deps.creds), now: t.clock.now(), dry_run: false };
    here.remove_app(APP).await.unwrap();
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

both_backends!(
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
