//! Mini-program sessions: `qcloud.cam.id_skey`, `qcloud.cam.auth`, `qcloud.cam.decrypt`, `qcloud.cam.userinfo`
//! with every session rule of the README ("Session rules").

use super::{Deps, Reply};
use crate::auth::{Caller, Scope};
use crate::crypto::{self, wxdata, SecretStr};
use crate::envelope::{Para, ReturnCode, WaferError};
use crate::ids::AppId;
use crate::request::RequestMeta;
use crate::store::{SessionRecord, SessionView};
use crate::wechat::Call;
use serde_json::{json, Value};

pub use crate::settings::DEFAULT_MAX_SESSIONS_PER_USER;
/// Longest last-visit write interval. Shorter for apps whose idle timeout is short (a tenth of it).
pub const TOUCH_INTERVAL_SECS: i64 = 60;

/// What can go wrong with a session, mapped onto the envelope in one place ([`From<SessionError> for WaferError`]).
#[derive(Debug)]
pub enum SessionError {
    /// No such session, a wrong skey, or another app's session: one answer for all, so nothing is revealed.
    Invalid,
    /// The login is older than the app's login lifetime.
    LoginExpired,
    /// No successful auth for longer than the app's idle lifetime.
    IdleExpired,
    /// Reading sessions, apps or the sealed session key failed.
    Read(crate::store::StoreError),
    /// Writing failed (`what`: "a session", "the session", "the profile"); the detail is for the log line.
    Write(&'static str, String),
    /// The encrypted data does not open with the session's key, or was issued for another app.
    Decrypt(wxdata::DecryptError),
}

impl From<SessionError> for WaferError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Invalid => WaferError::auth(),
            SessionError::LoginExpired => {
                WaferError::new(ReturnCode::SessionExpired, "the login has expired: log in again")
            }
            SessionError::IdleExpired => WaferError::new(
                ReturnCode::SessionExpired,
                "the session has been idle too long: log in again",
            ),
            SessionError::Read(e) => WaferError::db(e),
            SessionError::Write(what, detail) => {
                WaferError::new(ReturnCode::ChangeSessionErr, format!("could not store {what}"))
                    .with_detail(detail)
            }
            SessionError::Decrypt(e) => {
                let msg = match e {
                    wxdata::DecryptError::WrongAppid => "the data was not issued for this session's app",
                    _ => "encrypt_data could not be decrypted with this session (check encrypt_data and iv, or log in again)",
                };
                WaferError::new(ReturnCode::DecryptErr, msg).with_detail(e)
            }
        }
    }
}

fn write_err(what: &'static str) -> impl Fn(crate::store::StoreError) -> WaferError {
    move |e| SessionError::Write(what, e.to_string()).into()
}

const MAX_CODE: usize = 128;
/// Longest session id accepted (ours are 32 hex characters; the seed's were longer).
pub(crate) const MAX_SESSION_ID: usize = 100;
pub(crate) const MAX_SKEY: usize = 128;
const MAX_IV: usize = 64;
/// Encrypted payloads (profile, WeRun history, share info) stay well under this.
pub const MAX_ENCRYPTED: usize = 48 * 1024;

/// `qcloud.cam.id_skey`.
#[derive(Debug)]
pub struct LoginRequest<'a> {
    pub code: SecretStr<'a>,
    pub appid: Option<AppId>,
    /// `(encrypt_data, iv)` when both were given.
    pub encrypted: Option<(&'a str, &'a str)>,
}

impl<'a> LoginRequest<'a> {
    pub fn parse(p: Para<'a>) -> Result<Self, WaferError> {
        let code = SecretStr::new(p.token("code", MAX_CODE)?);
        let appid = p.opt_id("appid")?;
        let data = p.opt_str_max("encrypt_data", MAX_ENCRYPTED)?;
        let iv = p.opt_str_max("iv", MAX_IV)?;
        Ok(Self { code, appid, encrypted: data.zip(iv) })
    }
}

/// `qcloud.cam.auth`.
#[derive(Debug)]
pub struct AuthRequest<'a> {
    pub id: &'a str,
    pub skey: SecretStr<'a>,
    pub appid: Option<AppId>,
}

impl<'a> AuthRequest<'a> {
    pub fn parse(p: Para<'a>) -> Result<Self, WaferError> {
        Ok(Self {
            id: p.token("id", MAX_SESSION_ID)?,
            skey: SecretStr::new(p.token("skey", MAX_SKEY)?),
            appid: p.opt_id("appid")?,
        })
    }
}

/// `qcloud.cam.decrypt` and `qcloud.cam.userinfo`.
#[derive(Debug)]
pub struct DecryptRequest<'a> {
    pub id: &'a str,
    pub skey: SecretStr<'a>,
    pub appid: Option<AppId>,
    pub encrypt_data: &'a str,
    pub iv: &'a str,
}

impl<'a> DecryptRequest<'a> {
    pub fn parse(p: Para<'a>) -> Result<Self, WaferError> {
        Ok(Self {
            id: p.token("id", MAX_SESSION_ID)?,
            skey: SecretStr::new(p.token("skey", MAX_SKEY)?),
            appid: p.opt_id("appid")?,
            encrypt_data: p.str_max("encrypt_data", MAX_ENCRYPTED)?,
            iv: p.str_max("iv", MAX_IV)?,
        })
    }
}

/// The appid a request names, or the server's default: `WAFER_DEFAULT_APPID`, else the only registered app.
pub async fn resolve_appid(deps: &Deps, given: Option<AppId>) -> Result<AppId, WaferError> {
    if let Some(a) = given {
        return Ok(a);
    }
    if let Some(a) = &deps.settings.default_appid {
        return Ok(a.clone());
    }
    let apps = deps.store.registry.list_apps().await.map_err(WaferError::db)?;
    match apps.as_slice() {
        [only] => Ok(only.appid.clone()),
        _ => Err(WaferError::para("appid", "is missing and this server has no default app")),
    }
}

fn decrypt_error(e: wxdata::DecryptError) -> WaferError {
    SessionError::Decrypt(e).into()
}
fn user_info_value(text: &Option<String>) -> Value {
    text.as_deref().and_then(|t| serde_json::from_str(t).ok()).unwrap_or(Value::Null)
}

fn login_limited(what: &str) -> WaferError {
    WaferError::new(
        ReturnCode::LoginRateLimited,
        format!("too many logins {what} this minute; try again shortly"),
    )
}

/// The per-source login limit (off unless configured), counted before anything is looked up.
fn check_source_limit(deps: &Deps, meta: &RequestMeta) -> Result<(), WaferError> {
    if let (Some(n), Some(ip)) = (deps.settings.login_limit_per_ip, meta.source_ip.as_deref()) {
        if !deps.login_limiter.allow(&format!("ip\n{ip}"), n, deps.clock.now()) {
            return Err(login_limited("from this address"));
        }
    }
    Ok(())
}

/// The per-app login limit (off unless configured), counted for registered apps only: an unknown appid adds no
/// entry, so a flood of made-up appids cannot grow the counts.
fn check_app_limit(deps: &Deps, appid: &str) -> Result<(), WaferError> {
    if let Some(n) = deps.settings.login_limit_per_app {
        if !deps.login_limiter.allow(&format!("app\n{appid}"), n, deps.clock.now()) {
            return Err(login_limited("for this app"));
        }
    }
    Ok(())
}

/// Log in: code2session, optional profile decryption, a new session.
pub async fn login(
    deps: &Deps,
    meta: &RequestMeta,
    req: LoginRequest<'_>,
    scope: Option<&Caller>,
) -> Result<Reply, WaferError> {
    let appid = resolve_appid(deps, req.appid).await?;
    // In `all` mode the key must cover the app, default or named, before WeChat sees the code.
    if let Some(c) = scope {
        c.require(Scope::App(&appid))?;
    }
    check_source_limit(deps, meta)?;
    // With caller keys on, an unauthenticated caller cannot tell an unregistered app from a misconfigured one or
    // from a bad code: the three answer alike (the log line has the difference).
    let guarded = deps.settings.caller_auth != crate::auth::CallerAuthMode::Off;
    let alike = |e: WaferError| {
        if guarded
            && matches!(e.code, ReturnCode::NoAppid | ReturnCode::WeixinAppidErr | ReturnCode::WeixinCodeErr)
        {
            let detail = format!("{}: {}", e.code.name(), e.detail.as_deref().unwrap_or(&e.message));
            WaferError::new(ReturnCode::WeixinCodeErr, "WeChat did not accept this login code for this app")
                .with_detail(detail)
        } else {
            e
        }
    };
    let app = deps.store.registry.get_app(&appid).await.map_err(WaferError::db)?.ok_or_else(|| {
        alike(WaferError::new(ReturnCode::NoAppid, "appid is not configured on this server"))
    })?;
    check_app_limit(deps, &app.appid)?;

    let wx = deps
        .wechat
        .code2session(&app.appid, &app.secret, req.code.expose())
        .await
        .map_err(|e| alike(e.to_wafer(Call::Code2Session, crate::wechat::Upstream::WeChat)))?;

    let user_info = match req.encrypted {
        Some((data, iv)) => {
            Some(wxdata::decrypt(&wx.session_key, data, iv, &app.appid).map_err(decrypt_error)?)
        }
        None => None,
    };

    let rng_err = |e: getrandom::Error| WaferError::from(SessionError::Write("a session", e.to_string()));
    let id = crypto::random_hex(16).map_err(rng_err)?;
    let skey = crypto::random_hex(20).map_err(rng_err)?;
    let now = deps.clock.now();
    let record = SessionRecord {
        id: id.clone(),
        skey_hash: crypto::sha256_hex(skey.as_bytes()),
        appid: app.appid.clone(),
        openid: wx.openid.clone(),
        unionid: wx.unionid.clone().unwrap_or_default(),
        session_key: wx.session_key.clone(),
        user_info: user_info.as_ref().map(Value::to_string),
        created_at: now,
        last_visit_at: now,
    };
    let outcome = deps
        .store
        .sessions
        .create_session(&record, deps.settings.max_sessions_per_user.max(1), now)
        .await
        .map_err(write_err("the session"))?;
    if let Some(info) = &record.user_info {
        // Other devices of the same user see the fresh profile too.
        if outcome.existing_user {
            deps.store
                .sessions
                .set_user_info(&app.appid, &wx.openid, info)
                .await
                .map_err(write_err("the profile"))?;
        }
    }

    Ok(Reply {
        message: if outcome.existing_user { "UPDATE_SESSION_SUCCESS" } else { "NEW_SESSION_SUCCESS" },
        data: json!({
            "id": id,
            "skey": skey,
            "appid": app.appid,
            "openid": wx.openid,
            "unionid": record.unionid,
            "user_info": user_info.unwrap_or(Value::Null),
            "duration": app.login_duration_secs,
        })
        .into(),
        app: Some(app.appid.clone()),
    })
}

/// Check id/skey (constant time), the appid binding, the caller's scope (`scope`: set when the caller key must cover
/// the session's app) and both expiry rules; record the visit (throttled). Nothing is touched for a caller out of scope.
pub async fn check_session(
    deps: &Deps,
    id: &str,
    skey: &str,
    appid: Option<&str>,
    scope: Option<&Caller>,
) -> Result<SessionView, WaferError> {
    let view = deps
        .store
        .sessions
        .get_session(id)
        .await
        .map_err(SessionError::Read)?
        .ok_or(SessionError::Invalid)?;
    let s = &view.session;
    if !crypto::ct_eq(crypto::sha256_hex(skey.as_bytes()).as_bytes(), s.skey_hash.as_bytes()) {
        return Err(SessionError::Invalid.into());
    }
    if appid.is_some_and(|a| a != s.appid.as_str()) {
        return Err(SessionError::Invalid.into());
    }
    if let Some(c) = scope {
        c.require(Scope::App(&s.appid))?;
    }
    let now = deps.clock.now();
    if now > s.created_at.saturating_add(view.login_duration_secs) {
        return Err(SessionError::LoginExpired.into());
    }
    if now > s.last_visit_at.saturating_add(view.session_duration_secs) {
        return Err(SessionError::IdleExpired.into());
    }
    let interval = TOUCH_INTERVAL_SECS.min((view.session_duration_secs / 10).max(1));
    if now - s.last_visit_at >= interval {
        if let Err(e) = deps.store.sessions.touch_session(&s.id, now).await {
            // The check itself succeeded; a missed last-visit write only shortens the idle window.
            tracing::warn!(error = %e, "could not record the session visit");
        }
    }
    Ok(view)
}

/// `qcloud.cam.auth`.
pub async fn auth(deps: &Deps, req: AuthRequest<'_>, scope: Option<&Caller>) -> Result<Reply, WaferError> {
    let view = check_session(deps, req.id, req.skey.expose(), req.appid.as_deref(), scope).await?;
    let s = view.session;
    Ok(Reply {
        message: "AUTH_SUCCESS",
        data: json!({
            "user_info": user_info_value(&s.user_info),
            "appid": s.appid,
            "openid": s.openid,
            "unionid": s.unionid,
        })
        .into(),
        app: Some(s.appid.clone()),
    })
}

/// `qcloud.cam.decrypt`: any encrypted payload of a live session, watermark checked.
pub async fn decrypt(
    deps: &Deps,
    req: DecryptRequest<'_>,
    scope: Option<&Caller>,
) -> Result<Reply, WaferError> {
    let view = check_session(deps, req.id, req.skey.expose(), req.appid.as_deref(), scope).await?;
    let s = view.session;
    let key = deps
        .store
        .sessions
        .open_session_key(&s.appid, &s.openid, &s.session_key)
        .map_err(SessionError::Read)?;
    let data = wxdata::decrypt(&key, req.encrypt_data, req.iv, &s.appid).map_err(decrypt_error)?;
    Ok(Reply { message: "DECRYPT_SUCCESS", data: data.into(), app: Some(s.appid) })
}

/// `qcloud.cam.userinfo`: decrypt the profile of a live session and store it.
pub async fn userinfo(
    deps: &Deps,
    req: DecryptRequest<'_>,
    scope: Option<&Caller>,
) -> Result<Reply, WaferError> {
    let view = check_session(deps, req.id, req.skey.expose(), req.appid.as_deref(), scope).await?;
    let s = view.session;
    let key = deps
        .store
        .sessions
        .open_session_key(&s.appid, &s.openid, &s.session_key)
        .map_err(SessionError::Read)?;
    let info = wxdata::decrypt(&key, req.encrypt_data, req.iv, &s.appid).map_err(decrypt_error)?;
    deps.store
        .sessions
        .set_user_info(&s.appid, &s.openid, &info.to_string())
        .await
        .map_err(write_err("the profile"))?;
    Ok(Reply {
        message: "UPDATE_USERINFO_SUCCESS",
        data: json!({"id": s.id, "skey": req.skey.expose(), "appid": s.appid, "user_info": info}).into(),
        app: Some(s.appid.clone()),
    })
}
