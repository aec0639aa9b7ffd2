//! Token-free WeChat calls (`qcloud.mimi.call`, `qcloud.work.call`): a backend names the API path, query and body;
//! wafer-scf adds the current access token, calls WeChat / WeCom and returns the reply as WeChat sent it. When
//! WeChat says the token is invalid or not latest (40001, 40014, 42001), the token is refreshed once — only if it is
//! still the one that failed — and the call retried once: such a reply means WeChat did not execute the call.
//! Paths that issue credentials or need the app secret are refused: the secret never leaves the server. Request
//! and reply bodies never reach the logs. [`send`] is shared by the envelope interfaces, the `/wechat/…`
//! pass-through, the drop-in token host and `qcloud.cam.phone`.

use super::{Deps, Reply};
use crate::envelope::{Para, ReturnCode, WaferError};
use crate::payload::{CollectError, Payload, INLINE_LIMIT};
use crate::tokens::Owner;
use crate::tokens::{CredKind, Force};
use crate::wechat::path::ApiPath;
use crate::wechat::proxy::{self, Body, Outgoing, RawReply};
use crate::wechat::secure::{self, SecureError, SecureKeys, Verdict};
use crate::wechat::{Call, Upstream, UpstreamError, TOKEN_INVALID_CODES};
use base64::Engine;
use serde_json::{json, Value};
use std::sync::Arc;

/// The upstream form of a caller's API path ([`ApiPath::parse`]), or PARA_ERR saying why there is none.
pub(crate) fn check_path(path: &str) -> Result<ApiPath, WaferError> {
    ApiPath::parse(path).map_err(|e| WaferError::para("path", e.message()))
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
    pub target: Owner,
    pub path: ApiPath,
    pub method: reqwest::Method,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl CallRequest {
    pub fn parse(p: Para<'_>, wecom: bool) -> Result<Self, WaferError> {
        let target =
            if wecom { super::credentials::agent_owner(p)? } else { super::credentials::app_owner(p)? };
        let path = check_path(p.str_max("path", crate::wechat::path::MAX_LEN)?)?;
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
fn upstream<'d>(deps: &'d Deps, target: &Owner) -> (CredKind, &'d str, Upstream) {
    match target {
        Owner::App(_) => (CredKind::MpToken, deps.wechat.base_url(), Upstream::WeChat),
        Owner::Agent { .. } => (CredKind::WcToken, deps.wecom.base_url(), Upstream::WeCom),
    }
}

/// Send `out` for `target` with the current token — whatever token a caller presented only said whose call it is,
/// so a superseded one costs nothing. If WeChat rejects the token, refresh it (only if it is still current) and
/// send once more; a streamed body, already consumed, is never sent again (see [`upload_refused`]).
pub(crate) async fn send(
    deps: &Deps,
    target: &Owner,
    out: Outgoing<'_>,
    what: &'static str,
) -> Result<RawReply, WaferError> {
    let (kind, _, name) = upstream(deps, target);
    let key = target.key(kind);
    let keys = match target {
        Owner::App(appid) => deps.api_keys.for_call(&deps.store, appid, out.path, deps.clock.now()).await?,
        Owner::Agent { .. } => None,
    };
    let token = deps.creds.get(&key, Force::No).await?.value;
    let mut reply = once(deps, target, out, &token, keys.as_ref(), what).await?;
    if reply.errcode().is_some_and(|c| TOKEN_INVALID_CODES.contains(&c)) {
        let fresh = deps.creds.get(&key, Force::Rejected(&token)).await;
        if !out.body.resendable() {
            return Err(upload_refused(name));
        }
        reply = once(deps, target, out, &fresh?.value, keys.as_ref(), what).await?;
    }
    if reply.errcode().is_some() {
        Box::pin(super::platform::explain_rid(deps, target, out.path, &reply)).await;
    }
    Ok(reply)
}

/// One attempt: plain, or with the app's API-security keys (encrypted and signed, the reply verified and
/// decrypted before anyone sees it).
async fn once(
    deps: &Deps,
    target: &Owner,
    out: Outgoing<'_>,
    token: &str,
    keys: Option<&Arc<SecureKeys>>,
    what: &'static str,
) -> Result<RawReply, WaferError> {
    let (_, base, name) = upstream(deps, target);
    let relay = deps.wechat.relay();
    let Some(keys) = keys else {
        let reply =
            proxy::call(relay, base, out, token, what).await.map_err(|e| e.to_wafer(Call::Proxy, name))?;
        return Ok(secure::explain_plain(reply, out.path));
    };
    match secure::call(relay, base, out, token, keys, deps.clock.now(), what).await {
        Ok((reply, Verdict::DeprecatedCert { new_sn })) => {
            if let Owner::App(appid) = target {
                if deps.api_keys.note_rotation(appid, &new_sn) {
                    tracing::warn!(
                        appid = %appid,
                        new_certificate_sn = %crate::request::log_safe(&new_sn, 64),
                        "API security: WeChat signs with a new platform certificate; verified with the deprecated \
                         one. Download the new certificate from the console and register it \
                         (wafer-scf app api-security … --cert-file NEW --cert-sn NEW, with the current one until it retires)"
                    );
                }
            }
            Ok(reply)
        }
        Ok((reply, _)) => Ok(reply),
        Err(SecureError::Upstream(e)) => Err(e.to_wafer(Call::Proxy, name)),
        Err(SecureError::Request(m)) => Err(WaferError::new(ReturnCode::ParaErr, m)),
        Err(SecureError::Unverified(why)) => Err(WaferError::new(
            ReturnCode::ReplyUnverified,
            format!("WeChat's reply to {} did not verify ({why}): not passed on", out.path),
        )),
    }
}

/// WeChat rejected the token of a call whose body streamed through and is gone. The token is refreshed for the next
/// attempt, but WeChat's `40001` is not handed on: an SDK would answer it by sending the request again from a file
/// it has already read (an empty upload that "succeeds"). The caller gets an error that says to send it again.
fn upload_refused(name: Upstream) -> WaferError {
    WaferError::new(
        ReturnCode::WeixinNetErr,
        format!(
            "{name} refused the access token while the upload streamed through; the token is refreshed: send the \
             upload again"
        ),
    )
}

fn name_of(deps: &Deps, target: &Owner) -> Upstream {
    upstream(deps, target).2
}

/// A reply body small enough to carry inside a response ([`INLINE_LIMIT`]), or `1027 REPLY_TOO_LARGE`. Reading
/// stops at the limit: a larger reply never sits in memory whole.
pub(crate) async fn inline(body: Payload, name: Upstream) -> Result<Vec<u8>, WaferError> {
    body.collect(INLINE_LIMIT).await.map_err(|e| match e {
        CollectError::TooLarge(limit) => WaferError::new(
            ReturnCode::ReplyTooLarge,
            format!(
                "{name}'s reply is larger than {limit} bytes, the most a response carries inline; \
                 larger replies stream only through the HTTP pass-through (/wechat/{{appid}}/…)"
            ),
        ),
        CollectError::Broken(e) => UpstreamError::Network(e).to_wafer(Call::Proxy, name),
    })
}

/// Make the call with the current token; refresh it once and retry once if WeChat rejects exactly that token.
pub async fn call(deps: &Deps, req: CallRequest) -> Result<Reply, WaferError> {
    let body = req.body.as_ref().map_or(Body::None, Body::Json);
    let out =
        Outgoing { method: &req.method, path: req.path.as_str(), query: &req.query, body, headers: &[] };
    let reply = send(deps, &req.target, out, "proxy").await?;
    let errcode = reply.errcode();
    tracing::info!(path = %req.path, status = reply.status, errcode = errcode.unwrap_or(0), "proxied call");
    if !(200..300).contains(&reply.status) {
        return Err(UpstreamError::Status(reply.status).to_wafer(Call::Proxy, name_of(deps, &req.target)));
    }
    let bytes = inline(reply.body, name_of(deps, &req.target)).await?;
    let data = match proxy::json_object(&bytes) {
        Some(v) => v,
        None => json!({
            "content_type": reply.content_type,
            "data_base64": base64::engine::general_purpose::STANDARD.encode(&bytes),
        }),
    };
    Ok(Reply { message: "CALL_SUCCESS", data: data.into(), app: None })
}
