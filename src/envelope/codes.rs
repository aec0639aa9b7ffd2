//! The Wafer return codes: the fixed numbers of the Wafer protocol plus this project's
//! documented additions (README, "Return codes").

/// A Wafer `returnCode`. The numbers are part of the wire contract: existing SDKs compare them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReturnCode {
    Ok,
    DbErr,
    NoInterface,
    ParaErr,
    WeixinNetErr,
    ChangeSessionErr,
    WeixinReturnErr,
    RequestErr,
    InterfaceErr,
    NoPara,
    NoAppid,
    InitAppinfoErr,
    ChangeTokenErr,
    ChangeTicketErr,
    ChangeAgentTicketErr,
    /// New: the request body is larger than the configured limit, or nested too deeply.
    RequestTooLarge,
    /// New: the interface needs a caller key and none was presented.
    CallerKeyMissing,
    /// New: the presented caller key is unknown or revoked.
    CallerKeyInvalid,
    /// New: the caller key is valid but its scope does not cover the app asked for.
    CallerKeyForbidden,
    /// New: admin interface called without a valid admin token, or admin interfaces are disabled.
    AdminAuthErr,
    /// The app's budget of forced token refreshes for the day is spent (`WAFER_FORCE_REFRESH_PER_DAY`).
    ForceRefreshLimited,
    /// Too many logins for this app or from this address in the current minute (`WAFER_LOGIN_LIMIT_*`).
    LoginRateLimited,
    /// New: another instance (or task) is refreshing the credential and did not finish within this request's
    /// budget; retrying shortly gets the value it stores.
    RefreshInProgress,
    /// WeChat's reply to a call made with API security did not verify (signature, certificate, appid, timestamp or
    /// decryption): not passed on.
    ReplyUnverified,
    /// New: WeChat's reply is larger than a response can carry inline (an envelope, an SCF reply:
    /// [`crate::payload::INLINE_LIMIT`]); it streams only through the HTTP pass-through.
    ReplyTooLarge,
    WeixinAppidErr,
    WeixinAccesstokenErr,
    WeixinCodeErr,
    /// New: the upstream refused this server's egress IP (WeChat 40164 / WeCom 60020, 61004, 89503).
    WeixinIpNotAllowed,
    /// New: the upstream daily quota is used up (WeChat 45009); calls stop until it resets.
    WeixinQuotaErr,
    /// New: the upstream rate or concurrency limit was hit (45011, WeCom 45033), or a local budget.
    WeixinRateLimited,
    SessionExpired,
    AuthErr,
    DecryptErr,
    CosParaErr,
    /// An unexpected internal failure (a caught panic). Never carries details.
    InternalErr,
}

impl ReturnCode {
    /// Every code, for documentation and tests.
    pub const ALL: [ReturnCode; 36] = [
        Self::Ok,
        Self::DbErr,
        Self::NoInterface,
        Self::ParaErr,
        Self::WeixinNetErr,
        Self::ChangeSessionErr,
        Self::WeixinReturnErr,
        Self::RequestErr,
        Self::InterfaceErr,
        Self::NoPara,
        Self::NoAppid,
        Self::InitAppinfoErr,
        Self::ChangeTokenErr,
        Self::ChangeTicketErr,
        Self::ChangeAgentTicketErr,
        Self::RequestTooLarge,
        Self::CallerKeyMissing,
        Self::CallerKeyInvalid,
        Self::CallerKeyForbidden,
        Self::AdminAuthErr,
        Self::ForceRefreshLimited,
        Self::LoginRateLimited,
        Self::ReplyTooLarge,
        Self::RefreshInProgress,
        Self::ReplyUnverified,
        Self::WeixinAppidErr,
        Self::WeixinAccesstokenErr,
        Self::WeixinCodeErr,
        Self::WeixinIpNotAllowed,
        Self::WeixinQuotaErr,
        Self::WeixinRateLimited,
        Self::SessionExpired,
        Self::AuthErr,
        Self::DecryptErr,
        Self::CosParaErr,
        Self::InternalErr,
    ];

    /// The integer sent as `returnCode`.
    /// The return code with this number, if there is one.
    pub fn from_code(code: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    pub fn code(self) -> i64 {
        match self {
            Self::Ok => 0,
            Self::DbErr => 1001,
            Self::NoInterface => 1002,
            Self::ParaErr => 1003,
            Self::WeixinNetErr => 1005,
            Self::ChangeSessionErr => 1006,
            Self::WeixinReturnErr => 1007,
            Self::RequestErr => 1009,
            Self::InterfaceErr => 1010,
            Self::NoPara => 1011,
            Self::NoAppid => 1012,
            Self::InitAppinfoErr => 1013,
            Self::ChangeTokenErr => 1014,
            Self::ChangeTicketErr => 1015,
            Self::ChangeAgentTicketErr => 1016,
            Self::RequestTooLarge => 1020,
            Self::CallerKeyMissing => 1021,
            Self::CallerKeyInvalid => 1022,
            Self::CallerKeyForbidden => 1023,
            Self::AdminAuthErr => 1024,
            Self::ForceRefreshLimited => 1025,
            Self::LoginRateLimited => 1026,
            Self::ReplyTooLarge => 1027,
            Self::RefreshInProgress => 1028,
            Self::ReplyUnverified => 1029,
            Self::InternalErr => 1099,
            Self::WeixinAppidErr => 40013,
            Self::WeixinAccesstokenErr => 40014,
            Self::WeixinCodeErr => 40029,
            Self::WeixinIpNotAllowed => 40164,
            Self::WeixinQuotaErr => 45009,
            Self::WeixinRateLimited => 45011,
            Self::SessionExpired => 60011,
            Self::AuthErr => 60012,
            Self::DecryptErr => 60021,
            Self::CosParaErr => -1,
        }
    }

    /// The HTTP status a refusal with this code is sent with where the answer is plain HTTP (the pass-through, the
    /// token host, health and metrics routes, a body refused before it is read). Envelopes are always HTTP 200.
    pub fn http_status(self) -> u16 {
        match self {
            Self::Ok => 200,
            Self::CallerKeyMissing | Self::CallerKeyInvalid | Self::AdminAuthErr => 401,
            Self::CallerKeyForbidden => 403,
            Self::ParaErr | Self::NoPara | Self::RequestErr => 400,
            Self::RequestTooLarge => 413,
            Self::NoAppid => 404,
            Self::ForceRefreshLimited
            | Self::LoginRateLimited
            | Self::WeixinQuotaErr
            | Self::WeixinRateLimited => 429,
            Self::DbErr | Self::InternalErr => 500,
            Self::RefreshInProgress => 503,
            Self::ReplyUnverified => 502,
            // Upstream failures, and anything else that kept WeChat's answer from the caller.
            _ => 502,
        }
    }

    /// The `errcode` a refusal with this code is answered with in WeChat's dialect (the drop-in token host): the
    /// code WeChat itself would have sent for the same situation, else `-1` (WeChat's "system error").
    pub fn wechat_errcode(self) -> i64 {
        match self {
            Self::Ok => 0,
            Self::ForceRefreshLimited | Self::WeixinQuotaErr => 45009,
            Self::WeixinRateLimited | Self::LoginRateLimited => 45011,
            Self::WeixinAppidErr => 40013,
            Self::WeixinAccesstokenErr => 40014,
            Self::WeixinCodeErr => 40029,
            Self::WeixinIpNotAllowed => 40164,
            _ => -1,
        }
    }

    /// The symbolic name, used as the prefix of `returnMessage` on errors.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::DbErr => "DB_ERR",
            Self::NoInterface => "NO_INTERFACE",
            Self::ParaErr => "PARA_ERR",
            Self::WeixinNetErr => "WEIXIN_NET_ERR",
            Self::ChangeSessionErr => "CHANGE_SESSION_ERR",
            Self::WeixinReturnErr => "WEIXIN_RETURN_ERR",
            Self::RequestErr => "REQUEST_ERR",
            Self::InterfaceErr => "INTERFACE_ERR",
            Self::NoPara => "NO_PARA",
            Self::NoAppid => "NO_APPID",
            Self::InitAppinfoErr => "INIT_APPINFO_ERR",
            Self::ChangeTokenErr => "CHANGE_TOKEN_ERR",
            Self::ChangeTicketErr => "CHANGE_TICKET_ERR",
            Self::ChangeAgentTicketErr => "CHANGE_AGENT_TICKET_ERR",
            Self::RequestTooLarge => "REQUEST_TOO_LARGE",
            Self::CallerKeyMissing => "CALLER_KEY_MISSING",
            Self::CallerKeyInvalid => "CALLER_KEY_INVALID",
            Self::CallerKeyForbidden => "CALLER_KEY_FORBIDDEN",
            Self::AdminAuthErr => "ADMIN_AUTH_ERR",
            Self::ForceRefreshLimited => "FORCE_REFRESH_LIMITED",
            Self::LoginRateLimited => "LOGIN_RATE_LIMITED",
            Self::ReplyTooLarge => "REPLY_TOO_LARGE",
            Self::RefreshInProgress => "REFRESH_IN_PROGRESS",
            Self::ReplyUnverified => "REPLY_UNVERIFIED",
            Self::InternalErr => "INTERNAL_ERR",
            Self::WeixinAppidErr => "WEIXIN_APPID_ERR",
            Self::WeixinAccesstokenErr => "WEIXIN_ACCESSTOKEN_ERR",
            Self::WeixinCodeErr => "WEIXIN_CODE_ERR",
            Self::WeixinIpNotAllowed => "WEIXIN_IP_NOT_ALLOWED",
            Self::WeixinQuotaErr => "WEIXIN_QUOTA_ERR",
            Self::WeixinRateLimited => "WEIXIN_RATE_LIMITED",
            Self::SessionExpired => "SESSION_EXPIRED",
            Self::AuthErr => "AUTH_ERR",
            Self::DecryptErr => "DECRYPT_ERR",
            Self::CosParaErr => "COS_PARA_ERR",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_and_names_are_unique() {
        let codes: HashSet<i64> = ReturnCode::ALL.iter().map(|c| c.code()).collect();
        let names: HashSet<&str> = ReturnCode::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(codes.len(), ReturnCode::ALL.len());
        assert_eq!(names.len(), ReturnCode::ALL.len());
    }

    #[test]
    fn protocol_numbers_are_fixed() {
        assert_eq!(ReturnCode::NoAppid.code(), 1012);
        assert_eq!(ReturnCode::SessionExpired.code(), 60011);
        assert_eq!(ReturnCode::AuthErr.code(), 60012);
        assert_eq!(ReturnCode::CosParaErr.code(), -1);
    }
}
