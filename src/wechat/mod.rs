//! Upstream HTTP clients (WeChat here, WeCom in [`wecom`]) and the classification of upstream errors into
//! return codes.
//!
//! Base URLs and timeouts are arguments so tests point them at a local fake. Query values are URL-encoded by
//! reqwest; TLS is verified (rustls). No URL is ever logged: request URLs carry secrets.

pub mod path;
pub mod proxy;
pub mod wecom;

use crate::envelope::{ReturnCode, WaferError};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// Why an upstream call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// The host could not be reached at all (connection refused, DNS, TLS): nothing was sent. Text has no URL.
    Unreachable(String),
    /// Timeout or a broken connection after the request went out. Text has no URL.
    Network(String),
    /// A non-200 HTTP status.
    Status(u16),
    /// A redirect (3xx), never followed: the host it named (`-` when it named none), which is no secret.
    Redirect(String),
    /// A 200 whose body is not JSON, or JSON missing the fields a success needs.
    BadReply(String),
    /// A JSON `errcode` other than 0, with WeChat's request id (`rid: …`, WeCom's `hint: […]`) and the caller IP
    /// WeChat names when it refuses one (an egress IP to whitelist: not a secret).
    Api { errcode: i64, rid: Option<String>, ip: Option<String>, suggests_stable: bool },
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(e) => write!(f, "unreachable: {e}"),
            Self::Network(e) => write!(f, "network: {e}"),
            Self::Status(s) => write!(f, "HTTP status {s}"),
            Self::Redirect(host) => write!(f, "redirect to {host} (not followed)"),
            Self::BadReply(e) => write!(f, "bad reply: {e}"),
            Self::Api { errcode, rid: Some(rid), .. } => write!(f, "errcode {errcode} (rid {rid})"),
            Self::Api { errcode, rid: None, .. } => write!(f, "errcode {errcode}"),
        }
    }
}

/// What the failed call was doing; decides which return code a credential-class errcode becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Code2Session,
    Token,
    Ticket,
    /// `getuserphonenumber`: a one-time phone code.
    Phone,
    /// A caller's own API call made with our token (`qcloud.mimi.call`, the pass-through, the token host).
    Proxy,
}

/// Which platform answered: WeChat (mini-programs, official accounts) or WeCom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    WeChat,
    WeCom,
}

impl Upstream {
    /// The name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::WeChat => "WeChat",
            Self::WeCom => "WeCom",
        }
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Errcodes meaning "the caller's egress IP is not whitelisted / needs admin confirmation".
pub const IP_CODES: &[i64] = &[40164, 60020, 61004, 89503];
/// Errcodes meaning "appid/corpid/secret are wrong or frozen".
pub const CREDENTIAL_CODES: &[i64] = &[40013, 40125, 40091, 40243, 41002, 41004, 40001];
/// Errcodes meaning "this access token is invalid / not latest / expired" on a ticket or business call.
pub const TOKEN_INVALID_CODES: &[i64] = &[40001, 40014, 42001];
/// Errcodes meaning "the login code is invalid, used, or the user is risky".
pub const CODE_CODES: &[i64] = &[40029, 40163, 40226];

impl UpstreamError {
    /// The one place upstream failures become caller-visible errors. Messages name the class and errcode,
    /// never WeChat's errmsg and never a credential.
    pub fn to_wafer(&self, call: Call, upstream: Upstream) -> WaferError {
        let e = match self {
            Self::Network(_) | Self::Unreachable(_) => {
                WaferError::new(ReturnCode::WeixinNetErr, format!("{upstream} unreachable or timed out"))
            }
            Self::Status(s) => {
                WaferError::new(ReturnCode::WeixinNetErr, format!("{upstream} answered HTTP {s}"))
            }
            Self::Redirect(host) => WaferError::new(
                ReturnCode::WeixinNetErr,
                format!("{upstream} answered with a redirect to {host}, which is never followed"),
            ),
            Self::BadReply(_) => WaferError::new(
                ReturnCode::WeixinReturnErr,
                format!("{upstream} answered an unexpected reply"),
            ),
            Self::Api { errcode, ip, .. } => {
                let c = *errcode;
                if IP_CODES.contains(&c) {
                    let message = match ip {
                        Some(ip) => format!(
                            "{upstream} refused this server's IP address {ip} (errcode {c}): add {ip} to the IP whitelist"
                        ),
                        None => format!(
                            "{upstream} refused this server's IP address (errcode {c}): add the egress IP to the IP whitelist"
                        ),
                    };
                    WaferError::new(ReturnCode::WeixinIpNotAllowed, message)
                } else if call == Call::Code2Session && CODE_CODES.contains(&c) {
                    WaferError::new(
                        ReturnCode::WeixinCodeErr,
                        format!("{upstream} rejected the login code (errcode {c})"),
                    )
                } else if call == Call::Phone && CODE_CODES.contains(&c) {
                    WaferError::new(
                        ReturnCode::WeixinCodeErr,
                        format!("{upstream} rejected the phone code (errcode {c}): a code is valid once, for 5 minutes"),
                    )
                } else if matches!(call, Call::Ticket | Call::Proxy) && TOKEN_INVALID_CODES.contains(&c) {
                    WaferError::new(
                        ReturnCode::WeixinAccesstokenErr,
                        format!("{upstream} rejected the access token (errcode {c})"),
                    )
                } else if CREDENTIAL_CODES.contains(&c) {
                    WaferError::new(
                        ReturnCode::WeixinAppidErr,
                        format!("{upstream} rejected the app credentials (errcode {c}): check the appid and secret"),
                    )
                } else if c == 45009 && upstream == Upstream::WeCom {
                    WaferError::new(
                        ReturnCode::WeixinQuotaErr,
                        "WeCom frequency limit hit (errcode 45009): retrying after a short wait",
                    )
                } else if c == 45009 {
                    WaferError::new(
                        ReturnCode::WeixinQuotaErr,
                        format!("{upstream} daily quota used up (errcode {c}): reset it with WeChat's clear_quota, then `wafer-scf app unblock`"),
                    )
                } else if c == 45011 || c == 45033 {
                    WaferError::new(
                        ReturnCode::WeixinRateLimited,
                        format!("{upstream} rate limit hit (errcode {c})"),
                    )
                } else if c == -1 {
                    WaferError::new(ReturnCode::WeixinNetErr, format!("{upstream} is busy (errcode -1)"))
                } else {
                    WaferError::new(ReturnCode::WeixinReturnErr, format!("{upstream} returned errcode {c}"))
                }
            }
        };
        e.with_detail(self)
    }
}

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

/// Build the one keep-alive HTTP client a process uses for every upstream.
pub fn http_client(t: UpstreamTimeouts) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(t.connect)
        .timeout(t.total)
        // A streamed reply may last longer than `total` (the pass-through sets its own limit per call), but never
        // stalls longer than it between two reads.
        .read_timeout(t.total)
        .pool_idle_timeout(Duration::from_secs(50))
        .user_agent(concat!("wafer-scf/", env!("CARGO_PKG_VERSION")))
        // A redirect is never followed (it would carry the token or secret in the URL, and a Referer, to whatever
        // host it names): it is an error naming that host ([`redirect_of`]).
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .build()
}

/// The error for a redirect reply: the host its `Location` names (only the host: the rest may carry anything).
pub fn redirect_of(resp: &reqwest::Response) -> Option<UpstreamError> {
    if !resp.status().is_redirection() {
        return None;
    }
    let host = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| resp.url().join(l).ok())
        .and_then(|u| u.host_str().map(|h| crate::request::log_safe(h, 253)))
        .unwrap_or_else(|| "-".into());
    Some(UpstreamError::Redirect(host))
}

/// The WeChat API client (`api.weixin.qq.com` by default).
#[derive(Clone, Debug)]
pub struct WeChatClient {
    http: reqwest::Client,
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
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        Self { http, base: base_url.trim_end_matches('/').to_owned(), fallback: None }
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

    /// The HTTP client (shared with proxied calls).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
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

/// A non-zero errcode becomes [`UpstreamError::Api`] (with WeChat's request id for support tickets).
pub fn check_errcode(errcode: Option<i64>, body: &Value) -> Result<(), UpstreamError> {
    match errcode {
        None | Some(0) => Ok(()),
        Some(c) => {
            let msg = body.get("errmsg").and_then(Value::as_str).unwrap_or("");
            let suggests_stable = msg.contains("stable_token");
            Err(UpstreamError::Api { errcode: c, rid: rid_of(msg), ip: ip_of(msg), suggests_stable })
        }
    }
}

/// WeChat appends `rid: <id>` to errmsg, WeCom `hint: [<id>]`; keep only that id.
fn rid_of(msg: &str) -> Option<String> {
    let rest = msg.split("rid:").nth(1).or_else(|| msg.split("hint:").nth(1))?;
    let rid: String = rest
        .trim_start_matches([' ', '['])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect();
    (!rid.is_empty()).then_some(rid)
}

/// The caller IP a refusal names: WeChat's `invalid ip 1.2.3.4 ipv6 …`, WeCom's `from ip: 1.2.3.4`.
fn ip_of(msg: &str) -> Option<String> {
    let rest = msg.split("invalid ip ").nth(1).or_else(|| msg.split("from ip: ").nth(1))?;
    let ip: String =
        rest.chars().take_while(|c| c.is_ascii_hexdigit() || *c == '.' || *c == ':').take(45).collect();
    (ip.len() >= 3 && ip.contains(['.', ':'])).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_error_table() {
        let api = |c| UpstreamError::Api { errcode: c, rid: None, ip: None, suggests_stable: false };
        assert_eq!(api(40029).to_wafer(Call::Code2Session, Upstream::WeChat).code, ReturnCode::WeixinCodeErr);
        assert_eq!(api(40163).to_wafer(Call::Code2Session, Upstream::WeChat).code, ReturnCode::WeixinCodeErr);
        assert_eq!(api(40226).to_wafer(Call::Code2Session, Upstream::WeChat).code, ReturnCode::WeixinCodeErr);
        assert_eq!(
            api(40013).to_wafer(Call::Code2Session, Upstream::WeChat).code,
            ReturnCode::WeixinAppidErr
        );
        assert_eq!(api(40125).to_wafer(Call::Token, Upstream::WeChat).code, ReturnCode::WeixinAppidErr);
        assert_eq!(api(40001).to_wafer(Call::Token, Upstream::WeChat).code, ReturnCode::WeixinAppidErr);
        assert_eq!(
            api(40001).to_wafer(Call::Ticket, Upstream::WeChat).code,
            ReturnCode::WeixinAccesstokenErr
        );
        let ip = api(40164).to_wafer(Call::Token, Upstream::WeChat);
        assert_eq!(ip.code, ReturnCode::WeixinIpNotAllowed);
        assert!(ip.message.contains("whitelist"));
        assert_eq!(api(60020).to_wafer(Call::Token, Upstream::WeCom).code, ReturnCode::WeixinIpNotAllowed);
        assert_eq!(api(45009).to_wafer(Call::Token, Upstream::WeChat).code, ReturnCode::WeixinQuotaErr);
        assert_eq!(api(45011).to_wafer(Call::Token, Upstream::WeChat).code, ReturnCode::WeixinRateLimited);
        assert_eq!(api(-1).to_wafer(Call::Token, Upstream::WeChat).code, ReturnCode::WeixinNetErr);
        assert_eq!(api(99999).to_wafer(Call::Token, Upstream::WeChat).code, ReturnCode::WeixinReturnErr);
        assert_eq!(
            UpstreamError::Status(502).to_wafer(Call::Token, Upstream::WeChat).code,
            ReturnCode::WeixinNetErr
        );
        assert_eq!(
            UpstreamError::BadReply("x".into()).to_wafer(Call::Token, Upstream::WeChat).code,
            ReturnCode::WeixinReturnErr
        );
    }

    #[test]
    fn rid_is_extracted_and_errmsg_is_not_kept() {
        let body = serde_json::json!({"errcode": 40029, "errmsg": "invalid code, rid: 6543-abc"});
        assert_eq!(
            check_errcode(Some(40029), &body).unwrap_err(),
            UpstreamError::Api {
                errcode: 40029,
                rid: Some("6543-abc".into()),
                ip: None,
                suggests_stable: false
            }
        );
        assert!(check_errcode(Some(0), &body).is_ok());
    }

    #[test]
    fn the_refused_ip_and_the_request_id_are_read_from_both_upstreams() {
        let wx = serde_json::json!({"errcode": 40164,
            "errmsg": "invalid ip 47.97.1.2 ipv6 ::ffff:47.97.1.2, not in whitelist rid: 6743a1b2-0c1d2e3f-4a5b6c7d"});
        let e = check_errcode(Some(40164), &wx).unwrap_err();
        assert_eq!(
            e,
            UpstreamError::Api {
                errcode: 40164,
                rid: Some("6743a1b2-0c1d2e3f-4a5b6c7d".into()),
                ip: Some("47.97.1.2".into()),
                suggests_stable: false
            }
        );
        let w = e.to_wafer(Call::Token, Upstream::WeChat);
        assert!(w.message.contains("add 47.97.1.2 to the IP whitelist"), "{}", w.message);
        let wecom = serde_json::json!({"errcode": 60020,
            "errmsg": "not allow to access from your ip, hint: [1564644245_16_7b8c], from ip: 113.108.1.9, more info at https://open.work.weixin.qq.com/devtool/query?e=60020"});
        assert_eq!(
            check_errcode(Some(60020), &wecom).unwrap_err(),
            UpstreamError::Api {
                errcode: 60020,
                rid: Some("1564644245_16_7b8c".into()),
                ip: Some("113.108.1.9".into()),
                suggests_stable: false
            }
        );
    }
}
