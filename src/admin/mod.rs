//! Operating a deployment: the admin operations ([`ops::AdminOp`]: apps and their API-security keys, agents, COS
//! keys, caller keys, status) run
//! by one of two implementations of [`AdminApi`] — [`Local`], over the storage (the CLI on a machine that reaches
//! the database, and the admin interfaces of a running server), and [`crate::remote::Remote`], through a server's
//! admin interfaces (the CLI's `--server`). Replies never carry a secret.

pub mod apisec;
pub mod ops;

use crate::envelope::{ReturnCode, WaferError};
use crate::registry::{AgentChanges, AppChanges, Change, Outcome, Registry};
use crate::store::{Storage, StoreError, TokenMode};
use crate::tokens::{CredKey, CredKind, Credentials};
use async_trait::async_trait;
use ops::AdminOp;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;

/// A failed admin operation. Messages name no secret.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Refused, with a Wafer return code: by the registry or the gate here, or by the server (`--server`).
    #[error("{0}")]
    Refused(WaferError),
    /// Storage failed here (the error says why; a server answers such a failure as `1001`).
    #[error("could not use storage")]
    Storage(#[source] StoreError),
    /// The server named by `--server` could not be reached, or did not answer with an envelope.
    #[error("{0}")]
    Unreachable(String),
}

impl From<WaferError> for AdminError {
    fn from(e: WaferError) -> Self {
        Self::Refused(e)
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        Self::Storage(e)
    }
}

impl From<crate::registry::RegistryError> for AdminError {
    fn from(e: crate::registry::RegistryError) -> Self {
        match e {
            crate::registry::RegistryError::Store(e) => Self::Storage(e),
            other => Self::Refused(other.into()),
        }
    }
}

impl From<AdminError> for WaferError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Refused(e) => e,
            AdminError::Storage(e) => WaferError::db(e),
            AdminError::Unreachable(m) => {
                WaferError::new(ReturnCode::InternalErr, "internal error").with_detail(m)
            }
        }
    }
}

pub type AdminResult<T> = Result<T, AdminError>;

/// A registered app as `app list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppInfo {
    pub appid: String,
    pub login_duration_secs: i64,
    pub session_duration_secs: i64,
    pub token_mode: String,
    /// WeChat's API security: on (its SNs and certificates) or off.
    #[serde(default)]
    pub api_security: Option<crate::apisec::ApiSecurityInfo>,
}

/// A registered WeCom agent as `agent list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub corpid: String,
    pub agentid: String,
    pub remark: String,
}

/// Held COS credentials as `cos list` shows them: the SecretId's first 8 characters, never the SecretKey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CosInfo {
    pub appid: String,
    pub secret_id_prefix: String,
}

/// A caller key as `key list` shows it (never the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub name: String,
    pub scope_all: bool,
    pub scope_apps: Vec<String>,
    pub scope_corps: Vec<String>,
    /// API path prefixes for the token-free calls; empty: every path.
    #[serde(default)]
    pub scope_apis: Vec<String>,
    pub created_at: i64,
    pub last_used_at: i64,
    pub revoked_at: i64,
}

/// What an upsert did, on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeInfo {
    /// `added`, `updated` or `unchanged`.
    pub outcome: Outcome,
    pub credentials_dropped: bool,
}

impl From<Change> for ChangeInfo {
    fn from(c: Change) -> Self {
        Self { outcome: c.outcome, credentials_dropped: c.credentials_dropped }
    }
}

/// A new caller key, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewKey {
    pub name: String,
    pub key: String,
}

/// An app's or agent's credentials, as the operator needs to see them (never a token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialStatus {
    /// `appid`, or `corpid/agentid`.
    pub id: String,
    /// `stable` / `classic` for apps; `wecom` for agents.
    pub token_mode: String,
    /// Seconds since the current token was fetched, and until it expires (`None`: no token yet, or expired).
    pub token_age_secs: Option<i64>,
    pub token_remaining_secs: Option<i64>,
    /// Upstream token fetches in the current hour.
    pub fetches_this_hour: i64,
    /// Forced refreshes today (Beijing day), against the daily budget.
    pub forced_today: i64,
    pub forced_budget: i64,
    /// The remembered upstream failure, if one is still in force: code, message, retry time (Unix seconds).
    pub last_error: Option<String>,
    pub retry_at: Option<i64>,
    /// A daily-quota block (45009) in force until this time (Unix seconds).
    pub blocked_until: Option<i64>,
    /// Sessions stored for the app (apps only).
    pub sessions: Option<i64>,
}

/// The process and its deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStatus {
    pub version: String,
    pub uptime_secs: u64,
    pub caller_auth: String,
    pub admin: bool,
    pub master_key: bool,
    pub storage: String,
    pub schema_version: i64,
    pub schema_latest: i64,
    /// API security: apps whose replies WeChat signs with a platform certificate not registered here yet, as seen
    /// by this process (`appid: new certificate SN`).
    #[serde(default)]
    pub certificate_rotations: Vec<String>,
}

/// `wafer-scf status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub process: ProcessStatus,
    pub apps: Vec<CredentialStatus>,
    pub agents: Vec<CredentialStatus>,
}

/// Runs admin operations; the reply is the JSON a server sends back for the operation (see [`reply`]).
#[async_trait]
pub trait AdminApi: Send + Sync {
    async fn run(&self, op: AdminOp) -> AdminResult<Value>;
}

/// Run `op` and read its reply as `T`.
pub async fn reply<T: serde::de::DeserializeOwned>(api: &dyn AdminApi, op: AdminOp) -> AdminResult<T> {
    let interface = op.interface();
    let value = api.run(op).await?;
    serde_json::from_value(value)
        .map_err(|e| AdminError::Unreachable(format!("unexpected reply to {interface}: {e}")))
}

/// What the status report knows about the process it runs in.
#[derive(Debug, Clone)]
pub struct ProcessFacts {
    pub started: std::time::Instant,
    pub caller_auth: crate::auth::CallerAuthMode,
    pub admin: bool,
    pub master_key: bool,
    pub force_budget: i64,
    /// API security: `(appid, new certificate SN)` seen by this process.
    pub rotations: Vec<(String, String)>,
}

impl ProcessFacts {
    /// The facts of a process started at `started` with `settings` and a daily forced-refresh budget.
    pub fn of(settings: &crate::settings::Settings, started: std::time::Instant, force_budget: i64) -> Self {
        Self {
            started,
            caller_auth: settings.caller_auth,
            admin: settings.admin_token.is_some(),
            master_key: settings.master_key,
            force_budget,
            rotations: Vec::new(),
        }
    }
}

/// The admin operations over a store, in this process.
pub struct Local {
    pub store: Storage,
    /// This process's credential cache, told about changes at once (a server); `None` for the CLI.
    pub creds: Option<Arc<Credentials>>,
    pub clock: Arc<dyn crate::clock::Clock>,
    pub facts: ProcessFacts,
}

impl Local {
    fn registry(&self) -> Registry<'_> {
        Registry { store: &self.store, creds: self.creds.as_deref(), now: self.clock.now(), dry_run: false }
    }

    async fn credential_status(
        &self,
        id: String,
        token_mode: &str,
        key: CredKey,
        sessions: Option<i64>,
    ) -> AdminResult<CredentialStatus> {
        let now = self.clock.now();
        let now_ms = now * 1000;
        let row = self
            .store
            .credentials
            .get_credential(&key.to_string())
            .await
            .map_err(WaferError::db)?
            .unwrap_or_default();
        let live = row.value.is_some() && row.expires_at > now;
        let day = crate::tokens::next_quota_reset(now) - 86_400;
        Ok(CredentialStatus {
            id,
            token_mode: token_mode.into(),
            token_age_secs: live.then(|| now - row.fetched_at),
            token_remaining_secs: live.then(|| row.expires_at - now),
            fetches_this_hour: if row.window_start == now - now.rem_euclid(3600) {
                row.window_count
            } else {
                0
            },
            forced_today: if row.force_day == day { row.force_count } else { 0 },
            forced_budget: self.facts.force_budget,
            last_error: (row.failed_until_ms > now_ms)
                .then(|| format!("{}: {}", row.failed_code, row.failed_message)),
            retry_at: (row.failed_until_ms > now_ms).then_some(row.failed_until_ms / 1000),
            blocked_until: (row.blocked_until > now).then_some(row.blocked_until),
            sessions,
        })
    }
}

impl Local {
    /// Run one operation: the one dispatch from an admin operation to the registry and the stores.
    pub async fn run_op(&self, op: AdminOp) -> AdminResult<Value> {
        use AdminOp as Op;
        let outcome = |o: &str| json!({ "outcome": o });
        Ok(match op {
            Op::AppAdd(f) => json!(self.put_app(f, false).await?),
            Op::AppUpdate(f) => json!(self.put_app(f, true).await?),
            Op::AppList(_) => json!(self.list_apps().await?),
            Op::AppRemove(f) => {
                self.registry().remove_app(&f.appid).await?;
                outcome("removed")
            }
            Op::AppUnblock(f) => {
                self.registry().unblock_app(&f.appid).await?;
                outcome("unblocked")
            }
            Op::AppApiSecurity(f) => json!(self.put_api_security(f).await?),
            Op::AppQuota(_) | Op::AppClearQuota(_) => {
                return Err(AdminError::Refused(WaferError::new(
                    ReturnCode::InterfaceErr,
                    "this operation calls WeChat: it runs in a server (or the CLI with WeChat reachable)",
                )))
            }
            Op::AgentAdd(f) => {
                let changes = AgentChanges { secret: f.secret, remark: f.remark };
                json!(ChangeInfo::from(self.registry().put_agent(&f.corpid, &f.agentid, &changes).await?))
            }
            Op::AgentList(_) => json!(self.list_agents().await?),
            Op::AgentRemove(f) => {
                self.registry().remove_agent(&f.corpid, &f.agentid).await?;
                outcome("removed")
            }
            Op::CosAdd(f) => {
                let outcome = self
                    .registry()
                    .put_cos_key(&f.appid, f.secret_id.as_deref(), f.secret_key.as_ref())
                    .await?;
                json!(ChangeInfo { outcome, credentials_dropped: false })
            }
            Op::CosList(_) => json!(self.list_cos().await?),
            Op::CosRemove(f) => {
                self.registry().remove_cos_key(&f.appid).await?;
                outcome("removed")
            }
            Op::KeyAdd(f) => {
                let key = self.registry().add_caller_key(&f.name, f.scope).await?;
                json!(NewKey { name: f.name, key })
            }
            Op::KeyList(_) => json!(self.list_keys().await?),
            Op::KeyRevoke(f) => {
                self.registry().revoke_caller_key(&f.name).await?;
                outcome("revoked")
            }
            Op::Status(_) => json!(self.status().await?),
        })
    }

    async fn put_app(&self, f: ops::AppPut, must_exist: bool) -> AdminResult<ChangeInfo> {
        if must_exist && self.store.registry.get_app(&f.appid).await?.is_none() {
            return Err(crate::registry::RegistryError::NotFound(format!(
                "no app {}: add it first (with its secret)",
                f.appid
            ))
            .into());
        }
        let changes = AppChanges {
            secret: f.secret,
            login_duration_secs: f.login_duration_days.map(|d| d.saturating_mul(86_400)),
            session_duration_secs: f.session_duration_secs,
            token_mode: f.token_mode,
        };
        Ok(self.registry().put_app(&f.appid, &changes, TokenMode::Stable).await?.into())
    }

    async fn list_apps(&self) -> AdminResult<Vec<AppInfo>> {
        let apps = self.store.registry.list_apps().await?;
        let secured = self.store.registry.list_api_security().await?;
        Ok(apps
            .into_iter()
            .map(|a| AppInfo {
                api_security: secured.iter().find(|s| s.appid == a.appid).map(crate::apisec::info),
                appid: a.appid.into_string(),
                login_duration_secs: a.login_duration_secs,
                session_duration_secs: a.session_duration_secs,
                token_mode: a.token_mode.as_str().into(),
            })
            .collect())
    }

    async fn list_agents(&self) -> AdminResult<Vec<AgentInfo>> {
        let agents = self.store.registry.list_agents().await?;
        Ok(agents
            .into_iter()
            .map(|a| AgentInfo {
                corpid: a.corpid.into_string(),
                agentid: a.agentid.into_string(),
                remark: a.remark,
            })
            .collect())
    }

    async fn list_cos(&self) -> AdminResult<Vec<CosInfo>> {
        let keys = self.store.registry.list_cos_keys().await?;
        Ok(keys
            .into_iter()
            .map(|k| CosInfo {
                appid: k.appid.into_string(),
                secret_id_prefix: k.secret_id.chars().take(8).collect(),
            })
            .collect())
    }

    async fn list_keys(&self) -> AdminResult<Vec<KeyInfo>> {
        let keys = self.store.keys.list_caller_keys().await?;
        Ok(keys
            .into_iter()
            .map(|k| KeyInfo {
                name: k.name,
                scope_all: k.scope_all,
                scope_apps: k.scope_apps,
                scope_corps: k.scope_corps,
                scope_apis: k.scope_apis,
                created_at: k.created_at,
                last_used_at: k.last_used_at,
                revoked_at: k.revoked_at,
            })
            .collect())
    }

    async fn status(&self) -> AdminResult<Status> {
        let schema = self.store.schema.schema_status().await?;
        let mut apps = Vec::new();
        for a in self.store.registry.list_apps().await? {
            let sessions = self.store.sessions.count_sessions(&a.appid).await?;
            let key = CredKey::app(CredKind::MpToken, &a.appid);
            apps.push(
                self.credential_status(a.appid.to_string(), a.token_mode.as_str(), key, Some(sessions))
                    .await?,
            );
        }
        let mut agents = Vec::new();
        for a in self.store.registry.list_agents().await? {
            let key = CredKey::agent(CredKind::WcToken, &a.corpid, &a.agentid);
            let id = format!("{}/{}", a.corpid, a.agentid);
            agents.push(self.credential_status(id, "wecom", key, None).await?);
        }
        let f = &self.facts;
        Ok(Status {
            process: ProcessStatus {
                version: env!("CARGO_PKG_VERSION").into(),
                uptime_secs: f.started.elapsed().as_secs(),
                caller_auth: format!("{:?}", f.caller_auth).to_lowercase(),
                admin: f.admin,
                master_key: f.master_key,
                storage: self.store.backend().into(),
                schema_version: schema.current,
                schema_latest: schema.latest,
                certificate_rotations: f.rotations.iter().map(|(a, sn)| format!("{a}: {sn}")).collect(),
            },
            apps,
            agents,
        })
    }
}

#[async_trait]
impl AdminApi for Local {
    async fn run(&self, op: AdminOp) -> AdminResult<Value> {
        self.run_op(op).await
    }
}
