//! The production backend: MySQL / MariaDB through `mysql_async`. One pool per process, created lazily
//! (no connection is opened before the first query), every operation under a deadline, all SQL parameterised.

mod credentials;
mod registry;
mod sessions;

use super::breaker::Breaker;
use super::{
    AgentId, AgentRecord, ApiSecurityRecord, AppId, AppRecord, CallerKeyRecord, CorpId, CosAppId,
    CosKeyRecord, CredentialRow, FailedFetch, Lease, LoginOutcome, NewValue, SealedField, SessionRecord,
    SessionView, StoreError, StoreOptions, StoreResult, TokenMode, UserSessionKey, AGENT_COLUMNS,
    API_SECURITY_COLUMNS, APP_COLUMNS, COS_COLUMNS, CRED_COLUMNS, KEY_COLUMNS,
};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, TxOpts};
use std::future::Future;
use std::time::Duration;

const BACKEND: &str = "mysql";

/// Identifiers are bound as their text.
macro_rules! bind_as_text {
    ($($t:ty),*) => {$(
        impl From<&$t> for mysql_async::Value {
            fn from(id: &$t) -> Self {
                id.as_str().into()
            }
        }
    )*};
}
bind_as_text!(AppId, CorpId, AgentId, CosAppId);

/// Numbered migrations. Each file is split into statements at `;` line ends.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../../sql/mysql/0001_apps_sessions.sql")),
    (2, include_str!("../../../sql/mysql/0002_credentials_agents.sql")),
    (3, include_str!("../../../sql/mysql/0003_cos_keys.sql")),
    (4, include_str!("../../../sql/mysql/0004_caller_keys.sql")),
    (5, include_str!("../../../sql/mysql/0005_remembered_failures.sql")),
    (6, include_str!("../../../sql/mysql/0006_caller_key_apis.sql")),
    (7, include_str!("../../../sql/mysql/0007_lease_fence.sql")),
    (8, include_str!("../../../sql/mysql/0008_api_security.sql")),
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

/// A driver error, with what kept the server from answering when that is what it says.
fn driver_err(e: mysql_async::Error) -> StoreError {
    use mysql_async::{Error, IoError};
    let cause = match &e {
        Error::Server(s) if matches!(s.code, 1044 | 1045 | 1698) => super::Cause::Auth,
        Error::Server(s) if s.code == 1049 => super::Cause::UnknownDatabase,
        Error::Server(s) if matches!(s.code, 1146 | 1054) => super::Cause::Schema,
        Error::Io(IoError::Io(io)) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => super::Cause::Refused,
            std::io::ErrorKind::TimedOut => super::Cause::Timeout,
            _ => super::Cause::Other,
        },
        Error::Io(IoError::Tls(_)) => super::Cause::Tls,
        _ => super::Cause::Other,
    };
    err(e).with_cause(cause)
}

type AppRow = (String, String, i64, i64, String, i64, i64);

fn app_from_row(r: AppRow) -> AppRecord {
    AppRecord {
        appid: AppId::from_stored(r.0),
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
                    // Logins run READ COMMITTED (no gap locks between neighbouring users); set once per
                    // connection rather than by a statement before every transaction.
                    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
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
            return Err(err(format!("storage timed out repeatedly; failing fast for another {left} ms"))
                .with_cause(super::Cause::Timeout));
        }
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => {
                self.breaker.success();
                crate::metrics::storage(BACKEND, r.is_err());
                r.map_err(driver_err)
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
                Err(err(format!("operation exceeded {:?}", self.timeout)).with_cause(super::Cause::Timeout))
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
    AgentRecord {
        corpid: CorpId::from_stored(r.0),
        agentid: AgentId::from_stored(r.1),
        secret: r.2,
        remark: r.3,
        created_at: r.4,
        updated_at: r.5,
    }
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
        lease_gen: take(&mut r, 18)?,
    })
}

type CosRow = (String, String, String, i64, i64);

fn cos_from_row(r: CosRow) -> CosKeyRecord {
    CosKeyRecord {
        appid: CosAppId::from_stored(r.0),
        secret_id: r.1,
        secret_key: r.2,
        created_at: r.3,
        updated_at: r.4,
    }
}

type ApiSecurityRow = (String, String, String, String, String, i64, i64);

fn api_security_from_row(r: ApiSecurityRow) -> ApiSecurityRecord {
    ApiSecurityRecord {
        appid: AppId::from_stored(r.0),
        sym_sn: r.1,
        key_sn: r.2,
        secrets: r.3,
        certs: r.4,
        created_at: r.5,
        updated_at: r.6,
    }
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

#[async_trait::async_trait]
impl super::SchemaStore for MysqlStore {
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

    async fn swap_sealed(&self, field: SealedField<'_>, old: &str, new: &str) -> StoreResult<bool> {
        let (sql, params) = field.swap(old, new);
        self.run(move |mut conn| {
            let params = params.iter().map(|p| mysql_async::Value::from(*p)).collect();
            let sql = sql.clone();
            async move {
                conn.exec_drop(sql, mysql_async::Params::Positional(params)).await?;
                Ok(conn.affected_rows() == 1)
            }
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
