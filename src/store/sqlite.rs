//! The embedded backend: SQLite through `rusqlite` (bundled), one connection behind a mutex, calls run on
//! tokio's blocking pool. The zero-setup default; several processes may share the file (WAL, busy timeout).

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
    (1, include_str!("../../sql/sqlite/0001_apps_sessions.sql")),
    (2, include_str!("../../sql/sqlite/0002_credentials_agents.sql")),
    (3, include_str!("../../sql/sqlite/0003_cos_keys.sql")),
    (4, include_str!("../../sql/sqlite/0004_caller_keys.sql")),
    (5, include_str!("../../sql/sqlite/0005_remembered_failures.sql")),
    (6, include_str!("../../sql/sqlite/0006_caller_key_apis.sql")),
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
        let a = app.clone();
        self.call(move |c| {
            c.execute(
                "INSERT INTO wafer_apps (appid, secret, login_duration_secs, session_duration_secs, token_mode, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(appid) DO UPDATE SET secret = excluded.secret,
                   login_duration_secs = excluded.login_duration_secs,
                   session_duration_secs = excluded.session_duration_secs,
                   token_mode = excluded.token_mode, updated_at = excluded.updated_at",
                params![
                    a.appid,
                    a.secret,
                    a.login_duration_secs,
                    a.session_duration_secs,
                    a.token_mode.as_str(),
                    a.created_at,
                    a.updated_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_app(&self, appid: &str) -> StoreResult<Option<AppRecord>> {
        let appid = appid.to_owned();
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {APP_COLUMNS} FROM wafer_apps WHERE appid = ?1"),
                [appid],
                app_from_row,
            )
            .optional()
        })
        .await
    }

    async fn list_apps(&self) -> StoreResult<Vec<AppRecord>> {
        self.call(|c| {
            let mut st = c.prepare(&format!("SELECT {APP_COLUMNS} FROM wafer_apps ORDER BY appid"))?;
            let rows = st.query_map([], app_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn remove_app(&self, appid: &str) -> StoreResult<bool> {
        let appid = appid.to_owned();
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM wafer_sessions WHERE appid = ?1", [&appid])?;
            let n = tx.execute("DELETE FROM wafer_apps WHERE appid = ?1", [&appid])?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    async fn create_session(
        &self,
        session: &SessionRecord,
        keep: usize,
        now: i64,
    ) -> StoreResult<LoginOutcome> {
        let s = session.clone();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let stored: Option<String> = tx
                .query_row("SELECT id FROM wafer_sessions WHERE id = ?1", [&s.id], |r| r.get(0))
                .optional()?;
            if stored.is_some() {
                // This very login was stored by an earlier attempt.
                return Ok(LoginOutcome { existing_user: true, pruned: 0 });
            }
            let existing: i64 = tx.query_row(
                "SELECT COUNT(*) FROM wafer_sessions WHERE appid = ?1 AND openid = ?2",
                params![s.appid, s.openid],
                |r| r.get(0),
            )?;
            tx.execute(
                "UPDATE wafer_sessions SET session_key = ?3 WHERE appid = ?1 AND openid = ?2",
                params![s.appid, s.openid, s.session_key],
            )?;
            tx.execute(
                "DELETE FROM wafer_sessions WHERE appid = ?1 AND openid = ?2 AND id IN (
                   SELECT s.id FROM wafer_sessions s JOIN wafer_apps a ON a.appid = s.appid
                   WHERE s.appid = ?1 AND s.openid = ?2
                     AND (s.created_at + a.login_duration_secs < ?3 OR s.last_visit_at + a.session_duration_secs < ?3))",
                params![s.appid, s.openid, now],
            )?;
            tx.execute(
                "INSERT INTO wafer_sessions (id, skey_hash, appid, openid, unionid, session_key, user_info, created_at, last_visit_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    s.id,
                    s.skey_hash,
                    s.appid,
                    s.openid,
                    s.unionid,
                    s.session_key,
                    s.user_info,
                    s.created_at,
                    s.last_visit_at
                ],
            )?;
            // The new session is always kept (another one created in the same second must not win a tie
            // against it), with the `keep - 1` newest others.
            let pruned = tx.execute(
                "DELETE FROM wafer_sessions WHERE appid = ?1 AND openid = ?2 AND id != ?4 AND id NOT IN (
                   SELECT id FROM wafer_sessions WHERE appid = ?1 AND openid = ?2 AND id != ?4
                   ORDER BY created_at DESC, id DESC LIMIT ?3)",
                params![s.appid, s.openid, keep.saturating_sub(1) as i64, s.id],
            )?;
            tx.commit()?;
            Ok(LoginOutcome { existing_user: existing > 0, pruned })
        })
        .await
    }

    async fn import_session(&self, session: &SessionRecord) -> StoreResult<bool> {
        let s = session.clone();
        self.call(move |c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO wafer_sessions (id, skey_hash, appid, openid, unionid, session_key, user_info, created_at, last_visit_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![s.id, s.skey_hash, s.appid, s.openid, s.unionid, s.session_key, s.user_info, s.created_at, s.last_visit_at],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn get_session(&self, id: &str) -> StoreResult<Option<SessionView>> {
        let id = id.to_owned();
        self.call(move |c| {
            // The hot read: its statement is prepared once per connection.
            c.prepare_cached(
                "SELECT s.id, s.skey_hash, s.appid, s.openid, s.unionid, s.session_key, s.user_info,
                        s.created_at, s.last_visit_at, a.login_duration_secs, a.session_duration_secs
                 FROM wafer_sessions s JOIN wafer_apps a ON a.appid = s.appid WHERE s.id = ?1",
            )?
            .query_row([id], |r| {
                Ok(SessionView {
                    session: SessionRecord {
                        id: r.get(0)?,
                        skey_hash: r.get(1)?,
                        appid: r.get(2)?,
                        openid: r.get(3)?,
                        unionid: r.get(4)?,
                        session_key: r.get(5)?,
                        user_info: r.get(6)?,
                        created_at: r.get(7)?,
                        last_visit_at: r.get(8)?,
                    },
                    login_duration_secs: r.get(9)?,
                    session_duration_secs: r.get(10)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn touch_session(&self, id: &str, now: i64) -> StoreResult<()> {
        let id = id.to_owned();
        self.call(move |c| {
            c.execute(
                "UPDATE wafer_sessions SET last_visit_at = ?2 WHERE id = ?1 AND last_visit_at < ?2",
                params![id, now],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_user_info(&self, appid: &str, openid: &str, user_info: &str) -> StoreResult<()> {
        let (appid, openid, info) = (appid.to_owned(), openid.to_owned(), user_info.to_owned());
        self.call(move |c| {
            c.execute(
                "UPDATE wafer_sessions SET user_info = ?3 WHERE appid = ?1 AND openid = ?2",
                params![appid, openid, info],
            )?;
            Ok(())
        })
        .await
    }

    async fn purge_expired_sessions(&self, now: i64) -> StoreResult<u64> {
        self.call(move |c| {
            let n = c.execute(
                "DELETE FROM wafer_sessions WHERE id IN (
                   SELECT s.id FROM wafer_sessions s LEFT JOIN wafer_apps a ON a.appid = s.appid
                   WHERE a.appid IS NULL
                      OR s.created_at + a.login_duration_secs < ?1
                      OR s.last_visit_at + a.session_duration_secs < ?1)",
                [now],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn list_user_session_keys(
        &self,
        after: &str,
        limit: usize,
    ) -> StoreResult<Vec<(String, String, String, String)>> {
        let after = after.to_owned();
        self.call(move |c| {
            let mut st = c.prepare("SELECT id, appid, openid, session_key FROM wafer_sessions WHERE id > ?1 ORDER BY id LIMIT ?2")?;
            let rows = st.query_map(params![after, limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect()
        })
        .await
    }

    async fn set_user_session_key(&self, appid: &str, openid: &str, session_key: &str) -> StoreResult<()> {
        let (a, o, k) = (appid.to_owned(), openid.to_owned(), session_key.to_owned());
        self.call(move |c| {
            c.execute(
                "UPDATE wafer_sessions SET session_key = ?3 WHERE appid = ?1 AND openid = ?2",
                params![a, o, k],
            )?;
            Ok(())
        })
        .await
    }

    async fn list_credentials(&self) -> StoreResult<Vec<CredentialRow>> {
        self.call(|c| {
            let mut st =
                c.prepare(&format!("SELECT {CRED_COLUMNS} FROM wafer_credentials ORDER BY cred_key"))?;
            let rows = st.query_map([], cred_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn put_agent(&self, agent: &AgentRecord) -> StoreResult<()> {
        let a = agent.clone();
        self.call(move |c| {
            c.execute(
                "INSERT INTO wafer_agents (corpid, agentid, secret, remark, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(corpid, agentid) DO UPDATE SET secret = excluded.secret, remark = excluded.remark,
                   updated_at = excluded.updated_at",
                params![a.corpid, a.agentid, a.secret, a.remark, a.created_at, a.updated_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_agent(&self, corpid: &str, agentid: &str) -> StoreResult<Option<AgentRecord>> {
        let (corpid, agentid) = (corpid.to_owned(), agentid.to_owned());
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {AGENT_COLUMNS} FROM wafer_agents WHERE corpid = ?1 AND agentid = ?2"),
                [corpid, agentid],
                agent_from_row,
            )
            .optional()
        })
        .await
    }

    async fn list_agents(&self) -> StoreResult<Vec<AgentRecord>> {
        self.call(|c| {
            let mut st =
                c.prepare(&format!("SELECT {AGENT_COLUMNS} FROM wafer_agents ORDER BY corpid, agentid"))?;
            let rows = st.query_map([], agent_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn remove_agent(&self, corpid: &str, agentid: &str) -> StoreResult<bool> {
        let (corpid, agentid) = (corpid.to_owned(), agentid.to_owned());
        self.call(move |c| {
            let n =
                c.execute("DELETE FROM wafer_agents WHERE corpid = ?1 AND agentid = ?2", [corpid, agentid])?;
            Ok(n > 0)
        })
        .await
    }

    async fn get_credential(&self, key: &str) -> StoreResult<Option<CredentialRow>> {
        let key = key.to_owned();
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {CRED_COLUMNS} FROM wafer_credentials WHERE cred_key = ?1"),
                [key],
                cred_from_row,
            )
            .optional()
        })
        .await
    }

    async fn try_lease(&self, key: &str, owner: &str, now_ms: i64, until_ms: i64) -> StoreResult<bool> {
        let (key, owner) = (key.to_owned(), owner.to_owned());
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute("INSERT OR IGNORE INTO wafer_credentials (cred_key) VALUES (?1)", [&key])?;
            let n = tx.execute(
                "UPDATE wafer_credentials SET lease_owner = ?2, lease_until_ms = ?4
                 WHERE cred_key = ?1 AND (lease_owner IS NULL OR lease_until_ms < ?3 OR lease_owner = ?2)",
                params![key, owner, now_ms, until_ms],
            )?;
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

    async fn put_credential(&self, key: &str, owner: &str, f: &FetchedCredential<'_>) -> StoreResult<bool> {
        let (key, owner, value) = (key.to_owned(), owner.to_owned(), f.value.to_owned());
        let (expires_at, fetched_at, window) = (f.expires_at, f.fetched_at, f.window_start);
        self.call(move |c| {
            let n = c.execute(
                "UPDATE wafer_credentials SET value = ?3, expires_at = ?4, fetched_at = ?5,
                   window_count = CASE WHEN window_start = ?6 THEN window_count + 1 ELSE 1 END, window_start = ?6,
                   lease_owner = NULL, lease_until_ms = 0, blocked_until = 0, blocked_code = 0,
                   failed_until_ms = 0, failed_count = 0
                 WHERE cred_key = ?1 AND lease_owner = ?2",
                params![key, owner, value, expires_at, fetched_at, window],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn fail_credential(&self, key: &str, owner: &str, f: &FailedFetch<'_>) -> StoreResult<()> {
        let (key, owner) = (key.to_owned(), owner.to_owned());
        let message: String = f.message.chars().take(255).collect();
        let (until, code, count) = (f.until_ms, f.code, f.count);
        self.call(move |c| {
            c.execute(
                "UPDATE wafer_credentials SET failed_until_ms = ?3, failed_code = ?4, failed_message = ?5,
                   failed_count = ?6,
                   lease_until_ms = CASE WHEN lease_owner = ?2 THEN 0 ELSE lease_until_ms END,
                   lease_owner = CASE WHEN lease_owner = ?2 THEN NULL ELSE lease_owner END
                 WHERE cred_key = ?1",
                params![key, owner, until, code, message, count],
            )?;
            Ok(())
        })
        .await
    }

    async fn count_sessions(&self, appid: &str) -> StoreResult<i64> {
        let appid = appid.to_owned();
        self.call(move |c| {
            c.query_row("SELECT COUNT(*) FROM wafer_sessions WHERE appid = ?1", [appid], |r| r.get(0))
        })
        .await
    }

    async fn clear_credential_failures(&self, keys: &[String]) -> StoreResult<()> {
        let keys = keys.to_vec();
        self.call(move |c| {
            for k in &keys {
                c.execute(
                    "UPDATE wafer_credentials SET failed_until_ms = 0, failed_count = 0, blocked_until = 0, blocked_code = 0
                     WHERE cred_key = ?1",
                    [k],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn take_force_budget(&self, key: &str, b: &super::ForceBudget) -> StoreResult<bool> {
        let (key, b) = (key.to_owned(), *b);
        self.call(move |c| {
            c.execute("INSERT OR IGNORE INTO wafer_credentials (cred_key) VALUES (?1)", [&key])?;
            let n = c.execute(
                "UPDATE wafer_credentials SET force_count = CASE WHEN force_day = ?2 THEN force_count + 1 ELSE 1 END,
                   force_day = ?2,
                   force_hour_count = CASE WHEN force_hour = ?4 THEN force_hour_count + 1 ELSE 1 END,
                   force_hour = ?4
                 WHERE cred_key = ?1 AND (force_day <> ?2 OR force_count < ?3)
                   AND (force_hour <> ?4 OR force_hour_count < ?5)",
                params![key, b.day, b.per_day, b.hour, b.per_hour],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn release_lease(&self, key: &str, owner: &str) -> StoreResult<()> {
        let (key, owner) = (key.to_owned(), owner.to_owned());
        self.call(move |c| {
            c.execute(
                "UPDATE wafer_credentials SET lease_owner = NULL, lease_until_ms = 0 WHERE cred_key = ?1 AND lease_owner = ?2",
                [key, owner],
            )?;
            Ok(())
        })
        .await
    }

    async fn block_credential(&self, key: &str, owner: &str, until: i64, code: i64) -> StoreResult<()> {
        let (key, owner) = (key.to_owned(), owner.to_owned());
        self.call(move |c| {
            c.execute(
                "UPDATE wafer_credentials SET blocked_until = ?3, blocked_code = ?4,
                   lease_owner = CASE WHEN lease_owner = ?2 THEN NULL ELSE lease_owner END,
                   lease_until_ms = CASE WHEN lease_owner = ?2 THEN 0 ELSE lease_until_ms END
                 WHERE cred_key = ?1",
                params![key, owner, until, code],
            )?;
            Ok(())
        })
        .await
    }

    async fn import_credential(
        &self,
        key: &str,
        value: &str,
        expires_at: i64,
        fetched_at: i64,
    ) -> StoreResult<()> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.call(move |c| {
            c.execute(
                "INSERT INTO wafer_credentials (cred_key, value, expires_at, fetched_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(cred_key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at,
                   fetched_at = excluded.fetched_at",
                params![key, value, expires_at, fetched_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_credentials(&self, keys: &[String]) -> StoreResult<()> {
        let keys = keys.to_vec();
        self.call(move |c| {
            let tx = c.transaction()?;
            for k in &keys {
                tx.execute("DELETE FROM wafer_credentials WHERE cred_key = ?1", [k])?;
            }
            tx.commit()
        })
        .await
    }

    async fn put_cos_key(&self, key: &CosKeyRecord) -> StoreResult<()> {
        let k = key.clone();
        self.call(move |c| {
            c.execute(
                "INSERT INTO wafer_cos_keys (appid, secret_id, secret_key, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(appid) DO UPDATE SET secret_id = excluded.secret_id, secret_key = excluded.secret_key,
                   updated_at = excluded.updated_at",
                params![k.appid, k.secret_id, k.secret_key, k.created_at, k.updated_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_cos_key(&self, appid: &str) -> StoreResult<Option<CosKeyRecord>> {
        let appid = appid.to_owned();
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {COS_COLUMNS} FROM wafer_cos_keys WHERE appid = ?1"),
                [appid],
                cos_from_row,
            )
            .optional()
        })
        .await
    }

    async fn list_cos_keys(&self) -> StoreResult<Vec<CosKeyRecord>> {
        self.call(|c| {
            let mut st = c.prepare(&format!("SELECT {COS_COLUMNS} FROM wafer_cos_keys ORDER BY appid"))?;
            let rows = st.query_map([], cos_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn remove_cos_key(&self, appid: &str) -> StoreResult<bool> {
        let appid = appid.to_owned();
        self.call(move |c| Ok(c.execute("DELETE FROM wafer_cos_keys WHERE appid = ?1", [appid])? > 0)).await
    }

    async fn add_caller_key(&self, key: &CallerKeyRecord) -> StoreResult<()> {
        let k = key.clone();
        self.call(move |c| {
            c.execute(
                &format!(
                    "INSERT INTO wafer_caller_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                ),
                params![
                    k.name,
                    k.key_hash,
                    k.scope_all as i64,
                    super::join_scope(&k.scope_apps),
                    super::join_scope(&k.scope_corps),
                    k.created_at,
                    k.last_used_at,
                    k.revoked_at,
                    super::join_scope(&k.scope_apis)
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn caller_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<CallerKeyRecord>> {
        let h = key_hash.to_owned();
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {KEY_COLUMNS} FROM wafer_caller_keys WHERE key_hash = ?1"),
                [h],
                key_from_row,
            )
            .optional()
        })
        .await
    }

    async fn list_caller_keys(&self) -> StoreResult<Vec<CallerKeyRecord>> {
        self.call(|c| {
            let mut st = c.prepare(&format!("SELECT {KEY_COLUMNS} FROM wafer_caller_keys ORDER BY name"))?;
            let rows = st.query_map([], key_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn revoke_caller_key(&self, name: &str, now: i64) -> StoreResult<bool> {
        let name = name.to_owned();
        self.call(move |c| {
            Ok(c.execute(
                "UPDATE wafer_caller_keys SET revoked_at = ?2 WHERE name = ?1 AND revoked_at = 0",
                params![name, now],
            )? > 0)
        })
        .await
    }

    async fn touch_caller_key(&self, name: &str, now: i64) -> StoreResult<()> {
        let name = name.to_owned();
        self.call(move |c| {
            c.execute(
                "UPDATE wafer_caller_keys SET last_used_at = ?2 WHERE name = ?1 AND last_used_at < ?2",
                params![name, now],
            )?;
            Ok(())
        })
        .await
    }
}
