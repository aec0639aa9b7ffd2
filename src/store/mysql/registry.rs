//! The MySQL store's apps, WeCom agents, COS keys and caller keys.

use super::*;

#[async_trait::async_trait]
impl super::super::RegistryStore for MysqlStore {
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

    async fn get_app(&self, appid: &AppId) -> StoreResult<Option<AppRecord>> {
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

    async fn remove_app(&self, appid: &AppId) -> StoreResult<bool> {
        self.run(move |mut conn| async move {
            let mut tx = conn.start_transaction(TxOpts::default()).await?;
            tx.exec_drop("DELETE FROM wafer_sessions WHERE appid = ?", (appid,)).await?;
            tx.exec_drop("DELETE FROM wafer_api_security WHERE appid = ?", (appid,)).await?;
            tx.exec_drop("DELETE FROM wafer_apps WHERE appid = ?", (appid,)).await?;
            let n = tx.affected_rows();
            tx.commit().await?;
            Ok(n > 0)
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

    async fn get_agent(&self, corpid: &CorpId, agentid: &AgentId) -> StoreResult<Option<AgentRecord>> {
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

    async fn remove_agent(&self, corpid: &CorpId, agentid: &AgentId) -> StoreResult<bool> {
        self.run(move |mut conn| async move {
            conn.exec_drop("DELETE FROM wafer_agents WHERE corpid = ? AND agentid = ?", (corpid, agentid))
                .await?;
            Ok(conn.affected_rows() > 0)
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

    async fn get_cos_key(&self, appid: &CosAppId) -> StoreResult<Option<CosKeyRecord>> {
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

    async fn remove_cos_key(&self, appid: &CosAppId) -> StoreResult<bool> {
        self.run(move |mut conn| async move {
            conn.exec_drop("DELETE FROM wafer_cos_keys WHERE appid = ?", (appid,)).await?;
            Ok(conn.affected_rows() > 0)
        })
        .await
    }

    async fn put_api_security(&self, r: &ApiSecurityRecord) -> StoreResult<()> {
        self.run(move |mut conn| async move {
            conn.exec_drop(
                "INSERT INTO wafer_api_security (appid, sym_sn, key_sn, secrets, certs, created_at, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?)
                 ON DUPLICATE KEY UPDATE sym_sn = VALUES(sym_sn), key_sn = VALUES(key_sn), secrets = VALUES(secrets),
                   certs = VALUES(certs), updated_at = VALUES(updated_at)",
                (&r.appid, &r.sym_sn, &r.key_sn, &r.secrets, &r.certs, r.created_at, r.updated_at),
            )
            .await
        })
        .await
    }

    async fn get_api_security(&self, appid: &AppId) -> StoreResult<Option<ApiSecurityRecord>> {
        self.run(move |mut conn| async move {
            let sql = format!("SELECT {API_SECURITY_COLUMNS} FROM wafer_api_security WHERE appid = ?");
            let row: Option<ApiSecurityRow> = conn.exec_first(sql, (appid,)).await?;
            Ok(row.map(api_security_from_row))
        })
        .await
    }

    async fn list_api_security(&self) -> StoreResult<Vec<ApiSecurityRecord>> {
        self.run(move |mut conn| async move {
            let sql = format!("SELECT {API_SECURITY_COLUMNS} FROM wafer_api_security ORDER BY appid");
            let rows: Vec<ApiSecurityRow> = conn.query(sql).await?;
            Ok(rows.into_iter().map(api_security_from_row).collect())
        })
        .await
    }

    async fn remove_api_security(&self, appid: &AppId) -> StoreResult<bool> {
        self.run(move |mut conn| async move {
            conn.exec_drop("DELETE FROM wafer_api_security WHERE appid = ?", (appid,)).await?;
            Ok(conn.affected_rows() > 0)
        })
        .await
    }
}

#[async_trait::async_trait]
impl super::super::KeyStore for MysqlStore {
    async fn add_caller_key(&self, k: &CallerKeyRecord) -> StoreResult<()> {
        let (apps, corps, apis) = (
            crate::store::join_scope(&k.scope_apps),
            crate::store::join_scope(&k.scope_corps),
            crate::store::join_scope(&k.scope_apis),
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
