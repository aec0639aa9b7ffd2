//! The embedded SQLite store's cached tokens and tickets: leases, stored values,
//! remembered failures and budgets.

use super::*;

#[async_trait::async_trait]
impl super::super::CredentialStore for SqliteStore {
    async fn list_credentials(&self) -> StoreResult<Vec<CredentialRow>> {
        self.call(|c| {
            let mut st =
                c.prepare(&format!("SELECT {CRED_COLUMNS} FROM wafer_credentials ORDER BY cred_key"))?;
            let rows = st.query_map([], cred_from_row)?;
            rows.collect()
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

    async fn try_lease(&self, key: &str, owner: &str, now_ms: i64, until: i64) -> StoreResult<Option<i64>> {
        let (key, owner) = (key.to_owned(), owner.to_owned());
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute("INSERT OR IGNORE INTO wafer_credentials (cred_key) VALUES (?1)", [&key])?;
            let fence = tx
                .query_row(
                    "UPDATE wafer_credentials SET lease_owner = ?2, lease_until_ms = ?4, lease_gen = lease_gen + 1
                     WHERE cred_key = ?1 AND (lease_owner IS NULL OR lease_until_ms < ?3 OR lease_owner = ?2)
                     RETURNING lease_gen",
                    params![key, owner, now_ms, until],
                    |r| r.get(0),
                )
                .optional()?;
            tx.commit()?;
            Ok(fence)
        })
        .await
    }

    async fn renew_lease(&self, key: &str, lease: Lease<'_>, until_ms: i64) -> StoreResult<bool> {
        let (key, owner, fence) = (key.to_owned(), lease.owner.to_owned(), lease.fence);
        self.call(move |c| {
            let n = c.execute(
                "UPDATE wafer_credentials SET lease_until_ms = ?4
                 WHERE cred_key = ?1 AND lease_owner = ?2 AND lease_gen = ?3",
                params![key, owner, fence, until_ms],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn put_credential(&self, key: &str, lease: Lease<'_>, f: &NewValue<'_>) -> StoreResult<bool> {
        let (key, owner, fence, value) =
            (key.to_owned(), lease.owner.to_owned(), lease.fence, f.value.to_owned());
        let (expires_at, fetched_at, window) = (f.expires_at, f.fetched_at, f.window_start);
        self.call(move |c| {
            let n = c.execute(
                "UPDATE wafer_credentials SET value = ?3, expires_at = ?4, fetched_at = ?5,
                   window_count = CASE WHEN window_start = ?6 THEN window_count + 1 ELSE 1 END, window_start = ?6,
                   lease_owner = NULL, lease_until_ms = 0, blocked_until = 0, blocked_code = 0,
                   failed_until_ms = 0, failed_count = 0
                 WHERE cred_key = ?1 AND lease_owner = ?2 AND lease_gen = ?7",
                params![key, owner, value, expires_at, fetched_at, window, fence],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn fail_credential(&self, key: &str, lease: Lease<'_>, f: &FailedFetch<'_>) -> StoreResult<()> {
        let (key, owner, fence) = (key.to_owned(), lease.owner.to_owned(), lease.fence);
        let message: String = f.message.chars().take(255).collect();
        let (until, code, count) = (f.until_ms, f.code, f.count);
        self.call(move |c| {
            c.execute(
                "UPDATE wafer_credentials SET failed_until_ms = ?3, failed_code = ?4, failed_message = ?5,
                   failed_count = ?6, lease_owner = NULL, lease_until_ms = 0
                 WHERE cred_key = ?1 AND lease_owner = ?2 AND lease_gen = ?7",
                params![key, owner, until, code, message, count, fence],
            )?;
            Ok(())
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

    async fn take_force_budget(&self, key: &str, b: &crate::store::ForceBudget) -> StoreResult<bool> {
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

    async fn release_lease(&self, key: &str, lease: Lease<'_>) -> StoreResult<()> {
        let (key, owner, fence) = (key.to_owned(), lease.owner.to_owned(), lease.fence);
        self.call(move |c| {
            c.execute(
                "UPDATE wafer_credentials SET lease_owner = NULL, lease_until_ms = 0
                 WHERE cred_key = ?1 AND lease_owner = ?2 AND lease_gen = ?3",
                params![key, owner, fence],
            )?;
            Ok(())
        })
        .await
    }

    async fn block_credential(&self, key: &str, lease: Lease<'_>, until: i64, code: i64) -> StoreResult<()> {
        let (key, owner, fence) = (key.to_owned(), lease.owner.to_owned(), lease.fence);
        self.call(move |c| {
            // The quota refusal is a fact whoever saw it; the lease is released only by its holder.
            c.execute(
                "UPDATE wafer_credentials SET blocked_until = ?3, blocked_code = ?4,
                   lease_until_ms = CASE WHEN lease_owner = ?2 AND lease_gen = ?5 THEN 0 ELSE lease_until_ms END,
                   lease_owner = CASE WHEN lease_owner = ?2 AND lease_gen = ?5 THEN NULL ELSE lease_owner END
                 WHERE cred_key = ?1",
                params![key, owner, until, code, fence],
            )?;
            Ok(())
        })
        .await
    }

    async fn import_credential(&self, key: &str, f: &NewValue<'_>) -> StoreResult<()> {
        let (key, value, expires_at, fetched_at) =
            (key.to_owned(), f.value.to_owned(), f.expires_at, f.fetched_at);
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
}
