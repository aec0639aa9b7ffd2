//! Operating a deployment: the admin operations (apps, agents, COS keys, caller keys, status) as one API with two
//! implementations — [`Local`], over the store (the CLI on a machine that reaches the database, and the admin
//! interfaces of a running server), and [`crate::remote::Remote`], through a server's admin interfaces (the CLI's
//! `--server`). Replies never carry a secret.

use crate::envelope::WaferError;
use crate::registry::{AgentChanges, AppChanges, Change, KeyScope, Outcome, Registry};
use crate::store::{Storage, TokenMode};
use crate::tokens::{CredKey, CredKind, Credentials};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A failed admin operation: a Wafer return code and a message that names no secret; `detail` (a storage error's
/// text) is shown to a local operator and logged, never sent over the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    pub code: i64,
    pub message: String,
    pub detail: Option<String>,
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.detail {
            Some(d) => write!(f, "{} ({}): {d}", self.message, self.code),
            None => write!(f, "{} ({})", self.message, self.code),
        }
    }
}

impl std::error::Error for AdminError {}

impl From<WaferError> for AdminError {
    fn from(e: WaferError) -> Self {
        Self { code: e.code.code(), message: e.message.into_owned(), detail: e.detail }
    }
}

impl From<crate::registry::RegistryError> for AdminError {
    fn from(e: crate::registry::RegistryError) -> Self {
        match e {
            crate::registry::RegistryError::Store(e) => db(e),
            other => WaferError::from(other).into(),
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
    pub outcome: String,
    pub credentials_dropped: bool,
}

impl From<Change> for ChangeInfo {
    fn from(c: Change) -> Self {
        Self { outcome: c.outcome.as_str().into(), credentials_dropped: c.credentials_dropped }
    }
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
}

/// `wafer-scf status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub process: ProcessStatus,
    pub apps: Vec<CredentialStatus>,
    pub agents: Vec<CredentialStatus>,
}

/// The admin operations.
#[async_trait]
pub trait AdminApi: Send + Sync {
    /// Add an app or change the given fields; with `must_exist`, refuse to create one (`app update`).
    async fn put_app(&self, appid: &str, changes: AppChanges, must_exist: bool) -> AdminResult<ChangeInfo>;
    async fn list_apps(&self) -> AdminResult<Vec<AppInfo>>;
    async fn remove_app(&self, appid: &str) -> AdminResult<()>;
    async fn unblock_app(&self, appid: &str) -> AdminResult<()>;
    async fn put_agent(&self, corpid: &str, agentid: &str, changes: AgentChanges) -> AdminResult<ChangeInfo>;
    async fn list_agents(&self) -> AdminResult<Vec<AgentInfo>>;
    async fn remove_agent(&self, corpid: &str, agentid: &str) -> AdminResult<()>;
    async fn put_cos(
        &self,
        appid: &str,
        secret_id: Option<String>,
        secret_key: Option<String>,
    ) -> AdminResult<ChangeInfo>;
    async fn list_cos(&self) -> AdminResult<Vec<CosInfo>>;
    async fn remove_cos(&self, appid: &str) -> AdminResult<()>;
    /// Create a caller key; the key itself is returned once.
    async fn add_key(&self, name: &str, scope: KeyScope) -> AdminResult<String>;
    async fn list_keys(&self) -> AdminResult<Vec<KeyInfo>>;
    async fn revoke_key(&self, name: &str) -> AdminResult<()>;
    async fn status(&self) -> AdminResult<Status>;
}

/// What the status report knows about the process it runs in.
#[derive(Debug, Clone)]
pub struct ProcessFacts {
    pub started: std::time::Instant,
    pub caller_auth: crate::auth::CallerAuthMode,
    pub admin: bool,
    pub master_key: bool,
    pub force_budget: i64,
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

fn db(e: crate::store::StoreError) -> AdminError {
    AdminError {
        code: crate::envelope::ReturnCode::DbErr.code(),
        message: "could not use storage".into(),
        detail: Some(e.to_string()),
    }
}

#[async_trait]
impl AdminApi for Local {
    async fn put_app(&self, appid: &str, changes: AppChanges, must_exist: bool) -> AdminResult<ChangeInfo> {
        if must_exist && self.store.registry.get_app(appid).await.map_err(db)?.is_none() {
            return Err(crate::registry::RegistryError::NotFound(format!(
                "no app {appid}: add it first (with its secret)"
            ))
            .into());
        }
        Ok(self.registry().put_app(appid, &changes, TokenMode::Stable).await?.into())
    }

    async fn list_apps(&self) -> AdminResult<Vec<AppInfo>> {
        let apps = self.store.registry.list_apps().await.map_err(db)?;
        Ok(apps
            .into_iter()
            .map(|a| AppInfo {
                appid: a.appid,
                login_duration_secs: a.login_duration_secs,
                session_duration_secs: a.session_duration_secs,
                token_mode: a.token_mode.as_str().into(),
            })
            .collect())
    }

    async fn remove_app(&self, appid: &str) -> AdminResult<()> {
        Ok(self.registry().remove_app(appid).await?)
    }

    async fn unblock_app(&self, appid: &str) -> AdminResult<()> {
        Ok(self.registry().unblock_app(appid).await?)
    }

    async fn put_agent(&self, corpid: &str, agentid: &str, changes: AgentChanges) -> AdminResult<ChangeInfo> {
        Ok(self.registry().put_agent(corpid, agentid, &changes).await?.into())
    }

    async fn list_agents(&self) -> AdminResult<Vec<AgentInfo>> {
        let agents = self.store.registry.list_agents().await.map_err(db)?;
        Ok(agents
            .into_iter()
            .map(|a| AgentInfo { corpid: a.corpid, agentid: a.agentid, remark: a.remark })
            .collect())
    }

    async fn remove_agent(&self, corpid: &str, agentid: &str) -> AdminResult<()> {
        Ok(self.registry().remove_agent(corpid, agentid).await?)
    }

    async fn put_cos(
        &self,
        appid: &str,
        secret_id: Option<String>,
        secret_key: Option<String>,
    ) -> AdminResult<ChangeInfo> {
        let outcome = self.registry().put_cos_key(appid, secret_id.as_deref(), secret_key.as_deref()).await?;
        Ok(ChangeInfo { outcome: outcome.as_str().into(), credentials_dropped: false })
    }

    async fn list_cos(&self) -> AdminResult<Vec<CosInfo>> {
        let keys = self.store.registry.list_cos_keys().await.map_err(db)?;
        Ok(keys
            .into_iter()
            .map(|k| CosInfo { appid: k.appid, secret_id_prefix: k.secret_id.chars().take(8).collect() })
            .collect())
    }

    async fn remove_cos(&self, appid: &str) -> AdminResult<()> {
        Ok(self.registry().remove_cos_key(appid).await?)
    }

    async fn add_key(&self, name: &str, scope: KeyScope) -> AdminResult<String> {
        Ok(self.registry().add_caller_key(name, scope).await?)
    }

    async fn list_keys(&self) -> AdminResult<Vec<KeyInfo>> {
        let keys = self.store.keys.list_caller_keys().await.map_err(db)?;
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

    async fn revoke_key(&self, name: &str) -> AdminResult<()> {
        Ok(self.registry().revoke_caller_key(name).await?)
    }

    async fn status(&self) -> AdminResult<Status> {
        let schema = self.store.schema.schema_status().await.map_err(db)?;
        let mut apps = Vec::new();
        for a in self.store.registry.list_apps().await.map_err(db)? {
            let sessions = self.store.sessions.count_sessions(&a.appid).await.map_err(db)?;
            let key = CredKey::app(CredKind::MpToken, &a.appid);
            apps.push(
                self.credential_status(a.appid.clone(), a.token_mode.as_str(), key, Some(sessions)).await?,
            );
        }
        let mut agents = Vec::new();
        for a in self.store.registry.list_agents().await.map_err(db)? {
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
            },
            apps,
            agents,
        })
    }
}

/// `Outcome` from its wire name (for printing what a remote server did).
pub fn outcome_of(s: &str) -> Outcome {
    match s {
        "added" => Outcome::Added,
        "updated" => Outcome::Updated,
        _ => Outcome::Unchanged,
    }
}
