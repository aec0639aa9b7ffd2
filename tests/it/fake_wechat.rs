//! A fake WeChat + WeCom API owned by the tests, modelling the rules that matter:
//! - `jscode2session` with single-use codes, per-login session keys, every error class, slow and non-JSON replies;
//! - classic `cgi-bin/token`: every fetch issues a new token, the previous one stays valid for an overlap;
//! - `cgi-bin/stable_token`: idempotent within its window with the remaining lifetime; `force_refresh` rotates;
//! - tickets (`getticket`, WeCom `get_jsapi_ticket`, `ticket/get`) need a valid token of the same app/agent;
//! - WeCom `gettoken`: the same token per (corpid, secret) until invalidated;
//! - switches: fail the next N calls of a path with an errcode, delay a path.
//!
//! It counts calls per endpoint and per (endpoint, app).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A broken reply the fake can give instead of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// An HTTP status other than 200, with an HTML body.
    Status(u16),
    /// 200 with a body that is not JSON.
    Garbage,
}

#[derive(Clone)]
struct Tok {
    owner: String,
    expires_at: i64,
}

#[derive(Default)]
struct Inner {
    secrets: HashMap<String, String>,
    used_codes: HashSet<String>,
    session_keys: HashMap<String, String>,
    logins: HashMap<String, usize>,
    calls: HashMap<String, usize>,
    /// Every valid token → its owner and expiry (expiry is cut short when a classic refresh supersedes it).
    tokens: HashMap<String, Tok>,
    /// Latest classic / stable / wecom token per owner.
    classic: HashMap<String, String>,
    stable: HashMap<String, String>,
    wecom: HashMap<String, String>,
    /// Scripted failures: path → (errcode, remaining count).
    failures: HashMap<String, (i64, usize)>,
    /// Scripted delays: path → (delay, remaining count).
    delays: HashMap<String, (Duration, usize)>,
    /// Scripted broken replies: path → (fault, remaining count).
    faults: HashMap<String, (Fault, usize)>,
    seq: usize,
}

pub struct FakeState {
    inner: Mutex<Inner>,
    code_seq: AtomicUsize,
    /// Lifetime of tokens and tickets, and how long a superseded classic token stays valid.
    pub lifetime: i64,
    pub overlap: i64,
    /// WeCom hands out its current token with a full `expires_in` (as if it were new) instead of what is left.
    pub wecom_fresh_expiry: std::sync::atomic::AtomicBool,
}

#[derive(Clone)]
pub struct FakeWeChat {
    pub base_url: String,
    pub state: Arc<FakeState>,
}

impl FakeWeChat {
    pub async fn start() -> Self {
        Self::start_with(Router::new()).await
    }

    /// The fake with `extra` routes of a test's own (they see the same tokens).
    pub async fn start_with(extra: Router<Arc<FakeState>>) -> Self {
        Self::start_layered(extra, None).await
    }

    /// The fake enforcing WeChat's API security ([`crate::fake_secure`]) in front of every route.
    pub async fn start_secured(
        extra: Router<Arc<FakeState>>,
        sf: Arc<crate::fake_secure::SecureFake>,
    ) -> Self {
        Self::start_layered(extra, Some(sf)).await
    }

    async fn start_layered(
        extra: Router<Arc<FakeState>>,
        sf: Option<Arc<crate::fake_secure::SecureFake>>,
    ) -> Self {
        let state = Arc::new(FakeState {
            inner: Mutex::new(Inner::default()),
            code_seq: AtomicUsize::new(0),
            lifetime: 7200,
            overlap: 300,
            wecom_fresh_expiry: Default::default(),
        });
        let app = Router::new()
            .route("/sns/jscode2session", get(code2session))
            .route("/cgi-bin/token", get(classic_token))
            .route("/cgi-bin/stable_token", post(stable_token))
            .route("/cgi-bin/ticket/getticket", get(mp_ticket))
            .route("/cgi-bin/gettoken", get(wecom_token))
            .route("/cgi-bin/get_jsapi_ticket", get(wecom_corp_ticket))
            .route("/cgi-bin/ticket/get", get(wecom_agent_ticket))
            // Business APIs a backend calls through wafer-scf (WeCom's message/send shares the fake's host).
            .route("/wxa/getwxacodeunlimit", post(business_png))
            .route("/cgi-bin/message/subscribe/send", post(business_json))
            .route("/cgi-bin/message/send", post(business_json))
            .route("/wxa/business/getuserphonenumber", post(phone_number))
            .route("/wxa/checksession", get(session_key_check))
            .route("/cgi-bin/openapi/quota/get", post(platform))
            .route("/cgi-bin/clear_quota", post(platform))
            .route("/cgi-bin/openapi/rid/get", post(platform))
            .route("/wxa/resetusersessionkey", get(session_key_check))
            .merge(extra);
        let app = match &sf {
            Some(sf) => app.layer(axum::middleware::from_fn_with_state(
                (sf.clone(), state.clone()),
                crate::fake_secure::layer,
            )),
            None => app,
        };
        let app = app.with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        if let Some(sf) = &sf {
            let _ = sf.base.set(format!("http://{addr}"));
        }
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base_url: format!("http://{addr}"), state }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state.inner.lock().unwrap()
    }

    /// Register an appid (or a WeCom `corpid/agentid`-independent corp secret) with its secret.
    pub fn register(&self, appid: &str, secret: &str) {
        self.inner().secrets.insert(appid.into(), secret.into());
    }

    /// A fresh single-use login code for `openid`.
    pub fn code_for(&self, openid: &str) -> String {
        let n = self.state.code_seq.fetch_add(1, Ordering::SeqCst);
        format!("ok:{openid}:{n}")
    }

    /// The session_key WeChat gave `openid` at its latest login.
    pub fn session_key(&self, openid: &str) -> String {
        self.inner().session_keys.get(openid).cloned().expect("openid never logged in")
    }

    /// Calls to `path` (all apps), or with `path|owner` the calls for one app / corp secret.
    pub fn calls(&self, key: &str) -> usize {
        self.state.calls(key)
    }

    /// Calls that presented exactly this login code.
    pub fn code_calls(&self, code: &str) -> usize {
        self.calls(&format!("code:{code}"))
    }

    /// Fail the next `n` calls to `path` with `errcode`.
    pub fn fail_next(&self, path: &str, errcode: i64, n: usize) {
        self.inner().failures.insert(path.into(), (errcode, n));
    }

    /// Answer the next `n` calls to `path` with a broken reply.
    pub fn fault_next(&self, path: &str, fault: Fault, n: usize) {
        self.inner().faults.insert(path.into(), (fault, n));
    }

    /// Delay the next `n` calls to `path`.
    pub fn delay(&self, path: &str, d: Duration, n: usize) {
        self.inner().delays.insert(path.into(), (d, n));
    }

    /// WeChat gives `openid` a new session key on its side (a login elsewhere): the stored one is stale.
    pub fn rotate_session_key(&self, openid: &str) {
        self.inner().session_keys.insert(openid.into(), "cm90YXRlZC1zZXNzaW9uLWs=".into());
    }

    /// Whether `token` is currently valid upstream.
    pub fn token_valid(&self, token: &str) -> bool {
        self.inner().tokens.get(token).is_some_and(|t| t.expires_at > now())
    }

    /// Make a token invalid now (WeCom may invalidate early; a classic refresh elsewhere, …).
    pub fn invalidate(&self, token: &str) {
        if let Some(t) = self.inner().tokens.get_mut(token) {
            t.expires_at = 0;
        }
        let mut inner = self.inner();
        inner.wecom.retain(|_, v| v != token);
        inner.stable.retain(|_, v| v != token);
    }
}

/// A port that accepts connections and hangs up at once (a WeChat that resets every connection): its base URL and
/// the count of connection attempts.
pub async fn hang_up_listener() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = attempts.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(sock);
        }
    });
    (base, attempts)
}

/// Count the call, apply scripted delays and failures. Returns a scripted failure reply, if any.
async fn enter(st: &FakeState, path: &str, owner: &str) -> Option<Response> {
    let (delay, failure, fault) = {
        let mut inner = st.inner.lock().unwrap();
        *inner.calls.entry(path.to_owned()).or_default() += 1;
        *inner.calls.entry(format!("{path}|{owner}")).or_default() += 1;
        let delay = match inner.delays.get_mut(path) {
            Some((d, n)) if *n > 0 => {
                *n -= 1;
                Some(*d)
            }
            _ => None,
        };
        let failure = match inner.failures.get_mut(path) {
            Some((code, n)) if *n > 0 => {
                *n -= 1;
                Some(*code)
            }
            _ => None,
        };
        let fault = match inner.faults.get_mut(path) {
            Some((f, n)) if *n > 0 => {
                *n -= 1;
                Some(*f)
            }
            _ => None,
        };
        (delay, failure, fault)
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    match fault {
        Some(Fault::Status(s)) => {
            let status = StatusCode::from_u16(s).unwrap();
            return Some((status, "<html>bad gateway</html>").into_response());
        }
        Some(Fault::Garbage) => return Some((StatusCode::OK, "\u{1}not json at all").into_response()),
        None => {}
    }
    failure.map(|code| {
        // Shaped as WeChat and WeCom word these refusals: they name the caller's IP.
        let errmsg = match code {
            40164 => "invalid ip 203.0.113.9 ipv6 ::ffff:203.0.113.9, not in whitelist rid: s-40164".to_owned(),
            60020 => "not allow to access from your ip, hint: [1700000000_60020_s], from ip: 203.0.113.9, more info at https://open.work.weixin.qq.com/devtool/query?e=60020".to_owned(),
            45009 if path == "/cgi-bin/token" => {
                "reach max api daily quota limit, you can use /cgi-bin/stable_token instead rid: s-45009".to_owned()
            }
            c => format!("scripted failure, rid: s-{c}"),
        };
        Json(json!({"errcode": code, "errmsg": errmsg})).into_response()
    })
}

fn issue(inner: &mut Inner, prefix: &str, owner: &str, lifetime: i64) -> String {
    inner.seq += 1;
    let t = format!("{prefix}-{owner}-{}-{}", inner.seq, "x".repeat(40));
    inner.tokens.insert(t.clone(), Tok { owner: owner.to_owned(), expires_at: now() + lifetime });
    t
}

fn err(code: i64, msg: &str) -> Response {
    Json(json!({"errcode": code, "errmsg": msg})).into_response()
}

async fn code2session(
    State(st): State<Arc<FakeState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let code = q.get("js_code").cloned().unwrap_or_default();
    let appid = q.get("appid").cloned().unwrap_or_default();
    if let Some(r) = enter(&st, "/sns/jscode2session", &appid).await {
        return r;
    }
    *st.inner.lock().unwrap().calls.entry(format!("code:{code}")).or_default() += 1;
    if q.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return err(40002, "invalid grant_type");
    }
    let secret = q.get("secret").cloned().unwrap_or_default();
    match code.as_str() {
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            return Json(json!({"openid": "late", "session_key": "AAAAAAAAAAAAAAAAAAAAAA=="}))
                .into_response();
        }
        "nonjson" => return (StatusCode::OK, "<html>gateway</html>").into_response(),
        "http500" => return (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
        "nofields" => return err(0, "ok"),
        c if c.starts_with("err:") => {
            let errcode: i64 = c[4..].parse().unwrap_or(-1);
            return err(errcode, &format!("fake error, rid: r-{errcode}"));
        }
        _ => {}
    }
    let mut inner = st.inner.lock().unwrap();
    if inner.secrets.get(&appid) != Some(&secret) {
        return err(40125, "invalid appsecret, rid: x");
    }
    let Some(openid) = code.strip_prefix("ok:").and_then(|r| r.split(':').next()).map(str::to_owned) else {
        return err(40029, "invalid code");
    };
    if !inner.used_codes.insert(code.clone()) {
        return err(40163, "code been used");
    }
    let n = {
        let e = inner.logins.entry(openid.clone()).or_default();
        *e += 1;
        *e
    };
    let digest = Sha256::digest(format!("{openid}/{n}").as_bytes());
    let session_key = base64::engine::general_purpose::STANDARD.encode(&digest[..16]);
    inner.session_keys.insert(openid.clone(), session_key.clone());
    let mut body = json!({"openid": openid, "session_key": session_key});
    if openid.starts_with("u_") {
        body["unionid"] = json!(format!("union-{openid}"));
    }
    Json(body).into_response()
}

async fn classic_token(
    State(st): State<Arc<FakeState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let appid = q.get("appid").cloned().unwrap_or_default();
    if let Some(r) = enter(&st, "/cgi-bin/token", &appid).await {
        return r;
    }
    let mut inner = st.inner.lock().unwrap();
    if q.get("grant_type").map(String::as_str) != Some("client_credential") {
        return err(40002, "invalid grant_type");
    }
    if inner.secrets.get(&appid) != q.get("secret") {
        return err(40125, "invalid appsecret");
    }
    // The previous classic token stays valid for the overlap only.
    if let Some(prev) = inner.classic.get(&appid).cloned() {
        if let Some(t) = inner.tokens.get_mut(&prev) {
            t.expires_at = t.expires_at.min(now() + st.overlap);
        }
    }
    let t = issue(&mut inner, "classic", &appid, st.lifetime);
    inner.classic.insert(appid, t.clone());
    Json(json!({"access_token": t, "expires_in": st.lifetime})).into_response()
}

async fn stable_token(State(st): State<Arc<FakeState>>, Json(body): Json<Value>) -> Response {
    let appid = body["appid"].as_str().unwrap_or_default().to_owned();
    if let Some(r) = enter(&st, "/cgi-bin/stable_token", &appid).await {
        return r;
    }
    let force = body["force_refresh"].as_bool().unwrap_or(false);
    if force {
        *st.inner.lock().unwrap().calls.entry(format!("/cgi-bin/stable_token|{appid}|force")).or_default() +=
            1;
    }
    let mut inner = st.inner.lock().unwrap();
    if body["grant_type"] != "client_credential" {
        return err(40002, "invalid grant_type");
    }
    if inner.secrets.get(&appid).map(String::as_str) != body["secret"].as_str() {
        return err(40125, "invalid appsecret");
    }
    let current = inner
        .stable
        .get(&appid)
        .cloned()
        .filter(|t| inner.tokens.get(t).is_some_and(|t| t.expires_at > now()));
    let token = match (current, force) {
        (Some(t), false) => t,
        (old, _) => {
            if let Some(o) = old {
                inner.tokens.remove(&o);
            }
            let t = issue(&mut inner, "stable", &appid, st.lifetime);
            inner.stable.insert(appid, t.clone());
            t
        }
    };
    let remaining = inner.tokens[&token].expires_at - now();
    Json(json!({"access_token": token, "expires_in": remaining})).into_response()
}

fn ticket_reply(st: &FakeState, token: Option<&String>, owner_prefix: &str, kind: &str) -> Response {
    let mut inner = st.inner.lock().unwrap();
    let owner = match token.and_then(|t| inner.tokens.get(t)).filter(|t| t.expires_at > now()) {
        Some(t) if t.owner.starts_with(owner_prefix) || owner_prefix.is_empty() => t.owner.clone(),
        _ => return err(40001, "invalid credential, access_token is invalid or not latest"),
    };
    let t = issue(&mut inner, kind, &owner, st.lifetime);
    Json(json!({"errcode": 0, "errmsg": "ok", "ticket": t, "expires_in": st.lifetime})).into_response()
}

pub fn token_owner(st: &FakeState, token: Option<&String>) -> String {
    token.and_then(|t| st.inner.lock().unwrap().tokens.get(t).map(|t| t.owner.clone())).unwrap_or_default()
}

async fn mp_ticket(State(st): State<Arc<FakeState>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let owner = token_owner(&st, q.get("access_token"));
    if let Some(r) = enter(&st, "/cgi-bin/ticket/getticket", &owner).await {
        return r;
    }
    if q.get("type").map(String::as_str) != Some("jsapi") {
        return err(40097, "invalid args");
    }
    ticket_reply(&st, q.get("access_token"), "", "jsapi")
}

async fn wecom_token(State(st): State<Arc<FakeState>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let corpid = q.get("corpid").cloned().unwrap_or_default();
    let secret = q.get("corpsecret").cloned().unwrap_or_default();
    let owner = format!("{corpid}/{secret}");
    if let Some(r) = enter(&st, "/cgi-bin/gettoken", &corpid).await {
        return r;
    }
    let mut inner = st.inner.lock().unwrap();
    if !inner.secrets.get(&corpid).is_some_and(|s| s.split(',').any(|s| s == secret)) {
        return err(40001, "invalid secret");
    }
    let current = inner
        .wecom
        .get(&owner)
        .cloned()
        .filter(|t| inner.tokens.get(t).is_some_and(|t| t.expires_at > now()));
    let token = match current {
        Some(t) => t,
        None => {
            let t = issue(&mut inner, "wecom", &owner, st.lifetime);
            inner.wecom.insert(owner, t.clone());
            t
        }
    };
    let remaining = if st.wecom_fresh_expiry.load(Ordering::SeqCst) {
        st.lifetime
    } else {
        inner.tokens[&token].expires_at - now()
    };
    Json(json!({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": remaining}))
        .into_response()
}

async fn wecom_corp_ticket(
    State(st): State<Arc<FakeState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let owner = token_owner(&st, q.get("access_token"));
    if let Some(r) = enter(&st, "/cgi-bin/get_jsapi_ticket", &owner).await {
        return r;
    }
    ticket_reply(&st, q.get("access_token"), "", "corp")
}

async fn wecom_agent_ticket(
    State(st): State<Arc<FakeState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let owner = token_owner(&st, q.get("access_token"));
    if let Some(r) = enter(&st, "/cgi-bin/ticket/get", &owner).await {
        return r;
    }
    if q.get("type").map(String::as_str) != Some("agent_config") {
        return err(40097, "invalid args");
    }
    ticket_reply(&st, q.get("access_token"), "", "agent")
}

/// A business API answering JSON: ok for a valid token, 40001 otherwise; echoes the body's `touser` to show the
/// body arrived.
async fn business_json(
    State(st): State<Arc<FakeState>>,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = business_entry(&st, &q).await {
        return r;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Json(json!({"errcode": 0, "errmsg": "ok", "touser": body["touser"]})).into_response()
}

/// `wxa/business/getuserphonenumber`: a code `phone:<number>` gives that number, watermarked with the token's app
/// (`phone-other:<number>`: watermarked with another app); any other code is invalid (40029).
async fn phone_number(
    State(st): State<Arc<FakeState>>,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = business_entry(&st, &q).await {
        return r;
    }
    let owner = token_owner(&st, q.get("access_token"));
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let code = body["code"].as_str().unwrap_or("");
    if code == "phone-quota" {
        return err(1400001, "phone number quota used up");
    }
    // `phone-for:<openid>:<number>`: a code of that user only (WeChat checks the openid it is given).
    let for_user = code.strip_prefix("phone-for:").and_then(|r| r.split_once(':'));
    if let Some((openid, _)) = for_user {
        if body.get("openid").and_then(Value::as_str) != Some(openid) {
            return err(40029, "invalid code: not this user's");
        }
    }
    let (number, watermark) = if let Some((_, n)) = for_user {
        (n, owner.as_str())
    } else if let Some(n) = code.strip_prefix("phone:") {
        (n, owner.as_str())
    } else if let Some(n) = code.strip_prefix("phone-other:") {
        (n, "wx_some_other_app")
    } else {
        return err(40029, "invalid code");
    };
    Json(json!({"errcode": 0, "errmsg": "ok", "phone_info": {
        "phoneNumber": format!("+86{number}"), "purePhoneNumber": number, "countryCode": "86",
        "watermark": {"timestamp": now(), "appid": watermark}}}))
    .into_response()
}

/// `wxa/getwxacodeunlimit`: PNG bytes for a valid token.
async fn business_png(
    State(st): State<Arc<FakeState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = business_entry(&st, &q).await {
        return r;
    }
    ([("content-type", "image/png")], b"\x89PNG\r\n\x1a\nfake-image".to_vec()).into_response()
}

/// A business API's entry: count the call, apply scripted failures, refuse an invalid token with 40001.
pub async fn business_entry(st: &FakeState, q: &HashMap<String, String>) -> Option<Response> {
    let owner = token_owner(st, q.get("access_token"));
    if let Some(r) = enter(st, "/business", &owner).await {
        return Some(r);
    }
    (!valid_token(st, q.get("access_token")))
        .then(|| err(40001, "invalid credential, access_token is invalid or not latest"))
}

impl FakeState {
    /// Invalidate the current stable token of `appid` (another party's forced refresh, WeChat's own rotation).
    pub fn invalidate_stable(&self, appid: &str) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(t) = inner.stable.remove(appid) {
            if let Some(tok) = inner.tokens.get_mut(&t) {
                tok.expires_at = 0;
            }
        }
    }

    /// Calls counted under `key` so far (what [`FakeWeChat::calls`] reads).
    pub fn calls(&self, key: &str) -> usize {
        self.inner.lock().unwrap().calls.get(key).copied().unwrap_or(0)
    }
}

/// Count a call to `path` in a test's own route (read back with [`FakeWeChat::calls`]).
pub fn count_call(st: &FakeState, path: &str) {
    *st.inner.lock().unwrap().calls.entry(path.to_owned()).or_default() += 1;
}

pub fn valid_token(st: &FakeState, token: Option<&String>) -> bool {
    let inner = st.inner.lock().unwrap();
    token.and_then(|t| inner.tokens.get(t)).map(|t| t.expires_at > now()).unwrap_or(false)
}

/// `checksession` / `resetusersessionkey`: the login-state signature must be made with the user's current session
/// key (87009 otherwise); a reset gives the user a new key.
async fn session_key_check(
    State(st): State<Arc<FakeState>>,
    uri: axum::http::Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = business_entry(&st, &q).await {
        return r;
    }
    let openid = q.get("openid").cloned().unwrap_or_default();
    let mut inner = st.inner.lock().unwrap();
    let Some(key) = inner.session_keys.get(&openid).cloned() else { return err(40003, "invalid openid") };
    let expected = wafer_scf::crypto::login_signature(&key, b"");
    if q.get("sig_method").map(String::as_str) != Some("hmac_sha256") || q.get("signature") != Some(&expected)
    {
        return err(87009, "invalid signature");
    }
    if uri.path().ends_with("/resetusersessionkey") {
        let n = inner.logins.entry(openid.clone()).or_default();
        *n += 1;
        let digest = Sha256::digest(format!("{openid}/reset/{n}").as_bytes());
        let new_key = base64::engine::general_purpose::STANDARD.encode(&digest[..16]);
        inner.session_keys.insert(openid.clone(), new_key.clone());
        return Json(json!({"errcode": 0, "errmsg": "ok", "openid": openid, "session_key": new_key}))
            .into_response();
    }
    err(0, "ok")
}

/// The platform's quota and diagnosis APIs: `quota/get` counts the business calls made so far today (and a limit
/// of 10 for `clear_quota` itself, used by the resets done); `clear_quota` resets the count for the token's own
/// app; `rid/get` describes a failed call, with a URL that carries the token (it must never be logged).
async fn platform(
    State(st): State<Arc<FakeState>>,
    uri: axum::http::Uri,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Response {
    let owner = token_owner(&st, q.get("access_token"));
    if let Some(r) = enter(&st, uri.path(), &owner).await {
        return r;
    }
    if !valid_token(&st, q.get("access_token")) {
        return err(40001, "invalid credential");
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let resets = st.calls("/cgi-bin/clear_quota") as i64;
    match uri.path() {
        "/cgi-bin/openapi/quota/get" => {
            let (limit, used) = if body["cgi_path"] == "/cgi-bin/clear_quota" {
                (10, resets)
            } else {
                (100_000, st.calls("/business") as i64 - st.calls("/business/cleared") as i64)
            };
            Json(json!({"errcode": 0, "errmsg": "ok", "quota": {"daily_limit": limit, "used": used, "remain": limit - used},
                "rate_limit": {"call_count": 100, "refresh_second": 60}}))
            .into_response()
        }
        "/cgi-bin/clear_quota" => {
            if body["appid"].as_str() != Some(owner.as_str()) {
                return err(40013, "invalid appid");
            }
            let used = st.calls("/business");
            st.inner.lock().unwrap().calls.insert("/business/cleared".into(), used);
            err(0, "ok")
        }
        _ => Json(json!({"errcode": 0, "errmsg": "ok", "request": {
            "invoke_time": 1_700_000_000, "cost_in_ms": 42,
            "request_url": format!("access_token={}&cgi_path=/wxa/x", q.get("access_token").cloned().unwrap_or_default()),
            "request_body": "{\"secret-body\":1}", "response_body": "{\"errcode\":45009,\"errmsg\":\"quota\"}",
            "client_ip": "203.0.113.7"}}))
        .into_response(),
    }
}
