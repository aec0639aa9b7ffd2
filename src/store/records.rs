//! The records the stores read and write: apps, sessions, agents, caller keys, COS keys, cached credentials.
//! Secrets in them never reach `Debug` output.

pub use crate::ids::{AgentId, AppId, CorpId, CosAppId};

/// How an app's access token is fetched upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenMode {
    /// `POST /cgi-bin/stable_token`: idempotent within its window, safe for many callers.
    Stable,
    /// `GET /cgi-bin/token`: every fetch invalidates the previous token after 5 minutes.
    Classic,
}

impl TokenMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stable => "stable",
            Self::Classic => "classic",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stable" => Some(Self::Stable),
            "classic" => Some(Self::Classic),
            _ => None,
        }
    }
}

/// A registered mini-program or official account.
#[derive(Clone, PartialEq, Eq)]
pub struct AppRecord {
    pub appid: AppId,
    pub secret: String,
    pub login_duration_secs: i64,
    pub session_duration_secs: i64,
    pub token_mode: TokenMode,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for AppRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppRecord")
            .field("appid", &self.appid)
            .field("secret", &"<redacted>")
            .field("login_duration_secs", &self.login_duration_secs)
            .field("session_duration_secs", &self.session_duration_secs)
            .field("token_mode", &self.token_mode)
            .finish()
    }
}

/// A login session. `skey_hash` is the hex SHA-256 of the skey handed to the client.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    pub skey_hash: String,
    pub appid: AppId,
    pub openid: String,
    pub unionid: String,
    pub session_key: String,
    /// The decrypted profile as JSON text, if any.
    pub user_info: Option<String>,
    pub created_at: i64,
    pub last_visit_at: i64,
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("id", &self.id)
            .field("appid", &self.appid)
            .field("openid", &self.openid)
            .field("created_at", &self.created_at)
            .field("last_visit_at", &self.last_visit_at)
            .finish_non_exhaustive()
    }
}

/// A session together with its app's expiry rules, read in one indexed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub session: SessionRecord,
    pub login_duration_secs: i64,
    pub session_duration_secs: i64,
}

/// One session's copy of its user's session key, as stored (a page of these is what `reencrypt` walks).
#[derive(Clone, PartialEq, Eq)]
pub struct UserSessionKey {
    pub id: String,
    pub appid: AppId,
    pub openid: String,
    /// As stored: sealed, or in the clear.
    pub session_key: String,
}

impl std::fmt::Debug for UserSessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSessionKey")
            .field("id", &self.id)
            .field("appid", &self.appid)
            .finish_non_exhaustive()
    }
}

/// What a login did to the user's other sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginOutcome {
    /// The user already had at least one session for this app (the reply says UPDATE_SESSION_SUCCESS).
    pub existing_user: bool,
    /// How many of the user's oldest sessions were removed to respect the bound.
    pub pruned: usize,
}

/// Which schema the database has, against the one this build needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Newest version applied (0: none, or no schema at all).
    pub current: i64,
    /// Newest version this build knows.
    pub latest: i64,
}

impl SchemaStatus {
    pub fn is_current(&self) -> bool {
        self.current >= self.latest
    }
}

/// A registered WeCom self-built app ("agent").
#[derive(Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub corpid: CorpId,
    pub agentid: AgentId,
    pub secret: String,
    pub remark: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for AgentRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRecord")
            .field("corpid", &self.corpid)
            .field("agentid", &self.agentid)
            .field("remark", &self.remark)
            .finish_non_exhaustive()
    }
}

/// A caller key: its name, the SHA-256 of the key, and what it may reach.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct CallerKeyRecord {
    pub name: String,
    pub key_hash: String,
    /// Every app, corp and COS APPID.
    pub scope_all: bool,
    /// WeChat appids and Tencent Cloud APPIDs (COS).
    pub scope_apps: Vec<String>,
    /// WeCom corpids.
    pub scope_corps: Vec<String>,
    /// API path prefixes the key may call through the token-free interfaces; empty: every path.
    pub scope_apis: Vec<String>,
    pub created_at: i64,
    pub last_used_at: i64,
    /// 0 while the key is valid.
    pub revoked_at: i64,
}

impl std::fmt::Debug for CallerKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerKeyRecord")
            .field("name", &self.name)
            .field("scope_all", &self.scope_all)
            .field("scope_apps", &self.scope_apps)
            .field("scope_corps", &self.scope_corps)
            .field("scope_apis", &self.scope_apis)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// Join a scope list for storage.
pub fn join_scope(items: &[String]) -> String {
    items.join(",")
}

/// Split a stored scope list.
pub fn split_scope(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_owned).collect()
}

/// COS credentials held for one Tencent Cloud APPID.
#[derive(Clone, PartialEq, Eq)]
pub struct CosKeyRecord {
    pub appid: CosAppId,
    pub secret_id: String,
    pub secret_key: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for CosKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosKeyRecord").field("appid", &self.appid).finish_non_exhaustive()
    }
}

/// An app's keys for WeChat's API security. `secrets` holds the symmetric key and the RSA private key as one JSON
/// object (`{"sym_key": base64, "private_key": PEM}`), sealed at rest; the SNs and the platform certificates
/// (`[{"sn", "pem"}]`) are public.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiSecurityRecord {
    pub appid: AppId,
    pub sym_sn: String,
    pub key_sn: String,
    pub secrets: String,
    pub certs: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for ApiSecurityRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSecurityRecord")
            .field("appid", &self.appid)
            .field("sym_sn", &self.sym_sn)
            .field("key_sn", &self.key_sn)
            .finish_non_exhaustive()
    }
}

/// A cached access token or ticket with its coordination state (see `sql/*/0002_*.sql`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CredentialRow {
    pub key: String,
    /// The token or ticket, if one was ever fetched.
    pub value: Option<String>,
    /// Unix seconds when the value expires upstream.
    pub expires_at: i64,
    /// Unix seconds when the value was fetched.
    pub fetched_at: i64,
    /// The process currently refreshing this key, if any, and until when (Unix ms) its lease holds.
    pub lease_owner: Option<String>,
    pub lease_until_ms: i64,
    /// The lease's generation: one more every time it is taken (the fence a holder's writes name).
    pub lease_gen: i64,
    /// No upstream call for this key before this time (daily quota used up); `blocked_code` says why.
    pub blocked_until: i64,
    pub blocked_code: i64,
    /// Fetch budget window: start (Unix s, hour-aligned) and fetches in it.
    pub window_start: i64,
    pub window_count: i64,
    /// A failed fetch remembered for every instance: no upstream call before `failed_until_ms` (Unix ms);
    /// callers get `failed_code` / `failed_message`. `failed_count`: consecutive failures (for the backoff).
    pub failed_until_ms: i64,
    pub failed_code: i64,
    pub failed_message: String,
    pub failed_count: i64,
    /// Forced refreshes taken on the Beijing day starting at `force_day` (Unix s).
    pub force_day: i64,
    pub force_count: i64,
    /// Forced refreshes taken in the hour starting at `force_hour` (Unix s).
    pub force_hour: i64,
    pub force_hour_count: i64,
}

impl std::fmt::Debug for CredentialRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialRow")
            .field("key", &self.key)
            .field("has_value", &self.value.is_some())
            .field("expires_at", &self.expires_at)
            .field("fetched_at", &self.fetched_at)
            .field("lease_owner", &self.lease_owner)
            .field("lease_until_ms", &self.lease_until_ms)
            .field("blocked_until", &self.blocked_until)
            .field("failed_until_ms", &self.failed_until_ms)
            .field("failed_code", &self.failed_code)
            .finish_non_exhaustive()
    }
}

/// A refresh lease held on a credential: the holder, and the fence it got when it took the lease (the row's lease
/// generation then). Renewing, storing and giving up name both, so a holder whose lease was taken over in the
/// meantime — frozen, or cut off from storage — changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease<'a> {
    pub owner: &'a str,
    pub fence: i64,
}

/// A freshly fetched value to store under a lease.
#[derive(Clone)]
pub struct NewValue<'a> {
    pub value: &'a str,
    pub expires_at: i64,
    pub fetched_at: i64,
    /// The hour-aligned budget window this fetch counts in.
    pub window_start: i64,
}

/// The forced-refresh budgets of one key: at most `per_day` in the (Beijing) day starting at `day`, and at most
/// `per_hour` in the hour starting at `hour`.
#[derive(Debug, Clone, Copy)]
pub struct ForceBudget {
    pub day: i64,
    pub per_day: i64,
    pub hour: i64,
    pub per_hour: i64,
}

/// A failed fetch to remember on a credential's row.
#[derive(Debug, Clone)]
pub struct FailedFetch<'a> {
    pub until_ms: i64,
    pub code: i64,
    /// The caller-visible message (never a secret; at most 255 characters are kept).
    pub message: &'a str,
    /// Consecutive failures including this one.
    pub count: i64,
}

/// Where one sealed value is stored, for a compare-and-swap of that value alone ([`super::SchemaStore::swap_sealed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedField<'a> {
    AppSecret {
        appid: &'a AppId,
    },
    AgentSecret {
        corpid: &'a CorpId,
        agentid: &'a AgentId,
    },
    CosSecretKey {
        appid: &'a CosAppId,
    },
    /// An app's API-security keys (one sealed value).
    ApiSecurityKeys {
        appid: &'a AppId,
    },
    Credential {
        key: &'a str,
    },
    /// One session row's copy of its user's session key.
    SessionKey {
        id: &'a str,
    },
}

impl<'a> SealedField<'a> {
    /// `(table, column, key columns with their values)`: fixed names only; values are bound as parameters.
    pub(crate) fn location(&self) -> (&'static str, &'static str, Vec<(&'static str, &'a str)>) {
        match *self {
            Self::AppSecret { appid } => ("wafer_apps", "secret", vec![("appid", appid.as_str())]),
            Self::AgentSecret { corpid, agentid } => {
                ("wafer_agents", "secret", vec![("corpid", corpid.as_str()), ("agentid", agentid.as_str())])
            }
            Self::CosSecretKey { appid } => ("wafer_cos_keys", "secret_key", vec![("appid", appid.as_str())]),
            Self::ApiSecurityKeys { appid } => {
                ("wafer_api_security", "secrets", vec![("appid", appid.as_str())])
            }
            Self::Credential { key } => ("wafer_credentials", "value", vec![("cred_key", key)]),
            Self::SessionKey { id } => ("wafer_sessions", "session_key", vec![("id", id)]),
        }
    }

    /// `UPDATE … SET column = ? WHERE key = ? … AND column = ?` with `?` placeholders, and its parameters in order
    /// (`new`, the key values, `old`).
    pub(crate) fn swap<'b>(&self, old: &'b str, new: &'b str) -> (String, Vec<&'b str>)
    where
        'a: 'b,
    {
        let (table, column, keys) = self.location();
        let mut sql = format!("UPDATE {table} SET {column} = ? WHERE ");
        let mut params = vec![new];
        for (name, value) in keys {
            sql.push_str(name);
            sql.push_str(" = ? AND ");
            params.push(value);
        }
        sql.push_str(column);
        sql.push_str(" = ?");
        params.push(old);
        (sql, params)
    }
}
