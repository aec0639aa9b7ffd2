//! Interfaces answered as plain HTTP rather than with a Wafer envelope: the pass-through
//! `GET|POST /wechat/{appid}/{wechat path}` and `/wecom/{corpid}/{agentid}/{wecom path}` (query and body forwarded,
//! the reply returned as WeChat sent it — status, content type, bytes — with the token added here), and the drop-in
//! token host ([`super::token_host`], `WAFER_TOKEN_HOST=1`). A request is recognised from its path and query alone,
//! so transports only ask [`claims`] and hand the request over.

use super::proxy;
use super::token_host::{self, HostRequest};
use super::Deps;
use crate::auth::{Access, Gate, Scope};
use crate::envelope::{Envelope, ReturnCode, WaferError};
use crate::request::{HttpCall, HttpReply, RequestMeta};
use crate::tokens::Owner;
use crate::wechat::path::ApiPath;
use crate::wechat::proxy::{Body, Outgoing};

/// Whether the request is one of these interfaces (from its path and query alone).
pub fn claims(path: &str, query: Option<&str>, token_host: bool) -> bool {
    pass_target(path).is_some() || (token_host && token_host::claims(path, query))
}

/// A pass-through call.
#[derive(Debug)]
pub struct PassRequest {
    pub target: Owner,
    /// The WeChat / WeCom API path, as sent upstream.
    pub path: ApiPath,
    pub method: reqwest::Method,
    pub query: Vec<(String, String)>,
    /// The query's `access_token`: an SDK pointed here carries its caller key there (it is stripped; the real token
    /// is added upstream).
    pub key_as_token: Option<crate::crypto::Secret>,
}

/// One of the plain-HTTP interfaces.
#[derive(Debug)]
pub enum HttpInterface {
    Pass(PassRequest),
    Host(HostRequest),
}

impl HttpInterface {
    /// The name in logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pass(p) => match p.target {
                Owner::App(_) => "wechat.passthrough",
                Owner::Agent { .. } => "wecom.passthrough",
            },
            Self::Host(h) => h.name(),
        }
    }
}

/// `(target, api path)` of a pass-through path; a stage prefix before `/wechat/` or `/wecom/` is ignored.
fn pass_target(path: &str) -> Option<(Owner, &str)> {
    // A byte scan: `str::find` sets up a substring searcher per call, and this runs on every request.
    let find = |pat: &str| path.as_bytes().windows(pat.len()).position(|w| w == pat.as_bytes());
    if let Some(i) = find("/wechat/") {
        let rest = &path[i + "/wechat/".len()..];
        let (appid, _) = rest.split_once('/')?;
        let api = &rest[appid.len()..];
        let appid = appid.parse().ok().filter(|_| api.len() > 1)?;
        return Some((Owner::App(appid), api));
    }
    let i = find("/wecom/")?;
    let rest = &path[i + "/wecom/".len()..];
    let (corpid, rest) = rest.split_once('/')?;
    let (agentid, _) = rest.split_once('/')?;
    let api = &rest[agentid.len()..];
    let owner = Owner::Agent { corpid: corpid.parse().ok()?, agentid: agentid.parse().ok()? };
    (api.len() > 1).then_some((owner, api))
}

/// Query pairs to forward, and the `access_token` an SDK sent. The caller key (when it came as `?key=`) is ours and
/// stays here; so does `access_token`: an SDK pointed at the pass-through holds a caller key as its "token", and
/// the real token is added here.
type Forwarded = (Vec<(String, String)>, Option<crate::crypto::Secret>);

fn forwarded_query(query: Option<&str>, meta: &RequestMeta) -> Result<Forwarded, WaferError> {
    let mut out = Vec::new();
    let mut token = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k.eq_ignore_ascii_case("access_token") {
            token = Some(crate::crypto::Secret::new(v.into_owned()));
            continue;
        }
        if k == "key" && meta.caller_key.as_deref() == Some(&*v) {
            continue;
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    if out.len() > 32 {
        return Err(WaferError::para("query", "must have at most 32 parameters"));
    }
    Ok((out, token))
}

/// Parse a claimed request.
pub fn parse(call: &HttpCall, meta: &RequestMeta) -> Result<HttpInterface, WaferError> {
    if let Some((target, api)) = pass_target(&call.path) {
        let path = proxy::check_path(api)?;
        let method = match call.method.to_ascii_uppercase().as_str() {
            "GET" => reqwest::Method::GET,
            "POST" => reqwest::Method::POST,
            _ => return Err(WaferError::new(ReturnCode::RequestErr, "use GET or POST")),
        };
        let (query, key_as_token) = forwarded_query(call.query.as_deref(), meta)?;
        return Ok(HttpInterface::Pass(PassRequest { target, path, method, query, key_as_token }));
    }
    Ok(HttpInterface::Host(HostRequest::parse(call)?))
}

/// Whether a claimed request is the token host's (not the pass-through's).
fn is_token_host(path: &str) -> bool {
    pass_target(path).is_none()
}

/// A refusal of ours on `path`: in WeChat's dialect on the token host's paths (what the SDKs there parse), else an
/// envelope with `status`.
pub fn refusal(path: &str, e: &WaferError, status: u16) -> HttpReply {
    if is_token_host(path) {
        return token_host::from_wafer(e);
    }
    HttpReply::envelope(status, &Envelope::error(e))
}

/// Answer a pass-through call: authorise it (a caller key covering the app and the path), send it with the
/// current token, return WeChat's reply as it came.
pub async fn pass(
    deps: &Deps,
    gate: &Gate,
    req: &PassRequest,
    call: &HttpCall,
    meta: &RequestMeta,
) -> Result<HttpReply, WaferError> {
    // A key in the SDK's `access_token` counts as the caller key when none came otherwise.
    let keyed;
    let meta = match &req.key_as_token {
        Some(k) if meta.caller_key.is_none() => {
            keyed = RequestMeta { caller_key: Some(k.expose().to_owned()), ..meta.clone() };
            &keyed
        }
        _ => meta,
    };
    gate.authorize(Access::Call(Scope::of(&req.target), req.path.as_str()), meta).await?;
    let body = if call.body.is_empty() {
        Body::None
    } else {
        Body::Raw { content_type: call.content_type.as_deref(), payload: &call.body }
    };
    let out =
        Outgoing { method: &req.method, path: req.path.as_str(), query: &req.query, body, headers: &[] };
    let reply = proxy::send(deps, &req.target, out, "passthrough").await?;
    tracing::info!(path = %req.path, status = reply.status, errcode = reply.errcode().unwrap_or(0), "passed through");
    Ok(HttpReply::new(reply.status, reply.content_type, reply.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_through_paths_are_recognised() {
        let (t, api) = pass_target("/wechat/wx1234/wxa/getwxacodeunlimit").unwrap();
        assert_eq!((t, api), (Owner::App("wx1234".parse().unwrap()), "/wxa/getwxacodeunlimit"));
        let (t, api) = pass_target("/release/wecom/ww1/1000002/cgi-bin/message/send").unwrap();
        assert_eq!(t, Owner::Agent { corpid: "ww1".parse().unwrap(), agentid: "1000002".parse().unwrap() });
        assert_eq!(api, "/cgi-bin/message/send");
        assert!(pass_target("/wechat/wx1234").is_none());
        assert!(pass_target("/wechat/wx1234/").is_none());
        assert!(pass_target("/wechat/wx 1/x").is_none());
        assert!(pass_target("/wecom/ww1/abc/x").is_none());
        assert!(pass_target("/mina_auth/").is_none());
        assert!(!claims("/", None, true));
    }

    #[test]
    fn the_caller_key_and_tokens_stay_out_of_the_forwarded_query() {
        let meta = RequestMeta { caller_key: Some("wk_1".into()), ..RequestMeta::default() };
        let (q, token) = forwarded_query(Some("key=wk_1&scene=a%20b&page=1"), &meta).unwrap();
        assert_eq!(q, vec![("scene".into(), "a b".into()), ("page".into(), "1".into())]);
        assert!(token.is_none());
        let (q, token) = forwarded_query(Some("access_token=wk_sdk&page=2"), &meta).unwrap();
        assert_eq!(q, vec![("page".into(), "2".into())], "never forwarded");
        assert_eq!(token.unwrap().expose(), "wk_sdk");
    }
}
