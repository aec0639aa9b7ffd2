//! Upstream HTTP clients (WeChat here, WeCom in [`wecom`]) and the classification of upstream errors into
//! return codes.
//!
//! Base URLs and timeouts are arguments so tests point them at a local fake. Query values are URL-encoded (as
//! forms are); TLS is verified (rustls). Calls on a caller's behalf have a client of their own ([`relay`]). No
//! URL is ever logged: request URLs carry secrets.

mod errors;
pub mod path;
pub mod proxy;
pub mod relay;
pub mod secure;
pub mod wecom;

pub use errors::{
    check_errcode, Call, Upstream, UpstreamError, CODE_CODES, CREDENTIAL_CODES, IP_CODES, TOKEN_INVALID_CODES,
};

use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// A successful `jscode2session`.
#[derive(Clone, PartialEq, Eq)]
pub struct WxSession {
    pub openid: String,
    pub session_key: String,
    pub unionid: Option<String>,
}

impl std::fmt::Debug for WxSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WxSession").field("openid", &self.openid).finish_non_exhaustive()
    }
}

/// Timeouts for upstream calls.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    pub total: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        Self { connect: Duration::from_secs(3), total: Duration::from_secs(5) }
    }
}

/// The variables a proxy is usually taken from, which upstream calls ignore (see [`http_client`]).
pub const PROXY_VARIABLES: [&str; 6] =
    ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"];

/// What every upstream call says it is.
pub const USER_AGENT: &str = concat!("wafer-scf/", env!("CARGO_PKG_VERSION"));

/// Build the keep-alive HTTP client a process uses for tokens, tickets and logins (calls on a caller's behalf go
/// through [`relay::Relay`]).
pub fn http_client(t: UpstreamTimeouts) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(t.connect)
        .timeout(t.total)
        // A streamed reply may last longer than `total` (the pass-through sets its own limit per call), but never
        // stalls longer than it between two reads.
        .read_timeout(t.total)
        .pool_idle_timeout(Duration::from_secs(50))
        .user_agent(USER_AGENT)
        // A redirect is never followed (it would carry the token or secret in the URL, and a Referer, to whatever
        // host it names): it is an error naming that host ([`redirect_of`]).
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        // Straight to WeChat, as the pass-through's client ([`relay::Relay`]) goes: a proxy from the environment
        // would send token fetches one way and calls another, past two different IP whitelist entries.
        .no_proxy()
        .build()
}

/// The error for a redirect reply: the host its `Location` names (only the host: the rest may carry anything).
pub fn redirect_of(resp: &reqwest::Response) -> Option<UpstreamError> {
    redirect_at(resp.status(), resp.headers(), resp.url().as_str())
}

/// [`redirect_of`] for a reply with `status` and `headers` to a request sent to `url`.
pub fn redirect_at(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    url: &str,
) -> Option<UpstreamError> {
    if !status.is_redirection() {
        return None;
    }
    let host = headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| reqwest::Url::parse(url).ok()?.join(l).ok())
        .and_then(|u| u.host_str().map(|h| crate::request::log_safe(h, 253)))
        .unwrap_or_else(|| "-".into());
    Some(UpstreamError::Redirect(host))
}

/// The WeChat API client (`api.weixin.qq.com` by default).
#[derive(Clone, Debug)]
pub struct WeChatClient {
    http: reqwest::Client,
    relay: relay::Relay,
    base: String,
    /// The secondary host (`api2.weixin.qq.com` for the default base), used when the primary cannot be reached.
    fallback: Option<String>,
}

#[derive(Deserialize)]
struct Code2SessionReply {
    #[serde(default)]
    errcode: Option<i64>,
    openid: Option<String>,
    session_key: Option<String>,
    unionid: Option<String>,
}

impl WeChatClient {
    pub fn new(http: reqwest::Client, relay: relay::Relay, base_url: &str) -> Self {
        Self { http, relay, base: base_url.trim_end_matches('/').to_owned(), fallback: None }
    }

    /// Use `fallback` when the primary host cannot be reached at all (nothing was sent, so even a login code is
    /// safe to send again).
    pub fn with_fallback(mut self, fallback: Option<&str>) -> Self {
        self.fallback = fallback.map(|f| f.trim_end_matches('/').to_owned());
        self
    }

    /// Send `build(base)`; when the primary host is unreachable, once more to the secondary host.
    async fn send(
        &self,
        endpoint: &'static str,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<Value, UpstreamError> {
        match (send_json(endpoint, build(&self.base)).await, &self.fallback) {
            (Err(UpstreamError::Unreachable(e)), Some(fallback)) => {
                tracing::warn!(error = %e, "WeChat's primary host is unreachable; trying the secondary host");
                send_json(endpoint, build(fallback)).await
            }
            (other, _) => other,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The client of calls on a caller's behalf, to WeChat and WeCom alike.
    pub fn relay(&self) -> &relay::Relay {
        &self.relay
    }

    /// `GET /sns/jscode2session`. Called once per login code: codes are single-use, so never retried.
    pub async fn code2session(
        &self,
        appid: &str,
        secret: &str,
        code: &str,
    ) -> Result<WxSession, UpstreamError> {
        let body = self
            .send("/sns/jscode2session", |base| {
                self.http.get(format!("{base}/sns/jscode2session")).query(&[
                    ("appid", appid),
                    ("secret", secret),
                    ("js_code", code),
                    ("grant_type", "authorization_code"),
                ])
            })
            .await?;
        let reply: Code2SessionReply = serde_json::from_value(body.clone())
            .map_err(|_| UpstreamError::BadReply("unexpected field types".into()))?;
        check_errcode(reply.errcode, &body)?;
        match (reply.openid, reply.session_key) {
            (Some(openid), Some(session_key)) if !openid.is_empty() && !session_key.is_empty() => {
                Ok(WxSession { openid, session_key, unionid: reply.unionid.filter(|u| !u.is_empty()) })
            }
            _ => Err(UpstreamError::BadReply("no openid/session_key".into())),
        }
    }
}

/// A token or ticket as fetched: the value and its lifetime in seconds.
#[derive(Clone, PartialEq, Eq)]
pub struct Fetched {
    pub value: String,
    pub expires_in: i64,
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched").field("expires_in", &self.expires_in).finish_non_exhaustive()
    }
}

/// Read `{<field>, expires_in}` from a reply whose errcode was 0 or absent.
pub fn parse_fetched(body: &Value, field: &str) -> Result<Fetched, UpstreamError> {
    check_errcode(body.get("errcode").and_then(Value::as_i64), body)?;
    let value = body.get(field).and_then(Value::as_str).filter(|v| !v.is_empty());
    let expires_in = body.get("expires_in").and_then(Value::as_i64).filter(|e| *e > 0);
    match (value, expires_in) {
        (Some(v), Some(e)) if v.len() <= 2048 => Ok(Fetched { value: v.to_owned(), expires_in: e }),
        _ => Err(UpstreamError::BadReply(format!("no {field}/expires_in"))),
    }
}

impl WeChatClient {
    /// `POST /cgi-bin/stable_token`. With `force_refresh` the previous stable token is invalidated.
    pub async fn stable_token(
        &self,
        appid: &str,
        secret: &str,
        force_refresh: bool,
    ) -> Result<Fetched, UpstreamError> {
        let body = serde_json::json!({
            "grant_type": "client_credential", "appid": appid, "secret": secret, "force_refresh": force_refresh,
        });
        let reply = self
            .send("/cgi-bin/stable_token", |base| {
                self.http.post(format!("{base}/cgi-bin/stable_token")).json(&body)
            })
            .await?;
        parse_fetched(&reply, "access_token")
    }

    /// `GET /cgi-bin/token`: every call starts the previous token's 5-minute countdown.
    pub async fn classic_token(&self, appid: &str, secret: &str) -> Result<Fetched, UpstreamError> {
        let reply = self
            .send("/cgi-bin/token", |base| {
                self.http.get(format!("{base}/cgi-bin/token")).query(&[
                    ("grant_type", "client_credential"),
                    ("appid", appid),
                    ("secret", secret),
                ])
            })
            .await?;
        parse_fetched(&reply, "access_token")
    }

    /// `GET /cgi-bin/ticket/getticket?type=jsapi`: the official-account JS-SDK ticket.
    pub async fn jsapi_ticket(&self, access_token: &str) -> Result<Fetched, UpstreamError> {
        let reply = self
            .send("/cgi-bin/ticket/getticket", |base| {
                self.http
                    .get(format!("{base}/cgi-bin/ticket/getticket"))
                    .query(&[("access_token", access_token), ("type", "jsapi")])
            })
            .await?;
        parse_fetched(&reply, "ticket")
    }
}

/// Send a request and read a JSON object body, counting the call by `endpoint` and result. Errors never include
/// the URL (it carries secrets).
pub async fn send_json(endpoint: &'static str, req: reqwest::RequestBuilder) -> Result<Value, UpstreamError> {
    let result = send_json_inner(req).await;
    let label = match &result {
        Ok(v) => match v.get("errcode").and_then(Value::as_i64) {
            None | Some(0) => "ok".to_owned(),
            Some(c) => format!("errcode_{c}"),
        },
        Err(UpstreamError::Unreachable(_)) => "unreachable".into(),
        Err(UpstreamError::Network(_)) => "network".into(),
        Err(UpstreamError::Status(s)) => format!("http_{s}"),
        Err(UpstreamError::Redirect(_)) => "redirect".into(),
        Err(UpstreamError::BadReply(_) | UpstreamError::Api { .. }) => "bad_reply".into(),
    };
    crate::metrics::upstream(endpoint, label);
    result
}

/// A request that failed before a reply: unreachable when nothing was sent, else a network error. No URL.
pub(crate) fn send_error(e: reqwest::Error) -> UpstreamError {
    if e.is_connect() {
        UpstreamError::Unreachable(e.without_url().to_string())
    } else {
        UpstreamError::Network(e.without_url().to_string())
    }
}

async fn send_json_inner(req: reqwest::RequestBuilder) -> Result<Value, UpstreamError> {
    let resp = req.send().await.map_err(send_error)?;
    if let Some(e) = redirect_of(&resp) {
        return Err(e);
    }
    let status = resp.status();
    if !status.is_success() {
        return Err(UpstreamError::Status(status.as_u16()));
    }
    let bytes = resp.bytes().await.map_err(|e| UpstreamError::Network(e.without_url().to_string()))?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|_| UpstreamError::BadReply("not JSON".into()))?;
    if !value.is_object() {
        return Err(UpstreamError::BadReply("not a JSON object".into()));
    }
    Ok(value)
}
