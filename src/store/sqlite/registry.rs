//! The embedded SQLite store's apps, WeCom agents, COS keys and caller keys.

use super::*;

#[async_trait::async_trait]
impl super::super::RegistryStore for SqliteStore {
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

    async fn get_app(&self, appid: &AppId) -> StoreResult<Option<AppRecord>> {
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

    async fn remove_app(&self, appid: &AppId) -> StoreResult<bool> {
        let appid = appid.to_owned();
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM wafer_sessions WHERE appid = ?1", [&appid])?;
            tx.execute("DELETE FROM wafer_api_security WHERE appid = ?1", [&appid])?;
            let n = tx.execute("DELETE FROM wafer_apps WHERE appid = ?1", [&appid])?;
            tx.commit()?;
            Ok(n > 0)
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

    async fn get_agent(&self, corpid: &CorpId, agentid: &AgentId) -> StoreResult<Option<AgentRecord>> {
        let (corpid, agentid) = (corpid.to_owned(), agentid.to_owned());
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {AGENT_COLUMNS} FROM wafer_agents WHERE corpid = ?1 AND agentid = ?2"),
                params![corpid, agentid],
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

    async fn remove_agent(&self, corpid: &CorpId, agentid: &AgentId) -> StoreResult<bool> {
        let (corpid, agentid) = (corpid.to_owned(), agentid.to_owned());
        self.call(move |c| {
            let n = c.execute(
                "DELETE FROM wafer_agents WHERE corpid = ?1 AND agentid = ?2",
                params![corpid, agentid],
            )?;
            Ok(n > 0)
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

    async fn get_cos_key(&self, appid: &CosAppId) -> StoreResult<Option<CosKeyRecord>> {
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

    async fn remove_cos_key(&self, appid: &CosAppId) -> StoreResult<bool> {
        let appid = appid.to_owned();
        self.call(move |c| Ok(c.execute("DELETE FROM wafer_cos_keys WHERE appid = ?1", [appid])? > 0)).await
    }

    async fn put_api_security(&self, rec: &ApiSecurityRecord) -> StoreResult<()> {
        let r = rec.clone();
        self.call(move |c| {
            c.execute(
                "INSERT INTO wafer_api_security (appid, sym_sn, key_sn, secrets, certs, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(appid) DO UPDATE SET sym_sn = excluded.sym_sn, key_sn = excluded.key_sn,
                   secrets = excluded.secrets, certs = excluded.certs, updated_at = excluded.updated_at",
                params![r.appid, r.sym_sn, r.key_sn, r.secrets, r.certs, r.created_at, r.updated_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_api_security(&self, appid: &AppId) -> StoreResult<Option<ApiSecurityRecord>> {
        let appid = appid.to_owned();
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {API_SECURITY_COLUMNS} FROM wafer_api_security WHERE appid = ?1"),
                [appid],
                api_security_from_row,
            )
            .optional()
        })
        .await
    }

    async fn list_api_security(&self) -> StoreResult<Vec<ApiSecurityRecord>> {
        self.call(|c| {
            let sql = format!("SELECT {API_SECURITY_COLUMNS} FROM wafer_api_security ORDER BY appid");
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map([], api_security_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn remove_api_security(&self, appid: &AppId) -> StoreResult<bool> {
        let appid = appid.to_owned();
        self.call(move |c| Ok(c.execute("DELETE FROM wafer_api_security WHERE appid = ?1", [appid])? > 0))
            .await
    }
}

#[async_trait::async_trait]
impl super::super::KeyStore for SqliteStore {
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
                    crate::store::join_scope(&k.scope_apps),
                    crate::store::join_scope(&k.scope_corps),
                    k.created_at,
                    k.last_used_at,
                    k.revoked_at,
                    crate::store::join_scope(&k.scope_apis)
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
