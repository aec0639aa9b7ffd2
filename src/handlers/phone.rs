//! `qcloud.cam.phone`: a user's phone number from the code of `getPhoneNumber` (the flow WeChat recommends since
//! 2021), for a live session of the app. The call goes to `/wxa/business/getuserphonenumber` with the app's current
//! token (refreshed once if WeChat rejects it) and the session's `openid` (WeChat checks the code is that user's);
//! the watermark must name the session's app, and WeChat's refusals get codes of their own (the paid quota's
//! exhaustion, `1400001`, a message of its own). The number is returned, never logged.

use super::session::{check_session, MAX_SESSION_ID, MAX_SKEY};
use super::{proxy, Deps, Reply};
use crate::auth::Caller;
use crate::crypto::SecretStr;
use crate::envelope::{Para, ReturnCode, WaferError};
use crate::tokens::Owner;
use crate::wechat::proxy::{Body, Outgoing};
use crate::wechat::{Call, UpstreamError};
use serde_json::{json, Value};

const PATH: &str = "/wxa/business/getuserphonenumber";

/// `{id, skey, code, appid?}`.
#[derive(Debug)]
pub struct PhoneRequest<'a> {
    pub id: &'a str,
    pub skey: SecretStr<'a>,
    pub appid: Option<crate::ids::AppId>,
    pub code: SecretStr<'a>,
}

impl<'a> PhoneRequest<'a> {
    pub fn parse(p: Para<'a>) -> Result<Self, WaferError> {
        Ok(Self {
            id: p.token("id", MAX_SESSION_ID)?,
            skey: SecretStr::new(p.token("skey", MAX_SKEY)?),
            appid: p.opt_id("appid")?,
            code: SecretStr::new(p.token("code", 256)?),
        })
    }
}

/// Ask WeChat for the number behind `code`.
pub async fn phone(deps: &Deps, req: PhoneRequest<'_>, scope: Option<&Caller>) -> Result<Reply, WaferError> {
    let view = check_session(deps, req.id, req.skey.expose(), req.appid.as_deref(), scope).await?;
    let appid = view.session.appid;
    let body = json!({"code": req.code.expose(), "openid": view.session.openid});
    let method = reqwest::Method::POST;
    let out = Outgoing { method: &method, path: PATH, query: &[], body: Body::Json(&body), headers: &[] };
    let reply = proxy::send(deps, &Owner::App(appid.clone()), out, "phone").await?;
    if !(200..300).contains(&reply.status) {
        return Err(
            UpstreamError::Status(reply.status).to_wafer(Call::Phone, crate::wechat::Upstream::WeChat)
        );
    }
    let Some(v) = reply.json() else {
        return Err(
            UpstreamError::BadReply("not JSON".into()).to_wafer(Call::Phone, crate::wechat::Upstream::WeChat)
        );
    };
    if let Err(e) = crate::wechat::check_errcode(reply.errcode(), &v) {
        tracing::info!(appid = %appid, errcode = reply.errcode().unwrap_or(0), "phone number refused");
        return Err(e.to_wafer(Call::Phone, crate::wechat::Upstream::WeChat));
    }
    let info = v.get("phone_info").cloned().unwrap_or(Value::Null);
    let field = |name: &str| info.get(name).and_then(Value::as_str).map(str::to_owned);
    let (Some(phone), Some(pure), Some(country)) =
        (field("phoneNumber"), field("purePhoneNumber"), field("countryCode"))
    else {
        return Err(UpstreamError::BadReply("no phone_info".into())
            .to_wafer(Call::Phone, crate::wechat::Upstream::WeChat));
    };
    let watermark = info.get("watermark").and_then(|w| w.get("appid")).and_then(Value::as_str);
    if watermark != Some(appid.as_str()) {
        return Err(WaferError::new(
            ReturnCode::DecryptErr,
            "the phone number's watermark names another app: refused",
        ));
    }
    Ok(Reply {
        message: "PHONE_SUCCESS",
        data: json!({"phoneNumber": phone, "purePhoneNumber": pure, "countryCode": country, "appid": appid})
            .into(),
        app: None,
    })
}
