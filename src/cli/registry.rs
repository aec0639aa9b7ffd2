//! The registry and status commands: each turns its arguments into one admin operation (local, or through a server
//! with `--server`) and prints the answer — never a secret.

use super::{AgentCommand, ApiSecurityArgs, AppCommand, AppFields, CosCommand, KeyCommand};
use crate::admin::ops::{self, AdminOp, NoFields};
use crate::admin::{reply, AdminApi, AgentInfo, AppInfo, ChangeInfo, CosInfo, KeyInfo, NewKey, Status};
use crate::config::Config;
use crate::crypto::Secret;
use crate::registry::{KeyScope, Outcome};
use crate::startup::admin_api;
use anyhow::{bail, Context, Result};
use secrecy::{ExposeSecret, SecretString};
use std::io::Read;

fn read_secret(arg: &SecretString, what: &str) -> Result<Secret> {
    let arg = arg.expose_secret();
    let s = if arg == "-" && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        // Typed by a person: no echo, nothing in the terminal's scrollback.
        Secret::new(
            rpassword::prompt_password(format!("{what}: ")).context("could not read the secret")?.trim(),
        )
    } else if arg == "-" {
        let mut buf = String::new();
        std::io::stdin().read_to_string(&mut buf).context("could not read the secret from stdin")?;
        Secret::new(buf.trim())
    } else {
        Secret::new(arg.trim())
    };
    if s.expose().is_empty() || s.expose().len() > 512 {
        bail!("{what} must be 1 to 512 characters");
    }
    Ok(s)
}

fn app_put(f: AppFields) -> Result<ops::AppPut> {
    Ok(ops::AppPut {
        appid: f.appid,
        secret: f.secret.map(|s| read_secret(&s, "the secret")).transpose()?,
        token_mode: f.token_mode.as_deref().and_then(crate::store::TokenMode::parse),
        login_duration_days: f.login_duration_days.map(i64::from),
        session_duration_secs: f.session_duration_secs.map(i64::from),
    })
}

fn print_change(what: &str, c: &ChangeInfo) {
    match c.outcome {
        Outcome::Unchanged => println!("{what} unchanged"),
        o => println!("{} {what}", o.as_str()),
    }
}

/// Run an operation whose reply is only an outcome.
async fn done(api: &dyn AdminApi, op: AdminOp) -> Result<()> {
    api.run(op).await?;
    Ok(())
}

pub(super) async fn app_command(config: &Config, cmd: AppCommand) -> Result<()> {
    let api = admin_api(config).await?;
    let api = api.as_ref();
    match cmd {
        AppCommand::Add(f) => put_app(api, AdminOp::AppAdd(app_put(f)?)).await?,
        AppCommand::Update(f) => put_app(api, AdminOp::AppUpdate(app_put(f)?)).await?,
        AppCommand::List => {
            let apps: Vec<AppInfo> = reply(api, AdminOp::AppList(NoFields {})).await?;
            println!("{:<32} {:>14} {:>14} {:<8}", "APPID", "LOGIN_DAYS", "IDLE_SECS", "TOKEN");
            for a in apps {
                println!(
                    "{:<32} {:>14} {:>14} {:<8}",
                    a.appid,
                    a.login_duration_secs / 86_400,
                    a.session_duration_secs,
                    a.token_mode
                );
                if let Some(s) = &a.api_security {
                    println!("  {}", api_security_line(s));
                }
            }
        }
        AppCommand::ApiSecurity(args) => api_security(api, args).await?,
        AppCommand::Quota { appid, api: path } => {
            let q: crate::handlers::platform::Quota =
                reply(api, AdminOp::AppQuota(ops::QuotaGet { appid, api: path })).await?;
            println!("{}", quota_line(&q));
        }
        AppCommand::ClearQuota { appid } => {
            let c: crate::handlers::platform::Cleared =
                reply(api, AdminOp::AppClearQuota(ops::AppRef { appid: appid.clone() })).await?;
            tracing::info!(appid = %appid, action = "clear_quota", "app quota reset");
            let left = c.resets.map_or_else(
                || "WeChat did not say how many resets are left".to_owned(),
                |r| format!("resets this month: {} of {} used, {} left", r.used, r.daily_limit, r.remain),
            );
            println!("cleared the quota of app {appid}; its blocks here are lifted ({left})");
        }
        AppCommand::Unblock { appid } => {
            done(api, AdminOp::AppUnblock(ops::AppRef { appid: appid.clone() })).await?;
            tracing::info!(appid = %appid, action = "unblocked", "app registry changed");
            println!("unblocked app {appid}: upstream calls resume now");
        }
        AppCommand::Remove { appid } => {
            done(api, AdminOp::AppRemove(ops::AppRef { appid: appid.clone() })).await?;
            tracing::info!(appid = %appid, action = "removed", "app registry changed");
            println!("removed app {appid}");
        }
    }
    Ok(())
}

async fn put_app(api: &dyn AdminApi, op: AdminOp) -> Result<()> {
    let (AdminOp::AppAdd(f) | AdminOp::AppUpdate(f)) = &op else { bail!("not an app registration") };
    let appid = f.appid.clone();
    let c: ChangeInfo = reply(api, op).await?;
    tracing::info!(appid = %appid, action = %c.outcome.as_str(), "app registry changed");
    print_change(&format!("app {appid}"), &c);
    Ok(())
}

pub(super) async fn agent_command(config: &Config, cmd: AgentCommand) -> Result<()> {
    let api = admin_api(config).await?;
    let api = api.as_ref();
    match cmd {
        AgentCommand::Add { corpid, agentid, secret, remark } => {
            let secret = secret.map(|s| read_secret(&s, "the secret")).transpose()?;
            let op = AdminOp::AgentAdd(ops::AgentPut {
                corpid: corpid.clone(),
                agentid: agentid.clone(),
                secret,
                remark,
            });
            let c: ChangeInfo = reply(api, op).await?;
            tracing::info!(corpid = %corpid, agentid = %agentid, action = %c.outcome.as_str(), "agent registry changed");
            print_change(&format!("agent {corpid}/{agentid}"), &c);
        }
        AgentCommand::List => {
            let agents: Vec<AgentInfo> = reply(api, AdminOp::AgentList(NoFields {})).await?;
            println!("{:<32} {:<12} REMARK", "CORPID", "AGENTID");
            for a in agents {
                println!("{:<32} {:<12} {}", a.corpid, a.agentid, a.remark);
            }
        }
        AgentCommand::Remove { corpid, agentid } => {
            let op = AdminOp::AgentRemove(ops::AgentRef { corpid: corpid.clone(), agentid: agentid.clone() });
            done(api, op).await?;
            tracing::info!(corpid = %corpid, agentid = %agentid, action = "removed", "agent registry changed");
            println!("removed agent {corpid}/{agentid}");
        }
    }
    Ok(())
}

pub(super) async fn cos_command(config: &Config, cmd: CosCommand) -> Result<()> {
    let api = admin_api(config).await?;
    let api = api.as_ref();
    match cmd {
        CosCommand::Add { appid, secret_id, secret_key } => {
            let secret_key = secret_key.map(|k| read_secret(&k, "the SecretKey")).transpose()?;
            let op = AdminOp::CosAdd(ops::CosPut { appid: appid.clone(), secret_id, secret_key });
            let c: ChangeInfo = reply(api, op).await?;
            tracing::info!(cos_appid = %appid, action = %c.outcome.as_str(), "COS keys changed");
            print_change(&format!("COS keys for {appid}"), &c);
        }
        CosCommand::List => {
            let keys: Vec<CosInfo> = reply(api, AdminOp::CosList(NoFields {})).await?;
            println!("{:<20} SECRET_ID", "APPID");
            for k in keys {
                println!("{:<20} {}…", k.appid, k.secret_id_prefix);
            }
        }
        CosCommand::Remove { appid } => {
            done(api, AdminOp::CosRemove(ops::CosRef { appid: appid.clone() })).await?;
            tracing::info!(cos_appid = %appid, action = "removed", "COS keys changed");
            println!("removed COS keys for {appid}");
        }
    }
    Ok(())
}

pub(super) async fn key_command(config: &Config, cmd: KeyCommand) -> Result<()> {
    let api = admin_api(config).await?;
    let api = api.as_ref();
    match cmd {
        KeyCommand::Add { name, apps, corps, all, apis } => {
            let scope = KeyScope {
                apps: apps.into_iter().map(|a| a.into_string()).collect(),
                corps: corps.into_iter().map(|c| c.into_string()).collect(),
                all,
                apis,
            };
            let created: NewKey =
                reply(api, AdminOp::KeyAdd(ops::KeyAdd { name: name.clone(), scope })).await?;
            tracing::info!(key_name = %name, action = "created", "caller key changed");
            eprintln!("created key {name}; it is shown only now:");
            println!("{}", created.key);
        }
        KeyCommand::List => {
            let keys: Vec<KeyInfo> = reply(api, AdminOp::KeyList(NoFields {})).await?;
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
            done(api, AdminOp::KeyRevoke(ops::KeyRef { name: name.clone() })).await?;
            tracing::info!(key_name = %name, action = "revoked", "caller key changed");
            println!("revoked key {name}");
        }
    }
    Ok(())
}

fn secs(v: Option<i64>) -> String {
    v.map_or_else(|| "-".into(), |s| format!("{s}s"))
}

fn quota_line(q: &crate::handlers::platform::Quota) -> String {
    format!("{:<32} {}: used {} of {} today, {} left", q.appid, q.api, q.used, q.daily_limit, q.remain)
}

pub(super) async fn status_command(config: &Config, quota: Option<&str>) -> Result<()> {
    let api = admin_api(config).await?;
    let s: Status = reply(api.as_ref(), AdminOp::Status(NoFields {})).await?;
    print_status(&s);
    let Some(path) = quota else { return Ok(()) };
    println!("QUOTA ({path}, from WeChat)");
    for app in &s.apps {
        let op = AdminOp::AppQuota(ops::QuotaGet {
            appid: app.id.parse().map_err(anyhow::Error::msg)?,
            api: path.into(),
        });
        match reply::<crate::handlers::platform::Quota>(api.as_ref(), op).await {
            Ok(q) => println!("{}", quota_line(&q)),
            Err(e) => println!("{:<32} {path}: {e}", app.id),
        }
    }
    Ok(())
}

fn print_status(s: &Status) {
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
    for r in &p.certificate_rotations {
        println!(
            "API security: WeChat signs replies for {r} with a new platform certificate (SN after the colon): \
             register it with app api-security"
        );
    }
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
}

/// "API security on, certificate SN …, expires …" (every certificate during a rotation).
fn api_security_line(s: &crate::apisec::ApiSecurityInfo) -> String {
    let certs: Vec<String> = s
        .certs
        .iter()
        .map(|c| format!("certificate SN {}, expires {}", c.sn, crate::clock::format_utc(c.expires_at)))
        .collect();
    format!(
        "API security on, {} (symmetric key SN {}, private key SN {})",
        certs.join("; "),
        s.sym_sn,
        s.key_sn
    )
}

fn read_file(flag: &str, path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{flag} {}: cannot be read", path.display()))
}

/// `app api-security`: the files read and checked here (an error names the file), then one admin operation.
async fn api_security(api: &dyn AdminApi, a: ApiSecurityArgs) -> Result<()> {
    use crate::wechat::secure::KeyPart;
    let appid = a.appid.clone();
    let op = if a.off {
        ops::ApiSecurityPut {
            appid: appid.clone(),
            off: true,
            sym_key: None,
            sym_sn: None,
            private_key: None,
            private_key_sn: None,
            certs: Vec::new(),
        }
    } else {
        if a.cert_file.len() != a.cert_sn.len() || a.cert_file.is_empty() || a.cert_file.len() > 2 {
            bail!("give one or two --cert-file, each with its --cert-sn (in the same order)");
        }
        let (sym_file, key_file) =
            (a.sym_key_file.unwrap_or_default(), a.private_key_file.unwrap_or_default());
        let mut certs = Vec::new();
        for (file, sn) in a.cert_file.iter().zip(&a.cert_sn) {
            certs.push(crate::apisec::CertInput { sn: sn.clone(), pem: read_file("--cert-file", file)? });
        }
        let material = crate::apisec::KeyMaterial {
            sym_key: Secret::new(read_file("--sym-key-file", &sym_file)?.trim()),
            sym_sn: a.sym_sn.unwrap_or_default(),
            private_key: Secret::new(read_file("--private-key-file", &key_file)?),
            private_key_sn: a.private_key_sn.unwrap_or_default(),
            certs,
        };
        if let Err(e) = crate::apisec::record(&appid, &material, 0) {
            let at = match e.part {
                KeyPart::SymKey => format!("--sym-key-file {}", sym_file.display()),
                KeyPart::SymSn => "--sym-sn".into(),
                KeyPart::PrivateKey => format!("--private-key-file {}", key_file.display()),
                KeyPart::KeySn => "--private-key-sn".into(),
                KeyPart::Cert(i) => {
                    format!("--cert-file {}", a.cert_file[i.min(a.cert_file.len() - 1)].display())
                }
                KeyPart::CertSn(i) => format!("--cert-sn {}", a.cert_sn[i.min(a.cert_sn.len() - 1)]),
            };
            bail!("{at}: {}", e.reason);
        }
        ops::ApiSecurityPut {
            appid: appid.clone(),
            off: false,
            sym_key: Some(material.sym_key),
            sym_sn: Some(material.sym_sn),
            private_key: Some(material.private_key),
            private_key_sn: Some(material.private_key_sn),
            certs: material.certs,
        }
    };
    let c: crate::admin::apisec::ApiSecurityChange = reply(api, AdminOp::AppApiSecurity(op)).await?;
    tracing::info!(appid = %appid, action = %c.outcome, "API security changed");
    match &c.api_security {
        Some(s) => println!("app {appid}: {}", api_security_line(s)),
        None if c.outcome == "off" => println!("app {appid}: API security off (its keys are deleted)"),
        None => println!("app {appid}: API security was already off"),
    }
    Ok(())
}
