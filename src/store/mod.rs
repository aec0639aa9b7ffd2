//! Storage: one trait per kind of data (sessions, credentials, registrations, caller keys, the schema), every
//! backend implementing each directly, the [`Storage`] handle a process opens once, its records, and opening a
//! backend from a URL.
//!
//! Two backends pass the same conformance suite (`tests/it/store_conformance.rs`): MySQL for production
//! ([`mysql::MysqlStore`]) and embedded SQLite as the zero-setup default ([`sqlite::SqliteStore`]).

pub mod breaker;
pub mod cache;
pub mod mysql;
mod records;
pub mod reencrypt;
pub mod sealed;
pub mod sqlite;

pub use records::*;

use async_trait::async_trait;
use std::sync::Arc;

/// Default login lifetime: 30 days since the login that created the skey.
pub const DEFAULT_LOGIN_DURATION_SECS: i64 = 30 * 86_400;
/// Default idle lifetime: 2,592,000 s since the last successful auth.
pub const DEFAULT_SESSION_DURATION_SECS: i64 = 2_592_000;

/// A storage failure. The text is for logs and never contains secrets or bound values.
#[derive(Debug, thiserror::Error)]
#[error("{backend}: {message}")]
pub struct StoreError {
    pub backend: &'static str,
    pub message: String,
    /// Why storage could not be reached, when that is what failed.
    pub cause: Cause,
}

/// What kept storage from answering, in words an operator can act on (`/readyz`, the start-up log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cause {
    /// Nothing listens at the address (wrong host or port, server down).
    Refused,
    /// No answer in time (a firewall, a security group, the wrong VPC, an overloaded server).
    Timeout,
    /// The server refused the user or password (MySQL 1045) or the user's rights on the database (1044).
    Auth,
    /// The database named in the URL does not exist (MySQL 1049).
    UnknownDatabase,
    /// The TLS handshake failed.
    Tls,
    /// A table or column this build needs is missing: the schema is missing or behind (MySQL 1146 / 1054,
    /// SQLite "no such table" / "no such column").
    Schema,
    /// Anything else (the message says what).
    #[default]
    Other,
}

impl Cause {
    /// One line saying what to check.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Refused => "connection refused: check the host and port, and that the server is running",
            Self::Timeout => "no answer in time: check the network path (VPC, security group, firewall)",
            Self::Auth => {
                "access denied: check the user and password in WAFER_DATABASE_URL and the user's grants"
            }
            Self::UnknownDatabase => "unknown database: create it, or fix its name in WAFER_DATABASE_URL",
            Self::Tls => "TLS handshake failed: check the server's certificate and the URL's TLS settings",
            Self::Schema => "the database schema is missing or behind: run `wafer-scf migrate`",
            Self::Other => "storage error",
        }
    }
}

impl StoreError {
    pub fn new(backend: &'static str, message: impl std::fmt::Display) -> Self {
        Self { backend, message: message.to_string(), cause: Cause::Other }
    }

    /// The same error, saying why storage could not be reached.
    pub fn with_cause(mut self, cause: Cause) -> Self {
        self.cause = cause;
        self
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Column lists, the same in both backends (row conversions read them by position).
pub(crate) const APP_COLUMNS: &str =
    "appid, secret, login_duration_secs, session_duration_secs, token_mode, created_at, updated_at";
pub(crate) const AGENT_COLUMNS: &str = "corpid, agentid, secret, remark, created_at, updated_at";
pub(crate) const CRED_COLUMNS: &str = "cred_key, value, expires_at, fetched_at, lease_owner, lease_until_ms, \
    blocked_until, blocked_code, window_start, window_count, failed_until_ms, failed_code, failed_message, failed_count, \
    force_day, force_count, force_hour, force_hour_count, lease_gen";
pub(crate) const COS_COLUMNS: &str = "appid, secret_id, secret_key, created_at, updated_at";
pub(crate) const API_SECURITY_COLUMNS: &str = "appid, sym_sn, key_sn, secrets, certs, created_at, updated_at";
pub(crate) const KEY_COLUMNS: &str =
    "name, key_hash, scope_all, scope_apps, scope_corps, created_at, last_used_at, revoked_at, scope_apis";

/// Sessions: logins, reads by id, visits, profiles, purges. Implemented by each backend, wrapped by the sealing
/// layer (session keys) and, in a server, by the in-process session cache.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Store a new session, in one transaction:
    /// - give the user's other sessions for this app the new `session_key` (WeChat rotates it per user);
    /// - drop the user's sessions that have expired by `now` under the app's rules;
    /// - keep at most `keep` sessions for (appid, openid), dropping the oldest.
    async fn create_session(&self, s: &SessionRecord, keep: usize, now: i64) -> StoreResult<LoginOutcome>;
    /// Insert a session as it is (imports): no pruning, no key rotation. Returns false if the id already exists.
    async fn import_session(&self, session: &SessionRecord) -> StoreResult<bool>;
    /// One indexed read: the session by id joined with its app's expiry rules.
    async fn get_session(&self, id: &str) -> StoreResult<Option<SessionView>>;
    /// The session key of a session read with `get_session`, opened (sealed stores keep it sealed until asked).
    fn open_session_key(&self, _appid: &AppId, _openid: &str, stored: &str) -> StoreResult<String> {
        Ok(stored.to_owned())
    }
    /// Record a successful auth. Callers throttle this (see `handlers::session`).
    async fn touch_session(&self, id: &str, now: i64) -> StoreResult<()>;
    /// Store a decrypted profile on every session of (appid, openid).
    async fn set_user_info(&self, appid: &AppId, openid: &str, user_info: &str) -> StoreResult<()>;
    /// Delete every session that has expired by `now`. Returns how many were deleted.
    async fn purge_expired_sessions(&self, now: i64) -> StoreResult<u64>;
    /// A page of `(id, appid, openid, stored session_key)` ordered by id, after `after` (for `reencrypt`).
    async fn list_user_session_keys(&self, after: &str, limit: usize) -> StoreResult<Vec<UserSessionKey>>;
    /// Set the session key of every session of (appid, openid).
    async fn set_user_session_key(&self, appid: &AppId, openid: &str, session_key: &str) -> StoreResult<()>;
    /// Sessions stored for an app (live or not yet purged), for the status report.
    async fn count_sessions(&self, appid: &AppId) -> StoreResult<i64>;
    /// An app was written or removed (its expiry rules or its sessions changed): anything kept in memory about its
    /// sessions is stale. Nothing to do for a store that keeps nothing.
    fn app_changed(&self, _appid: &AppId) {}
}

/// Cached access tokens and tickets with their coordination state: the refresh lease, remembered failures, quota
/// blocks and forced-refresh budgets. Every method is one short statement or transaction.
#[async_trait]
pub trait CredentialStore: Send + Sync + 'static {
    /// The cached credential row for `key`, if any.
    async fn get_credential(&self, key: &str) -> StoreResult<Option<CredentialRow>>;
    /// Every credential row (for `reencrypt`).
    async fn list_credentials(&self) -> StoreResult<Vec<CredentialRow>>;
    /// Take the refresh lease for `key` until `until` (Unix ms) if nobody holds it, it has run out by `now_ms`, or
    /// `owner` already holds it. Creates the row if missing. Returns the fence (the lease's new generation) when
    /// `owner` now holds the lease.
    async fn try_lease(&self, key: &str, owner: &str, now_ms: i64, until: i64) -> StoreResult<Option<i64>>;
    /// Extend a lease still held (same owner, same fence) until `until_ms`: false when it was taken over.
    async fn renew_lease(&self, key: &str, lease: Lease<'_>, until_ms: i64) -> StoreResult<bool>;
    /// Store a fetched value and release the lease, only if `lease` is still the one held (a holder whose lease
    /// ran out and was taken over — frozen, or cut off — cannot overwrite a newer value). Counts the fetch in its
    /// budget window and clears any quota block. Returns whether it was stored.
    async fn put_credential(&self, key: &str, lease: Lease<'_>, f: &NewValue<'_>) -> StoreResult<bool>;
    /// Give up the lease without storing anything (the fetch failed).
    async fn release_lease(&self, key: &str, lease: Lease<'_>) -> StoreResult<()>;
    /// Remember a failed fetch on the row for every instance and release the lease — only if `lease` is still the
    /// one held (a superseded holder's failure is not everyone's).
    async fn fail_credential(&self, key: &str, lease: Lease<'_>, failed: &FailedFetch<'_>)
        -> StoreResult<()>;
    /// Forget remembered failures and quota blocks of `keys` (the registration was written again, or the operator
    /// reset WeChat's quota): try upstream at once.
    async fn clear_credential_failures(&self, keys: &[String]) -> StoreResult<()>;
    /// Take one forced refresh from the key's budgets (`budget`): false when the day's or the hour's are spent.
    /// Atomic across processes.
    async fn take_force_budget(&self, key: &str, budget: &ForceBudget) -> StoreResult<bool>;
    /// Stop upstream calls for `key` until `until` (a daily quota refusal); releases `lease` if still held.
    async fn block_credential(&self, key: &str, lease: Lease<'_>, until: i64, code: i64) -> StoreResult<()>;
    /// Write a credential unconditionally (imports). Leaves lease and budget untouched.
    /// (`f.window_start` is not used.)
    async fn import_credential(&self, key: &str, f: &NewValue<'_>) -> StoreResult<()>;
    /// Drop cached credentials (a secret was replaced or an app removed).
    async fn delete_credentials(&self, keys: &[String]) -> StoreResult<()>;
}

/// Registrations that hold secrets: apps, WeCom agents and COS keys.
#[async_trait]
pub trait RegistryStore: Send + Sync + 'static {
    /// Insert or replace an app (keyed by appid).
    async fn put_app(&self, app: &AppRecord) -> StoreResult<()>;
    async fn get_app(&self, appid: &AppId) -> StoreResult<Option<AppRecord>>;
    /// All apps, ordered by appid.
    async fn list_apps(&self) -> StoreResult<Vec<AppRecord>>;
    /// Remove an app and all its sessions. Returns whether the app existed.
    async fn remove_app(&self, appid: &AppId) -> StoreResult<bool>;
    /// Insert or replace a WeCom agent (keyed by corpid + agentid).
    async fn put_agent(&self, agent: &AgentRecord) -> StoreResult<()>;
    async fn get_agent(&self, corpid: &CorpId, agentid: &AgentId) -> StoreResult<Option<AgentRecord>>;
    /// All agents, ordered by corpid, agentid.
    async fn list_agents(&self) -> StoreResult<Vec<AgentRecord>>;
    /// Remove an agent. Returns whether it existed. (Its credentials are dropped by the caller.)
    async fn remove_agent(&self, corpid: &CorpId, agentid: &AgentId) -> StoreResult<bool>;
    /// Insert or replace the COS credentials of a Tencent Cloud APPID.
    async fn put_cos_key(&self, key: &CosKeyRecord) -> StoreResult<()>;
    async fn get_cos_key(&self, appid: &CosAppId) -> StoreResult<Option<CosKeyRecord>>;
    /// All COS credentials, ordered by appid.
    async fn list_cos_keys(&self) -> StoreResult<Vec<CosKeyRecord>>;
    async fn remove_cos_key(&self, appid: &CosAppId) -> StoreResult<bool>;
    /// Register (or replace) an app's API-security keys.
    async fn put_api_security(&self, rec: &ApiSecurityRecord) -> StoreResult<()>;
    async fn get_api_security(&self, appid: &AppId) -> StoreResult<Option<ApiSecurityRecord>>;
    /// Every app's, ordered by appid.
    async fn list_api_security(&self) -> StoreResult<Vec<ApiSecurityRecord>>;
    /// Switch it off for an app (removing the app removes them too). False when there were none.
    async fn remove_api_security(&self, appid: &AppId) -> StoreResult<bool>;
}

/// Caller keys: only their hashes are stored, so nothing here is sealed.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Add a caller key. Fails if the name is taken.
    async fn add_caller_key(&self, key: &CallerKeyRecord) -> StoreResult<()>;
    /// The key with this hash, revoked or not.
    async fn caller_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<CallerKeyRecord>>;
    /// All keys, ordered by name.
    async fn list_caller_keys(&self) -> StoreResult<Vec<CallerKeyRecord>>;
    /// Revoke a key by name. Returns whether a valid key of that name existed.
    async fn revoke_caller_key(&self, name: &str, now: i64) -> StoreResult<bool>;
    /// Record use of a key (callers throttle this).
    async fn touch_caller_key(&self, name: &str, now: i64) -> StoreResult<()>;
}

/// The database as a whole: which backend, its schema, and the value-level compare-and-swap `reencrypt` uses.
#[async_trait]
pub trait SchemaStore: Send + Sync + 'static {
    /// `"mysql"` or `"sqlite"`, for logs.
    fn backend(&self) -> &'static str;
    /// Apply pending schema migrations. Idempotent, safe to run from several processes at once.
    /// Returns the versions it applied (empty: already up to date).
    async fn migrate(&self) -> StoreResult<Vec<i64>>;
    /// The newest schema version applied to the database, against the newest this build knows. An error means
    /// storage could not be reached.
    async fn schema_status(&self) -> StoreResult<SchemaStatus>;
    /// Replace one stored (sealed) value by `new` if it still is `old`, as stored: false when the row changed or
    /// went in between (`reencrypt` then reads it again), so no newer write is ever replaced by an older value.
    async fn swap_sealed(&self, field: SealedField<'_>, old: &str, new: &str) -> StoreResult<bool>;
}

/// What a backend is: every kind of storage, over one database.
pub trait Backend: SessionStore + CredentialStore + RegistryStore + KeyStore + SchemaStore {}
impl<T: SessionStore + CredentialStore + RegistryStore + KeyStore + SchemaStore> Backend for T {}

/// The storage a process works with, one handle per kind, opened once ([`open`]). Wrappers replace only the kinds
/// they concern: sealing the ones that hold secrets, the session cache the sessions.
#[derive(Clone)]
pub struct Storage {
    pub sessions: Arc<dyn SessionStore>,
    pub credentials: Arc<dyn CredentialStore>,
    pub registry: Arc<dyn RegistryStore>,
    pub keys: Arc<dyn KeyStore>,
    pub schema: Arc<dyn SchemaStore>,
}

impl Storage {
    /// Every kind served by one backend.
    pub fn of<B: Backend>(backend: B) -> Self {
        let b = Arc::new(backend);
        Self { sessions: b.clone(), credentials: b.clone(), registry: b.clone(), keys: b.clone(), schema: b }
    }

    /// `"mysql"` or `"sqlite"`, for logs.
    pub fn backend(&self) -> &'static str {
        self.schema.backend()
    }
}

/// Where the data lives, parsed from `WAFER_DATABASE_URL`. `Debug` shows it without the password.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `mysql://user:pass@host:port/db`
    Mysql(String),
    /// `sqlite:PATH` or `sqlite::memory:`
    Sqlite(String),
}

impl DatabaseUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.starts_with("mysql://") {
            if s.len() <= "mysql://".len() {
                return Err("mysql URL has no host".into());
            }
            mysql_async::Opts::from_url(s).map_err(|e| format!("invalid mysql URL: {e}"))?;
            Ok(Self::Mysql(s.to_owned()))
        } else if let Some(path) = s.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err("sqlite URL has no path (use sqlite:wafer.db or sqlite::memory:)".into());
            }
            Ok(Self::Sqlite(path.to_owned()))
        } else {
            Err("expected mysql://user:pass@host:port/db or sqlite:PATH".into())
        }
    }

    /// The URL with any password replaced, for logs.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(p) => format!("sqlite:{p}"),
            Self::Mysql(u) => match (u.find("://"), u.rfind('@')) {
                (Some(s), Some(at)) if at > s => {
                    let creds = &u[s + 3..at];
                    let user = creds.split(':').next().unwrap_or("");
                    format!("mysql://{user}:***@{}", &u[at + 1..])
                }
                _ => u.clone(),
            },
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Pool and timeout settings for opening a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most connections a MySQL pool opens (SCF advises 1–2 per instance).
    pub max_connections: usize,
    /// Deadline for one storage operation (checkout included).
    pub query_timeout: std::time::Duration,
    /// Seals secrets at rest when a master key is configured.
    pub sealer: sealed::Sealer,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            query_timeout: std::time::Duration::from_secs(5),
            sealer: sealed::Sealer::disabled(),
        }
    }
}

/// Open the storage a URL names. SQLite stores are migrated on open (zero setup); MySQL stores are migrated
/// by `wafer-scf migrate` (or `migrate = true`).
pub async fn open(url: &DatabaseUrl, opts: &StoreOptions, migrate: bool) -> StoreResult<Storage> {
    let raw = open_raw(url, opts).await?;
    if migrate {
        raw.schema.migrate().await?;
    }
    // Without a master key, look for sealed secrets first (refusing to write new ones in the clear next to them);
    // an unreachable database is not an error here (the first real operation says so).
    let guarded = sealed::Sealed::guarded(raw.clone(), opts.sealer.clone());
    let sealed = match tokio::time::timeout(std::time::Duration::from_secs(2), guarded).await {
        Ok(Ok(s)) => s,
        _ => sealed::Sealed::new(raw.clone(), opts.sealer.clone()),
    };
    Ok(sealed.into_storage())
}

/// The backend without the sealing layer: stored values as they are (for `reencrypt`, which must tell sealed rows
/// from rows in the clear).
pub async fn open_raw(url: &DatabaseUrl, opts: &StoreOptions) -> StoreResult<Storage> {
    Ok(match url {
        DatabaseUrl::Mysql(u) => Storage::of(mysql::MysqlStore::connect(u, opts)?),
        DatabaseUrl::Sqlite(p) => {
            let s = sqlite::SqliteStore::open(p)?;
            s.migrate().await?;
            Storage::of(s)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_parse_and_redact() {
        assert_eq!(DatabaseUrl::parse("sqlite:wafer.db").unwrap(), DatabaseUrl::Sqlite("wafer.db".into()));
        assert_eq!(DatabaseUrl::parse("sqlite::memory:").unwrap(), DatabaseUrl::Sqlite(":memory:".into()));
        let m = DatabaseUrl::parse("mysql://root:hunter2@127.0.0.1:3306/test").unwrap();
        assert_eq!(m.redacted(), "mysql://root:***@127.0.0.1:3306/test");
        assert!(!format!("{m:?}").contains("hunter2"), "Debug hides the password");
        assert!(format!("{m:?}").contains("127.0.0.1:3306/test"));
        assert!(DatabaseUrl::parse("postgres://x").is_err());
        assert!(DatabaseUrl::parse("sqlite:").is_err());
    }

    #[test]
    fn records_never_debug_print_secrets() {
        let app = AppRecord {
            appid: "wx1".parse().unwrap(),
            secret: "TOPSECRET".into(),
            login_duration_secs: 1,
            session_duration_secs: 1,
            token_mode: TokenMode::Stable,
            created_at: 0,
            updated_at: 0,
        };
        assert!(!format!("{app:?}").contains("TOPSECRET"));
        let s = SessionRecord {
            id: "i".into(),
            skey_hash: "HASH".into(),
            appid: "wx1".parse().unwrap(),
            openid: "o".into(),
            unionid: String::new(),
            session_key: "SESSIONKEY".into(),
            user_info: None,
            created_at: 0,
            last_visit_at: 0,
        };
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("SESSIONKEY") && !dbg.contains("HASH"));
    }
}
