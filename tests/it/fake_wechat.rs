//! A fake WeChat API owned by the tests: `jscode2session` with single-use codes, per-login session keys,
//! every error class, a slow reply and a non-JSON reply; it counts calls per endpoint.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct FakeState {
    secrets: Mutex<HashMap<String, String>>,
    used_codes: Mutex<HashSet<String>>,
    session_keys: Mutex<HashMap<String, String>>,
    logins: Mutex<HashMap<String, usize>>,
    calls: Mutex<HashMap<String, usize>>,
    code_seq: AtomicUsize,
}

#[derive(Clone)]
pub struct FakeWeChat {
    pub base_url: String,
    pub state: Arc<FakeState>,
}

impl FakeWeChat {
    pub async fn start() -> Self {
        let state = Arc::new(FakeState::default());
        let app = Router::new().route("/sns/jscode2session", get(code2session)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base_url: format!("http://{addr}"), state }
    }

    pub fn register(&self, appid: &str, secret: &str) {
        self.state.secrets.lock().unwrap().insert(appid.into(), secret.into());
    }

    /// A fresh single-use login code for `openid`.
    pub fn code_for(&self, openid: &str) -> String {
        let n = self.state.code_seq.fetch_add(1, Ordering::SeqCst);
        format!("ok:{openid}:{n}")
    }

    /// The session_key WeChat gave `openid` at its latest login.
    pub fn session_key(&self, openid: &str) -> String {
        self.state.session_keys.lock().unwrap().get(openid).cloned().expect("openid never logged in")
    }

    pub fn calls(&self, path: &str) -> usize {
        self.state.calls.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Calls that presented exactly this code.
    pub fn code_calls(&self, code: &str) -> usize {
        self.calls(&format!("code:{code}"))
    }
}

fn bump(state: &FakeState, key: String) {
    *state.calls.lock().unwrap().entry(key).or_default() += 1;
}

async fn code2session(
    State(st): State<Arc<FakeState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    bump(&st, "/sns/jscode2session".into());
    let code = q.get("js_code").cloned().unwrap_or_default();
    bump(&st, format!("code:{code}"));
    if q.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return axum::Json(json!({"errcode": 40002, "errmsg": "invalid grant_type"})).into_response();
    }
    let appid = q.get("appid").cloned().unwrap_or_default();
    let secret = q.get("secret").cloned().unwrap_or_default();
    match code.as_str() {
        "slow" => {
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            return axum::Json(json!({"openid": "late", "session_key": "AAAAAAAAAAAAAAAAAAAAAA=="}))
                .into_response();
        }
        "nonjson" => return (StatusCode::OK, "<html>gateway</html>").into_response(),
        "http500" => return (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
        "nofields" => return axum::Json(json!({"errcode": 0, "errmsg": "ok"})).into_response(),
        c if c.starts_with("err:") => {
            let errcode: i64 = c[4..].parse().unwrap_or(-1);
            return axum::Json(
                json!({"errcode": errcode, "errmsg": format!("fake error, rid: r-{errcode}")}),
            )
            .into_response();
        }
        _ => {}
    }
    if st.secrets.lock().unwrap().get(&appid) != Some(&secret) {
        return axum::Json(json!({"errcode": 40125, "errmsg": "invalid appsecret, rid: x"})).into_response();
    }
    let Some(openid) = code.strip_prefix("ok:").and_then(|r| r.split(':').next()).map(str::to_owned) else {
        return axum::Json(json!({"errcode": 40029, "errmsg": "invalid code"})).into_response();
    };
    if !st.used_codes.lock().unwrap().insert(code.clone()) {
        return axum::Json(json!({"errcode": 40163, "errmsg": "code been used"})).into_response();
    }
    let n = {
        let mut logins = st.logins.lock().unwrap();
        let e = logins.entry(openid.clone()).or_default();
        *e += 1;
        *e
    };
    let digest = Sha256::digest(format!("{openid}/{n}").as_bytes());
    let session_key = base64::engine::general_purpose::STANDARD.encode(&digest[..16]);
    st.session_keys.lock().unwrap().insert(openid.clone(), session_key.clone());
    let mut body = json!({"openid": openid, "session_key": session_key});
    if openid.starts_with("u_") {
        body["unionid"] = json!(format!("union-{openid}"));
    }
    axum::Json(body).into_response()
}
