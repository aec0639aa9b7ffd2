//! The production backend: MySQL / MariaDB through `mysql_async`. One pool per process, created lazily
//! (no connection is opened before the first query), every operation under a deadline, all SQL parameterised.

use super::breaker::Breaker;
use super::{
    AgentRecord, AppRecord, CallerKeyRecord, CosKeyRecord, CredentialRow, FailedFetch, FetchedCredential,
    LoginOutcome, SessionRecord, SessionView, Store, StoreError, StoreOptions, StoreResult, TokenMode,
    AGENT_COLUMNS, APP_COLUMNS, COS_COLUMNS, CRED_COLUMNS, KEY_COLUMNS,
};
use async_trait::async_trait;
use mysql_async::prelude::*;
use mysql_async::{Conn, IsolationLevel, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, TxOpts};
use std::future::Future;
use std::time::Duration;

const BACKEND: &str = "mysql";

/// Numbered migrations. Each file is split into statements at `;` line ends.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../sql/mysql/0001_apps_sessions.sql")),
    (2, include_str!("../../sql/mysql/0002_credentials_agents.sql")),
    (3, include_str!("../../sql/mysql/0003_cos_keys.sql")),
    (4, include_str!("../../sql/mysql/0004_caller_keys.sql")),
    (5, include_str!("../../sql/mysql/0005_remembered_failures.sql")),
    (6, include_str!("../../sql/mysql/0006_caller_key_apis.sql")),
];

/// Server error codes worth one more try: deadlock, lock wait timeout.
const RETRYABLE: &[u16] = &[1213, 1205];

/// The MySQL store.
#[derive(Clone)]
pub struct MysqlStore {
    pool: Pool,
    timeout: Duration,
    breaker: std::sync::Arc<Breaker>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::new(BACKEND, e)
}

type AppRow = (String, String, i64, i64, String, i64, i64);

fn app_from_row(r: AppRow) -> AppRecord {
    AppRecord {
        appid: r.0,
        secret: r.1,
        login_duration_secs: r.2,
        session_duration_secs: r.3,
        token_mode: TokenMode::parse(&r.4).unwrap_or(TokenMode::Stable),
        created_at: r.5,
        updated_at: r.6,
    }
}

/// Split a migration file into statements: drop `--` comment lines, split at `;`.
fn statements(sql: &str) -> Vec<String> {
    let body: String =
        sql.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
    body.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

impl MysqlStore {
    /// Build the pool. Nothing connects until the first operation.
    pub fn connect(url: &str, opts: &StoreOptions) -> StoreResult<Self> {
        let parsed = Opts::from_url(url).map_err(|e| err(format!("invalid mysql URL: {e}")))?;
        let max = opts.max_connections.max(1);
        let constraints = PoolConstraints::new(0, max).ok_or_else(|| err("bad pool size"))?;
        let pool_opts = PoolOpts::default()
            .with_constraints(constraints)
            // Connections idle longer than this are closed rather than reused: after an SCF freeze
            // or a server-side wait_timeout they may be dead.
            .with_inactive_connection_ttl(Duration::from_secs(30))
            .with_ttl_check_interval(Duration::from_secs(30))
            .with_reset_connection(false);
        let builder =
            OptsBuilder::from_opts(parsed).pool_opts(pool_opts).prefer_socket(false).tcp_nodelay(true).init(
                vec![
                    "SET NAMES utf8mb4 COLLATE utf8mb4_bin",
                    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'",
                ],
            );
        Ok(Self { pool: Pool::new(builder), timeout: opts.query_timeout, breaker: std::sync::Arc::default() })
    }

    /// Run one operation on a pooled connection under the store's deadline.
    ///
    /// A connection-level failure (I/O error, closed connection: what a connection left over from an SCF
    /// freeze or a server `wait_timeout` gives) is retried once on a fresh connection; a deadlock or lock
    /// wait timeout is retried after a random pause until the deadline. Other server errors return at once.
    async fn run<T, F, Fut>(&self, f: F) -> StoreResult<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, mysql_async::Error>>,
    {
        let work = async {
            let mut stale_retries = 0;
            let mut lock_retries = 0;
            loop {
                let result = match self.pool.get_conn().await {
                    Ok(conn) => f(conn).await,
                    Err(e) => Err(e),
                };
                match result {
                    Err(e) if is_connection_error(&e) && stale_retries < 1 => {
                        stale_retries += 1;
                        tracing::debug!(error = %e, "mysql connection failed; retrying on a fresh one");
                    }
                    Err(e) if is_retryable(&e) => {
                        lock_retries += 1;
                        tracing::debug!(error = %e, attempt = lock_retries, "mysql lock conflict; retrying");
                        tokio::time::sleep(jitter(lock_retries)).await;
                    }
                    other => return other,
                }
            }
        };
        if let Err(left) = self.breaker.check() {
            return Err(err(format!("storage timed out repeatedly; failing fast for another {left} ms")));
        }
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => {
                self.breaker.success();
                crate::metrics::storage(BACKEND, r.is_err());
                r.map_err(err)
            }
            Err(_) => {
                crate::metrics::storage(BACKEND, true);
                if self.breaker.timed_out() {
                    tracing::error!(
                        timeouts = super::breaker::TRIP_AFTER,
                        fail_fast_ms = super::breaker::OPEN_MS,
                        "mysql keeps timing out: failing storage operations at once for a while"
                    );
                }
                Err(err(format!("operation exceeded {:?}", self.timeout)))
            }
        }
    }

    async fn create_session_once(
        mut conn: Conn,
        s: &SessionRecord,
        keep: usize,
        now: i64,
    ) -> Result<LoginOutcome, mysql_async::Error> {
        // Logins of one user serialise on a named lock (per appid+openid, not per app: a 9 am burst of
        // different users runs in parallel). The lock dies with the connection if the process does.
        let lock = format!(
            "wafer_login_{}",
            &crate::crypto::sha256_hex(format!("{}\n{}", s.appid, s.openid).as_bytes())[..40]
        );
        let got: Option<i64> = conn.exec_first("SELECT GET_LOCK(?, 5)", (&lock,)).await?;
        if got != Some(1) {
            return Err(mysql_async::Error::Other("timed out waiting for the user's login lock".into()));
        }
        let result = Self::create_session_locked(&mut conn, s, keep, now).await;
        if let Err(e) = conn.exec_drop("DO RELEASE_LOCK(?)", (&lock,)).await {
            // The login is committed (or failed) either way; the lock goes with the connection.
            tracing::warn!(error = %e, "could not release a login lock; the connection will drop it");
            drop(conn.disconnect().await);
        }
        result
    }

    /// The write of one login, free of gap locks so that a burst of logins of neighbouring users cannot
    /// deadlock: READ COMMITTED, one plain read of the user's sessions, and every change by primary key.
    async fn create_session_locked(
        conn: &mut Conn,
        s: &SessionRecord,
        keep: usize,
        now: i64,
    ) -> Result<LoginOutcome, mysql_async::Error> {
        let mut opts = TxOpts::default();
        opts.with_isolation_level(IsolationLevel::ReadCommitted);
        let mut tx = conn.start_transaction(opts).await?;
        // Newest first, each with whether it has expired under its app's rules.
        let rows: Vec<(String, i64)> = tx
            .exec(
                "SELECT s.id, (s.created_at + a.login_duration_secs < ? OR s.last_visit_at + a.session_duration_secs < ?)
                 FROM wafer_sessions s JOIN wafer_apps a ON a.appid = s.appid
                 WHERE s.appid = ? AND s.openid = ?
                 ORDER BY s.created_at DESC, s.id DESC",
                (now, now, &s.appid, &s.openid),
            )
            .await?;
        if rows.iter().any(|(id, _)| *id == s.id) {
            // An earlier attempt of this very login committed before its connection failed: it is stored.
            tx.commit().await?;
            return Ok(LoginOutcome { existing_user: rows.len() > 1, pruned: 0 });
        }
        let (live, expired): (Vec<_>, Vec<_>) = rows.iter().partition(|(_, expired)| *expired == 0);
        let keep_others = keep.saturating_sub(1);
        let pruned = live.len().saturating_sub(keep_others);
        let drop_ids: Vec<&String> =
            expired.iter().map(|(id, _)| id).chain(live.iter().skip(keep_others).map(|(id, _)| id)).collect();
        let kept_ids: Vec<&String> = live.iter().take(keep_others).map(|(id, _)| id).collect();
        if !drop_ids.is_empty() {
            let sql = format!("DELETE FROM wafer_sessions WHERE id IN ({})", placeholders(drop_ids.len()));
            tx.exec_drop(sql, drop_ids).await?;
        }
        if !kept_ids.is_empty() {
            // Every live session of the user decrypts with the newest session_key.
            let sql = format!(
                "UPDATE wafer_sessions SET session_key = ? WHERE id IN ({})",
                placeholders(kept_ids.len())
            );
            let mut params: Vec<mysql_async::Value> = vec![s.session_key.as_str().into()];
            params.extend(kept_ids.iter().map(|id| id.as_str().into()));
            tx.exec_drop(sql, params).await?;
        }
        tx.exec_drop(
            "INSERT INTO wafer_sessions (id, skey_hash, appid, openid, unionid, session_key, user_info, created_at, last_visit_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                &s.id,
                &s.skey_hash,
                &s.appid,
                &s.openid,
                &s.unionid,
                &s.session_key,
                &s.user_info,
                s.created_at,
                s.last_visit_at,
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(LoginOutcome { existing_user: !rows.is_empty(), pruned })
    }
}

/// `?, ?, …` for an `IN` list of `n` parameters.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// A random pause of 5–50 ms (more with each attempt) before retrying a deadlock, so the contenders do not
/// meet again in step.
fn jitter(attempt: u32) -> Duration {
    let mut b = [0u8; 2];
    let r = getrandom::fill(&mut b).map(|_| u16::from_le_bytes(b)).unwrap_or(0) as u64;
    Duration::from_millis(5 + r % (45 * u64::from(attempt.min(4))).max(1))
}

fn is_retryable(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if RETRYABLE.contains(&s.code))
}

fn is_connection_error(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Io(_) | mysql_async::Error::Driver(_))
}

type AgentRow = (String, String, String, String, i64, i64);

fn agent_from_row(r: AgentRow) -> AgentRecord {
    AgentRecord { corpid: r.0, agentid: r.1, secret: r.2, remark: r.3, created_at: r.4, updated_at: r.5 }
}

/// Credential rows have more columns than row tuples convert; read them by position.
fn cred_from_row(mut r: mysql_async::Row) -> Result<CredentialRow, mysql_async::Error> {
    fn take<T: FromValue>(r: &mut mysql_async::Row, i: usize) -> Result<T, mysql_async::Error> {
        r.take_opt(i)
            .unwrap_or_else(|| Err(mysql_async::FromValueError(mysql_async::Value::NULL)))
            .map_err(|e| mysql_async::Error::Other(format!("credential column {i}: {e}").into()))
    }
    Ok(CredentialRow {
        key: take(&mut r, 0)?,
        value: take(&mut r, 1)?,
        expires_at: take(&mut r, 2)?,
        fetched_at: take(&mut r, 3)?,
        lease_owner: take(&mut r, 4)?,
        lease_until_ms: take(&mut r, 5)?,
        blocked_until: take(&mut r, 6)?,
        blocked_code: take(&mut r, 7)?,
        window_start: take(&mut r, 8)?,
        window_count: take(&mut r, 9)?,
        failed_until_ms: take(&mut r, 10)?,
        failed_code: take(&mut r, 11)?,
        failed_message: take(&mut r, 12)?,
        failed_count: take(&mut r, 13)?,
        force_day: take(&mut r, 14)?,
        force_count: take(&mut r, 15)?,
        force_hour: take(&mut r, 16)?,
        force_hour_count: take(&mut r, 17)?,
    })
}

type CosRow = (String, String, String, i64, i64);

fn cos_from_row(r: CosRow) -> CosKeyRecord {
    CosKeyRecord { appid: r.0, secret_id: r.1, secret_key: r.2, created_at: r.3, updated_at: r.4 }
}

type KeyRow = (String, String, i64, String, String, i64, i64, i64, String);

fn key_from_row(r: KeyRow) -> CallerKeyRecord {
    CallerKeyRecord {
        name: r.0,
        key_hash: r.1,
        scope_all: r.2 != 0,
        scope_apps: super::split_scope(&r.3),
        scope_corps: super::split_scope(&r.4),
        created_at: r.5,
        last_used_at: r.6,
        revoked_at: r.7,
        scope_apis: super::split_scope(&r.8),
    }
}

#[async_trait]
impl Store for MysqlStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn migrate(&self) -> StoreResult<Vec<i64>> {
        // DDL is slow on a cold server; migrations get a generous deadline of their own.
        let work = async {
            let mut conn = self.pool.get_conn().await?;
            let got: Option<i64> = conn.exec_first("SELECT GET_LOCK('wafer_scf_migrate', 60)", ()).await?;
            if got != Some(1) {
                return Err(mysql_async::Error::Other("could not take the migration lock".into()));
            }
            let result = async {
                conn.query_drop(
                    "CREATE TABLE IF NOT EXISTS wafer_schema_migrations (version BIGINT NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
                )
                .await?;
                let mut applied = Vec::new();
                for (version, sql) in MIGRATIONS {
                    let done: Option<i64> = conn
                        .exec_first("SELECT version FROM wafer_schema_migrations WHERE version = ?", (version,))
                        .await?;
                    if done.is_some() {
                        continue;
                    }
                    for stmt in statements(sql) {
                        conn.query_drop(stmt).await?;
                    }
                    conn.exec_drop(
                        "INSERT INTO wafer_schema_migrations (version, applied_at) VALUES (?, UNIX_TIMESTAMP())",
                        (version,),
                    )
                    .await?;
                    applied.push(*version);
                }
                Ok(applied)
            }
            .await;
            let _ = conn.query_drop("SELECT RELEASE_LOCK('wafer_scf_migrate')").await;
            result
        };
        match tokio::time::timeout(Duration::from_secs(120), work).await {
            Ok(r) => r.map_err(err),
            Err(_) => Err(err("migration exceeded 120 s")),
        }
    }

    async fn schema_status(&self) -> StoreResult<super::SchemaStatus> {
        let latest = MIGRATIONS.iter().map(|(v, _)| *v).max().unwrap_or(0);
        self.run(move |mut conn| async move {
            let current: Option<i64> =
                match conn.query_first("SELECT COALESCE(MAX(version), 0) FROM wafer_schema_migrations").await
                {
                    Ok(v) => v,
                    // 1146: no such table — nothing was ever migrated here.
                    Err(mysql_async::Error::Server(e)) if e.code == 1146 => Some(0),
                    Err(e) => return Err(e),
                };
            Ok(super::SchemaStatus { current: current.unwrap_or(0), latest })
        })
        .await
    }

    async fn put_app(&self, app: &AppRecord) -> StoreResult<()> {
        self.run(move |mut conn| async move {
            conn.exec_drop(
                "INSERT INTO wafer_apps (appid, secret, login_duration_secs, session_duration_secs, token_mode, created_at, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?)
                 ON DUPLICATE KEY UPDATE secret = VALUES(secret), login_duration_secs = VALUES(login_duration_secs),
                   session_duration_secs = VALUES(session_duration_secs), token_mode = VALUES(token_mode),
                   updated_at = VALUES(updated_at)",
                (
                    &app.appid,
                    &app.secret,
                    app.login_duration_secs,
                    app.session_duration_secs,
                    app.token_mode.as_str(),
                    app.created_at,
                    app.updated_at,
                ),
            )
            .await
        })
        .await
    }

    async fn get_app(&self, appid: &str) -> StoreResult<Option<AppRecord>> {
        self.run(move |mut conn| async move {
            let row: Option<AppRow> = conn
                .exec_first(format!("SELECT {APP_COLUMNS} FROM wafer_apps WHERE appid = ?"), (appid,))
                .await?;
            Ok(row.map(app_from_row))
        })
        .await
    }

    async fn list_apps(&self) -> StoreResult<Vec<AppRecord>> {
        self.run(move |mut conn| async move {
            let rows: Vec<AppRow> =
                conn.query(format!("SELECT {APP_COLUMNS} FROM wafer_apps ORDER BY appid")).await?;
            Ok(rows.into_iter().map(app_from_row).collect())
        })
        .await
    }

    async fn remove_app(&self, appid: &str) -> StoreResult<bool> {
        self.run(move |mut conn| async move {
            let mut tx = conn.start_transaction(TxOpts::default()).await?;
            tx.exec_drop("DELETE FROM wafer_sessions WHERE appid = ?", (appid,)).await?;
            tx.exec_drop("DELETE FROM wafer_apps WHERE appid = ?", (appid,)).await?;
            let n = tx.affected_rows();
            tx.commit().await?;
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
        self.run(move |conn| Self::create_session_once(conn, session, keep, now)).await
    }

    async fn import_session(&self, s: &SessionRecord) -> StoreResult<bool> {
        self.run(move |mut conn| async move {
            conn.exec_drop(
                "INSERT IGNORE INTO wafer_sessions (id, skey_hash, appid, openid, unionid, session_key, user_info, created_at, last_visit_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (&s.id, &s.skey_hash, &s.appid, &s.openid, &s.unionid, &s.session_key, &s.user_info, s.created_at, s.last_visit_at),
            )
            .await?;
            Ok(conn.affected_rows() == 1)
        })
        .await
    }

    async fn get_session(&self, id: &str) -> StoreResult<Option<SessionView>> {
        type Row = (String, String, String, String, String, String, Option<String>, i64, i64, i64, i64);
        self.run(move |mut conn| async move {
            let row: Option<Row> = conn
                .exec_first(
                    "SELECT s.id, s.skey_hash, s.appid, s.openid, s.unionid, s.session_key, s.user_info,
                            s.created_at, s.last_visit_at, a.login_duration_secs, a.session_duration_secs
                     FROM wafer_sessions s JOIN wafer_apps a ON a.appid = s.appid WHERE s.id = ?",
                    (id,),
                )
                .await?;
            Ok(row.map(|r| SessionView {
                session: SessionRecord {
                    id: r.0,
                    skey_hash: r.1,
                    appid: r.2,
                    openid: r.3,
                    unionid: r.4,
                    session_key: r.5,
                    user_info: r.6,
                    created_at: r.7,
                    last_visit_at: r.8,
                },
                login_duration_secs: r.9,
                session_duration_secs: r.10,
            }))
        })
        .await
    }

    async fn touch_session(&self, id: &str, now: i64) -> StoreResult<()> {
        self.run(move |mut conn| async move {
            conn.exec_drop(
                "UPDATE wafer_sessions SET last_visit_at = ? WHERE id = ? AND last_visit_at < ?",
                (now, id, now),
            )
            .await
        })
        .await
    }

    async fn set_user_info(&self, appid: &str, openid: &str, user_info: &str) -> StoreResult<()> {
        self.run(move |mut conn| async move {
            conn.exec_drop(
                "UPDATE wafer_sessions SET user_info = ? WHERE appid = ? AND openid = ?",
                (user_info, appid, openid),
            )
            .await
        })
        .await
    }

    async fn purge_expired_sessions(&self, now: i64) -> StoreResult<u64> {
        self.run(move |mut conn| async move {
            conn.exec_drop(
                "DELETE s FROM wafer_sessions s LEFT JOIN wafer_apps a ON a.appid = s.appid
                 WHERE a.appid IS NULL
                    OR s.created_at + a.login_duration_secs < ?
                    OR s.last_visit_at + a.session_duration_secs < ?",
                (now, now),
            )
            .await?;
            Ok(conn.affected_rows())
        })
        .await
    }

    async fn list_user_session_keys(
        &self,
        after: &str,
        limit: usize,
    ) -> StoreResult<Vec<(String, String, String, String)>> {
        self.run(move |mut conn| async move {
            conn.exec(
                "SELECT id, appid, openid, session_key FROM wafer_sessions WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit as u64),
            )
            .await
        })
        .await
    }

    async fn set_user_session_key(&self, appid: &str, openid: &str, session_key: &str) -> StoreResult<()> {
        self.run(move |mut conn| async move {
            conn.exec_drop(
                "UPDATE wafer_sessions SET session_key = ? WHERE appid = ? AND openid = ?",
                (session_key, appid, openid),
            )
            .await
        })
        .await
    }

    async fn list_credentials(&self) -> StoreResult<Vec<CredentialRow>> {
        self.run(move |mut conn| async move {
            let rows: Vec<mysql_async::Row> =
                conn.query(format!("SELECT {CRED_COLUMNS} FROM wafer_credentials ORDER BY cred_key")).await?;
            rows.into_iter().map(cred_from_row).collect()
        })
        .await
    }

    async fn put_agent(&self, a: &AgentRecord) -> StoreResult<()> {
        self.run(move |mut conn| async move {
            conn.exec_drop(
                "INSERT INTO wafer_agents (corpid, agentid, secret, remark, created_at, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?)
                 ON DUPLICATE KEY UPDATE secret = VALUES(secret), remark = VALUES(remark), updated_at = VALUES(updated_at)",
                (&a.corpid, &a.agentid, &a.secret, &a.remark, a.created_at, a.updated_at),
            )
            .await
        })
        .await
    }

    async fn get_agent(&self, corpid: &str, agentid: &str) -> StoreResult<Option<AgentRecord>> {
        self.run(move |mut conn| async move {
            let row: Option<AgentRow> = conn
                .exec_first(
                    format!("SELECT {AGENT_COLUMNS} FROM wafer_agents WHERE corpid = ? AND agentid = ?"),
                    (corpid, agentid),
                )
                .await?;
            Ok(row.map(agent_from_row))
        })
        .await
    }

    async fn list_agents(&self) -> StoreResult<Vec<AgentRecord>> {
        self.run(move |mut conn| async move {
            let rows: Vec<AgentRow> = conn
                .query(format!("SELECT {AGENT_COLUMNS} FROM wafer_agents ORDER BY corpid, agentid"))
                .await?;
            Ok(rows.into_iter().map(agent_from_row).collect())
        })
        .await
    }

    async fn remove_agent(&self, corpid: &str, agentid: &str) -> StoreResult<bool> {
        self.run(move |mut conn| async move {
            conn.exec_drop("DELETE FROM wafer_agents WHERE corpid = ? AND agentid = ?", (corpid, agentid))
                .await?;
            Ok(conn.affected_rows() > 0)
        })
        .await
    }

    async fn get_credential(&self, key: &str) -> StoreResult<Option<CredentialRow>> {
        self.run(move |mut conn| async move {
            let row: Option<mysql_async::Row> = conn
                .exec_first(
                    format!("SELECT {CRED_COLUMNS} FROM wafer_credentials WHERE cred_key = ?"),
                    (key,),
                )
                .await?;
            row.map(cred_from_row).transpose()
        })
        .await
    }

    async fn try_lease(&self, key: &str, owner: &str, now_ms: i64, until_ms: i64) -> StoreResult<bool> {
        self.run(move |mut conn| async move {
            conn.exec_drop("INSERT IGNORE INTO wafer_credentials (cred_key) VALUES (?)", (key,)).await?;
            // A single-row conditional UPDATE is atomic: exactly one contender sees one affected row.
            conn.exec_drop(
                "UPDATE wafer_credentials SET lease_owner = ?, lease_until_ms = ?
                 WHERE cred_key = ? AND (lease_owner IS NULL OR lease_until_ms < ? OR lease_owner = ?)",
                (owner, until_ms, key, now_ms, owner),
            )
            .await?;
            Ok(conn.affected_rows() == 1)
        })
        .await
    }

    async fn put_credential(&self, key: &str, owner: &str, f: &FetchedCredential<'_>) -> StoreResult<bool> {
        self.run(move |mut conn| async move {
            // MySQL evaluates SET left to right: window_count reads the old window_start.
            conn.exec_drop(
                "UPDATE wafer_credentials SET value = ?, expires_at = ?, fetched_at = ?,
                   window_count = CASE WHEN window_start = ? THEN window_count + 1 ELSE 1 END, window_start = ?,
                   lease_owner = NULL, lease_until_ms = 0, blocked_until = 0, blocked_code = 0,
                   failed_until_ms = 0, failed_count = 0
                 WHERE cred_key = ? AND lease_owner = ?",
                (f.value, f.expires_at, f.fetched_at, f.window_start, f.window_start, key, owner),
            )
            .await?;
            Ok(conn.affected_rows() == 1)
        })
        .await
    }

    async fn fail_credential(&self, key: &str, owner: &str, f: &FailedFetch<'_>) -> StoreResult<()> {
        let message: String = f.message.chars().take(255).collect();
        self.run(move |mut conn| {
            let message = message.clone();
            async move {
                conn.exec_drop(
                    "UPDATE wafer_credentials SET failed_until_ms = ?, failed_code = ?, failed_message = ?,
                       failed_count = ?,
                       lease_until_ms = CASE WHEN lease_owner = ? THEN 0 ELSE lease_until_ms END,
                       lease_owner = CASE WHEN lease_owner = ? THEN NULL ELSE lease_owner END
                     WHERE cred_key = ?",
                    (f.until_ms, f.code, message, f.count, owner, owner, key),
                )
                .await
            }
        })
        .await
    }

    async fn count_sessions(&self, appid: &str) -> StoreResult<i64> {
        self.run(move |mut conn| async move {
            let n: Option<i64> =
                conn.exec_first("SELECT COUNT(*) FROM wafer_sessions WHERE appid = ?", (appid,)).await?;
            Ok(n.unwrap_or(0))
        })
        .await
    }

    async fn clear_credential_failures(&self, keys: &[String]) -> StoreResult<()> {
        self.run(move |mut conn| async move {
            for k in keys {
                conn.exec_drop(
                    "UPDATE wafer_credentials SET failed_until_ms = 0, failed_count = 0, blocked_until = 0, blocked_code = 0
                     WHERE cred_key = ?",
                    (k,),
                )
                .await?;
            }
            Ok(())
        })
        .await
    }

    async fn take_force_budget(&self, key: &str, b: &super::ForceBudget) -> StoreResult<bool> {
        let b = *b;
        self.run(move |mut conn| async move {
            conn.exec_drop("INSERT IGNORE INTO wafer_credentials (cred_key) VALUES (?)", (key,)).await?;
            // MySQL evaluates SET left to right: each count reads its old window start.
            conn.exec_drop(
                "UPDATE wafer_credentials SET force_count = CASE WHEN force_day = ? THEN force_count + 1 ELSE 1 END,
                   force_day = ?,
                   force_hour_count = CASE WHEN force_hour = ? THEN force_hour_count + 1 ELSE 1 END,
                   force_hour = ?
                 WHERE cred_key = ? AND (force_day <> ? OR force_count < ?) AND (force_hour <> ? OR force_hour_count < ?)",
                (b.day, b.day, b.hour, b.hour, key, b.day, b.per_day, b.hour, b.per_hour),
            )
            .await?;
            Ok(conn.affected_rows() == 1)
        })
        .await
    }

    async fn release_lease(&self, key: &str, owner: &str) -> StoreResult<()> {
        self.run(move |mut conn| async move {
            conn.exec_drop(
                "UPDATE wafer_credentials SET lease_owner = NULL, lease_until_ms = 0 WHERE cred_key = ? AND lease_owner = ?",
                (key, owner),
            )
            .await
        })
        .await
    }

    async fn block_credential(&self, key: &str, owner: &str, until: i64, code: i64) -> StoreResult<()> {
        self.run(move |mut conn| async move {
            conn.exec_drop(
                "UPDATE wafer_credentials SET blocked_until = ?, blocked_code = ?,
                   lease_until_ms = CASE WHEN lease_owner = ? THEN 0 ELSE lease_until_ms END,
                   lease_owner = CASE WHEN lease_owner = ? THEN NULL ELSE lease_owner END
                 WHERE cred_key = ?",
                (until, code, owner, owner, key),
            )
            .await
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
        self.run(move |mut conn| async move {
            conn.exec_drop(
                "INSERT INTO wafer_credentials (cred_key, value, expires_at, fetched_at) VALUES (?, ?, ?, ?)
                 ON DUPLICATE KEY UPDATE value = VALUES(value), expires_at = VALUES(expires_at), fetched_at = VALUES(fetched_at)",
                (key, value, expires_at, fetched_at),
            )
            .await
        })
        .await
    }

    async fn delete_credentials(&self, keys: &[String]) -> StoreResult<()> {
        self.run(move |mut conn| async move {
            for k in keys {
                conn.exec_drop("DELETE FROM wafer_credentials WHERE cred_key = ?", (k,)).await?;
            }
            Ok(())
        })
        .await
    }

    async fn put_cos_key(&self, k: &CosKeyRecord) -> StoreResult<()> {
        self.run(move |mut conn| async move {
            conn.exec_drop(
                "INSERT INTO wafer_cos_keys (appid, secret_id, secret_key, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
                 ON DUPLICATE KEY UPDATE secret_id = VALUES(secret_id), secret_key = VALUES(secret_key), updated_at = VALUES(updated_at)",
                (&k.appid, &k.secret_id, &k.secret_key, k.created_at, k.updated_at),
            )
            .await
        })
        .await
    }

    async fn get_cos_key(&self, appid: &str) -> StoreResult<Option<CosKeyRecord>> {
        self.run(move |mut conn| async move {
            let row: Option<CosRow> = conn
                .exec_first(format!("SELECT {COS_COLUMNS} FROM wafer_cos_keys WHERE appid = ?"), (appid,))
                .await?;
            Ok(row.map(cos_from_row))
        })
        .await
    }

    async fn list_cos_keys(&self) -> StoreResult<Vec<CosKeyRecord>> {
        self.run(move |mut conn| async move {
            let rows: Vec<CosRow> =
                conn.query(format!("SELECT {COS_COLUMNS} FROM wafer_cos_keys ORDER BY appid")).await?;
            Ok(rows.into_iter().map(cos_from_row).collect())
        })
        .await
    }

    async fn remove_cos_key(&self, appid: &str) -> StoreResult<bool> {
        self.run(move |mut conn| async move {
            conn.exec_drop("DELETE FROM wafer_cos_keys WHERE appid = ?", (appid,)).await?;
            Ok(conn.affected_rows() > 0)
        })
        .await
    }

    async fn add_caller_key(&self, k: &CallerKeyRecord) -> StoreResult<()> {
        let (apps, corps, apis) = (
            super::join_scope(&k.scope_apps),
            super::join_scope(&k.scope_corps),
            super::join_scope(&k.scope_apis),
        );
        let (apps, corps, apis) = (&apps, &corps, &apis);
        self.run(move |mut conn| async move {
            conn.exec_drop(
                format!("INSERT INTO wafer_caller_keys ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                (
                    &k.name,
                    &k.key_hash,
                    k.scope_all as i64,
                    apps,
                    corps,
                    k.created_at,
                    k.last_used_at,
                    k.revoked_at,
                    apis,
                ),
            )
            .await
        })
        .await
    }

    async fn caller_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<CallerKeyRecord>> {
        self.run(move |mut conn| async move {
            let row: Option<KeyRow> = conn
                .exec_first(
                    format!("SELECT {KEY_COLUMNS} FROM wafer_caller_keys WHERE key_hash = ?"),
                    (key_hash,),
                )
                .await?;
            Ok(row.map(key_from_row))
        })
        .await
    }

    async fn list_caller_keys(&self) -> StoreResult<Vec<CallerKeyRecord>> {
        self.run(move |mut conn| async move {
            let rows: Vec<KeyRow> =
                conn.query(format!("SELECT {KEY_COLUMNS} FROM wafer_caller_keys ORDER BY name")).await?;
            Ok(rows.into_iter().map(key_from_row).collect())
        })
        .await
    }

    async fn revoke_caller_key(&self, name: &str, now: i64) -> StoreResult<bool> {
        self.run(move |mut conn| async move {
            conn.exec_drop(
                "UPDATE wafer_caller_keys SET revoked_at = ? WHERE name = ? AND revoked_at = 0",
                (now, name),
            )
            .await?;
            Ok(conn.affected_rows() > 0)
        })
        .await
    }

    async fn touch_caller_key(&self, name: &str, now: i64) -> StoreResult<()> {
        self.run(move |mut conn| async move {
            conn.exec_drop(
                "UPDATE wafer_caller_keys SET last_used_at = ? WHERE name = ? AND last_used_at < ?",
                (now, name, now),
            )
            .await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::statements;

    #[test]
    fn migration_files_split_into_statements() {
        let st = statements(super::MIGRATIONS[0].1);
        assert_eq!(st.len(), 2);
        assert!(st[0].starts_with("CREATE TABLE IF NOT EXISTS wafer_apps"));
    }
}
