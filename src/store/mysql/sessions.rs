//! The MySQL store's sessions: logins (pruning and key rotation in one transaction),
//! reads, touches, profiles and purges.

use super::*;

#[async_trait::async_trait]
impl super::super::SessionStore for MysqlStore {
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
                    appid: AppId::from_stored(r.2),
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

    async fn set_user_info(&self, appid: &AppId, openid: &str, user_info: &str) -> StoreResult<()> {
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

    async fn list_user_session_keys(&self, after: &str, limit: usize) -> StoreResult<Vec<UserSessionKey>> {
        self.run(move |mut conn| async move {
            conn.exec_map(
                "SELECT id, appid, openid, session_key FROM wafer_sessions WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit as u64),
                |(id, appid, openid, session_key)| UserSessionKey {
                    id,
                    appid: AppId::from_stored(appid),
                    openid,
                    session_key,
                },
            )
            .await
        })
        .await
    }

    async fn set_user_session_key(&self, appid: &AppId, openid: &str, session_key: &str) -> StoreResult<()> {
        self.run(move |mut conn| async move {
            conn.exec_drop(
                "UPDATE wafer_sessions SET session_key = ? WHERE appid = ? AND openid = ?",
                (session_key, appid, openid),
            )
            .await
        })
        .await
    }

    async fn count_sessions(&self, appid: &AppId) -> StoreResult<i64> {
        self.run(move |mut conn| async move {
            let n: Option<i64> =
                conn.exec_first("SELECT COUNT(*) FROM wafer_sessions WHERE appid = ?", (appid,)).await?;
            Ok(n.unwrap_or(0))
        })
        .await
    }
}

impl MysqlStore {
    pub(super) async fn create_session_once(
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
        // READ COMMITTED is the connection's own level (set when it opens).
        let mut tx = conn.start_transaction(TxOpts::default()).await?;
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
