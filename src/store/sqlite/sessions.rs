//! The embedded SQLite store's sessions: logins (pruning and key rotation in one transaction),
//! reads, touches, profiles and purges.

use super::*;

#[async_trait::async_trait]
impl super::super::SessionStore for SqliteStore {
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

    async fn set_user_info(&self, appid: &AppId, openid: &str, user_info: &str) -> StoreResult<()> {
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

    async fn list_user_session_keys(&self, after: &str, limit: usize) -> StoreResult<Vec<UserSessionKey>> {
        let after = after.to_owned();
        self.call(move |c| {
            let mut st = c.prepare("SELECT id, appid, openid, session_key FROM wafer_sessions WHERE id > ?1 ORDER BY id LIMIT ?2")?;
            let rows = st.query_map(params![after, limit as i64], |r| {
                Ok(UserSessionKey { id: r.get(0)?, appid: r.get(1)?, openid: r.get(2)?, session_key: r.get(3)? })
            })?;
            rows.collect()
        })
        .await
    }

    async fn set_user_session_key(&self, appid: &AppId, openid: &str, session_key: &str) -> StoreResult<()> {
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

    async fn count_sessions(&self, appid: &AppId) -> StoreResult<i64> {
        let appid = appid.to_owned();
        self.call(move |c| {
            c.query_row("SELECT COUNT(*) FROM wafer_sessions WHERE appid = ?1", [appid], |r| r.get(0))
        })
        .await
    }
}
