//! Access tokens, tickets and JS-SDK signatures for mini-programs / official accounts (`qcloud.mimi.*`) and WeCom
//! self-built apps (`qcloud.work.*`), plus the admin-only agent registration. The refresh protocol lives in
//! [`crate::tokens`]; these handlers parse, authorise and shape replies.

use super::{Deps, Reply};
use crate::crypto::{self, Secret};
use crate::envelope::{Flat, Para, ReturnCode, WaferError};
use crate::ids::{AgentId, CorpId};
use crate::registry::{AgentChanges, Registry, RegistryError};
use crate::request::RequestMeta;
use crate::tokens::{CredKind, Force, Owner, Served};
use serde_json::json;

const MAX_CREDENTIAL: usize = 2048;
const MAX_URL: usize = 2048;

/// The app a request names (`para.appid`).
pub(crate) fn app_owner(p: Para<'_>) -> Result<Owner, WaferError> {
    Ok(Owner::App(p.id("appid")?))
}

/// The WeCom agent a request names (`para.corpid`, `para.agentid`).
pub(crate) fn agent_owner(p: Para<'_>) -> Result<Owner, WaferError> {
    Ok(Owner::Agent { corpid: p.id("corpid")?, agentid: p.id("agentid")? })
}

/// A token or ticket request: `qcloud.mimi.access_token`, `qcloud.mimi.jsapi_ticket`, `qcloud.work.access_token`,
/// `qcloud.work.ticket`, `qcloud.work.agent.ticket`.
#[derive(Debug)]
pub struct CredentialRequest {
    pub target: Owner,
    pub kind: CredKind,
    pub force: bool,
    /// The value the caller found bad (`para.access_token` / `para.ticket`), for compare-then-expire.
    pub seen: Option<Secret>,
}

impl CredentialRequest {
    pub fn parse(p: Para<'_>, kind: CredKind) -> Result<Self, WaferError> {
        let target = if kind.is_wecom() { agent_owner(p)? } else { app_owner(p)? };
        let seen_field = if kind.is_ticket() { "ticket" } else { "access_token" };
        let seen_field = if kind == CredKind::WcAgentTicket && p.0.contains_key("agent_ticket") {
            "agent_ticket"
        } else {
            seen_field
        };
        Ok(Self {
            target,
            kind,
            force: p.flag("force")?,
            seen: p.opt_str_max(seen_field, MAX_CREDENTIAL)?.map(Secret::new),
        })
    }
}

/// A JS-SDK signature request: `qcloud.mimi.jsapi_signature`, `qcloud.work.jsapi_signature`.
#[derive(Debug)]
pub struct SignatureRequest {
    pub target: Owner,
    pub kind: CredKind,
    pub url: String,
    pub noncestr: Option<String>,
    pub timestamp: Option<u64>,
}

impl SignatureRequest {
    pub fn parse(p: Para<'_>, wecom: bool) -> Result<Self, WaferError> {
        let (target, kind) = if wecom {
            let kind = match p.opt_token("type", 32)? {
                None | Some("config") => CredKind::WcCorpTicket,
                Some("agent_config") => CredKind::WcAgentTicket,
                Some(_) => return Err(WaferError::para("type", "must be config or agent_config")),
            };
            (agent_owner(p)?, kind)
        } else {
            (app_owner(p)?, CredKind::MpJsapiTicket)
        };
        let url = p.str_max("url", MAX_URL)?;
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.chars().any(char::is_control) {
            return Err(WaferError::para("url", "must be the page's http(s) URL"));
        }
        Ok(Self {
            target,
            kind,
            url: url.to_owned(),
            noncestr: p.opt_token("noncestr", 64)?.map(str::to_owned),
            timestamp: p.opt_u64("timestamp")?,
        })
    }
}

/// `qcloud.work.initagent`.
#[derive(Debug)]
pub struct InitAgentRequest {
    pub corpid: CorpId,
    pub agentid: AgentId,
    pub secret: Secret,
    pub remark: String,
    pub admin_token: Option<Secret>,
}

impl InitAgentRequest {
    pub fn parse(p: Para<'_>) -> Result<Self, WaferError> {
        Ok(Self {
            corpid: p.id("corpid")?,
            agentid: p.id("agentid")?,
            secret: Secret::new(p.token("agentsecret", 512)?),
            remark: p.opt_str_max("remark", 255)?.unwrap_or_default().to_owned(),
            admin_token: p.opt_str_max("admin_token", 512)?.map(Secret::new),
        })
    }
}

fn messages(kind: CredKind) -> (&'static str, &'static str, &'static str) {
    // (field, message when served from cache, message when fetched now)
    match kind {
        CredKind::MpToken | CredKind::WcToken => ("access_token", "OLD_TOKEN_SUCCESS", "NEW_TOKEN_SUCCESS"),
        CredKind::MpJsapiTicket | CredKind::WcCorpTicket => {
            ("ticket", "OLD_TICKET_SUCCESS", "NEW_TICKET_SUCCESS")
        }
        CredKind::WcAgentTicket => ("agent_ticket", "OLD_AGENT_TICKET_SUCCESS", "NEW_AGENT_TICKET_SUCCESS"),
    }
}

/// Serve a token or ticket.
pub async fn credential(deps: &Deps, req: CredentialRequest) -> Result<Reply, WaferError> {
    let key = req.target.into_key(req.kind);
    let force = if req.force { Force::Yes(req.seen.as_ref().map(Secret::expose)) } else { Force::No };
    let served: Served = deps.creds.get(&key, force).await?;
    let (field, old, new) = messages(req.kind);
    // Written straight from its fields (no JSON map built per answer): the owner, the credential, its expiry.
    let exp = ("exp", served.expires_at);
    let data = match key.into_owner() {
        Owner::App(appid) => Flat::new([("appid", appid.into_string()), (field, served.value)], exp),
        Owner::Agent { corpid, agentid } => Flat::new(
            [("corpid", corpid.into_string()), ("agentid", agentid.into_string()), (field, served.value)],
            exp,
        ),
    };
    Ok(Reply { message: if served.fresh { new } else { old }, data: data.into(), app: None })
}

/// Sign a page URL with the managed ticket, so the ticket never leaves the server.
pub async fn signature(deps: &Deps, req: SignatureRequest) -> Result<Reply, WaferError> {
    let key = req.target.key(req.kind);
    let ticket = deps.creds.get(&key, Force::No).await?;
    let noncestr = match req.noncestr {
        Some(n) => n,
        None => crypto::random_alnum(16).map_err(|e| {
            WaferError::new(ReturnCode::InternalErr, "no randomness available").with_detail(e)
        })?,
    };
    let timestamp = req.timestamp.unwrap_or_else(|| deps.clock.now().max(0) as u64);
    let signature = crypto::jsapi_signature(&ticket.value, &noncestr, timestamp, &req.url);
    let app_id = req.target.scope_id();
    let url = req.url.split('#').next().unwrap_or(&req.url).to_owned();
    Ok(Reply {
        message: "SIGNATURE_SUCCESS",
        data: json!({"appId": app_id, "timestamp": timestamp, "nonceStr": noncestr, "signature": signature, "url": url}).into(),
        app: None,
    })
}

/// `qcloud.work.initagent`: register or replace a WeCom agent (admin only). Replacing a secret drops the agent's
/// cached token and tickets.
pub async fn init_agent(deps: &Deps, meta: &RequestMeta, req: InitAgentRequest) -> Result<Reply, WaferError> {
    let now = deps.clock.now();
    let registry = Registry { store: &deps.store, creds: Some(&deps.creds), now, dry_run: false };
    let changes = AgentChanges { secret: Some(req.secret.clone()), remark: Some(req.remark.clone()) };
    let change = registry.put_agent(&req.corpid, &req.agentid, &changes).await.map_err(|e| match e {
        RegistryError::Store(e) => {
            WaferError::new(ReturnCode::InitAppinfoErr, "could not store the agent").with_detail(e)
        }
        other => other.into(),
    })?;
    let subject = format!("{}/{}", req.corpid, req.agentid);
    crate::auth::Audit { action: "initagent", subject: &subject, meta, at: now }.log(change.outcome.as_str());
    Ok(Reply { message: "INIT_APPINFO_SUCCESS", data: json!("").into(), app: None })
}
