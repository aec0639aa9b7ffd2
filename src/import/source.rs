//! Reading the source database: its apps, WeCom agents and sessions, row by row, each checked and written through
//! the registry or the session store (or only counted, in a dry run).

use super::{
    credential, parse_local_time, token_ok, ImportTarget, Report, SourceKind, AGENT_TICKET_LIFETIME,
};
use crate::crypto;
use crate::ids::{AgentId, AppId, CorpId};
use crate::registry::Outcome;
use crate::store::{SessionRecord, TokenMode};
use crate::tokens::{CredKey, CredKind};
use anyhow::{Context, Result};
use base64::Engine;
use mysql_async::prelude::*;

/// One row of `cAppinfo` (token columns only where the source has them).
struct AppRow {
    appid: String,
    secret: Option<String>,
    login_days: Option<i64>,
    session_secs: Option<i64>,
    token: Option<String>,
    expires_in: Option<i64>,
    updated: Option<String>,
}

/// One row of the seed's `cAppinfo_work`.
struct AgentRow {
    corpid: String,
    agentid: String,
    secret: Option<String>,
    remark: Option<String>,
    token: Option<String>,
    token_exp: Option<i64>,
    token_at: Option<String>,
    ticket: Option<String>,
    ticket_exp: Option<i64>,
    ticket_at: Option<String>,
    agent_ticket: Option<String>,
    agent_at: Option<String>,
}

/// One row of `cSessionInfo` (`unionid` and `appid` from the seed only).
struct SessionRow {
    uuid: Option<String>,
    skey: Option<String>,
    created: Option<String>,
    visited: Option<String>,
    openid: Option<String>,
    session_key: Option<String>,
    user_info: Option<String>,
    unionid: Option<String>,
    appid: Option<String>,
}

/// A column of a source row by name: NULL (or a type that does not convert) as `None`.
fn col<T: FromValue>(r: &mut mysql_async::Row, name: &str) -> Option<T> {
    r.take_opt::<Option<T>, &str>(name).and_then(Result::ok).flatten()
}

/// Apps, with their cached tokens. Imported apps use classic tokens: their callers already hold classic tokens.
/// Returns the appids imported (sessions of other apps are skipped).
pub(super) async fn import_apps(
    conn: &mut mysql_async::Conn,
    target: ImportTarget<'_>,
    has_tokens: bool,
    report: &mut Report,
) -> Result<Vec<AppId>> {
    let registry = crate::registry::Registry {
        store: target.store,
        creds: None,
        now: target.now,
        dry_run: target.dry_run,
    };
    let token_cols = if has_tokens {
        "access_token AS token, expires_in, CAST(update_time AS CHAR) AS updated"
    } else {
        "NULL AS token, NULL AS expires_in, NULL AS updated"
    };
    let rows: Vec<mysql_async::Row> = conn
        .query(format!(
            "SELECT appid, secret, login_duration, session_duration, {token_cols} FROM cAppinfo ORDER BY appid"
        ))
        .await
        .context("could not read cAppinfo")?;
    let mut app_ids = Vec::new();
    for mut r in rows {
        let row = AppRow {
            appid: col(&mut r, "appid").unwrap_or_default(),
            secret: col(&mut r, "secret"),
            login_days: col(&mut r, "login_duration"),
            session_secs: col(&mut r, "session_duration"),
            token: col(&mut r, "token"),
            expires_in: col(&mut r, "expires_in"),
            updated: col(&mut r, "updated"),
        };
        let Some(secret) = row.secret.filter(|s| !s.is_empty() && s.len() <= 512) else {
            report.skip("app without a usable secret");
            continue;
        };
        let Ok(appid) = row.appid.parse::<AppId>() else {
            report.skip("over-long or malformed appid");
            continue;
        };
        app_ids.push(appid.clone());
        let login = row.login_days.filter(|d| *d > 0).unwrap_or(30) * 86_400;
        let idle = row.session_secs.filter(|s| *s > 0).unwrap_or(crate::store::DEFAULT_SESSION_DURATION_SECS);
        let changes = crate::registry::AppChanges {
            secret: Some(crate::crypto::Secret::new(secret)),
            login_duration_secs: Some(login),
            session_duration_secs: Some(idle),
            token_mode: None,
        };
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
        let fetched = row.updated.as_deref().and_then(parse_local_time);
        let lifetime = row.expires_in.unwrap_or(7200).clamp(0, 7200);
        credential(target, report, CredKey::app(CredKind::MpToken, &appid), row.token, fetched, lifetime)
            .await?;
    }
    Ok(app_ids)
}

/// WeCom agents (the seed only), with their cached token and tickets.
pub(super) async fn import_agents(
    conn: &mut mysql_async::Conn,
    target: ImportTarget<'_>,
    report: &mut Report,
) -> Result<()> {
    let registry = crate::registry::Registry {
        store: target.store,
        creds: None,
        now: target.now,
        dry_run: target.dry_run,
    };
    let rows: Vec<mysql_async::Row> = conn
        .query(
            "SELECT corpid, CAST(agentid AS CHAR) AS agentid, agentsecret, remark, access_token, expires_in,
                    CAST(update_time AS CHAR) AS token_at, ticket, ticket_expires_in,
                    CAST(ticket_update_time AS CHAR) AS ticket_at, agent_ticket,
                    CAST(agent_update_time AS CHAR) AS agent_at
             FROM cAppinfo_work ORDER BY corpid, agentid",
        )
        .await
        .context("could not read cAppinfo_work")?;
    for mut r in rows {
        let row = AgentRow {
            corpid: col(&mut r, "corpid").unwrap_or_default(),
            agentid: col(&mut r, "agentid").unwrap_or_default(),
            secret: col(&mut r, "agentsecret"),
            remark: col(&mut r, "remark"),
            token: col(&mut r, "access_token"),
            token_exp: col(&mut r, "expires_in"),
            token_at: col(&mut r, "token_at"),
            ticket: col(&mut r, "ticket"),
            ticket_exp: col(&mut r, "ticket_expires_in"),
            ticket_at: col(&mut r, "ticket_at"),
            agent_ticket: col(&mut r, "agent_ticket"),
            agent_at: col(&mut r, "agent_at"),
        };
        let Some(secret) = row.secret.filter(|s| !s.is_empty() && s.len() <= 512) else {
            report.skip("agent without a usable secret");
            continue;
        };
        let (Ok(corpid), Ok(agentid)) = (row.corpid.parse::<CorpId>(), row.agentid.parse::<AgentId>()) else {
            report.skip("over-long or malformed corpid/agentid");
            continue;
        };
        let remark: String = row.remark.unwrap_or_default().chars().take(255).collect();
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
        let key = |k| CredKey::agent(k, &corpid, &agentid);
        let at = |t: &Option<String>| t.as_deref().and_then(parse_local_time);
        let token_life = row.token_exp.unwrap_or(7200).clamp(0, 7200);
        let ticket_life = row.ticket_exp.unwrap_or(7200).clamp(0, 7200);
        credential(target, report, key(CredKind::WcToken), row.token, at(&row.token_at), token_life).await?;
        credential(target, report, key(CredKind::WcCorpTicket), row.ticket, at(&row.ticket_at), ticket_life)
            .await?;
        let agent_life = AGENT_TICKET_LIFETIME.min(ticket_life.max(1));
        credential(
            target,
            report,
            key(CredKind::WcAgentTicket),
            row.agent_ticket,
            at(&row.agent_at),
            agent_life,
        )
        .await?;
    }
    Ok(())
}

/// Live sessions of the imported apps, a page at a time. The original server has one app and no appid column.
pub(super) async fn import_sessions(
    conn: &mut mysql_async::Conn,
    target: ImportTarget<'_>,
    kind: SourceKind,
    app_ids: &[AppId],
    report: &mut Report,
) -> Result<()> {
    let ImportTarget { store, dry_run, .. } = target;
    let (appid_col, union_col) = match kind {
        SourceKind::Seed => ("appid", "union_id"),
        SourceKind::Original => ("NULL", "NULL"),
    };
    let only_app = match (kind, app_ids) {
        (SourceKind::Original, [one]) => Some(one.clone()),
        _ => None,
    };
    let mut after: i64 = 0;
    loop {
        let rows: Vec<mysql_async::Row> = conn
            .exec(
                format!(
                    "SELECT id, uuid, skey, CAST(create_time AS CHAR) AS created, CAST(last_visit_time AS CHAR) AS visited,
                            open_id, session_key, user_info, {union_col} AS unionid, {appid_col} AS appid
                     FROM cSessionInfo WHERE id > ? ORDER BY id LIMIT 1000"
                ),
                (after,),
            )
            .await
            .context("could not read cSessionInfo")?;
        let Some(last) = rows.last().and_then(|r| r.get::<i64, _>("id")) else { break };
        after = last;
        for mut r in rows {
            let row = SessionRow {
                uuid: col(&mut r, "uuid"),
                skey: col(&mut r, "skey"),
                created: col(&mut r, "created"),
                visited: col(&mut r, "visited"),
                openid: col(&mut r, "open_id"),
                session_key: col(&mut r, "session_key"),
                user_info: col(&mut r, "user_info"),
                unionid: col(&mut r, "unionid"),
                appid: col(&mut r, "appid"),
            };
            let Some(record) = session_record(row, only_app.as_ref(), app_ids, report) else { continue };
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
    Ok(())
}

/// The session a source row holds, or why it is skipped (counted in `report`).
fn session_record(
    row: SessionRow,
    only_app: Option<&AppId>,
    app_ids: &[AppId],
    report: &mut Report,
) -> Option<SessionRecord> {
    let SessionRow { uuid, skey, created, visited, openid, session_key, user_info, unionid, appid } = row;
    let appid = appid.or_else(|| only_app.map(AppId::to_string)).unwrap_or_default();
    let (Some(uuid), Some(skey), Some(openid), Some(session_key)) = (uuid, skey, openid, session_key) else {
        report.skip("session with missing fields");
        return None;
    };
    let Ok(appid) = appid.parse::<AppId>() else {
        report.skip("over-long or malformed session identifiers");
        return None;
    };
    if !token_ok(&uuid, 100) || !token_ok(&skey, 128) || openid.is_empty() || openid.len() > 128 {
        report.skip("over-long or malformed session identifiers");
        return None;
    }
    if session_key.len() > 256 || unionid.as_ref().is_some_and(|u| u.len() > 128) {
        report.skip("over-long session values");
        return None;
    }
    if !app_ids.contains(&appid) {
        report.skip("session of an unknown app");
        return None;
    }
    let (Some(created_at), Some(last_visit_at)) = (
        created.as_deref().and_then(parse_local_time),
        visited.as_deref().or(created.as_deref()).and_then(parse_local_time),
    ) else {
        report.skip("unparseable date");
        return None;
    };
    let user_info = match user_info.filter(|u| !u.trim().is_empty()) {
        None => None,
        Some(b64) => {
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
                report.skip("invalid base64 user_info");
                return None;
            };
            match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(v) if v.is_object() => Some(v.to_string()),
                _ => {
                    report.skip("user_info is not a JSON object");
                    return None;
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
    Some(record)
}
