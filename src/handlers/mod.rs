//! The interface set: each `interfaceName` parsed from `para` into a typed request, then handled by a
//! function of (request, [`Deps`]). Unknown names are a typed reply (1010), never a panic.

pub mod cos;
pub mod credentials;
pub mod session;

use crate::auth::{Access, Caller, Scope};
use crate::clock::Clock;
use crate::envelope::{Para, ReturnCode, WaferError};
use crate::request::RequestMeta;
use crate::store::Store;
use crate::tokens::{CredKind, Credentials};
use crate::wechat::WeChatClient;
use serde_json::Value;
use std::sync::Arc;

/// Everything a handler may touch. Built once per process and shared by every request.
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub wechat: WeChatClient,
    pub clock: Arc<dyn Clock>,
    pub creds: Arc<Credentials>,
    pub settings: Settings,
}

impl Deps {
    /// Wire the dependencies; the credential manager shares the store, clients and clock.
    pub fn new(
        store: Arc<dyn Store>,
        wechat: WeChatClient,
        wecom: crate::wechat::wecom::WeComClient,
        clock: Arc<dyn Clock>,
        settings: Settings,
        policy: crate::tokens::Policy,
    ) -> Self {
        let creds = Arc::new(Credentials::new(store.clone(), wechat.clone(), wecom, clock.clone(), policy));
        Self { store, wechat, clock, creds, settings }
    }
}

/// Behaviour knobs that are not per-app.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `WAFER_DEFAULT_APPID`: the app a login without `appid` uses.
    pub default_appid: Option<String>,
    /// Live sessions kept per (appid, openid); the oldest beyond this are dropped at login.
    pub max_sessions_per_user: usize,
    /// `WAFER_ADMIN_TOKEN`: admin interfaces are off when unset.
    pub admin_token: Option<String>,
    /// `WAFER_CALLER_AUTH`.
    pub caller_auth: crate::auth::CallerAuthMode,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_appid: None,
            max_sessions_per_user: session::DEFAULT_MAX_SESSIONS_PER_USER,
            admin_token: None,
            caller_auth: crate::auth::CallerAuthMode::Credentials,
        }
    }
}

/// A successful reply: `returnMessage` and `returnData`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub message: &'static str,
    pub data: Value,
}

/// Every interface this server answers, with its typed request.
#[derive(Debug)]
pub enum Interface<'a> {
    IdSkey(session::LoginRequest<'a>),
    Auth(session::AuthRequest<'a>),
    Decrypt(session::DecryptRequest<'a>),
    UserInfo(session::DecryptRequest<'a>),
    Credential(&'static str, credentials::CredentialRequest),
    Signature(&'static str, credentials::SignatureRequest),
    InitAgent(credentials::InitAgentRequest),
    CosV4(&'static str, cos::V4Request),
    CosV5(cos::V5Request),
}

impl<'a> Interface<'a> {
    /// Parse `interfaceName` + `para`. Unknown names → INTERFACE_ERR; bad fields → PARA_ERR naming the field.
    pub fn parse(name: &str, para: Para<'a>) -> Result<Self, WaferError> {
        Ok(match name {
            "qcloud.cam.id_skey" => Self::IdSkey(session::LoginRequest::parse(para)?),
            "qcloud.cam.auth" => Self::Auth(session::AuthRequest::parse(para)?),
            "qcloud.cam.decrypt" => Self::Decrypt(session::DecryptRequest::parse(para)?),
            "qcloud.cam.userinfo" => Self::UserInfo(session::DecryptRequest::parse(para)?),
            "qcloud.mimi.access_token" => Self::Credential(
                "qcloud.mimi.access_token",
                credentials::CredentialRequest::parse(para, CredKind::MpToken)?,
            ),
            "qcloud.mimi.jsapi_ticket" => Self::Credential(
                "qcloud.mimi.jsapi_ticket",
                credentials::CredentialRequest::parse(para, CredKind::MpJsapiTicket)?,
            ),
            "qcloud.work.access_token" => Self::Credential(
                "qcloud.work.access_token",
                credentials::CredentialRequest::parse(para, CredKind::WcToken)?,
            ),
            "qcloud.work.ticket" => Self::Credential(
                "qcloud.work.ticket",
                credentials::CredentialRequest::parse(para, CredKind::WcCorpTicket)?,
            ),
            "qcloud.work.agent.ticket" => Self::Credential(
                "qcloud.work.agent.ticket",
                credentials::CredentialRequest::parse(para, CredKind::WcAgentTicket)?,
            ),
            "qcloud.mimi.jsapi_signature" => Self::Signature(
                "qcloud.mimi.jsapi_signature",
                credentials::SignatureRequest::parse(para, false)?,
            ),
            "qcloud.work.jsapi_signature" => Self::Signature(
                "qcloud.work.jsapi_signature",
                credentials::SignatureRequest::parse(para, true)?,
            ),
            "qcloud.work.initagent" => Self::InitAgent(credentials::InitAgentRequest::parse(para)?),
            "qcloud.cos.auth.reusable" => {
                Self::CosV4("qcloud.cos.auth.reusable", cos::V4Request::parse(para, true)?)
            }
            "qcloud.cos.auth.nonreusable" => {
                Self::CosV4("qcloud.cos.auth.nonreusable", cos::V4Request::parse(para, false)?)
            }
            "qcloud.cos.auth.v5" => Self::CosV5(cos::V5Request::parse(para)?),
            _ => return Err(WaferError::new(ReturnCode::InterfaceErr, "unknown interfaceName")),
        })
    }

    /// The canonical interface name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::IdSkey(_) => "qcloud.cam.id_skey",
            Self::Auth(_) => "qcloud.cam.auth",
            Self::Decrypt(_) => "qcloud.cam.decrypt",
            Self::UserInfo(_) => "qcloud.cam.userinfo",
            Self::Credential(name, _) | Self::Signature(name, _) | Self::CosV4(name, _) => name,
            Self::CosV5(_) => "qcloud.cos.auth.v5",
            Self::InitAgent(_) => "qcloud.work.initagent",
        }
    }

    /// The authorisation this request needs.
    pub fn access(&self) -> Access<'_> {
        match self {
            Self::IdSkey(r) => Access::Session(r.appid),
            Self::Auth(r) => Access::Session(r.appid),
            Self::Decrypt(r) | Self::UserInfo(r) => Access::Session(r.appid),
            Self::Credential(_, r) => Access::Credential(r.target.as_scope()),
            Self::Signature(_, r) => Access::Credential(r.target.as_scope()),
            Self::InitAgent(r) => Access::Admin { para_token: r.admin_token.as_deref() },
            Self::CosV4(_, r) => Access::Credential(Scope::App(&r.appid)),
            Self::CosV5(r) => Access::Credential(Scope::App(&r.appid)),
        }
    }

    /// Run the handler. `session_scope`: a caller whose key must cover the app of the session the request names.
    pub async fn handle(
        self,
        deps: &Deps,
        meta: &RequestMeta,
        session_scope: Option<&Caller>,
    ) -> Result<Reply, WaferError> {
        match self {
            Self::IdSkey(r) => session::login(deps, r, session_scope).await,
            Self::Auth(r) => session::auth(deps, r, session_scope).await,
            Self::Decrypt(r) => session::decrypt(deps, r, session_scope).await,
            Self::UserInfo(r) => session::userinfo(deps, r, session_scope).await,
            Self::Credential(_, r) => credentials::credential(deps, r).await,
            Self::Signature(_, r) => credentials::signature(deps, r).await,
            Self::InitAgent(r) => credentials::init_agent(deps, meta, r).await,
            Self::CosV4(_, r) => cos::v4(deps, r).await,
            Self::CosV5(r) => cos::v5(deps, r).await,
        }
    }
}

/// Known interface names, for the README and tests.
pub const INTERFACE_NAMES: &[&str] =
    &["qcloud.cam.id_skey", "qcloud.cam.auth", "qcloud.cam.decrypt", "qcloud.cam.userinfo"];
