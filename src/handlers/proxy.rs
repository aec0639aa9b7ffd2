//! Token-free WeChat calls (`qcloud.mimi.call`, `qcloud.work.call`): a backend names the API path, query and body;
//! wafer-scf adds the current access token, calls WeChat / WeCom and returns the reply as WeChat sent it. When
//! WeChat says the token is invalid or not latest (40001, 40014, 42001), the token is refreshed once — only if it is
//! still the one that failed — and the call retried once: such a reply means WeChat did not execute the call.
//! Paths that issue credentials or need the app secret are refused: the secret never leaves the server. Request
//! and reply bodies never reach the logs.

use super::credentials::Target;
use super::{Deps, Reply};
use crate::envelope::{Para, WaferError};
use crate::tokens::{CredKind, Force};
use crate::wechat::proxy::{self, ProxyReply};
use crate::wechat::{Call, TOKEN_INVALID_CODES};
use base64::Engine;
use serde_json::{json, Value};

/// Paths that hand out credentials or need the secret: never proxied.
const REFUSED: &[&str] = &["/cgi-bin/token", "/cgi-bin/stable_token", "/cgi-bin/gettoken", "/sns/"];

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
        let safe = path.starts_with('/')
            && !path.contains("..")
            && !path.contains('?')
            && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_-.".contains(&b));
        if !safe {
            return Err(WaferError::para("path", "must be an API path like /wxa/getwxacodeunlimit"));
        }
        let lower = path.to_ascii_lowercase();
        if REFUSED.iter().any(|r| lower == *r || (r.ends_with('/') && lower.starts_with(r))) {
            return Err(WaferError::para(
                "path",
                "is an interface that issues credentials or needs the app secret: not available here",
            ));
        }
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
                    if k.eq_ignore_ascii_case("access_token") {
                        return Err(WaferError::para(
                            "query",
                            "must not carry access_token: it is added here",
                        ));
                    }
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

/// Make the call with the current token; refresh it once and retry once if WeChat rejects exactly that token.
pub async fn call(deps: &Deps, req: CallRequest) -> Result<Reply, WaferError> {
    let (kind, base, upstream) = match req.target {
        Target::App(_) => (CredKind::MpToken, deps.wechat.base_url(), "WeChat"),
        Target::Agent { .. } => (CredKind::WcToken, deps.wecom.base_url(), "WeCom"),
    };
    let key = req.target.key(kind);
    let http = deps.wechat.http();
    let send = |token: String| {
        let req = &req;
        async move {
            proxy::call(http, base, req.method.clone(), &req.path, &req.query, &token, req.body.as_ref())
                .await
        }
    };
    let token = deps.creds.get(&key, Force::No).await?;
    let mut reply = send(token.value.clone()).await.map_err(|e| e.to_wafer(Call::Ticket, upstream))?;
    if reply.errcode().is_some_and(|c| TOKEN_INVALID_CODES.contains(&c)) {
        let fresh = deps.creds.get(&key, Force::Rejected(&token.value)).await?;
        reply = send(fresh.value).await.map_err(|e| e.to_wafer(Call::Ticket, upstream))?;
    }
    tracing::info!(path = %req.path, errcode = reply.errcode().unwrap_or(0), "proxied call");
    let data = match reply {
        ProxyReply::Json(v) => v,
        ProxyReply::Bytes { content_type, data } => json!({
            "content_type": content_type,
            "data_base64": base64::engine::general_purpose::STANDARD.encode(data),
        }),
    };
    Ok(Reply { message: "CALL_SUCCESS", data })
}
