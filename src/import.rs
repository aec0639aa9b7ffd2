//! Migration from the seed (WaferOnSCF) or the original Wafer session server: reads their MySQL `cAuth` tables and
//! writes apps, WeCom agents, live sessions (legacy `uuid`/`skey` keep working) and still-valid cached tokens and
//! tickets into the configured store. Idempotent; bad rows are skipped and counted, never fatal.

use crate::crypto;
use crate::ids::{AgentId, AppId, CorpId};
use crate::registry::Outcome;
use crate::store::{FetchedCredential, SessionRecord, Storage, TokenMode};
use crate::tokens::{CredKey, CredKind};
use anyhow::{Context, Result};
use base64::Engine;
use mysql_async::prelude::*;

/// Seed and original Wafer store local times of Asia/Shanghai (UTC+8, no daylight saving).
const SHANGHAI_OFFSET: i64 = 8 * 3600;
/// The seed never stored the agent ticket's lifetime; WeCom tickets live 7200 s.
const AGENT_TICKET_LIFETIME: i64 = 7200;

/// Which schema the source database has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// WaferOnSCF: multi-app, cached tokens, WeCom agents.
    Seed,
    /// Tencent's original Wafer session server: one app, no `appid`/`union_id` on sessions.
    Original,
}

/// What an import did (or, in a dry run, would do).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub apps_new: usize,
    pub apps_updated: usize,
    pub apps_unchanged: usize,
    pub agents_new: usize,
    pub agents_updated: usize,
    pub agents_unchanged: usize,
    pub sessions_new: usize,
    pub sessions_existing: usize,
    pub credentials_new: usize,
    pub credentials_unchanged: usize,
    pub credentials_expired: usize,
    /// Rows skipped as unusable, with the reason counted per kind.
    pub skipped: std::collections::BTreeMap<&'static str, usize>,
}

impl Report {
    fn skip(&mut self, why: &'static str) {
        *self.skipped.entry(why).or_default() += 1;
    }

    /// Rows written (or that would be written).
    pub fn written(&self) -> usize {
        self.apps_new
            + self.apps_updated
            + self.agents_new
            + self.agents_updated
            + self.sessions_new
            + self.credentials_new
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "apps: {} new, {} updated, {} unchanged",
            self.apps_new, self.apps_updated, self.apps_unchanged
        )?;
        writeln!(
            f,
            "agents: {} new, {} updated, {} unchanged",
            self.agents_new, self.agents_updated, self.agents_unchanged
        )?;
        writeln!(f, "sessions: {} new, {} already present", self.sessions_new, self.sessions_existing)?;
        writeln!(
            f,
            "cached tokens/tickets: {} new, {} unchanged, {} expired (not imported)",
            self.credentials_new, self.credentials_unchanged, self.credentials_expired
        )?;
        let skipped: usize = self.skipped.values().sum();
        write!(f, "skipped rows: {skipped}")?;
        for (why, n) in &self.skipped {
            write!(f, "\n  {why}: {n}")?;
        }
        Ok(())
    }
}

/// Parse a local `YYYY-MM-DD HH:MM:SS` (Asia/Shanghai) into Unix seconds.
pub fn parse_local_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once([' ', 'T'])?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.split('.').next()?;
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next().unwrap_or(Some(0))?);
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || hh > 23
        || mm > 59
        || ss > 60
    {
        return None;
    }
    let days = crate::clock::days_from_civil(y, m, day);
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss - SHANGHAI_OFFSET)
}

fn token_ok(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic())
}

async fn columns(conn: &mut mysql_async::Conn, table: &str) -> Result<Vec<String>> {
    conn.exec(
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
        (table,),
    )
    .await
    .with_context(|| format!("could not read the columns of {table}"))
}

/// A credential to import if still valid and not already identical.
/// Where imported rows go: the store, whether this is a dry run, and the current time.
#[derive(Clone, Copy)]
struct ImportTarget<'a> {
    store: &'a Storage,
    dry_run: bool,
    now: i64,
}

async fn credential(
    t: ImportTarget<'_>,
    report: &mut Report,
    key: CredKey,
    value: Option<String>,
    fetched_at: Option<i64>,
    lifetime: i64,
) -> Result<()> {
    let ImportTarget { store, dry_run, now } = t;
    let (Some(value), Some(fetched_at)) = (value.filter(|v| !v.is_empty()), fetched_at) else {
        return Ok(());
    };
    if value.len() > 2048 {
        report.skip("over-long token or ticket");
        return Ok(());
    }
    let expires_at = fetched_at + lifetime;
    if expires_at <= now + 60 {
        report.credentials_expired += 1;
        return Ok(());
    }
    let k = key.to_string();
    let existing = store.credentials.get_credential(&k).await.context("could not read cached credentials")?;
    if existing.as_ref().and_then(|r| r.value.as_deref()) == Some(value.as_str()) {
        report.credentials_unchanged += 1;
        return Ok(());
    }
    if !dry_run {
        store
            .credentials
            .import_credential(
                &k,
                &FetchedCredential { value: &value, expires_at, fetched_at, window_start: 0 },
            )
            .await
            .context("could not store a cached credential")?;
    }
    report.credentials_new += 1;
    Ok(())
}

/// Import from the source database at `from` into `store`. With `dry_run`, count without writing.
pub async fn import(store: &Storage, from: &str, dry_run: bool, now: i64) -> Result<(SourceKind, Report)> {
    let pool = mysql_async::Pool::new(mysql_async::Opts::from_url(from).context("invalid --from URL")?);
    let result = import_from(store, &pool, dry_run, now).await;
    let _ = pool.disconnect().await;
    result
}

type AppRow = (String, Option<String>, Option<i64>, Option<i64>, Option<String>, Option<i64>, Option<String>);
type AgentRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
);
type SessionRow = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

async fn import_from(
    store: &Storage,
    pool: &mysql_async::Pool,
    dry_run: bool,
    now: i64,
) -> Result<(SourceKind, Report)> {
    let mut conn = pool.get_conn().await.context("could not connect to the source database")?;
    let app_cols = columns(&mut conn, "cAppinfo").await?;
    if app_cols.is_empty() {
        anyhow::bail!("the source database has no cAppinfo table: is this a Wafer / WaferOnSCF database?");
    }
    let session_cols = columns(&mut conn, "cSessionInfo").await?;
    let kind =
        if session_cols.iter().any(|c| c == "appid") { SourceKind::Seed } else { SourceKind::Original };
    let has_tokens = app_cols.iter().any(|c| c == "access_token");
    let mut report = Report::default();
    let target = ImportTarget { store, dry_run, now };
    let registry = crate::registry::Registry { store, creds: None, now, dry_run };

    // Apps. Imported apps use classic tokens: their callers already hold classic tokens.
    let token_cols =
        if has_tokens { "access_token, expires_in, CAST(update_time AS CHAR)" } else { "NULL, NULL, NULL" };
    let apps: Vec<AppRow> = conn
        .query(format!(
            "SELECT appid, secret, login_duration, session_duration, {token_cols} FROM cAppinfo ORDER BY appid"
        ))
        .await
        .context("could not read cAppinfo")?;
    let mut app_ids = Vec::new();
    for (appid, secret, login_days, session_secs, token, expires_in, updated) in apps {
        let Some(secret) = secret.filter(|s| !s.is_empty() && s.len() <= 512) else {
            report.skip("app without a usable secret");
            continue;
        };
        let Ok(appid) = appid.parse::<AppId>() else {
            report.skip("over-long or malformed appid");
            continue;
        };
        app_ids.push(appid.clone());
        let login = login_days.filter(|d| *d > 0).unwrap_or(30) * 86_400;
        let idle = session_secs.filter(|s| *s > 0).unwrap_or(crate::store::DEFAULT_SESSION_DURATION_SECS);
        let changes = crate::registry::AppChanges {
            secret: Some(crate::crypto::Secret::new(secret)),
            login_duration_secs: Some(login),
            session_duration_secs: Some(idle),
            token_mode: None,
        };
        // Callers of the seed hold classic tokens: new apps keep that mode.
        match registry
            .put_app(&appid, &changes, TokenMode::Classic)
            .await
            .context("could not store an app")?
            .outcome
        {
            Outcome::Added => report.apps_new += 1,
            Outcome::Updated => report.apps_updated += 1,
            Outcome::Unchanged => report.apps_unchanged += 1,
        }
        let fetched = updated.as_deref().and_then(parse_local_time);
        let lifetime = expires_in.unwrap_or(7200).clamp(0, 7200);
        credential(target, &mut report, CredKey::app(CredKind::MpToken, &appid), token, fetched, lifetime)
            .await?;
    }

    // WeCom agents (seed only).
    if !columns(&mut conn, "cAppinfo_work").await?.is_empty() {
        let agents: Vec<AgentRow> = conn
            .query(
                "SELECT corpid, CAST(agentid AS CHAR), agentsecret, remark, access_token, expires_in, CAST(update_time AS CHAR),
                        ticket, ticket_expires_in, CAST(ticket_update_time AS CHAR), agent_ticket, CAST(agent_update_time AS CHAR)
                 FROM cAppinfo_work ORDER BY corpid, agentid",
            )
            .await
            .context("could not read cAppinfo_work")?;
        for (
            corpid,
            agentid,
            secret,
            remark,
            token,
            token_exp,
            token_at,
            ticket,
            ticket_exp,
            ticket_at,
            agent_ticket,
            agent_at,
        ) in agents
        {
            let Some(secret) = secret.filter(|s| !s.is_empty() && s.len() <= 512) else {
                report.skip("agent without a usable secret");
                continue;
            };
            let (Ok(corpid), Ok(agentid)) = (corpid.parse::<CorpId>(), agentid.parse::<AgentId>()) else {
                report.skip("over-long or malformed corpid/agentid");
                continue;
            };
            let remark: String = remark.unwrap_or_default().chars().take(255).collect();
            let changes = crate::registry::AgentChanges {
                secret: Some(crate::crypto::Secret::new(secret)),
                remark: Some(remark),
            };
            match registry
                .put_agent(&corpid, &agentid, &changes)
                .await
                .context("could not store an agent")?
                .outcome
            {
                Outcome::Added => report.agents_new += 1,
                Outcome::Updated => report.agents_updated += 1,
                Outcome::Unchanged => report.agents_unchanged += 1,
            }
            let ticket_life = ticket_exp.unwrap_or(7200).clamp(0, 7200);
            let key = |k| CredKey::agent(k, &corpid, &agentid);
            let tok_at = token_at.as_deref().and_then(parse_local_time);
            credential(
                target,
                &mut report,
                key(CredKind::WcToken),
                token,
                tok_at,
                token_exp.unwrap_or(7200).clamp(0, 7200),
            )
            .await?;
            let t_at = ticket_at.as_deref().and_then(parse_local_time);
            credential(target, &mut report, key(CredKind::WcCorpTicket), ticket, t_at, ticket_life).await?;
            let a_at = agent_at.as_deref().and_then(parse_local_time);
            credential(
                target,
                &mut report,
                key(CredKind::WcAgentTicket),
                agent_ticket,
                a_at,
                AGENT_TICKET_LIFETIME.min(ticket_life.max(1)),
            )
            .await?;
        }
    }

    // Sessions. The original server has one app and no appid column.
    let (appid_col, union_col) = match kind {
        SourceKind::Seed => ("appid", "union_id"),
        SourceKind::Original => ("NULL", "NULL"),
    };
    let only_app = match (kind, app_ids.as_slice()) {
        (SourceKind::Original, [one]) => Some(one.clone()),
        _ => None,
    };
    let mut after: i64 = 0;
    loop {
        let rows: Vec<(i64, SessionRow)> = conn
            .exec::<(i64, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>), _, _>(
                format!(
                    "SELECT id, uuid, skey, CAST(create_time AS CHAR), CAST(last_visit_time AS CHAR), open_id, session_key,
                            user_info, {union_col}, {appid_col} FROM cSessionInfo WHERE id > ? ORDER BY id LIMIT 1000"
                ),
                (after,),
            )
            .await
            .context("could not read cSessionInfo")?
            .into_iter()
            .map(|r| (r.0, (r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9)))
            .collect();
        let Some(last) = rows.last() else { break };
        after = last.0;
        for (_, (uuid, skey, created, visited, openid, session_key, user_info, unionid, appid)) in rows {
            let appid = appid.or_else(|| only_app.as_ref().map(AppId::to_string)).unwrap_or_default();
            let (Some(uuid), Some(skey), Some(openid), Some(session_key)) = (uuid, skey, openid, session_key)
            else {
                report.skip("session with missing fields");
                continue;
            };
            let Ok(appid) = appid.parse::<AppId>() else {
                report.skip("over-long or malformed session identifiers");
                continue;
            };
            if !token_ok(&uuid, 100) || !token_ok(&skey, 128) || openid.is_empty() || openid.len() > 128 {
                report.skip("over-long or malformed session identifiers");
                continue;
            }
            if session_key.len() > 256 || unionid.as_ref().is_some_and(|u| u.len() > 128) {
                report.skip("over-long session values");
                continue;
            }
            if !app_ids.contains(&appid) {
                report.skip("session of an unknown app");
                continue;
            }
            let (Some(created_at), Some(last_visit_at)) = (
                created.as_deref().and_then(parse_local_time),
                visited.as_deref().or(created.as_deref()).and_then(parse_local_time),
            ) else {
                report.skip("unparseable date");
                continue;
            };
            let user_info = match user_info.filter(|u| !u.trim().is_empty()) {
                None => None,
                Some(b64) => {
                    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
                        report.skip("invalid base64 user_info");
                        continue;
                    };
                    match serde_json::from_slice::<serde_json::Value>(&bytes) {
                        Ok(v) if v.is_object() => Some(v.to_string()),
                        _ => {
                            report.skip("user_info is not a JSON object");
                            continue;
                        }
                    }
                }
            };
            let record = SessionRecord {
                id: uuid,
                skey_hash: crypto::sha256_hex(skey.as_bytes()),
                appid,
                openid,
                unionid: unionid.unwrap_or_default(),
                session_key,
                user_info,
                created_at,
                last_visit_at: last_visit_at.max(created_at),
            };
            let inserted = if dry_run {
                store.sessions.get_session(&record.id).await.context("could not read sessions")?.is_none()
            } else {
                store.sessions.import_session(&record).await.context("could not store a session")?
            };
            if inserted {
                report.sessions_new += 1;
            } else {
                report.sessions_existing += 1;
            }
        }
    }
    Ok((kind, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shanghai_local_times_convert_to_unix() {
        // 2024-01-01 08:00:00 in Shanghai is midnight UTC.
        assert_eq!(parse_local_time("2024-01-01 08:00:00"), Some(1_704_067_200));
        assert_eq!(parse_local_time("2024-01-01T08:00:00.000"), Some(1_704_067_200));
        assert_eq!(parse_local_time("2024-02-29 23:59:59"), Some(1_709_222_399));
        assert_eq!(parse_local_time("0000-00-00 00:00:00"), None);
        assert_eq!(parse_local_time("2024-13-01 00:00:00"), None);
        assert_eq!(parse_local_time("yesterday"), None);
        assert_eq!(parse_local_time(""), None);
    }
}
