//! The embedded backend: SQLite through `rusqlite` (bundled), one connection behind a mutex, calls run on
//! tokio's blocking pool. The zero-setup default; several processes may share the file (WAL, busy timeout).

mod credentials;
mod registry;
mod sessions;

use super::{
    AgentId, AgentRecord, ApiSecurityRecord, AppId, AppRecord, CallerKeyRecord, CorpId, CosAppId,
    CosKeyRecord, CredentialRow, FailedFetch, Lease, LoginOutcome, NewValue, SealedField, SessionRecord,
    SessionView, StoreError, StoreResult, TokenMode, UserSessionKey, AGENT_COLUMNS, API_SECURITY_COLUMNS,
    APP_COLUMNS, COS_COLUMNS, CRED_COLUMNS, KEY_COLUMNS,
};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::sync::Arc;
use tokio::sync::Mutex;

const BACKEND: &str = "sqlite";

/// Identifiers are stored as their text, and read back as what was written (only checked ones ever are).
macro_rules! stored_as_text {
    ($($t:ty),*) => {$(
        impl rusqlite::ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                self.as_str().to_sql()
            }
        }

        impl rusqlite::types::FromSql for $t {
            fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                String::column_result(v).map(<$t>::from_stored)
            }
        }
    )*};
}
stored_as_text!(AppId, CorpId, AgentId, CosAppId);

/// Numbered migrations, applied in order inside one transaction each.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../../sql/sqlite/0001_apps_sessions.sql")),
    (2, include_str!("../../../sql/sqlite/0002_credentials_agents.sql")),
    (3, include_str!("../../../sql/sqlite/0003_cos_keys.sql")),
    (4, include_str!("../../../sql/sqlite/0004_caller_keys.sql")),
    (5, include_str!("../../../sql/sqlite/0005_remembered_failures.sql")),
    (6, include_str!("../../../sql/sqlite/0006_caller_key_apis.sql")),
    (7, include_str!("../../../sql/sqlite/0007_lease_fence.sql")),
    (8, include_str!("../../../sql/sqlite/0008_api_security.sql")),
];

/// The embedded store.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::new(BACKEND, e)
}

/// A driver error, saying when it means the schema is missing or behind.
fn driver_err(e: rusqlite::Error) -> StoreError {
    let schema = matches!(&e, rusqlite::Error::SqliteFailure(_, Some(m))
        if m.starts_with("no such table") || m.starts_with("no such column"));
    let cause = if schema { super::Cause::Schema } else { super::Cause::Other };
    err(e).with_cause(cause)
}

impl SqliteStore {
    /// Open (or create) the database file at `path`; `:memory:` gives a private in-memory database.
    pub fn open(path: &str) -> StoreResult<Self> {
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        let file = path != ":memory:";
        if file {
            conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
            conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
            // Checkpoints (which copy the log into the database and fsync it) run on a connection of their own,
            // so no request waits behind one on the store's single connection.
            conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(err)?;
        }
        let store = Self { conn: Arc::new(Mutex::new(conn)) };
        if file {
            store.checkpoint_in_background(path);
        }
        Ok(store)
    }

    /// Checkpoint the log every second from a thread with its own connection, for as long as this store lives. A
    /// passive checkpoint never blocks the store's reads or writes.
    fn checkpoint_in_background(&self, path: &str) {
        let alive = Arc::downgrade(&self.conn);
        let path = path.to_owned();
        let spawned = std::thread::Builder::new().name("sqlite-checkpoint".into()).spawn(move || {
            let Ok(c) = Connection::open(&path) else { return };
            let _ = c.busy_timeout(std::time::Duration::from_millis(100));
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                if alive.strong_count() == 0 {
                    return;
                }
                if let Err(e) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::debug!(error = %e, "sqlite checkpoint skipped");
                }
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no checkpoint thread: the write-ahead log is checkpointed on close only");
        }
    }

    async fn call<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        // Waiters take the connection in the order they asked (the lock is fair): under a burst no operation is
        // overtaken again and again, which is what made the embedded store's tail.
        let mut guard = self.conn.clone().lock_owned().await;
        let result =
            tokio::task::spawn_blocking(move || f(&mut guard)).await.map_err(err)?.map_err(driver_err);
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
        lease_gen: r.get(18)?,
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

fn api_security_from_row(r: &Row<'_>) -> rusqlite::Result<ApiSecurityRecord> {
    Ok(ApiSecurityRecord {
        appid: r.get(0)?,
        sym_sn: r.get(1)?,
        key_sn: r.get(2)?,
        secrets: r.get(3)?,
        certs: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
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

#[async_trait::async_trait]
impl super::SchemaStore for SqliteStore {
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

    async fn swap_sealed(&self, field: SealedField<'_>, old: &str, new: &str) -> StoreResult<bool> {
        let (sql, params) = field.swap(old, new);
        let values: Vec<String> = params.into_iter().map(str::to_owned).collect();
        self.call(move |c| Ok(c.execute(&sql, rusqlite::params_from_iter(values.iter()))? == 1)).await
    }
}
