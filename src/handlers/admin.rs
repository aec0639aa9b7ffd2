//! The admin interfaces (`qcloud.admin.*`): register and list apps, WeCom agents, COS keys and caller keys, and read
//! the status report, over the wire — behind the admin token, every change audited, no secret ever echoed. The
//! operations and their fields are [`crate::admin::ops::AdminOp`]'s; this module only wires them to this process.

use super::{Deps, Reply};
use crate::admin::ops::AdminOp;
use crate::admin::{Local, ProcessFacts};
use crate::envelope::{Para, WaferError};
use crate::request::RequestMeta;

/// An admin request: the operation and the admin token given in `para` (direct invocations).
#[derive(Debug)]
pub struct AdminRequest {
    pub op: AdminOp,
    pub admin_token: Option<crate::crypto::Secret>,
}

impl AdminRequest {
    /// Parse the `para` of the admin interface `interface`.
    pub fn parse(interface: &str, p: Para<'_>) -> Result<Self, WaferError> {
        let admin_token = p.opt_str_max("admin_token", 512)?.map(crate::crypto::Secret::new);
        Ok(Self { op: AdminOp::parse(interface, &p.0.to_map())?, admin_token })
    }
}

/// The admin operations of this server's process.
pub fn local(deps: &Deps) -> Local {
    let facts = ProcessFacts {
        rotations: deps.api_keys.rotations(),
        ..ProcessFacts::of(&deps.settings, deps.started, deps.creds.force_budget())
    };
    Local { store: deps.store.clone(), creds: Some(deps.creds.clone()), clock: deps.clock.clone(), facts }
}

/// Run an admin operation (the gate has checked the admin token).
pub async fn handle(deps: &Deps, meta: &RequestMeta, req: AdminRequest) -> Result<Reply, WaferError> {
    let op = req.op;
    let audit = op.changes().then(|| (op.action(), op.subject()));
    // This process uses new API-security keys (or none) from its next call; others within their cache's TTL.
    let keys_changed = match &op {
        AdminOp::AppApiSecurity(f) => Some(f.appid.clone()),
        AdminOp::AppRemove(f) => Some(f.appid.clone()),
        _ => None,
    };
    // A new key is in this reply only; the audit line names the key, never shows it.
    let data = run(deps, op).await;
    if let Some(appid) = keys_changed {
        deps.api_keys.forget(&appid);
    }
    let data = data?;
    if let Some((action, subject)) = audit {
        crate::auth::Audit { action, subject: &subject, meta, at: deps.clock.now() }.log("done");
    }
    Ok(Reply { message: "ADMIN_SUCCESS", data: data.into(), app: None })
}

/// Run an admin operation in this process: the ones that call WeChat here, the others over the storage.
pub async fn run(deps: &Deps, op: AdminOp) -> Result<serde_json::Value, WaferError> {
    Ok(match op {
        AdminOp::AppQuota(f) => serde_json::json!(super::platform::quota(deps, &f.appid, &f.api).await?),
        AdminOp::AppClearQuota(f) => serde_json::json!(super::platform::clear_quota(deps, &f.appid).await?),
        op => local(deps).run_op(op).await?,
    })
}
