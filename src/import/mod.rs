//! Migration from the seed (WaferOnSCF) or the original Wafer session server: reads their MySQL `cAuth` tables and
//! writes apps, WeCom agents, live sessions (legacy `uuid`/`skey` keep working) and still-valid cached tokens and
//! tickets into the configured store. Idempotent; bad rows are skipped and counted, never fatal.

mod source;

use crate::store::{NewValue, Storage};
use crate::tokens::CredKey;
use anyhow::{Context, Result};
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
            .import_credential(&k, &NewValue { value: &value, expires_at, fetched_at, window_start: 0 })
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
    let app_ids = source::import_apps(&mut conn, target, has_tokens, &mut report).await?;
    if !columns(&mut conn, "cAppinfo_work").await?.is_empty() {
        source::import_agents(&mut conn, target, &mut report).await?;
    }
    source::import_sessions(&mut conn, target, kind, &app_ids, &mut report).await?;
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
