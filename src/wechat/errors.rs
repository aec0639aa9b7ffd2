//! Upstream failures: what can go wrong with a WeChat or WeCom call ([`UpstreamError`]), the errcode tables, and the
//! one place such a failure becomes a caller-visible return code ([`UpstreamError::to_wafer`]).

use crate::envelope::{ReturnCode, WaferError};
use serde_json::Value;

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
                } else if call == Call::Phone && c == 1_400_001 {
                    WaferError::new(
                        ReturnCode::WeixinQuotaErr,
                        format!("the mini-program's paid quota for phone-number verification is used up (errcode {c}): \
                                 buy more in the console (基础能力 → 手机号快速验证组件) — until then every phone code is refused"),
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
