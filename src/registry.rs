//! The registry of apps, WeCom agents, COS keys and caller keys: one upsert per kind, used by the CLI, the admin
//! interfaces and the importer. An upsert changes only the fields it is given (an existing app keeps its token
//! mode and durations unless told otherwise), keeps `created_at`, and says what changed. A new secret or token mode
//! drops the cached credentials that belonged to the old one; writing a registration again also clears remembered
//! upstream failures, so a fixed whitelist or secret is tried at once.

use crate::crypto::Secret;
use crate::ids::{AgentId, AppId, CorpId, CosAppId};
use crate::store::{
    AgentRecord, AppRecord, CallerKeyRecord, CosKeyRecord, Storage, StoreError, TokenMode,
    DEFAULT_SESSION_DURATION_SECS,
};
use crate::tokens::{CredKey, Credentials};

/// Login lifetime of a new app unless told otherwise.
pub use crate::store::DEFAULT_LOGIN_DURATION_SECS;

/// Why a registry operation failed. Messages name the thing, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("storage failure: {0}")]
    Store(#[from] StoreError),
}

impl From<RegistryError> for crate::envelope::WaferError {
    fn from(e: RegistryError) -> Self {
        use crate::envelope::ReturnCode;
        match e {
            RegistryError::Invalid(m) | RegistryError::Conflict(m) => Self::new(ReturnCode::ParaErr, m),
            RegistryError::NotFound(m) => Self::new(ReturnCode::NoAppid, m),
            RegistryError::Store(e) => Self::db(e),
        }
    }
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Added,
    Updated,
    Unchanged,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
        }
    }
}

/// An upsert's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub outcome: Outcome,
    /// Cached tokens and tickets were dropped (new secret or token mode).
    pub credentials_dropped: bool,
}

/// What a new caller key may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyScope {
    /// WeChat appids and Tencent Cloud APPIDs (COS).
    #[serde(default, deserialize_with = "scope_list")]
    pub apps: Vec<String>,
    /// WeCom corpids.
    #[serde(default, deserialize_with = "scope_list")]
    pub corps: Vec<String>,
    /// Every app, corp and COS APPID.
    #[serde(default)]
    pub all: bool,
    /// API path prefixes for the token-free calls (`/wxa/`, `/cgi-bin/message/`); empty: every path.
    #[serde(default, deserialize_with = "scope_list")]
    pub apis: Vec<String>,
}

/// A scope list as a JSON list of strings, or as comma-separated text (what a shell user types); null is empty.
fn scope_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum List {
        Items(Vec<String>),
        Text(String),
    }
    Ok(match <Option<List> as serde::Deserialize>::deserialize(d)? {
        None => Vec::new(),
        Some(List::Items(items)) => items,
        Some(List::Text(t)) => {
            t.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_owned).collect()
        }
    })
}

/// Where the registry writes, and what it tells.
pub struct Registry<'a> {
    pub store: &'a Storage,
    /// This process's credential cache, told at once about dropped credentials (other processes re-check).
    pub creds: Option<&'a Credentials>,
    pub now: i64,
    /// Work out the change, write nothing.
    pub dry_run: bool,
}

/// Fields of an app to set; `None` keeps the current value (or the default, for a new app).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppChanges {
    pub secret: Option<Secret>,
    pub login_duration_secs: Option<i64>,
    pub session_duration_secs: Option<i64>,
    pub token_mode: Option<TokenMode>,
}

/// Fields of a WeCom agent to set; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentChanges {
    pub secret: Option<Secret>,
    pub remark: Option<String>,
}

/// An identifier as the stores keep it: 1 to `max` printable ASCII characters, no spaces.
pub fn check_ident(value: &str, what: &str, max: usize) -> Result<(), RegistryError> {
    if value.is_empty() || value.len() > max || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(RegistryError::Invalid(format!(
            "{what} must be 1 to {max} printable ASCII characters without spaces"
        )));
    }
    Ok(())
}

/// An identifier checked by its kind's one rule ([`crate::ids`]).
fn id<T: std::str::FromStr<Err = crate::ids::IdError>>(s: &str) -> Result<T, RegistryError> {
    s.parse::<T>().map_err(|e| RegistryError::Invalid(e.to_string()))
}

fn check_secret(secret: &Secret, what: &str) -> Result<(), RegistryError> {
    let secret = secret.expose();
    if secret.is_empty() || secret.len() > 512 {
        return Err(RegistryError::Invalid(format!("{what} must be 1 to 512 characters")));
    }
    Ok(())
}

impl Registry<'_> {
    /// Add an app, or change the given fields of an existing one. A new app needs a secret; `new_mode` is the
    /// token mode it gets when none is given.
    pub async fn put_app(
        &self,
        appid: &AppId,
        changes: &AppChanges,
        new_mode: TokenMode,
    ) -> Result<Change, RegistryError> {
        if let Some(s) = &changes.secret {
            check_secret(s, "the secret")?;
        }
        if changes.login_duration_secs.is_some_and(|d| d < 86_400)
            || changes.session_duration_secs.is_some_and(|d| d < 60)
        {
            return Err(RegistryError::Invalid(
                "the login lifetime must be at least a day and the idle lifetime at least 60 s".into(),
            ));
        }
        let existing = self.store.registry.get_app(appid).await?;
        let app = match &existing {
            Some(e) => AppRecord {
                appid: appid.clone(),
                secret: changes.secret.as_ref().map_or_else(|| e.secret.clone(), |s| s.expose().to_owned()),
                login_duration_secs: changes.login_duration_secs.unwrap_or(e.login_duration_secs),
                session_duration_secs: changes.session_duration_secs.unwrap_or(e.session_duration_secs),
                token_mode: changes.token_mode.unwrap_or(e.token_mode),
                created_at: e.created_at,
                updated_at: self.now,
            },
            None => AppRecord {
                appid: appid.clone(),
                secret: changes
                    .secret
                    .as_ref()
                    .map(|s| s.expose().to_owned())
                    .ok_or_else(|| RegistryError::Invalid(format!("app {appid} is new: give its secret")))?,
                login_duration_secs: changes.login_duration_secs.unwrap_or(DEFAULT_LOGIN_DURATION_SECS),
                session_duration_secs: changes.session_duration_secs.unwrap_or(DEFAULT_SESSION_DURATION_SECS),
                token_mode: changes.token_mode.unwrap_or(new_mode),
                created_at: self.now,
                updated_at: self.now,
            },
        };
        let same =
            existing.as_ref().is_some_and(|e| AppRecord { updated_at: e.updated_at, ..app.clone() } == *e);
        let drop_credentials =
            existing.as_ref().is_some_and(|e| e.secret != app.secret || e.token_mode != app.token_mode);
        let outcome = match (&existing, same) {
            (None, _) => Outcome::Added,
            (Some(_), true) => Outcome::Unchanged,
            (Some(_), false) => Outcome::Updated,
        };
        if !self.dry_run {
            if outcome != Outcome::Unchanged {
                self.store.registry.put_app(&app).await?;
                self.store.sessions.app_changed(appid);
            }
            self.refresh_credentials(&CredKey::all_for_app(appid), drop_credentials).await?;
        }
        Ok(Change { outcome, credentials_dropped: drop_credentials })
    }

    /// Remove an app with its sessions and cached credentials.
    pub async fn remove_app(&self, appid: &AppId) -> Result<(), RegistryError> {
        let removed = self.store.registry.remove_app(appid).await?;
        self.store.sessions.app_changed(appid);
        if !removed {
            return Err(RegistryError::NotFound(format!("no app {appid}")));
        }
        self.refresh_credentials(&CredKey::all_for_app(appid), true).await
    }

    /// Lift a daily-quota block (45009) and remembered failures of an app's tokens and tickets: after the operator
    /// reset WeChat's quota (`clear_quota`), upstream calls resume at once.
    pub async fn unblock_app(&self, appid: &AppId) -> Result<(), RegistryError> {
        if self.store.registry.get_app(appid).await?.is_none() {
            return Err(RegistryError::NotFound(format!("no app {appid}")));
        }
        self.refresh_credentials(&CredKey::all_for_app(appid), false).await
    }

    /// Add a WeCom agent, or change the given fields of an existing one (a new agent needs a secret).
    pub async fn put_agent(
        &self,
        corpid: &CorpId,
        agentid: &AgentId,
        changes: &AgentChanges,
    ) -> Result<Change, RegistryError> {
        if let Some(s) = &changes.secret {
            check_secret(s, "the secret")?;
        }
        if changes.remark.as_ref().is_some_and(|r| r.len() > 255) {
            return Err(RegistryError::Invalid("the remark must be at most 255 bytes".into()));
        }
        let existing = self.store.registry.get_agent(corpid, agentid).await?;
        let agent = AgentRecord {
            corpid: corpid.clone(),
            agentid: agentid.clone(),
            secret: match (&changes.secret, &existing) {
                (Some(s), _) => s.expose().to_owned(),
                (None, Some(e)) => e.secret.clone(),
                (None, None) => {
                    return Err(RegistryError::Invalid(format!(
                        "agent {corpid}/{agentid} is new: give its secret"
                    )))
                }
            },
            remark: changes
                .remark
                .clone()
                .or_else(|| existing.as_ref().map(|e| e.remark.clone()))
                .unwrap_or_default(),
            created_at: existing.as_ref().map_or(self.now, |e| e.created_at),
            updated_at: self.now,
        };
        let drop_credentials = existing.as_ref().is_some_and(|e| e.secret != agent.secret);
        let outcome = match &existing {
            None => Outcome::Added,
            Some(e) if e.secret == agent.secret && e.remark == agent.remark => Outcome::Unchanged,
            Some(_) => Outcome::Updated,
        };
        if !self.dry_run {
            if outcome != Outcome::Unchanged {
                self.store.registry.put_agent(&agent).await?;
            }
            self.refresh_credentials(&CredKey::all_for_agent(corpid, agentid), drop_credentials).await?;
        }
        Ok(Change { outcome, credentials_dropped: drop_credentials })
    }

    /// Remove a WeCom agent and its cached credentials.
    pub async fn remove_agent(&self, corpid: &CorpId, agentid: &AgentId) -> Result<(), RegistryError> {
        if !self.store.registry.remove_agent(corpid, agentid).await? {
            return Err(RegistryError::NotFound(format!("no agent {corpid}/{agentid}")));
        }
        self.refresh_credentials(&CredKey::all_for_agent(corpid, agentid), true).await
    }

    /// Hold COS credentials for a Tencent Cloud APPID. A new APPID needs both; an existing one keeps what is not
    /// given.
    pub async fn put_cos_key(
        &self,
        appid: &CosAppId,
        secret_id: Option<&str>,
        secret_key: Option<&Secret>,
    ) -> Result<Outcome, RegistryError> {
        if let Some(id) = secret_id {
            check_ident(id, "the SecretId", 128)?;
        }
        if let Some(k) = secret_key {
            check_secret(k, "the SecretKey")?;
        }
        let existing = self.store.registry.get_cos_key(appid).await?;
        let (secret_id, secret_key) = match (&existing, secret_id, secret_key) {
            (_, Some(i), Some(k)) => (i.to_owned(), k.expose().to_owned()),
            (Some(e), i, k) => (
                i.map_or_else(|| e.secret_id.clone(), str::to_owned),
                k.map_or_else(|| e.secret_key.clone(), |k| k.expose().to_owned()),
            ),
            (None, _, _) => {
                return Err(RegistryError::Invalid(format!(
                    "no COS keys for {appid} yet: give both the SecretId and the SecretKey"
                )))
            }
        };
        let outcome = match &existing {
            None => Outcome::Added,
            Some(e) if e.secret_id == secret_id && e.secret_key == secret_key => Outcome::Unchanged,
            Some(_) => Outcome::Updated,
        };
        if !self.dry_run && outcome != Outcome::Unchanged {
            let key = CosKeyRecord {
                appid: appid.clone(),
                secret_id,
                secret_key,
                created_at: existing.as_ref().map_or(self.now, |e| e.created_at),
                updated_at: self.now,
            };
            self.store.registry.put_cos_key(&key).await?;
        }
        Ok(outcome)
    }

    /// Remove held COS credentials.
    pub async fn remove_cos_key(&self, appid: &CosAppId) -> Result<(), RegistryError> {
        if !self.store.registry.remove_cos_key(appid).await? {
            return Err(RegistryError::NotFound(format!("no COS keys for {appid}")));
        }
        Ok(())
    }

    /// Create a caller key (`scope`: what it may reach); returns the key, to be shown once (only its hash is stored).
    pub async fn add_caller_key(&self, name: &str, scope: KeyScope) -> Result<String, RegistryError> {
        let KeyScope { apps, corps, all, apis } = scope;
        if name.is_empty()
            || name.len() > 64
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(RegistryError::Invalid(
                "the key name must be 1 to 64 characters of letters, digits, '-', '_' or '.'".into(),
            ));
        }
        if !all && apps.is_empty() && corps.is_empty() {
            return Err(RegistryError::Invalid("a key needs a scope: --apps, --corps, or --all".into()));
        }
        for a in &apps {
            id::<crate::ids::AppId>(a)?;
        }
        for c in &corps {
            id::<crate::ids::CorpId>(c)?;
        }
        if apis.len() > 32 {
            return Err(RegistryError::Invalid(
                "a key can be limited to at most 32 API path prefixes".into(),
            ));
        }
        for p in &apis {
            let ok = p.starts_with('/')
                && p.len() <= 128
                && !p.contains("..")
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_-.".contains(&b));
            if !ok {
                return Err(RegistryError::Invalid(
                    "each API path prefix must start with / and hold letters, digits, '/', '_', '-' or '.' (e.g. /wxa/)"
                        .into(),
                ));
            }
        }
        if self.store.keys.list_caller_keys().await?.iter().any(|k| k.name == name) {
            return Err(RegistryError::Conflict(format!(
                "a key named {name} exists already (revoked keys keep their name): choose another name"
            )));
        }
        let key = crate::auth::new_key()
            .map_err(|_| RegistryError::Invalid("no randomness available on this machine".into()))?;
        let record = CallerKeyRecord {
            name: name.to_owned(),
            key_hash: crate::crypto::sha256_hex(key.as_bytes()),
            scope_all: all,
            scope_apps: apps,
            scope_corps: corps,
            scope_apis: apis,
            created_at: self.now,
            last_used_at: 0,
            revoked_at: 0,
        };
        self.store.keys.add_caller_key(&record).await?;
        Ok(key)
    }

    /// Revoke a caller key (running servers stop accepting it within their key cache time).
    pub async fn revoke_caller_key(&self, name: &str) -> Result<(), RegistryError> {
        if self.store.keys.revoke_caller_key(name, self.now).await? {
            return Ok(());
        }
        let known = self.store.keys.list_caller_keys().await?.into_iter().find(|k| k.name == name);
        Err(match known {
            Some(_) => RegistryError::Conflict(format!("key {name} is revoked already")),
            None => RegistryError::NotFound(format!("no key named {name}")),
        })
    }

    /// Drop the cached credentials of `keys` (`drop`), or else forget their remembered failures; tell this
    /// process's cache either way.
    async fn refresh_credentials(&self, keys: &[String], drop: bool) -> Result<(), RegistryError> {
        if drop {
            self.store.credentials.delete_credentials(keys).await?;
        } else {
            self.store.credentials.clear_credential_failures(keys).await?;
        }
        if let Some(c) = self.creds {
            c.forget(keys);
            if drop {
                c.forget_issued(keys);
            }
        }
        Ok(())
    }
}
