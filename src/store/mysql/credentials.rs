//! The MySQL store's cached tokens and tickets: leases, stored values,
//! remembered failures and budgets.

use super::*;

#[async_trait::async_trait]
impl super::super::CredentialStore for MysqlStore {
    async fn list_credentials(&self) -> StoreResult<Vec<CredentialRow>> {
        self.run(move |mut conn| async move {
            let rows: Vec<mysql_async::Row> =
                conn.query(format!("SELECT {CRED_COLUMNS} FROM wafer_credentials ORDER BY cred_key")).await?;
            rows.into_iter().map(cred_from_row).collect()
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

    async fn try_lease(&self, key: &str, owner: &str, now_ms: i64, until: i64) -> StoreResult<Option<i64>> {
        self.run(move |mut conn| async move {
            conn.exec_drop("INSERT IGNORE INTO wafer_credentials (cred_key) VALUES (?)", (key,)).await?;
            // A single-row conditional UPDATE is atomic: exactly one contender sees one affected row. The new
            // generation comes back in the reply itself (LAST_INSERT_ID(expr)), with no second statement.
            conn.exec_drop(
                "UPDATE wafer_credentials SET lease_owner = ?, lease_until_ms = ?,
                   lease_gen = LAST_INSERT_ID(lease_gen + 1)
                 WHERE cred_key = ? AND (lease_owner IS NULL OR lease_until_ms < ? OR lease_owner = ?)",
                (owner, until, key, now_ms, owner),
            )
            .await?;
            Ok((conn.affected_rows() == 1).then(|| conn.last_insert_id().unwrap_or(0) as i64))
        })
        .await
    }

    async fn renew_lease(&self, key: &str, lease: Lease<'_>, until_ms: i64) -> StoreResult<bool> {
        self.run(move |mut conn| async move {
            conn.exec_drop(
                "UPDATE wafer_credentials SET lease_until_ms = ?
                 WHERE cred_key = ? AND lease_owner = ? AND lease_gen = ?",
                (until_ms, key, lease.owner, lease.fence),
            )
            .await?;
            // An unchanged row (the same deadline twice in one millisecond) still matched: ask the server.
            Ok(conn.affected_rows() == 1 || Self::holds(&mut conn, key, lease).await?)
        })
        .await
    }

    async fn put_credential(&self, key: &str, lease: Lease<'_>, f: &NewValue<'_>) -> StoreResult<bool> {
        self.run(move |mut conn| async move {
            // MySQL evaluates SET left to right: window_count reads the old window_start.
            conn.exec_drop(
                "UPDATE wafer_credentials SET value = ?, expires_at = ?, fetched_at = ?,
                   window_count = CASE WHEN window_start = ? THEN window_count + 1 ELSE 1 END, window_start = ?,
                   lease_owner = NULL, lease_until_ms = 0, blocked_until = 0, blocked_code = 0,
                   failed_until_ms = 0, failed_count = 0
                 WHERE cred_key = ? AND lease_owner = ? AND lease_gen = ?",
                (f.value, f.expires_at, f.fetched_at, f.window_start, f.window_start, key, lease.owner, lease.fence),
            )
            .await?;
            Ok(conn.affected_rows() == 1)
        })
        .await
    }

    async fn fail_credential(&self, key: &str, lease: Lease<'_>, f: &FailedFetch<'_>) -> StoreResult<()> {
        let message: String = f.message.chars().take(255).collect();
        self.run(move |mut conn| {
            let message = message.clone();
            async move {
                conn.exec_drop(
                    "UPDATE wafer_credentials SET failed_until_ms = ?, failed_code = ?, failed_message = ?,
                       failed_count = ?, lease_owner = NULL, lease_until_ms = 0
                     WHERE cred_key = ? AND lease_owner = ? AND lease_gen = ?",
                    (f.until_ms, f.code, message, f.count, key, lease.owner, lease.fence),
                )
                .await
            }
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

    async fn take_force_budget(&self, key: &str, b: &crate::store::ForceBudget) -> StoreResult<bool> {
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

    async fn release_lease(&self, key: &str, lease: Lease<'_>) -> StoreResult<()> {
        self.run(move |mut conn| async move {
            conn.exec_drop(
                "UPDATE wafer_credentials SET lease_owner = NULL, lease_until_ms = 0
                 WHERE cred_key = ? AND lease_owner = ? AND lease_gen = ?",
                (key, lease.owner, lease.fence),
            )
            .await
        })
        .await
    }

    async fn block_credential(&self, key: &str, lease: Lease<'_>, until: i64, code: i64) -> StoreResult<()> {
        self.run(move |mut conn| async move {
            // The quota refusal is a fact whoever saw it; the lease is released only by its holder.
            conn.exec_drop(
                "UPDATE wafer_credentials SET blocked_until = ?, blocked_code = ?,
                   lease_until_ms = CASE WHEN lease_owner = ? AND lease_gen = ? THEN 0 ELSE lease_until_ms END,
                   lease_owner = CASE WHEN lease_owner = ? AND lease_gen = ? THEN NULL ELSE lease_owner END
                 WHERE cred_key = ?",
                (until, code, lease.owner, lease.fence, lease.owner, lease.fence, key),
            )
            .await
        })
        .await
    }

    async fn import_credential(&self, key: &str, f: &NewValue<'_>) -> StoreResult<()> {
        let (value, expires_at, fetched_at) = (f.value, f.expires_at, f.fetched_at);
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
}

impl MysqlStore {
    /// Whether `lease` is the one held on `key` now.
    async fn holds(
        conn: &mut mysql_async::Conn,
        key: &str,
        lease: Lease<'_>,
    ) -> Result<bool, mysql_async::Error> {
        let n: Option<i64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM wafer_credentials WHERE cred_key = ? AND lease_owner = ? AND lease_gen = ?",
                (key, lease.owner, lease.fence),
            )
            .await?;
        Ok(n == Some(1))
    }
}
