//! Token-free WeChat calls (`qcloud.mimi.call`, `qcloud.work.call`): a backend names the API path, query and body;
//! wafer-scf adds the current access token, calls WeChat / WeCom and returns the reply as WeChat sent it. When
//! WeChat says the token is invalid or not latest (40001, 40014, 42001), the token is refreshed once — only if it is
//! still the one that failed — and the call retried once: such a reply means WeChat did not execute the call.
//! Paths that issue credentials or need the app secret are refused: the secret never leaves the server. Request
//! and reply bodies never reach the logs. [`send`] is shared by the envelope interfaces, the `/wechat/…`
//! pass-through, the drop-in token host and `qcloud.cam.phone`.

use super::credentials::Target;
use super::{Deps, Reply};
use crate::envelope::{Para, WaferError};
use crate::tokens::{CredKind, Force};
use crate::wechat::proxy::{self, Body, Outgoing, RawReply};
use crate::wechat::{Call, UpstreamError, TOKEN_INVALID_CODES};
use base64::Engine;
use serde_json::{json, Value};

/// Paths that hand out credentials or need the secret: never proxied.
const REFUSED: &[&str] = &["/cgi-bin/token", "/cgi-bin/stable_token", "/cgi-bin/gettoken", "/sns/"];

/// PARA_ERR unless `path` is a plain API path that may be called on a caller's behalf.
pub(crate) fn check_path(path: &str) -> Result<(), WaferError> {
    let safe = path.starts_with('/')
        && path.len() <= 256
        && !path.contains("..")
        && !path.contains("//")
        && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_-.".contains(&b));
    if !safe {
        return Err(WaferError::para("path", "must be an API path like /wxa/getwxacodeunlimit"));
    }
    let lower = path.to_ascii_lowercase();
    let lower = lower.trim_end_matches('/');
    if REFUSED.iter().any(|r| lower == r.trim_end_matches('/') || (r.ends_with('/') && lower.starts_with(r)))
    {
        return Err(WaferError::para(
            "path",
            "is an interface that issues credentials or needs the app secret: not available here",
        ));
    }
    Ok(())
}

fn no_token_in_query(k: &str) -> Result<(), WaferError> {
    if k.eq_ignore_ascii_case("access_token") {
        return Err(WaferError::para("query", "must not carry access_token: it is added here"));
    }
    Ok(())
}

/// A proxied call.
#[derive(Debug)]
pub struct CallRequest {
    pub target: Target,
    pub path: String,
    pub method: reqwest::Method,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl CallRequest {
    pub fn parse(p: Para<'_>, wecom: bool) -> Result<Self, WaferError> {
        let target = if wecom { Target::parse_agent(p)? } else { Target::parse_app(p)? };
        let path = p.token("path", 256)?.to_owned();
        check_path(&path)?;
        let query = match p.0.get("query") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(m)) if m.len() <= 32 => m
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => return Err(WaferError::para("query", "values must be strings or numbers")),
                    };
                    no_token_in_query(k)?;
                    Ok((k.clone(), v))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(WaferError::para("query", "must be an object of at most 32 values")),
        };
        let body = match p.0.get("body") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.clone()),
        };
        let method = match p.opt_str_max("method", 8)?.map(str::to_ascii_uppercase).as_deref() {
            None if body.is_some() => reqwest::Method::POST,
            None => reqwest::Method::GET,
            Some("GET") => reqwest::Method::GET,
            Some("POST") => reqwest::Method::POST,
            Some(_) => return Err(WaferError::para("method", "must be GET or POST")),
        };
        Ok(Self { target, path, method, query, body })
    }
}

/// The upstream a target's calls go to, and its name for error messages.
fn upstream<'d>(deps: &'d Deps, target: &Target) -> (CredKind, &'d str, &'static str) {
    match target {
        Target::App(_) => (CredKind::MpToken, deps.wechat.base_url(), "WeChat"),
        Target::Agent { .. } => (CredKind::WcToken, deps.wecom.base_url(), "WeCom"),
    }
}

/// Send `out` for `target` with `presented` (a token the caller holds, for the token host) or else the current
/// token. If WeChat rejects that token, refresh it — only if it is still current — and send once more.
pub(crate) async fn send(
    deps: &Deps,
    target: &Target,
    out: Outgoing<'_>,
    presented: Option<&str>,
    what: &'static str,
) -> Result<RawReply, WaferError> {
    let (kind, base, name) = upstream(deps, target);
    let key = target.key(kind);
    let http = deps.wechat.http();
    let token = match presented {
        Some(t) => t.to_owned(),
        None => deps.creds.get(&key, Force::No).await?.value,
    };
    let reply =
        proxy::call(http, base, out, &token, what).await.map_err(|e| e.to_wafer(Call::Ticket, name))?;
    if !reply.errcode().is_some_and(|c| TOKEN_INVALID_CODES.contains(&c)) {
        return Ok(reply);
    }
    let fresh = deps.creds.get(&key, Force::Rejected(&token)).await?;
    proxy::call(http, base, out, &fresh.value, what).await.map_err(|e| e.to_wafer(Call::Ticket, name))
}

/// Make the call with the current token; refresh it once and retry once if WeChat rejects exactly that token.
pub async fn call(deps: &Deps, req: CallRequest) -> Result<Reply, WaferError> {
    let body = req.body.as_ref().map_or(Body::None, Body::Json);
    let out = Outgoing { method: &req.method, path: &req.path, query: &req.query, body };
    let reply = send(deps, &req.target, out, None, "proxy").await?;
    let errcode = reply.errcode();
    tracing::info!(path = %req.path, status = reply.status, errcode = errcode.unwrap_or(0), "proxied call");
    if !(200..300).contains(&reply.status) {
        let (_, _, name) = upstream(deps, &req.target);
        return Err(UpstreamError::Status(reply.status).to_wafer(Call::Ticket, name));
    }
    let data = match reply.json() {
        Some(v) => v,
        None => json!({
            "content_type": reply.content_type,
            "data_base64": base64::engine::general_purpose::STANDARD.encode(&reply.bytes),
        }),
    };
    Ok(Reply { message: "CALL_SUCCESS", data, app: None })
}
