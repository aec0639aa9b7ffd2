//! The one-shot maintenance commands: `invoke`, `migrate`, `import`, `reencrypt`, `purge-sessions`. Each opens what
//! it needs from the configuration, does its one thing and prints one report.

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::startup::{migrated, open_store, service};
use crate::store;
use anyhow::{bail, Context, Result};

/// Handle one event file in-process and print the reply.
pub(super) async fn invoke(config: &Config, file: &std::path::Path) -> Result<()> {
    let event = std::fs::read(file).with_context(|| format!("could not read {}", file.display()))?;
    let svc = service(config, 10).await?;
    let inv = crate::scf::runtime::Invocation {
        request_id: "local-invoke".into(),
        time_limit_ms: None,
        memory_limit_mb: None,
        event,
    };
    let reply = crate::scf::runtime::handle(&svc, &inv).await;
    println!("{}", String::from_utf8_lossy(&reply));
    Ok(())
}

pub(super) async fn migrate(config: &Config) -> Result<()> {
    let store = open_store(config, false).await?;
    let applied = store.schema.migrate().await.context("migration failed")?;
    println!("{}", migrated(&applied, store.backend()));
    Ok(())
}

pub(super) async fn import(config: &Config, from: &str, dry_run: bool) -> Result<()> {
    let store = open_store(config, false).await?;
    let now = SystemClock.now();
    let (kind, report) = crate::import::import(&store, from, dry_run, now).await?;
    println!(
        "{} source ({}){}",
        match kind {
            crate::import::SourceKind::Seed => "seed (WaferOnSCF)",
            crate::import::SourceKind::Original => "original Wafer",
        },
        store::DatabaseUrl::Mysql(from.to_owned()).redacted(),
        if dry_run { ", dry run: nothing written" } else { "" }
    );
    println!("{report}");
    Ok(())
}

pub(super) async fn reencrypt(config: &Config) -> Result<()> {
    if config.master_key.is_none() {
        bail!("set WAFER_MASTER_KEY first: reencrypt seals every secret with it");
    }
    let raw = store::open_raw(&config.database_url, &config.store_options())
        .await
        .context("could not open storage")?;
    let sealer = config.store_options().sealer;
    let n = store::reencrypt::reencrypt(&raw, &sealer).await.context("reencrypt failed")?;
    if n.apps + n.agents + n.cos_keys + n.credentials + n.users == 0 {
        println!("nothing to seal: every stored secret is sealed already");
    } else {
        println!(
            "sealed: {} apps, {} agents, {} COS keys, {} cached credentials, {} users' session keys",
            n.apps, n.agents, n.cos_keys, n.credentials, n.users
        );
    }
    Ok(())
}

pub(super) async fn purge_sessions(config: &Config) -> Result<()> {
    let store = open_store(config, false).await?;
    let n = store.sessions.purge_expired_sessions(SystemClock.now()).await.context("purge failed")?;
    println!("purged {n} expired sessions");
    Ok(())
}
