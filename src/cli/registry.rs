//! The registry and status commands: each turns its arguments into one admin operation (local, or through a server
//! with `--server`) and prints the answer — never a secret.

use super::{AgentCommand, AppCommand, AppFields, CosCommand, KeyCommand};
use crate::admin::{AdminApi, ChangeInfo};
use crate::config::Config;
use crate::registry::{AgentChanges, AppChanges, KeyScope, Outcome};
use crate::startup::admin_api;
use crate::store::TokenMode;
use anyhow::{bail, Context, Result};
use secrecy::{ExposeSecret, SecretString};
use std::io::Read;

fn read_secret(arg: &SecretString, what: &str) -> Result<String> {
    let arg = arg.expose_secret();
    let s = if arg == "-" && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        // Typed by a person: no echo, nothing in the terminal's scrollback.
        rpassword::prompt_password(format!("{what}: "))
            .context("could not read the secret")?
            .trim()
            .to_owned()
    } else if arg == "-" {
        let mut buf = String::new();
        std::io::stdin().read_to_string(&mut buf).context("could not read the secret from stdin")?;
        buf.trim().to_owned()
    } else {
        arg.trim().to_owned()
    };
    if s.is_empty() || s.len() > 512 {
        bail!("{what} must be 1 to 512 characters");
    }
    Ok(s)
}

fn app_changes(f: AppFields) -> Result<(String, AppChanges)> {
    let changes = AppChanges {
        secret: f.secret.map(|s| read_secret(&s, "the secret")).transpose()?,
        login_duration_secs: f.login_duration_days.map(|d| i64::from(d) * 86_400),
        session_duration_secs: f.session_duration_secs.map(i64::from),
        token_mode: f.token_mode.as_deref().and_then(TokenMode::parse),
    };
    Ok((f.appid, changes))
}

fn print_change(what: &str, c: &ChangeInfo) {
    match crate::admin::outcome_of(&c.outcome) {
        Outcome::Unchanged => println!("{what} unchanged"),
        o => println!("{} {what}", o.as_str()),
    }
}

async fn put_app(api: &dyn AdminApi, f: AppFields, must_exist: bool) -> Result<()> {
    let (appid, changes) = app_changes(f)?;
    let c = api.put_app(&appid, changes, must_exist).await?;
    tracing::info!(appid = %appid, action = %c.outcome, "app registry changed");
    print_change(&format!("app {appid}"), &c);
    Ok(())
}

pub(super) async fn app_command(config: &Config, cmd: AppCommand) -> Result<()> {
    let api = admin_api(config).await?;
    match cmd {
        AppCommand::Add(f) => put_app(api.as_ref(), f, false).await?,
        AppCommand::Update(f) => put_app(api.as_ref(), f, true).await?,
        AppCommand::List => {
            let apps = api.list_apps().await?;
            println!("{:<32} {:>14} {:>14} {:<8}", "APPID", "LOGIN_DAYS", "IDLE_SECS", "TOKEN");
            for a in apps {
                println!(
                    "{:<32} {:>14} {:>14} {:<8}",
                    a.appid,
                    a.login_duration_secs / 86_400,
                    a.session_duration_secs,
                    a.token_mode
                );
            }
        }
        AppCommand::Unblock { appid } => {
            api.unblock_app(&appid).await?;
            tracing::info!(appid = %appid, action = "unblocked", "app registry changed");
            println!("unblocked app {appid}: upstream calls resume now");
        }
        AppCommand::Remove { appid } => {
            api.remove_app(&appid).await?;
            tracing::info!(appid = %appid, action = "removed", "app registry changed");
            println!("removed app {appid}");
        }
    }
    Ok(())
}

pub(super) async fn agent_command(config: &Config, cmd: AgentCommand) -> Result<()> {
    let api = admin_api(config).await?;
    match cmd {
        AgentCommand::Add { corpid, agentid, secret, remark } => {
            let changes =
                AgentChanges { secret: secret.map(|s| read_secret(&s, "the secret")).transpose()?, remark };
            let c = api.put_agent(&corpid, &agentid, changes).await?;
            tracing::info!(corpid = %corpid, agentid = %agentid, action = %c.outcome, "agent registry changed");
            print_change(&format!("agent {corpid}/{agentid}"), &c);
        }
        AgentCommand::List => {
            let agents = api.list_agents().await?;
            println!("{:<32} {:<12} REMARK", "CORPID", "AGENTID");
            for a in agents {
                println!("{:<32} {:<12} {}", a.corpid, a.agentid, a.remark);
            }
        }
        AgentCommand::Remove { corpid, agentid } => {
            api.remove_agent(&corpid, &agentid).await?;
            tracing::info!(corpid = %corpid, agentid = %agentid, action = "removed", "agent registry changed");
            println!("removed agent {corpid}/{agentid}");
        }
    }
    Ok(())
}

pub(super) async fn cos_command(config: &Config, cmd: CosCommand) -> Result<()> {
    let api = admin_api(config).await?;
    match cmd {
        CosCommand::Add { appid, secret_id, secret_key } => {
            let secret_key = secret_key.map(|k| read_secret(&k, "the SecretKey")).transpose()?;
            let c = api.put_cos(&appid, secret_id, secret_key).await?;
            tracing::info!(cos_appid = %appid, action = %c.outcome, "COS keys changed");
            print_change(&format!("COS keys for {appid}"), &c);
        }
        CosCommand::List => {
            let keys = api.list_cos().await?;
            println!("{:<20} SECRET_ID", "APPID");
            for k in keys {
                println!("{:<20} {}…", k.appid, k.secret_id_prefix);
            }
        }
        CosCommand::Remove { appid } => {
            api.remove_cos(&appid).await?;
            tracing::info!(cos_appid = %appid, action = "removed", "COS keys changed");
            println!("removed COS keys for {appid}");
        }
    }
    Ok(())
}

pub(super) async fn key_command(config: &Config, cmd: KeyCommand) -> Result<()> {
    let api = admin_api(config).await?;
    match cmd {
        KeyCommand::Add { name, apps, corps, all, apis } => {
            let key = api.add_key(&name, KeyScope { apps, corps, all, apis }).await?;
            tracing::info!(key_name = %name, action = "created", "caller key changed");
            eprintln!("created key {name}; it is shown only now:");
            println!("{key}");
        }
        KeyCommand::List => {
            let keys = api.list_keys().await?;
            println!("{:<24} {:<40} {:<21} {:<21} REVOKED", "NAME", "SCOPE", "CREATED", "LAST_USED");
            for k in keys {
                let scope = if k.scope_all {
                    "all".to_owned()
                } else {
                    let mut parts = Vec::new();
                    if !k.scope_apps.is_empty() {
                        parts.push(format!("apps={}", k.scope_apps.join(",")));
                    }
                    if !k.scope_corps.is_empty() {
                        parts.push(format!("corps={}", k.scope_corps.join(",")));
                    }
                    if !k.scope_apis.is_empty() {
                        parts.push(format!("apis={}", k.scope_apis.join(",")));
                    }
                    parts.join(" ")
                };
                println!(
                    "{:<24} {:<40} {:<21} {:<21} {}",
                    k.name,
                    scope,
                    crate::clock::format_utc(k.created_at),
                    crate::clock::format_utc(k.last_used_at),
                    crate::clock::format_utc(k.revoked_at)
                );
            }
        }
        KeyCommand::Revoke { name } => {
            api.revoke_key(&name).await?;
            tracing::info!(key_name = %name, action = "revoked", "caller key changed");
            println!("revoked key {name}");
        }
    }
    Ok(())
}

fn secs(v: Option<i64>) -> String {
    v.map_or_else(|| "-".into(), |s| format!("{s}s"))
}

pub(super) async fn status_command(config: &Config) -> Result<()> {
    let s = admin_api(config).await?.status().await?;
    let p = &s.process;
    println!(
        "wafer-scf {} up {}s | caller auth {} | admin {} | master key {} | storage {} schema {}/{}",
        p.version,
        p.uptime_secs,
        p.caller_auth,
        if p.admin { "on" } else { "off" },
        if p.master_key { "on" } else { "off" },
        p.storage,
        p.schema_version,
        p.schema_latest
    );
    println!(
        "{:<36} {:<8} {:>8} {:>10} {:>9} {:>8} {:>9}  LAST ERROR",
        "APP / AGENT", "MODE", "AGE", "REMAINING", "FETCH/H", "FORCED", "SESSIONS"
    );
    for c in s.apps.iter().chain(&s.agents) {
        let error = match (&c.last_error, c.retry_at, c.blocked_until) {
            (_, _, Some(until)) => format!("45009 blocked until {}", crate::clock::format_utc(until)),
            (Some(e), Some(at), _) => format!("{e} (retry {})", crate::clock::format_utc(at)),
            _ => "-".into(),
        };
        println!(
            "{:<36} {:<8} {:>8} {:>10} {:>9} {:>8} {:>9}  {error}",
            c.id,
            c.token_mode,
            secs(c.token_age_secs),
            secs(c.token_remaining_secs),
            c.fetches_this_hour,
            format!("{}/{}", c.forced_today, c.forced_budget),
            c.sessions.map_or_else(|| "-".into(), |n| n.to_string()),
        );
    }
    Ok(())
}
