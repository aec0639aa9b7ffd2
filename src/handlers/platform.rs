//! The platform's quota and diagnosis interfaces, which operators reach for when something fails: an API's daily
//! quota (`/cgi-bin/openapi/quota/get`, on demand from `status --quota` or `app quota`, never on a hot path),
//! `clear_quota` behind the admin token (then the app's own blocks lifted) with WeChat's count of the resets left,
//! and `/cgi-bin/openapi/rid/get` explaining a failed call's `rid` in a debug log line.

use super::{proxy, Deps};
use crate::envelope::{ReturnCode, WaferError};
use crate::ids::AppId;
use crate::tokens::Owner;
use crate::wechat::proxy::{Body, Outgoing, RawReply};
use crate::wechat::{check_errcode, Call, Upstream, UpstreamError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

const QUOTA: &str = "/cgi-bin/openapi/quota/get";
const CLEAR: &str = "/cgi-bin/clear_quota";
const RID: &str = "/cgi-bin/openapi/rid/get";

/// An API's daily quota as WeChat counts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub appid: String,
    pub api: String,
    pub daily_limit: i64,
    pub used: i64,
    pub remain: i64,
}

/// What `clear_quota` did, and the resets WeChat says are left (`None` when it would not say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cleared {
    pub appid: String,
    pub outcome: String,
    pub resets: Option<Quota>,
}

/// POST `body` to `path` for `appid` and read WeChat's JSON answer (an error reply is an error).
async fn post(deps: &Deps, appid: &AppId, path: &str, body: &Value) -> Result<Value, WaferError> {
    let post = reqwest::Method::POST;
    let out = Outgoing { method: &post, path, query: &[], body: Body::Json(body), headers: &[] };
    let reply = proxy::send(deps, &Owner::App(appid.clone()), out, "platform").await?;
    json_of(&reply)
}

fn json_of(reply: &RawReply) -> Result<Value, WaferError> {
    let failed = |e: UpstreamError| e.to_wafer(Call::Proxy, Upstream::WeChat);
    if !(200..300).contains(&reply.status) {
        return Err(failed(UpstreamError::Status(reply.status)));
    }
    let v = reply.json().ok_or_else(|| failed(UpstreamError::BadReply("not JSON".into())))?;
    check_errcode(reply.errcode(), &v).map_err(failed)?;
    Ok(v)
}

/// The daily quota of `api` (a path such as `/wxa/getwxacodeunlimit`) for `appid`.
pub async fn quota(deps: &Deps, appid: &AppId, api: &str) -> Result<Quota, WaferError> {
    crate::wechat::path::ApiPath::parse(api).map_err(|e| WaferError::para("api", e.message()))?;
    let v = post(deps, appid, QUOTA, &json!({"cgi_path": api})).await?;
    let q = &v["quota"];
    let n = |k: &str| q.get(k).and_then(Value::as_i64).unwrap_or(0);
    Ok(Quota {
        appid: appid.to_string(),
        api: api.into(),
        daily_limit: n("daily_limit"),
        used: n("used"),
        remain: n("remain"),
    })
}

/// Reset the app's API call counts (WeChat allows a few a month), lift this server's blocks for the app, and say
/// how many resets WeChat reports left.
pub async fn clear_quota(deps: &Deps, appid: &AppId) -> Result<Cleared, WaferError> {
    if deps.store.registry.get_app(appid).await.map_err(WaferError::db)?.is_none() {
        return Err(WaferError::new(ReturnCode::NoAppid, format!("no app {appid}")));
    }
    post(deps, appid, CLEAR, &json!({"appid": appid.as_str()})).await.map_err(|e| {
        if e.code == ReturnCode::WeixinQuotaErr {
            WaferError::new(
                e.code,
                "WeChat refused clear_quota (45009): this month's resets are used up, or the token itself cannot be \
                 fetched; reset it in the console (开发 → 开发管理 → 接口设置), then wafer-scf app unblock",
            )
        } else {
            e
        }
    })?;
    let registry = crate::registry::Registry {
        store: &deps.store,
        creds: Some(&deps.creds),
        now: deps.clock.now(),
        dry_run: false,
    };
    registry.unblock_app(appid).await.map_err(WaferError::from)?;
    tracing::info!(appid = %appid, "clear_quota done; the app's blocks are lifted");
    let resets = quota(deps, appid, CLEAR).await.ok();
    Ok(Cleared { appid: appid.to_string(), outcome: "cleared".into(), resets })
}

/// At debug level: ask WeChat what it recorded of a failed call (`rid` from its `errmsg`) and log what helps —
/// when, how long, from which address, its errcode — never the URL or the bodies (they carry tokens and data).
pub async fn explain_rid(deps: &Deps, target: &Owner, path: &str, reply: &RawReply) {
    if !tracing::enabled!(tracing::Level::DEBUG) || path == RID {
        return;
    }
    let (Owner::App(appid), Some(v)) = (target, reply.json()) else { return };
    let Err(UpstreamError::Api { rid: Some(rid), errcode, .. }) = check_errcode(reply.errcode(), &v) else {
        return;
    };
    match post(deps, appid, RID, &json!({"rid": rid})).await {
        Ok(found) => {
            let r = &found["request"];
            let answered = r["response_body"].as_str().and_then(|b| serde_json::from_str::<Value>(b).ok());
            tracing::debug!(
                path = %path,
                errcode,
                rid = %crate::request::log_safe(&rid, 64),
                invoke_time = r["invoke_time"].as_i64().unwrap_or(0),
                cost_in_ms = r["cost_in_ms"].as_i64().unwrap_or(0),
                client_ip = %crate::request::log_safe(r["client_ip"].as_str().unwrap_or(""), 64),
                recorded_errcode = answered.and_then(|a| a["errcode"].as_i64()).unwrap_or(0),
                "WeChat's record of the failed call"
            );
        }
        Err(e) => {
            tracing::debug!(path = %path, rid = %crate::request::log_safe(&rid, 64), error = %e.message,
            "WeChat's record of the failed call could not be read")
        }
    }
}
