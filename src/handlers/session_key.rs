//! The session-key checks WeChat added for mini-programs, for a live session (like `decrypt`):
//! `qcloud.cam.check_session` asks WeChat's `checksession` whether the stored session_key is still valid, and
//! `qcloud.cam.reset_session_key` has `resetusersessionkey` issue a new one, stored for the user (never returned).
//! Both sign with the stored key (HMAC-SHA256 of the empty string) and go out with the app's current token.

use super::session::{check_session, MAX_SESSION_ID, MAX_SKEY};
use super::{proxy, Deps, Reply};
use crate::auth::Caller;
use crate::crypto::SecretStr;
use crate::envelope::{Para, ReturnCode, WaferError};
use crate::tokens::Owner;
use crate::wechat::proxy::{Body, Outgoing};
use crate::wechat::{check_errcode, Call, Upstream, UpstreamError};
use serde_json::{json, Value};

const CHECK: &str = "/wxa/checksession";
const RESET: &str = "/wxa/resetusersessionkey";
/// WeChat's answer to a signature made with a session_key it no longer holds.
const INVALID_SIGNATURE: i64 = 87009;

/// `{id, skey, appid?}`, and which of the two it is.
#[derive(Debug)]
pub struct SessionKeyRequest<'a> {
    pub id: &'a str,
    pub skey: SecretStr<'a>,
    pub appid: Option<crate::ids::AppId>,
    pub reset: bool,
}

impl<'a> SessionKeyRequest<'a> {
    pub fn parse(p: Para<'a>, reset: bool) -> Result<Self, WaferError> {
        Ok(Self {
            id: p.token("id", MAX_SESSION_ID)?,
            skey: SecretStr::new(p.token("skey", MAX_SKEY)?),
            appid: p.opt_id("appid")?,
            reset,
        })
    }
}

/// Check, or reset, the session key of the session's user.
pub async fn session_key(
    deps: &Deps,
    req: SessionKeyRequest<'_>,
    scope: Option<&Caller>,
) -> Result<Reply, WaferError> {
    let view = check_session(deps, req.id, req.skey.expose(), req.appid.as_deref(), scope).await?;
    let s = &view.session;
    let query = vec![
        ("openid".to_owned(), s.openid.clone()),
        ("signature".to_owned(), crate::crypto::login_signature(&s.session_key, b"")),
        ("sig_method".to_owned(), "hmac_sha256".to_owned()),
    ];
    let get = reqwest::Method::GET;
    let path = if req.reset { RESET } else { CHECK };
    let out = Outgoing { method: &get, path, query: &query, body: Body::None, headers: &[] };
    let reply = proxy::send(deps, &Owner::App(s.appid.clone()), out, "session_key").await?;
    let failed = |e: UpstreamError| e.to_wafer(Call::Proxy, Upstream::WeChat);
    if !(200..300).contains(&reply.status) {
        return Err(failed(UpstreamError::Status(reply.status)));
    }
    let v = reply.json().ok_or_else(|| failed(UpstreamError::BadReply("not JSON".into())))?;
    let app = Some(s.appid.clone());
    if reply.errcode() == Some(INVALID_SIGNATURE) {
        if !req.reset {
            let data = json!({"valid": false});
            return Ok(Reply { message: "SESSION_KEY_INVALID", data: data.into(), app });
        }
        return Err(WaferError::new(
            ReturnCode::WeixinReturnErr,
            "WeChat no longer holds this user's session_key (errcode 87009): it cannot be reset; the user must log in again",
        ));
    }
    check_errcode(reply.errcode(), &v).map_err(failed)?;
    if !req.reset {
        return Ok(Reply { message: "SESSION_KEY_VALID", data: json!({"valid": true}).into(), app });
    }
    let Some(new_key) =
        v.get("session_key").and_then(Value::as_str).filter(|k| !k.is_empty() && k.len() <= 128)
    else {
        return Err(failed(UpstreamError::BadReply("no session_key".into())));
    };
    deps.store.sessions.set_user_session_key(&s.appid, &s.openid, new_key).await.map_err(|e| {
        tracing::error!(error = %e, "could not store the reset session key");
        WaferError::new(ReturnCode::ChangeSessionErr, "the new session key could not be stored")
    })?;
    tracing::info!(appid = %s.appid, "session key reset");
    Ok(Reply { message: "SESSION_KEY_RESET", data: json!({"reset": true}).into(), app })
}
