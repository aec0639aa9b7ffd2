//! The embedded backend: SQLite through `rusqlite` (bundled), one connection behind a mutex, calls run on
//! tokio's blocking pool. The zero-setup default; several processes may share the file (WAL, busy timeout).

mod credentials;
mod registry;
mod sessions;

use super::{
    AgentRecord, AppRecord, CallerKeyRecord, CosKeyRecord, CredentialRow, FailedFetch, FetchedCredential,
    LoginOutcome, SessionRecord, SessionView, Store, StoreError, StoreResult, TokenMode, AGENT_COLUMNS,
    APP_COLUMNS, COS_COLUMNS, CRED_COLUMNS, KEY_COLUMNS,
};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::sync::{Arc, Mutex};

const BACKEND: &str = "sqlite";

/// Numbered migrations, applied in order inside one transaction each.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../../sql/sqlite/0001_apps_sessions.sql")),
    (2, include_str!("../../../sql/sqlite/0002_credentials_agents.sql")),
    (3, include_str!("../../../sql/sqlite/0003_cos_keys.sql")),
    (4, include_str!("../../../sql/sqlite/0004_caller_keys.sql")),
    (5, include_str!("../../../sql/sqlite/0005_remembered_failures.sql")),
    (6, include_str!("../../../sql/sqlite/0006_caller_key_apis.sql")),
];

/// The embedded store.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::new(BACKEND, e)
}

impl SqliteStore {
    /// Open (or create) the database file at `path`; `:memory:` gives a private in-memory database.
    pub fn open(path: &str) -> StoreResult<Self> {
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        if path != ":memory:" {
            conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
            conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        }
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    async fn call<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(err)?
        .map_err(err);
        crate::metrics::storage(BACKEND, result.is_err());
        result
    }
}

fn app_from_row(r: &Row<'_>) -> rusqlite::Result<AppRecord> {
    let mode: String = r.get(4)?;
    Ok(AppRecord {
        appid: r.get(0)?,
        secret: r.get(1)?,
        login_duration_secs: r.get(2)?,
        session_duration_secs: r.get(3)?,
        token_mode: TokenMode::parse(&mode).unwrap_or(TokenMode::Stable),
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

fn agent_from_row(r: &Row<'_>) -> rusqlite::Result<AgentRecord> {
    Ok(AgentRecord {
        corpid: r.get(0)?,
        agentid: r.get(1)?,
        secret: r.get(2)?,
        remark: r.get(3)?,
        created_at: r.get(4)?,
        updated_at: r.get(5)?,
    })
}

fn cred_from_row(r: &Row<'_>) -> rusqlite::Result<CredentialRow> {
    Ok(CredentialRow {
        key: r.get(0)?,
        value: r.get(1)?,
        expires_at: r.get(2)?,
        fetched_at: r.get(3)?,
        lease_owner: r.get(4)?,
        lease_until_ms: r.get(5)?,
        blocked_until: r.get(6)?,
        blocked_code: r.get(7)?,
        window_start: r.get(8)?,
        window_count: r.get(9)?,
        failed_until_ms: r.get(10)?,
        failed_code: r.get(11)?,
        failed_message: r.get(12)?,
        failed_count: r.get(13)?,
        force_day: r.get(14)?,
        force_count: r.get(15)?,
        force_hour: r.get(16)?,
        force_hour_count: r.get(17)?,
    })
}

fn cos_from_row(r: &Row<'_>) -> rusqlite::Result<CosKeyRecord> {
    Ok(CosKeyRecord {
        appid: r.get(0)?,
        secret_id: r.get(1)?,
        secret_key: r.get(2)?,
        created_at: r.get(3)?,
        updated_at: r.get(4)?,
    })
}

fn key_from_row(r: &Row<'_>) -> rusqlite::Result<CallerKeyRecord> {
    let apps: String = r.get(3)?;
    let corps: String = r.get(4)?;
    Ok(CallerKeyRecord {
        name: r.get(0)?,
        key_hash: r.get(1)?,
        scope_all: r.get::<_, i64>(2)? != 0,
        scope_apps: super::split_scope(&apps),
        scope_corps: super::split_scope(&corps),
        created_at: r.get(5)?,
        last_used_at: r.get(6)?,
        revoked_at: r.get(7)?,
        scope_apis: super::split_scope(&r.get::<_, String>(8)?),
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn migrate(&self) -> StoreResult<Vec<i64>> {
        self.call(|c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS wafer_schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
            )?;
            let mut applied = Vec::new();
            for (version, sql) in MIGRATIONS {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let done: Option<i64> = tx
                    .query_row("SELECT version FROM wafer_schema_migrations WHERE version = ?1", [version], |r| r.get(0))
                    .optional()?;
                if done.is_none() {
                    tx.execute_batch(sql)?;
                    tx.execute(
                        "INSERT INTO wafer_schema_migrations (version, applied_at) VALUES (?1, strftime('%s','now'))",
                        [version],
                    )?;
                    applied.push(*version);
                }
                tx.commit()?;
            }
            Ok(applied)
        })
        .await
    }

    async fn schema_status(&self) -> StoreResult<super::SchemaStatus> {
        let latest = MIGRATIONS.iter().map(|(v, _)| *v).max().unwrap_or(0);
        self.call(move |c| {
            let current: i64 = c
                .query_row("SELECT COALESCE(MAX(version), 0) FROM wafer_schema_migrations", [], |r| r.get(0))
                .or_else(|e| match e {
                    rusqlite::Error::SqliteFailure(_, Some(m)) if m.contains("no such table") => Ok(0),
                    other => Err(other),
                })?;
            Ok(super::SchemaStatus { current, latest })
        })
        .await
    }

    async fn put_app(&self, app: &AppRecord) -> StoreResult<()> {
        SqliteStore::put_app(self, app).await
    }

    async fn get_app(&self, appid: &str) -> StoreResult<Option<AppRecord>> {
        SqliteStore::get_app(self, appid).await
    }

    async fn list_apps(&self) -> StoreResult<Vec<AppRecord>> {
        SqliteStore::list_apps(self).await
    }

    async fn remove_app(&self, appid: &str) -> StoreResult<bool> {
        SqliteStore::remove_app(self, appid).await
    }

    async fn create_session(
        &self,
        session: &SessionRecord,
        keep: usize,
        now: i64,
    ) -> StoreResult<LoginOutcome> {
        SqliteStore::create_session(self, session, keep, now).await
    }

    async fn import_session(&self, session: &SessionRecord) -> StoreResult<bool> {
        SqliteStore::import_session(self, session).await
    }

    async fn get_session(&self, id: &str) -> StoreResult<Option<SessionView>> {
        SqliteStore::get_session(self, id).await
    }

    async fn touch_session(&self, id: &str, now: i64) -> StoreResult<()> {
        SqliteStore::touch_session(self, id, now).await
    }

    async fn set_user_info(&self, appid: &str, openid: &str, user_info: &str) -> StoreResult<()> {
        SqliteStore::set_user_info(self, appid, openid, user_info).await
    }

    async fn purge_expired_sessions(&self, now: i64) -> StoreResult<u64> {
        SqliteStore::purge_expired_sessions(self, now).await
    }

    async fn list_user_session_keys(
        &self,
        after: &str,
        limit: usize,
    ) -> StoreResult<Vec<(String, String, String, String)>> {
        SqliteStore::list_user_session_keys(self, after, limit).await
    }

    async fn set_user_session_key(&self, appid: &str, openid: &str, session_key: &str) -> StoreResult<()> {
        SqliteStore::set_user_session_key(self, appid, openid, session_key).await
    }

    async fn list_credentials(&self) -> StoreResult<Vec<CredentialRow>> {
        SqliteStore::list_credentials(self).await
    }

    async fn put_agent(&self, agent: &AgentRecord) -> StoreResult<()> {
        SqliteStore::put_agent(self, agent).await
    }

    async fn get_agent(&self, corpid: &str, agentid: &str) -> StoreResult<Option<AgentRecord>> {
        SqliteStore::get_agent(self, corpid, agentid).await
    }

    async fn list_agents(&self) -> StoreResult<Vec<AgentRecord>> {
        SqliteStore::list_agents(self).await
    }

    async fn remove_agent(&self, corpid: &str, agentid: &str) -> StoreResult<bool> {
        SqliteStore::remove_agent(self, corpid, agentid).await
    }

    async fn get_credential(&self, key: &str) -> StoreResult<Option<CredentialRow>> {
        SqliteStore::get_credential(self, key).await
    }

    async fn try_lease(&self, key: &str, owner: &str, now_ms: i64, until_ms: i64) -> StoreResult<bool> {
        SqliteStore::try_lease(self, key, owner, now_ms, until_ms).await
    }

    async fn put_credential(&self, key: &str, owner: &str, f: &FetchedCredential<'_>) -> StoreResult<bool> {
        SqliteStore::put_credential(self, key, owner, f).await
    }

    async fn fail_credential(&self, key: &str, owner: &str, f: &FailedFetch<'_>) -> StoreResult<()> {
        SqliteStore::fail_credential(self, key, owner, f).await
    }

    async fn count_sessions(&self, appid: &str) -> StoreResult<i64> {
        SqliteStore::count_sessions(self, appid).await
    }

    async fn clear_credential_failures(&self, keys: &[String]) -> StoreResult<()> {
        SqliteStore::clear_credential_failures(self, keys).await
    }

    async fn take_force_budget(&self, key: &str, b: &super::ForceBudget) -> StoreResult<bool> {
        SqliteStore::take_force_budget(self, key, b).await
    }

    async fn release_lease(&self, key: &str, owner: &str) -> StoreResult<()> {
        SqliteStore::release_lease(self, key, owner).await
    }

    async fn block_credential(&self, key: &str, owner: &str, until: i64, code: i64) -> StoreResult<()> {
        SqliteStore::block_credential(self, key, owner, until, code).await
    }

    async fn import_credential(
        &self,
        key: &str,
        value: &str,
        expires_at: i64,
        fetched_at: i64,
    ) -> StoreResult<()> {
        SqliteStore::import_credential(self, key, value, expires_at, fetched_at).await
    }

    async fn delete_credentials(&self, keys: &[String]) -> StoreResult<()> {
        SqliteStore::delete_credentials(self, keys).await
    }

    async fn put_cos_key(&self, key: &CosKeyRecord) -> StoreResult<()> {
        SqliteStore::put_cos_key(self, key).await
    }

    async fn get_cos_key(&self, appid: &str) -> StoreResult<Option<CosKeyRecord>> {
        SqliteStore::get_cos_key(self, appid).await
    }

    async fn list_cos_keys(&self) -> StoreResult<Vec<CosKeyRecord>> {
        SqliteStore::list_cos_keys(self).await
    }

    async fn remove_cos_key(&self, appid: &str) -> StoreResult<bool> {
        SqliteStore::remove_cos_key(self, appid).await
    }

    async fn add_caller_key(&self, key: &CallerKeyRecord) -> StoreResult<()> {
        SqliteStore::add_caller_key(self, key).await
    }

    async fn caller_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<CallerKeyRecord>> {
        SqliteStore::caller_key_by_hash(self, key_hash).await
    }

    async fn list_caller_keys(&self) -> StoreResult<Vec<CallerKeyRecord>> {
        SqliteStore::list_caller_keys(self).await
    }

    async fn revoke_caller_key(&self, name: &str, now: i64) -> StoreResult<bool> {
        SqliteStore::revoke_caller_key(self, name, now).await
    }

    async fn touch_caller_key(&self, name: &str, now: i64) -> StoreResult<()> {
        SqliteStore::touch_caller_key(self, name, now).await
    }
}
