//! The production backend: MySQL / MariaDB through `mysql_async`. One pool per process, created lazily
//! (no connection is opened before the first query), every operation under a deadline, all SQL parameterised.

mod credentials;
mod registry;
mod sessions;

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
    (1, include_str!("../../../sql/mysql/0001_apps_sessions.sql")),
    (2, include_str!("../../../sql/mysql/0002_credentials_agents.sql")),
    (3, include_str!("../../../sql/mysql/0003_cos_keys.sql")),
    (4, include_str!("../../../sql/mysql/0004_caller_keys.sql")),
    (5, include_str!("../../../sql/mysql/0005_remembered_failures.sql")),
    (6, include_str!("../../../sql/mysql/0006_caller_key_apis.sql")),
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
        MysqlStore::put_app(self, app).await
    }

    async fn get_app(&self, appid: &str) -> StoreResult<Option<AppRecord>> {
        MysqlStore::get_app(self, appid).await
    }

    async fn list_apps(&self) -> StoreResult<Vec<AppRecord>> {
        MysqlStore::list_apps(self).await
    }

    async fn remove_app(&self, appid: &str) -> StoreResult<bool> {
        MysqlStore::remove_app(self, appid).await
    }

    async fn create_session(
        &self,
        session: &SessionRecord,
        keep: usize,
        now: i64,
    ) -> StoreResult<LoginOutcome> {
        MysqlStore::create_session(self, session, keep, now).await
    }

    async fn import_session(&self, s: &SessionRecord) -> StoreResult<bool> {
        MysqlStore::import_session(self, s).await
    }

    async fn get_session(&self, id: &str) -> StoreResult<Option<SessionView>> {
        MysqlStore::get_session(self, id).await
    }

    async fn touch_session(&self, id: &str, now: i64) -> StoreResult<()> {
        MysqlStore::touch_session(self, id, now).await
    }

    async fn set_user_info(&self, appid: &str, openid: &str, user_info: &str) -> StoreResult<()> {
        MysqlStore::set_user_info(self, appid, openid, user_info).await
    }

    async fn purge_expired_sessions(&self, now: i64) -> StoreResult<u64> {
        MysqlStore::purge_expired_sessions(self, now).await
    }

    async fn list_user_session_keys(
        &self,
        after: &str,
        limit: usize,
    ) -> StoreResult<Vec<(String, String, String, String)>> {
        MysqlStore::list_user_session_keys(self, after, limit).await
    }

    async fn set_user_session_key(&self, appid: &str, openid: &str, session_key: &str) -> StoreResult<()> {
        MysqlStore::set_user_session_key(self, appid, openid, session_key).await
    }

    async fn list_credentials(&self) -> StoreResult<Vec<CredentialRow>> {
        MysqlStore::list_credentials(self).await
    }

    async fn put_agent(&self, a: &AgentRecord) -> StoreResult<()> {
        MysqlStore::put_agent(self, a).await
    }

    async fn get_agent(&self, corpid: &str, agentid: &str) -> StoreResult<Option<AgentRecord>> {
        MysqlStore::get_agent(self, corpid, agentid).await
    }

    async fn list_agents(&self) -> StoreResult<Vec<AgentRecord>> {
        MysqlStore::list_agents(self).await
    }

    async fn remove_agent(&self, corpid: &str, agentid: &str) -> StoreResult<bool> {
        MysqlStore::remove_agent(self, corpid, agentid).await
    }

    async fn get_credential(&self, key: &str) -> StoreResult<Option<CredentialRow>> {
        MysqlStore::get_credential(self, key).await
    }

    async fn try_lease(&self, key: &str, owner: &str, now_ms: i64, until_ms: i64) -> StoreResult<bool> {
        MysqlStore::try_lease(self, key, owner, now_ms, until_ms).await
    }

    async fn put_credential(&self, key: &str, owner: &str, f: &FetchedCredential<'_>) -> StoreResult<bool> {
        MysqlStore::put_credential(self, key, owner, f).await
    }

    async fn fail_credential(&self, key: &str, owner: &str, f: &FailedFetch<'_>) -> StoreResult<()> {
        MysqlStore::fail_credential(self, key, owner, f).await
    }

    async fn count_sessions(&self, appid: &str) -> StoreResult<i64> {
        MysqlStore::count_sessions(self, appid).await
    }

    async fn clear_credential_failures(&self, keys: &[String]) -> StoreResult<()> {
        MysqlStore::clear_credential_failures(self, keys).await
    }

    async fn take_force_budget(&self, key: &str, b: &super::ForceBudget) -> StoreResult<bool> {
        MysqlStore::take_force_budget(self, key, b).await
    }

    async fn release_lease(&self, key: &str, owner: &str) -> StoreResult<()> {
        MysqlStore::release_lease(self, key, owner).await
    }

    async fn block_credential(&self, key: &str, owner: &str, until: i64, code: i64) -> StoreResult<()> {
        MysqlStore::block_credential(self, key, owner, until, code).await
    }

    async fn import_credential(
        &self,
        key: &str,
        value: &str,
        expires_at: i64,
        fetched_at: i64,
    ) -> StoreResult<()> {
        MysqlStore::import_credential(self, key, value, expires_at, fetched_at).await
    }

    async fn delete_credentials(&self, keys: &[String]) -> StoreResult<()> {
        MysqlStore::delete_credentials(self, keys).await
    }

    async fn put_cos_key(&self, k: &CosKeyRecord) -> StoreResult<()> {
        MysqlStore::put_cos_key(self, k).await
    }

    async fn get_cos_key(&self, appid: &str) -> StoreResult<Option<CosKeyRecord>> {
        MysqlStore::get_cos_key(self, appid).await
    }

    async fn list_cos_keys(&self) -> StoreResult<Vec<CosKeyRecord>> {
        MysqlStore::list_cos_keys(self).await
    }

    async fn remove_cos_key(&self, appid: &str) -> StoreResult<bool> {
        MysqlStore::remove_cos_key(self, appid).await
    }

    async fn add_caller_key(&self, k: &CallerKeyRecord) -> StoreResult<()> {
        MysqlStore::add_caller_key(self, k).await
    }

    async fn caller_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<CallerKeyRecord>> {
        MysqlStore::caller_key_by_hash(self, key_hash).await
    }

    async fn list_caller_keys(&self) -> StoreResult<Vec<CallerKeyRecord>> {
        MysqlStore::list_caller_keys(self).await
    }

    async fn revoke_caller_key(&self, name: &str, now: i64) -> StoreResult<bool> {
        MysqlStore::revoke_caller_key(self, name, now).await
    }

    async fn touch_caller_key(&self, name: &str, now: i64) -> StoreResult<()> {
        MysqlStore::touch_caller_key(self, name, now).await
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
