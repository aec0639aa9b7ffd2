//! The interface set: each `interfaceName` parsed from `para` into a typed request, then handled by a
//! function of (request, [`Deps`]). Unknown names are a typed reply (1010), never a panic.

pub mod admin;
pub mod cos;
pub mod credentials;
pub mod http;
pub mod phone;
pub mod platform;
pub mod proxy;
pub mod session;
pub mod session_key;
pub mod token_host;

use crate::admin::ops::AdminOp;
use crate::auth::{Access, Caller, Scope};
use crate::clock::Clock;
use crate::envelope::{Para, ReturnCode, WaferError};
use crate::request::RequestMeta;
use crate::store::Storage;
use crate::tokens::{CredKind, Credentials};
use crate::wechat::WeChatClient;
use futures_util::future::Either;
use std::future::Future;
use std::sync::Arc;

/// Everything a handler may touch. Built once per process and shared by every request.
pub struct Deps {
    pub store: Storage,
    pub wechat: WeChatClient,
    pub wecom: crate::wechat::wecom::WeComClient,
    pub clock: Arc<dyn Clock>,
    pub creds: Arc<Credentials>,
    pub settings: Settings,
    /// When this process started, for the status report.
    pub started: std::time::Instant,
    /// Login counters for the rate limits.
    pub login_limiter: crate::auth::RateLimiter,
    /// Apps' API-security keys, parsed, for the outgoing calls.
    pub api_keys: crate::apisec::KeyCache,
}

impl Deps {
    /// Wire the dependencies; the credential manager shares the store, clients and clock.
    pub fn new(
        store: Storage,
        wechat: WeChatClient,
        wecom: crate::wechat::wecom::WeComClient,
        clock: Arc<dyn Clock>,
        settings: Settings,
        policy: crate::tokens::Policy,
    ) -> Self {
        let creds =
            Arc::new(Credentials::new(store.clone(), wechat.clone(), wecom.clone(), clock.clone(), policy));
        Self {
            store,
            wechat,
            wecom,
            clock,
            creds,
            started: std::time::Instant::now(),
            login_limiter: crate::auth::RateLimiter::default(),
            api_keys: crate::apisec::KeyCache::new(settings.api_security_paths.clone()),
            settings,
        }
    }
}

pub use crate::settings::Settings;

/// A successful reply: `returnMessage` and `returnData`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub message: &'static str,
    pub data: crate::envelope::Data,
    /// The app a request named only by its session turned out to concern, for the log line.
    pub app: Option<crate::ids::AppId>,
}

/// A parsed request of one interface.
#[derive(Debug)]
pub enum Request<'a> {
    IdSkey(session::LoginRequest<'a>),
    Auth(session::AuthRequest<'a>),
    Decrypt(session::DecryptRequest<'a>),
    UserInfo(session::DecryptRequest<'a>),
    Credential(credentials::CredentialRequest),
    Signature(credentials::SignatureRequest),
    InitAgent(credentials::InitAgentRequest),
    CosV4(cos::V4Request),
    CosV5(cos::V5Request),
    Admin(admin::AdminRequest),
    Call(proxy::CallRequest),
    Phone(phone::PhoneRequest<'a>),
    SessionKey(session_key::SessionKeyRequest<'a>),
}

type Parser = for<'a> fn(Para<'a>) -> Result<Request<'a>, WaferError>;

/// Every interface this server answers but the admin operations (their own table, [`AdminOp`]): its
/// `interfaceName` and its parser. Parsing, the names in logs and the fuzz targets all read these two tables.
pub const INTERFACES: &[(&str, Parser)] = &[
    ("qcloud.cam.id_skey", |p| Ok(Request::IdSkey(session::LoginRequest::parse(p)?))),
    ("qcloud.cam.auth", |p| Ok(Request::Auth(session::AuthRequest::parse(p)?))),
    ("qcloud.cam.decrypt", |p| Ok(Request::Decrypt(session::DecryptRequest::parse(p)?))),
    ("qcloud.cam.userinfo", |p| Ok(Request::UserInfo(session::DecryptRequest::parse(p)?))),
    ("qcloud.cam.phone", |p| Ok(Request::Phone(phone::PhoneRequest::parse(p)?))),
    ("qcloud.cam.check_session", |p| {
        Ok(Request::SessionKey(session_key::SessionKeyRequest::parse(p, false)?))
    }),
    ("qcloud.cam.reset_session_key", |p| {
        Ok(Request::SessionKey(session_key::SessionKeyRequest::parse(p, true)?))
    }),
    ("qcloud.mimi.access_token", |p| credential(p, CredKind::MpToken)),
    ("qcloud.mimi.jsapi_ticket", |p| credential(p, CredKind::MpJsapiTicket)),
    ("qcloud.work.access_token", |p| credential(p, CredKind::WcToken)),
    ("qcloud.work.ticket", |p| credential(p, CredKind::WcCorpTicket)),
    ("qcloud.work.agent.ticket", |p| credential(p, CredKind::WcAgentTicket)),
    ("qcloud.mimi.jsapi_signature", |p| {
        Ok(Request::Signature(credentials::SignatureRequest::parse(p, false)?))
    }),
    ("qcloud.work.jsapi_signature", |p| {
        Ok(Request::Signature(credentials::SignatureRequest::parse(p, true)?))
    }),
    ("qcloud.work.initagent", |p| Ok(Request::InitAgent(credentials::InitAgentRequest::parse(p)?))),
    ("qcloud.cos.auth.reusable", |p| Ok(Request::CosV4(cos::V4Request::parse(p, true)?))),
    ("qcloud.cos.auth.nonreusable", |p| Ok(Request::CosV4(cos::V4Request::parse(p, false)?))),
    ("qcloud.cos.auth.v5", |p| Ok(Request::CosV5(cos::V5Request::parse(p)?))),
    ("qcloud.mimi.call", |p| Ok(Request::Call(proxy::CallRequest::parse(p, false)?))),
    ("qcloud.work.call", |p| Ok(Request::Call(proxy::CallRequest::parse(p, true)?))),
];

fn credential(p: Para<'_>, kind: CredKind) -> Result<Request<'_>, WaferError> {
    Ok(Request::Credential(credentials::CredentialRequest::parse(p, kind)?))
}

/// Every interface name: the table's, then the admin operations' ([`crate::admin::ops::AdminOp::NAMES`]).
pub fn interface_names() -> impl Iterator<Item = &'static str> {
    INTERFACES.iter().map(|(name, _)| *name).chain(AdminOp::NAMES.iter().copied())
}

/// One request: the interface's canonical name and its parsed request.
#[derive(Debug)]
pub struct Interface<'a> {
    name: &'static str,
    request: Request<'a>,
}

impl<'a> Interface<'a> {
    /// Parse `interfaceName` + `para`. Unknown names → INTERFACE_ERR; bad fields → PARA_ERR naming the field.
    pub fn parse(name: &str, para: Para<'a>) -> Result<Self, WaferError> {
        if let Some((name, parse)) = INTERFACES.iter().find(|(n, _)| *n == name) {
            return Ok(Self { name, request: parse(para)? });
        }
        let Some(name) = AdminOp::NAMES.iter().find(|n| **n == name) else {
            return Err(WaferError::new(ReturnCode::InterfaceErr, "unknown interfaceName"));
        };
        Ok(Self { name, request: Request::Admin(admin::AdminRequest::parse(name, para)?) })
    }

    /// The canonical name of a known interface (a request that fails to parse is still logged under it).
    pub fn known_name(name: &str) -> Option<&'static str> {
        interface_names().find(|n| *n == name)
    }

    /// The canonical interface name, for logs.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The authorisation this request needs.
    pub fn access(&self) -> Access<'_> {
        match &self.request {
            Request::IdSkey(r) => Access::Session(r.appid.as_deref()),
            Request::Auth(r) => Access::Session(r.appid.as_deref()),
            Request::Decrypt(r) | Request::UserInfo(r) => Access::Session(r.appid.as_deref()),
            Request::Credential(r) => Access::Credential(Scope::of(&r.target)),
            Request::Signature(r) => Access::Signature(Scope::of(&r.target)),
            Request::InitAgent(r) => Access::Admin { para_token: r.admin_token.as_ref().map(|t| t.expose()) },
            Request::CosV4(r) => Access::Signature(Scope::App(&r.appid)),
            Request::CosV5(r) => Access::Signature(Scope::App(&r.appid)),
            Request::Admin(r) => Access::Admin { para_token: r.admin_token.as_ref().map(|t| t.expose()) },
            Request::Call(r) => Access::Call(Scope::of(&r.target), r.path.as_str()),
            Request::Phone(r) => Access::Session(r.appid.as_deref()),
            Request::SessionKey(r) => Access::Session(r.appid.as_deref()),
        }
    }

    /// Run the handler. `session_scope`: a caller whose key must cover the app of the session the request names.
    pub fn handle<'d>(
        self,
        deps: &'d Deps,
        meta: &'d RequestMeta,
        session_scope: Option<&'d Caller>,
    ) -> impl Future<Output = Result<Reply, WaferError>> + Send + 'd
    where
        'a: 'd,
    {
        // The hot path (a token or ticket, from memory nearly always) is awaited as it is; any other handler's
        // future is boxed, so that the future returned — and every one that awaits it, moved whole at each step up
        // to hyper — stays the size of that one's instead of the largest handler's (a login's: several KB, copied
        // per request). A session check's (about 900 bytes) is boxed too: it reads storage, beside which one
        // allocation is nothing. Not an `async fn`: its state would hold this request as well as each future.
        match self.request {
            Request::Credential(r) => Either::Left(credentials::credential(deps, r)),
            request => Either::Right(Box::pin(run(request, deps, meta, session_scope))),
        }
    }
}

/// Run the handler of `request`.
async fn run(
    request: Request<'_>,
    deps: &Deps,
    meta: &RequestMeta,
    session_scope: Option<&Caller>,
) -> Result<Reply, WaferError> {
    match request {
        Request::IdSkey(r) => session::login(deps, meta, r, session_scope).await,
        Request::Auth(r) => session::auth(deps, r, session_scope).await,
        Request::Decrypt(r) => session::decrypt(deps, r, session_scope).await,
        Request::UserInfo(r) => session::userinfo(deps, r, session_scope).await,
        Request::Credential(r) => credentials::credential(deps, r).await,
        Request::Signature(r) => credentials::signature(deps, r).await,
        Request::InitAgent(r) => credentials::init_agent(deps, meta, r).await,
        Request::CosV4(r) => cos::v4(deps, r).await,
        Request::CosV5(r) => cos::v5(deps, r).await,
        Request::Admin(r) => admin::handle(deps, meta, r).await,
        Request::Call(r) => proxy::call(deps, r).await,
        Request::Phone(r) => phone::phone(deps, r, session_scope).await,
        Request::SessionKey(r) => session_key::session_key(deps, r, session_scope).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_each_interface_once_and_parse_keeps_the_name() {
        let names: Vec<&str> = interface_names().collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "no name twice");
        assert_eq!(names.len(), 38);
        let para = crate::envelope::ParaMap::default();
        let e = Interface::parse("qcloud.nope", Para(&para)).unwrap_err();
        assert_eq!(e.code, ReturnCode::InterfaceErr);
    }

    /// Every request type, parsed from a `para` that sets every secret an interface reads, formats with `{:?}`
    /// without one of them.
    #[test]
    fn no_request_debug_prints_a_secret() {
        let secrets = [
            ("code", "CODE-SECRET-1"),
            ("skey", "SKEY-SECRET-2"),
            ("access_token", "TOKEN-SECRET-3"),
            ("ticket", "TICKET-SECRET-4"),
            ("agentsecret", "AGENT-SECRET-5"),
            ("admin_token", "ADMIN-SECRET-6"),
            ("secret", "APP-SECRET-7"),
            ("secret_key", "COS-SECRET-8"),
            ("sym_key", "SYM-SECRET-9"),
            ("private_key", "PRIVATE-SECRET-10"),
        ];
        let mut para = serde_json::json!({
            "appid": "1250000000", "corpid": "ww1", "agentid": "1000002", "id": "abc", "encrypt_data": "x",
            "iv": "y", "url": "https://a.example/", "type": "config", "force": true, "remark": "r",
            "bucket": "b-1250000000",
            "expiration": 4_000_000_000u64, "filepath": "f.jpg", "sid": "AKID", "region": "ap-beijing",
            "method": "POST", "path": "/wxa/getwxacode", "name": "k", "secret_id": "AKID", "apps": ["wx1"],
            "api": "/wxa/getwxacode",
        });
        for (field, value) in secrets {
            para[field] = serde_json::Value::String(value.into());
        }
        let para: crate::envelope::ParaMap = para.as_object().unwrap().clone().into();
        for name in interface_names() {
            let parsed = Interface::parse(name, Para(&para)).unwrap_or_else(|e| panic!("{name}: {e}"));
            let shown = format!("{parsed:?}");
            for (_, secret) in secrets {
                assert!(!shown.contains(secret), "{name} shows {secret}: {shown}");
            }
        }
    }
}
