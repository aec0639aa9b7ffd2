//! The drop-in token host (`WAFER_TOKEN_HOST=1`): an SDK whose WeChat API base URL points here gets its tokens
//! from the central cache instead of fetching (and overwriting) them itself.
//!
//! - `GET /cgi-bin/token?grant_type=client_credential&appid=…&secret=…` and `POST /cgi-bin/stable_token`
//!   (`force_refresh` honoured with the shared cooldown, so a fleet that sees 40001 at once causes one refresh),
//!   authenticated by the app's registered secret, compared in constant time;
//! - WeCom's `GET /cgi-bin/gettoken?corpid=…&corpsecret=…`, authenticated by a registered agent's secret;
//! - `GET /sns/jscode2session?appid=…&secret=…&js_code=…`, the login an SDK sends to the same base: answered for a
//!   registered app whose secret matches (never with a token error, which would make the SDK loop);
//! - tickets for a token issued here: `GET /cgi-bin/ticket/getticket?type=jsapi` (official accounts), and WeCom's
//!   `/cgi-bin/get_jsapi_ticket` and `/cgi-bin/ticket/get?type=agent_config`;
//! - any other path with an `access_token` issued here (current, or the previous one in its overlap) is passed
//!   through to WeChat / WeCom unchanged; any other token is refused with WeChat's own 40001, so the SDK fetches a
//!   token here and tries again — no open relay through the whitelisted egress address.
//!
//! Answers are shaped like WeChat's (`errcode`, `errmsg`), since that is what the SDKs parse.

use super::proxy;
use super::Deps;
use crate::crypto::Secret;
use crate::envelope::{ReturnCode, WaferError};
use crate::ids::AppId;
use crate::request::{HttpCall, HttpReply};
use crate::tokens::{CredKey, CredKind, Force, Served};
use crate::wechat::path::ApiPath;
use crate::wechat::proxy::{Body, Outgoing};
use crate::wechat::{Call, UpstreamError};
use serde_json::{json, Value};

const TOKEN: &str = "/cgi-bin/token";
const STABLE_TOKEN: &str = "/cgi-bin/stable_token";
const WECOM_TOKEN: &str = "/cgi-bin/gettoken";
const MP_TICKET: &str = "/cgi-bin/ticket/getticket";
const WC_CORP_TICKET: &str = "/cgi-bin/get_jsapi_ticket";
const WC_AGENT_TICKET: &str = "/cgi-bin/ticket/get";
const JSCODE2SESSION: &str = "/sns/jscode2session";

/// Whether the token host answers this request: one of its token paths, or any call carrying `access_token`.
pub fn claims(path: &str, query: Option<&str>) -> bool {
    [TOKEN, STABLE_TOKEN, WECOM_TOKEN, JSCODE2SESSION].contains(&path.trim_end_matches('/'))
        || query.is_some_and(|q| q.split('&').any(|kv| kv.starts_with("access_token=")))
}

/// What the token host was asked for. Secrets and tokens are [`Secret`]s: `Debug` never shows them.
#[derive(Debug)]
pub enum HostRequest {
    /// `/cgi-bin/token` (`stable: false`) or `/cgi-bin/stable_token`.
    Token { appid: String, secret: Secret, stable: bool, force: bool },
    /// WeCom `/cgi-bin/gettoken`.
    WeComToken { corpid: String, secret: Secret },
    /// `/sns/jscode2session`: a login, with the app's secret.
    Login { appid: String, secret: Secret, code: Secret },
    /// A ticket, or a pass-through call, with a presented token.
    WithToken { token: Secret, method: reqwest::Method, path: ApiPath, query: Vec<(String, String)> },
    /// Refused before anything was looked up: WeChat's errcode and message.
    Refused(i64, &'static str),
}

impl HostRequest {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Token { stable: false, .. } => "token_host.token",
            Self::Token { stable: true, .. } => "token_host.stable_token",
            Self::WeComToken { .. } => "token_host.gettoken",
            Self::Login { .. } => "token_host.jscode2session",
            Self::WithToken { .. } => "token_host.call",
            Self::Refused(..) => "token_host.refused",
        }
    }

    pub fn parse(call: &HttpCall) -> Result<Self, WaferError> {
        let query: Vec<(String, String)> =
            form_urlencoded::parse(call.query.as_deref().unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        let q =
            |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
        let path = call.path.trim_end_matches('/');
        let get = call.method.eq_ignore_ascii_case("GET");
        Ok(match path {
            TOKEN if get => {
                if q("grant_type") != "client_credential" {
                    return Ok(Self::Refused(40002, "invalid grant_type"));
                }
                Self::Token { appid: q("appid"), secret: q("secret").into(), stable: false, force: false }
            }
            STABLE_TOKEN if !get => {
                let Some(Ok(Value::Object(b))) = call.body.as_full().map(serde_json::from_slice::<Value>)
                else {
                    return Ok(Self::Refused(47001, "data format error: the body must be a JSON object"));
                };
                let s = |name: &str| b.get(name).and_then(Value::as_str).unwrap_or("").to_owned();
                if s("grant_type") != "client_credential" {
                    return Ok(Self::Refused(40002, "invalid grant_type"));
                }
                let force = matches!(b.get("force_refresh"), Some(Value::Bool(true)))
                    || b.get("force_refresh").and_then(Value::as_i64) == Some(1);
                Self::Token { appid: s("appid"), secret: s("secret").into(), stable: true, force }
            }
            WECOM_TOKEN if get => Self::WeComToken { corpid: q("corpid"), secret: q("corpsecret").into() },
            JSCODE2SESSION => {
                if q("grant_type") != "authorization_code" {
                    return Ok(Self::Refused(40002, "invalid grant_type"));
                }
                Self::Login { appid: q("appid"), secret: q("secret").into(), code: q("js_code").into() }
            }
            TOKEN | STABLE_TOKEN | WECOM_TOKEN => {
                return Err(WaferError::new(ReturnCode::RequestErr, "method not allowed"))
            }
            _ => {
                let token = q("access_token");
                let method = if get { reqwest::Method::GET } else { reqwest::Method::POST };
                let query = query.into_iter().filter(|(k, _)| k != "access_token").collect();
                let Ok(path) = ApiPath::parse(path) else {
                    return Ok(Self::Refused(40001, NOT_OURS));
                };
                if token.is_empty() {
                    return Ok(Self::Refused(40001, NOT_OURS));
                }
                Self::WithToken { token: token.into(), method, path, query }
            }
        })
    }
}

/// The one answer to an unknown appid and to a wrong secret.
const BAD_APP_OR_SECRET: &str = "invalid appid or appsecret";
/// Compared against when the appid is unknown, so that answer takes as long as a wrong secret's.
const UNKNOWN_APP_SECRET: &str = "wafer-scf: no app is registered under this appid";

const NOT_OURS: &str =
    "invalid credential, access_token is invalid or not latest (this host passes through only tokens it issued)";

fn wechat_error(errcode: i64, errmsg: &str) -> HttpReply {
    HttpReply::json(200, &json!({"errcode": errcode, "errmsg": errmsg}))
}

/// A refusal or failure of ours in WeChat's shape — HTTP 200, an integer `errcode` (the one WeChat would send for
/// the same situation, else `-1`), an `errmsg` saying what happened — since that is what the SDKs parse. Never a
/// token error (an SDK would refetch and loop).
pub fn from_wafer(e: &WaferError) -> HttpReply {
    let errmsg = format!("{} (wafer-scf {} {})", e.message, e.code.code(), e.code.name());
    wechat_error(e.code.wechat_errcode(), &errmsg)
}

fn token_reply(served: &Served, now: i64) -> HttpReply {
    HttpReply::json(
        200,
        &json!({"access_token": served.value, "expires_in": (served.expires_at - now).max(0)}),
    )
}

/// The app `appid` names, if `secret` is its registered secret. An unknown (or malformed) appid and a wrong secret
/// get one answer, in the same time (the presented secret is compared either way): an unauthenticated caller
/// cannot tell which apps are registered here.
async fn authenticated(deps: &Deps, appid: &str, secret: &Secret) -> Result<Option<AppId>, WaferError> {
    let app = match appid.parse::<AppId>() {
        Ok(id) => deps.store.registry.get_app(&id).await.map_err(WaferError::db)?,
        Err(_) => None,
    };
    let registered = app.as_ref().map_or(UNKNOWN_APP_SECRET, |a| a.secret.as_str());
    match app {
        Some(app) if secret_matches(secret.expose(), registered) => Ok(Some(app.appid)),
        app => {
            let why = if app.is_some() { "wrong secret" } else { "unknown appid" };
            tracing::info!(appid = %crate::request::log_safe(appid, 64), why, "token host: refused");
            Ok(None)
        }
    }
}

fn secret_matches(presented: &str, registered: &str) -> bool {
    let (a, b) =
        (crate::crypto::sha256_hex(presented.as_bytes()), crate::crypto::sha256_hex(registered.as_bytes()));
    !presented.is_empty() && crate::crypto::ct_eq(a.as_bytes(), b.as_bytes())
}

/// Answer a token-host request.
pub async fn handle(deps: &Deps, req: HostRequest, call: &HttpCall) -> Result<HttpReply, WaferError> {
    let now = deps.clock.now();
    match req {
        HostRequest::Refused(code, msg) => Ok(wechat_error(code, msg)),
        HostRequest::Token { appid, secret, force, .. } => {
            let Some(appid) = authenticated(deps, &appid, &secret).await? else {
                return Ok(wechat_error(40125, BAD_APP_OR_SECRET));
            };
            let key = CredKey::app(CredKind::MpToken, &appid);
            issue(deps, &key, if force { Force::Yes(None) } else { Force::No }, now).await
        }
        HostRequest::Login { appid, secret, code } => {
            let Some(appid) = authenticated(deps, &appid, &secret).await? else {
                return Ok(wechat_error(40125, BAD_APP_OR_SECRET));
            };
            // The caller holds the secret: the session key is theirs to have, as WeChat would give it.
            Ok(match deps.wechat.code2session(&appid, secret.expose(), code.expose()).await {
                Ok(s) => {
                    let mut reply = json!({"openid": s.openid, "session_key": s.session_key});
                    if let Some(u) = s.unionid {
                        reply["unionid"] = Value::String(u);
                    }
                    HttpReply::json(200, &reply)
                }
                Err(UpstreamError::Api { errcode, .. }) => {
                    wechat_error(errcode, "refused by WeChat (see its errcode)")
                }
                Err(e) => from_wafer(&e.to_wafer(Call::Code2Session, crate::wechat::Upstream::WeChat)),
            })
        }
        HostRequest::WeComToken { corpid, secret } => {
            let agents = deps.store.registry.list_agents().await.map_err(WaferError::db)?;
            let mut found = None;
            for a in agents.iter().filter(|a| a.corpid.as_str() == corpid) {
                // Every candidate is compared, so the time taken does not tell which one matched.
                if secret_matches(secret.expose(), &a.secret) && found.is_none() {
                    found = Some((a.corpid.clone(), a.agentid.clone()));
                }
            }
            let Some((corpid, agentid)) = found else {
                tracing::info!(corpid = %crate::request::log_safe(&corpid, 64), "token host: no agent has the secret presented");
                return Ok(wechat_error(40001, "invalid credential: corpid or corpsecret"));
            };
            issue(deps, &CredKey::agent(CredKind::WcToken, &corpid, &agentid), Force::No, now).await
        }
        HostRequest::WithToken { token, method, path, query } => {
            let token = token.expose();
            let Some(key) = deps.creds.issued_key(token).await? else {
                return Ok(wechat_error(40001, NOT_OURS));
            };
            let target = key.owner().clone();
            let ticket = |kind| Some(target.key(kind));
            let ticket_key =
                match (path.as_str(), query.iter().find(|(k, _)| k == "type").map(|(_, v)| v.as_str())) {
                    (MP_TICKET, Some("jsapi")) if key.kind == CredKind::MpToken => {
                        ticket(CredKind::MpJsapiTicket)
                    }
                    (WC_CORP_TICKET, _) if key.kind == CredKind::WcToken => ticket(CredKind::WcCorpTicket),
                    (WC_AGENT_TICKET, Some("agent_config")) if key.kind == CredKind::WcToken => {
                        ticket(CredKind::WcAgentTicket)
                    }
                    _ => None,
                };
            if let Some(tk) = ticket_key {
                return Ok(match deps.creds.get(&tk, Force::No).await {
                    Ok(t) => HttpReply::json(
                        200,
                        &json!({"errcode": 0, "errmsg": "ok", "ticket": t.value, "expires_in": (t.expires_at - now).max(0)}),
                    ),
                    Err(e) => from_wafer(&e),
                });
            }
            let body = if call.body.is_empty() {
                Body::None
            } else {
                Body::Raw { content_type: call.content_type.as_deref(), payload: &call.body }
            };
            let out = Outgoing { method: &method, path: path.as_str(), query: &query, body, headers: &[] };
            let reply = proxy::send(deps, &target, out, "token_host").await?;
            tracing::info!(path = %path, status = reply.status, errcode = reply.errcode().unwrap_or(0), "passed through");
            Ok(HttpReply::new(reply.status, reply.content_type, reply.body))
        }
    }
}

/// Hand out the token of `key` (its owner's secret was presented and matched).
async fn issue(deps: &Deps, key: &CredKey, force: Force<'_>, now: i64) -> Result<HttpReply, WaferError> {
    match deps.creds.get(key, force).await {
        Ok(served) => {
            deps.creds.remember_issued(key, &served);
            Ok(token_reply(&served, now))
        }
        Err(e) => Ok(from_wafer(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method: &str, path: &str, query: &str, body: &str) -> HttpCall {
        HttpCall {
            method: method.into(),
            path: path.into(),
            query: Some(query.into()),
            content_type: None,
            body: body.as_bytes().to_vec().into(),
        }
    }

    #[test]
    fn requests_are_recognised() {
        assert!(claims("/cgi-bin/token", Some("grant_type=client_credential")));
        assert!(claims("/wxa/getwxacodeunlimit", Some("access_token=abc")));
        assert!(!claims("/mina_auth/", None));
        assert!(!claims("/mina_auth/", Some("key=wk")));
        match HostRequest::parse(&call(
            "GET",
            "/cgi-bin/token",
            "grant_type=client_credential&appid=wx1&secret=s",
            "",
        ))
        .unwrap()
        {
            HostRequest::Token { appid, secret, stable: false, force: false } => {
                assert_eq!((appid.as_str(), secret.expose()), ("wx1", "s"))
            }
            other => panic!("{other:?}"),
        }
        let stable = r#"{"grant_type":"client_credential","appid":"wx1","secret":"s","force_refresh":true}"#;
        assert!(matches!(
            HostRequest::parse(&call("POST", "/cgi-bin/stable_token", "", stable)).unwrap(),
            HostRequest::Token { stable: true, force: true, .. }
        ));
        assert!(matches!(
            HostRequest::parse(&call("GET", "/cgi-bin/token", "grant_type=x", "")).unwrap(),
            HostRequest::Refused(40002, _)
        ));
        assert!(matches!(
            HostRequest::parse(&call("GET", "/sns/jscode2session", "access_token=t", "")).unwrap(),
            HostRequest::Refused(40002, _)
        ));
        let login = "appid=wx1&secret=s&js_code=c&grant_type=authorization_code&access_token=t";
        match HostRequest::parse(&call("GET", "/sns/jscode2session", login, "")).unwrap() {
            HostRequest::Login { appid, code, .. } => {
                assert_eq!((appid.as_str(), code.expose()), ("wx1", "c"))
            }
            other => panic!("{other:?}"),
        }
        match HostRequest::parse(&call("POST", "/cgi-bin/message/custom/send", "access_token=t&x=1", "{}"))
            .unwrap()
        {
            HostRequest::WithToken { token, query, .. } => {
                assert_eq!(token.expose(), "t");
                assert_eq!(query, vec![("x".to_owned(), "1".to_owned())]);
            }
            other => panic!("{other:?}"),
        }
    }
}
