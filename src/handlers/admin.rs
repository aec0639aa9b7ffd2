//! The admin interfaces (`qcloud.admin.*`): register and list apps, WeCom agents, COS keys and caller keys, and read
//! the status report, over the wire — behind the admin token, every change audited, no secret ever echoed.

use super::{Deps, Reply};
use crate::admin::{AdminApi, AdminError, Local, ProcessFacts};
use crate::envelope::{Para, ReturnCode, WaferError};
use crate::registry::{AgentChanges, AppChanges, KeyScope};
use crate::request::RequestMeta;
use crate::store::TokenMode;
use serde_json::{json, Value};

const MAX_ID: usize = 64;

/// One admin operation with its fields.
#[derive(Debug)]
pub enum AdminOp {
    AppPut { appid: String, changes: AppChanges, must_exist: bool },
    AppList,
    AppRemove { appid: String },
    AppUnblock { appid: String },
    AgentPut { corpid: String, agentid: String, changes: AgentChanges },
    AgentList,
    AgentRemove { corpid: String, agentid: String },
    CosPut { appid: String, secret_id: Option<String>, secret_key: Option<String> },
    CosList,
    CosRemove { appid: String },
    KeyAdd { name: String, scope: KeyScope },
    KeyList,
    KeyRevoke { name: String },
    Status,
}

/// An admin request: the operation and the admin token given in `para` (direct invocations).
#[derive(Debug)]
pub struct AdminRequest {
    pub op: AdminOp,
    pub admin_token: Option<String>,
}

fn owned(p: &Para<'_>, field: &str, max: usize) -> Result<String, WaferError> {
    Ok(p.token(field, max)?.to_owned())
}

fn opt_owned(p: &Para<'_>, field: &str, max: usize) -> Result<Option<String>, WaferError> {
    Ok(p.opt_str_max(field, max)?.map(str::to_owned))
}

fn opt_i64(p: &Para<'_>, field: &str) -> Result<Option<i64>, WaferError> {
    match p.0.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            n.as_i64().map(Some).ok_or_else(|| WaferError::para(field, "must be an integer"))
        }
        Some(_) => Err(WaferError::para(field, "must be an integer")),
    }
}

fn list(p: &Para<'_>, field: &str) -> Result<Vec<String>, WaferError> {
    match p.0.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) if a.len() <= 1000 => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| WaferError::para(field, "must be a list of strings"))
            })
            .collect(),
        Some(Value::String(s)) => Ok(s.split(',').filter(|x| !x.is_empty()).map(str::to_owned).collect()),
        Some(_) => Err(WaferError::para(field, "must be a list of strings")),
    }
}

impl AdminRequest {
    /// Parse the `para` of the admin interface `op` (the part of the name after `qcloud.admin.`).
    pub fn parse(op: &str, p: Para<'_>) -> Result<Self, WaferError> {
        let op = match op {
            "app.add" | "app.update" => {
                let token_mode = match p.opt_str_max("token_mode", 16)? {
                    None => None,
                    Some(m) => Some(
                        TokenMode::parse(m)
                            .ok_or_else(|| WaferError::para("token_mode", "must be stable or classic"))?,
                    ),
                };
                AdminOp::AppPut {
                    appid: p.id("appid", MAX_ID)?.to_owned(),
                    changes: AppChanges {
                        secret: opt_owned(&p, "secret", 512)?,
                        login_duration_secs: opt_i64(&p, "login_duration_days")?
                            .map(|d| d.saturating_mul(86_400)),
                        session_duration_secs: opt_i64(&p, "session_duration_secs")?,
                        token_mode,
                    },
                    must_exist: op == "app.update",
                }
            }
            "app.list" => AdminOp::AppList,
            "app.remove" => AdminOp::AppRemove { appid: owned(&p, "appid", MAX_ID)? },
            "app.unblock" => AdminOp::AppUnblock { appid: owned(&p, "appid", MAX_ID)? },
            "agent.add" => AdminOp::AgentPut {
                corpid: p.id("corpid", MAX_ID)?.to_owned(),
                agentid: p.agent_id("agentid")?,
                changes: AgentChanges {
                    secret: opt_owned(&p, "secret", 512)?,
                    remark: opt_owned(&p, "remark", 255)?,
                },
            },
            "agent.list" => AdminOp::AgentList,
            "agent.remove" => AdminOp::AgentRemove {
                corpid: p.id("corpid", MAX_ID)?.to_owned(),
                agentid: p.agent_id("agentid")?,
            },
            "cos.add" => AdminOp::CosPut {
                appid: owned(&p, "appid", 20)?,
                secret_id: opt_owned(&p, "secret_id", 128)?,
                secret_key: opt_owned(&p, "secret_key", 512)?,
            },
            "cos.list" => AdminOp::CosList,
            "cos.remove" => AdminOp::CosRemove { appid: owned(&p, "appid", 20)? },
            "key.add" => AdminOp::KeyAdd {
                name: owned(&p, "name", 64)?,
                scope: KeyScope {
                    apps: list(&p, "apps")?,
                    corps: list(&p, "corps")?,
                    all: matches!(p.0.get("all"), Some(Value::Bool(true))),
                    apis: list(&p, "apis")?,
                },
            },
            "key.list" => AdminOp::KeyList,
            "key.revoke" => AdminOp::KeyRevoke { name: owned(&p, "name", 64)? },
            "status" => AdminOp::Status,
            _ => return Err(WaferError::new(ReturnCode::InterfaceErr, "unknown interfaceName")),
        };
        Ok(Self { op, admin_token: opt_owned(&p, "admin_token", 512)? })
    }

    /// Whether the operation changes anything (and is audited).
    fn changes(&self) -> bool {
        !matches!(
            self.op,
            AdminOp::AppList | AdminOp::AgentList | AdminOp::CosList | AdminOp::KeyList | AdminOp::Status
        )
    }
}

impl From<AdminError> for WaferError {
    fn from(e: AdminError) -> Self {
        let code = ReturnCode::from_code(e.code).unwrap_or(ReturnCode::InternalErr);
        let w = WaferError::new(code, e.message);
        match e.detail {
            Some(d) => w.with_detail(d),
            None => w,
        }
    }
}

/// The admin operations of this server's process.
pub fn local(deps: &Deps) -> Local {
    Local {
        store: deps.store.clone(),
        creds: Some(deps.creds.clone()),
        clock: deps.clock.clone(),
        facts: ProcessFacts {
            started: deps.started,
            caller_auth: deps.settings.caller_auth,
            admin: deps.settings.admin_token.is_some(),
            master_key: deps.settings.master_key,
            force_budget: deps.creds.force_budget(),
        },
    }
}

/// Run an admin operation (the gate has checked the admin token).
pub async fn handle(deps: &Deps, meta: &RequestMeta, req: AdminRequest) -> Result<Reply, WaferError> {
    let api = local(deps);
    let audited = req.changes();
    let (action, subject, data): (&'static str, String, Value) = match req.op {
        AdminOp::AppPut { appid, changes, must_exist } => {
            let c = api.put_app(&appid, changes, must_exist).await?;
            ("app.put", appid, json!(c))
        }
        AdminOp::AppList => ("app.list", String::new(), json!(api.list_apps().await?)),
        AdminOp::AppRemove { appid } => {
            api.remove_app(&appid).await?;
            ("app.remove", appid, json!({"outcome": "removed"}))
        }
        AdminOp::AppUnblock { appid } => {
            api.unblock_app(&appid).await?;
            ("app.unblock", appid, json!({"outcome": "unblocked"}))
        }
        AdminOp::AgentPut { corpid, agentid, changes } => {
            let c = api.put_agent(&corpid, &agentid, changes).await?;
            ("agent.put", format!("{corpid}/{agentid}"), json!(c))
        }
        AdminOp::AgentList => ("agent.list", String::new(), json!(api.list_agents().await?)),
        AdminOp::AgentRemove { corpid, agentid } => {
            api.remove_agent(&corpid, &agentid).await?;
            ("agent.remove", format!("{corpid}/{agentid}"), json!({"outcome": "removed"}))
        }
        AdminOp::CosPut { appid, secret_id, secret_key } => {
            let c = api.put_cos(&appid, secret_id, secret_key).await?;
            ("cos.put", appid, json!(c))
        }
        AdminOp::CosList => ("cos.list", String::new(), json!(api.list_cos().await?)),
        AdminOp::CosRemove { appid } => {
            api.remove_cos(&appid).await?;
            ("cos.remove", appid, json!({"outcome": "removed"}))
        }
        AdminOp::KeyAdd { name, scope } => {
            let key = api.add_key(&name, scope).await?;
            // The key itself is in this reply only; the log line names the key, never shows it.
            ("key.add", name.clone(), json!({"name": name, "key": key}))
        }
        AdminOp::KeyList => ("key.list", String::new(), json!(api.list_keys().await?)),
        AdminOp::KeyRevoke { name } => {
            api.revoke_key(&name).await?;
            ("key.revoke", name, json!({"outcome": "revoked"}))
        }
        AdminOp::Status => ("status", String::new(), json!(api.status().await?)),
    };
    if audited {
        crate::auth::Audit { action, subject: &subject, meta, at: deps.clock.now() }.log("done");
    }
    Ok(Reply { message: "ADMIN_SUCCESS", data, app: None })
}
