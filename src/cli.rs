//! The `wafer-scf` command line: subcommands, and the wiring from [`Config`] to a running service.

use crate::clock::SystemClock;
use crate::config::Config;
use crate::handlers::{Deps, Settings};
use crate::service::Service;
use crate::store::{
    self, AgentRecord, AppRecord, CallerKeyRecord, CosKeyRecord, Store, TokenMode,
    DEFAULT_SESSION_DURATION_SECS,
};
use crate::tokens::CredKey;
use crate::wechat::wecom::WeComClient;
use crate::wechat::{self, UpstreamTimeouts, WeChatClient};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::io::Read;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(
    name = "wafer-scf",
    version,
    about = "Wafer session and credential server for WeChat mini-programs, official accounts and WeCom"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,

    /// What to do. Without a subcommand: `runtime` when SCF_RUNTIME_API is set, else `serve`.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Answer the Wafer protocol over HTTP POST on WAFER_LISTEN.
    Serve,
    /// Serve as an SCF custom runtime: poll SCF_RUNTIME_API for invocations (what `bootstrap` runs).
    Runtime {
        /// Runtime API base URL (default: http://$SCF_RUNTIME_API:$SCF_RUNTIME_API_PORT).
        #[arg(long)]
        runtime_api: Option<String>,
    },
    /// Handle one event file in-process (an API Gateway event or a bare envelope) and print the reply.
    Invoke {
        /// The event JSON file.
        file: std::path::PathBuf,
    },
    /// Run a bootstrap under a local emulator of the SCF runtime API, feed it event files, print each reply.
    Replay {
        /// The executable SCF would run.
        #[arg(long, default_value = "./bootstrap")]
        bootstrap: std::path::PathBuf,
        /// The function's execution time limit.
        #[arg(long, default_value_t = 3000)]
        time_limit_ms: u64,
        /// The function's init timeout.
        #[arg(long, default_value_t = 10_000)]
        init_timeout_ms: u64,
        /// Event files, answered in order.
        #[arg(required = true)]
        events: Vec<std::path::PathBuf>,
    },
    /// Apply the storage schema (MySQL; the embedded store migrates itself).
    Migrate,
    /// Manage registered mini-programs and official accounts.
    #[command(subcommand)]
    App(AppCommand),
    /// Manage registered WeCom self-built apps (agents).
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Manage COS credentials held by the server (per Tencent Cloud APPID).
    #[command(subcommand)]
    Cos(CosCommand),
    /// Manage caller keys (who may fetch tokens, tickets, signatures).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Import apps, WeCom agents, sessions and valid cached tokens from a seed / original Wafer MySQL database.
    Import {
        /// The source database, e.g. mysql://user:pass@host:3306/cAuth
        #[arg(long)]
        from: String,
        /// Count what would be imported; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Seal every stored secret with WAFER_MASTER_KEY (rows written before the key existed are in the clear).
    Reencrypt,
    /// Delete sessions that have expired under their app's rules.
    PurgeSessions,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key and print it once (only its hash is stored).
    Add {
        /// A name for the key (a team, a service).
        #[arg(long)]
        name: String,
        /// Appids (WeChat appids, or Tencent Cloud APPIDs for COS) the key may reach, comma-separated.
        #[arg(long, value_delimiter = ',', required_unless_present_any = ["corps", "all"], conflicts_with = "all")]
        apps: Vec<String>,
        /// WeCom corpids the key may reach, comma-separated.
        #[arg(long, value_delimiter = ',', conflicts_with = "all")]
        corps: Vec<String>,
        /// Every app, corp and COS APPID.
        #[arg(long)]
        all: bool,
    },
    /// List keys: names, scopes, created, last used, revoked (never the key).
    List,
    /// Revoke a key (takes effect within 10 seconds on running servers).
    Revoke {
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum CosCommand {
    /// Hold COS credentials for a Tencent Cloud APPID (replaces existing ones).
    Add {
        /// The numeric Tencent Cloud APPID.
        #[arg(long)]
        appid: String,
        #[arg(long)]
        secret_id: String,
        /// The SecretKey. `-` reads it from standard input.
        #[arg(long)]
        secret_key: String,
    },
    /// List held COS credentials (APPID and a SecretId prefix; never the SecretKey).
    List,
    /// Remove held COS credentials.
    Remove {
        #[arg(long)]
        appid: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Register an agent, or replace its secret (drops its cached token and tickets).
    Add {
        #[arg(long)]
        corpid: String,
        #[arg(long)]
        agentid: String,
        /// The app's Secret. `-` reads it from standard input.
        #[arg(long)]
        secret: String,
        #[arg(long, default_value = "")]
        remark: String,
    },
    /// List agents (never prints secrets).
    List,
    /// Remove an agent and its cached credentials.
    Remove {
        #[arg(long)]
        corpid: String,
        #[arg(long)]
        agentid: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Register an app, or replace its secret and settings.
    Add {
        #[arg(long)]
        appid: String,
        /// The AppSecret. `-` reads it from standard input (keeps it out of shell history).
        #[arg(long)]
        secret: String,
        /// Login lifetime in days (since the login that created the skey).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
        login_duration_days: u32,
        /// Idle lifetime in seconds (since the last successful auth).
        #[arg(long, default_value_t = DEFAULT_SESSION_DURATION_SECS as u32, value_parser = clap::value_parser!(u32).range(60..))]
        session_duration_secs: u32,
        /// How the access token is fetched: stable (stable_token, the default) or classic (cgi-bin/token).
        #[arg(long, default_value = "stable", value_parser = ["stable", "classic"])]
        token_mode: String,
    },
    /// List registered apps (never prints secrets).
    List,
    /// Remove an app and its sessions.
    Remove {
        #[arg(long)]
        appid: String,
    },
}

/// Parse the command line and run. `main` only prints the error chain.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    crate::telemetry::init(&cli.config.log, cli.config.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    rt.block_on(execute(cli))
}

/// Run a parsed command line.
pub async fn execute(cli: Cli) -> Result<()> {
    let config = cli.config;
    let default = if crate::scf::runtime::RuntimeClient::base_from_env().is_some() {
        Command::Runtime { runtime_api: None }
    } else {
        Command::Serve
    };
    match cli.command.unwrap_or(default) {
        Command::Serve => serve(&config).await,
        Command::Runtime { runtime_api } => runtime(&config, runtime_api).await,
        Command::Invoke { file } => {
            let event = std::fs::read(&file).with_context(|| format!("could not read {}", file.display()))?;
            let svc = build_service(&config, 10).await?;
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
        Command::Replay { bootstrap, time_limit_ms, init_timeout_ms, events } => {
            replay(bootstrap, time_limit_ms, init_timeout_ms, events).await
        }
        Command::Migrate => {
            let store = open_store(&config, true).await?;
            println!("schema is up to date ({})", store.backend());
            Ok(())
        }
        Command::App(cmd) => app_command(&config, cmd).await,
        Command::Agent(cmd) => agent_command(&config, cmd).await,
        Command::Cos(cmd) => cos_command(&config, cmd).await,
        Command::Key(cmd) => key_command(&config, cmd).await,
        Command::Import { from, dry_run } => {
            let store = open_store(&config, false).await?;
            let now = crate::clock::Clock::now(&SystemClock);
            let (kind, report) = crate::import::import(store.as_ref(), &from, dry_run, now).await?;
            println!(
                "{} source ({}){}",
                match kind {
                    crate::import::SourceKind::Seed => "seed (WaferOnSCF)",
                    crate::import::SourceKind::Original => "original Wafer",
                },
                store::DatabaseUrl::Mysql(from.clone()).redacted(),
                if dry_run { ", dry run: nothing written" } else { "" }
            );
            println!("{report}");
            Ok(())
        }
        Command::Reencrypt => {
            if config.master_key.is_none() {
                bail!("set WAFER_MASTER_KEY first: reencrypt seals every secret with it");
            }
            let store = open_store(&config, false).await?;
            let n = crate::store::sealed::reencrypt(store.as_ref()).await.context("reencrypt failed")?;
            println!(
                "sealed: {} apps, {} agents, {} COS keys, {} cached credentials, {} users' session keys",
                n.apps, n.agents, n.cos_keys, n.credentials, n.users
            );
            Ok(())
        }
        Command::PurgeSessions => {
            let store = open_store(&config, false).await?;
            let n = store
                .purge_expired_sessions(crate::clock::Clock::now(&SystemClock))
                .await
                .context("purge failed")?;
            println!("purged {n} expired sessions");
            Ok(())
        }
    }
}

/// Open the configured store; with `migrate`, apply pending migrations first.
pub async fn open_store(config: &Config, migrate: bool) -> Result<Arc<dyn Store>> {
    store::open(&config.database_url, &config.store_options(), migrate)
        .await
        .with_context(|| format!("could not open storage {}", config.database_url.redacted()))
}

/// Build the service from configuration: store, one HTTP client, the system clock. `default_pool` is the MySQL
/// pool size when WAFER_DB_POOL_MAX is not set (SCF instances want 1–2 connections).
pub async fn build_service(config: &Config, default_pool: u64) -> Result<Service> {
    let mut config = config.clone();
    config.db_pool_max = Some(config.db_pool_max.unwrap_or(default_pool));
    let config = &config;
    let store = open_store(config, false).await?;
    let http = wechat::http_client(UpstreamTimeouts {
        connect: config.upstream_timeout().min(std::time::Duration::from_secs(3)),
        total: config.upstream_timeout(),
    })
    .context("could not build the HTTP client")?;
    let deps = Deps::new(
        store,
        WeChatClient::new(http.clone(), &config.wechat_base_url),
        WeComClient::new(http, &config.wecom_base_url),
        Arc::new(SystemClock),
        Settings {
            default_appid: config.default_appid(),
            max_sessions_per_user: config.max_sessions_per_user as usize,
            admin_token: config.admin_token(),
            caller_auth: config.caller_auth,
        },
        config.token_policy(),
    );
    let mut svc = Service::new(deps);
    svc.body_limit = config.body_limit as usize;
    Ok(svc)
}

fn warn_if_open(config: &Config) {
    if config.caller_auth == crate::auth::CallerAuthMode::Off {
        tracing::warn!(
            "WAFER_CALLER_AUTH=off: anyone who can reach this server gets live access tokens and tickets"
        );
    }
}

async fn serve(config: &Config) -> Result<()> {
    warn_if_open(config);
    let svc = Arc::new(build_service(config, 10).await?);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("could not listen on {}", config.listen))?;
    let addr = listener.local_addr().context("listener has no address")?;
    tracing::info!(%addr, storage = %config.database_url.redacted(), wechat = %config.wechat_base_url, "wafer-scf listening");
    tokio::spawn(watch_readiness(svc.clone(), config.database_url.redacted()));
    if config.purge_interval_secs > 0 {
        let (svc, every) = (svc.clone(), std::time::Duration::from_secs(config.purge_interval_secs));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                if let Err(e) = svc.purge_expired_sessions().await {
                    tracing::warn!(error = %e, "periodic session purge failed");
                }
            }
        });
    }
    crate::serve::serve(listener, svc, crate::serve::shutdown_signal()).await.context("HTTP server failed")
}

/// Check storage and schema at start and say so in one line; while not ready, check again every few seconds
/// (requests are answered meanwhile: a database that comes up later is picked up without a restart).
async fn watch_readiness(svc: Arc<Service>, storage: String) {
    use crate::service::Readiness;
    let mut said = None;
    loop {
        let r = svc.readiness().await;
        if said != Some(r) {
            match r {
                Readiness::Ready if said.is_some() => tracing::info!(storage = %storage, "storage is ready"),
                Readiness::Ready => {}
                Readiness::SchemaBehind(_) => tracing::error!(storage = %storage, "{}", r.reason()),
                Readiness::Unreachable => {
                    tracing::error!(storage = %storage, "storage unreachable at {storage}; retrying")
                }
            }
            said = Some(r);
        }
        if r == Readiness::Ready {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
}

async fn runtime(config: &Config, runtime_api: Option<String>) -> Result<()> {
    let base = runtime_api
        .or_else(crate::scf::runtime::RuntimeClient::base_from_env)
        .context("no runtime API: set SCF_RUNTIME_API (and SCF_RUNTIME_API_PORT) or pass --runtime-api")?;
    warn_if_open(config);
    // Everything expensive happens before init/ready: storage pool, HTTP client, caches.
    let svc = build_service(config, 2).await?;
    let ready = svc.readiness().await;
    if ready != crate::service::Readiness::Ready {
        tracing::error!(storage = %config.database_url.redacted(), "{}", ready.reason());
    }
    let client =
        crate::scf::runtime::RuntimeClient::new(&base).context("could not build the runtime API client")?;
    crate::scf::runtime::run(&client, &svc, None).await
}

async fn replay(
    bootstrap: std::path::PathBuf,
    time_limit_ms: u64,
    init_timeout_ms: u64,
    events: Vec<std::path::PathBuf>,
) -> Result<()> {
    use crate::scf::emulator::{Emulator, Outcome, Supervisor};
    let emulator =
        Emulator::start(time_limit_ms).await.context("could not start the runtime API emulator")?;
    let mut sup =
        Supervisor::new(emulator, bootstrap.clone(), std::time::Duration::from_millis(init_timeout_ms));
    let cold = sup.start().await.with_context(|| format!("could not start {}", bootstrap.display()))?;
    eprintln!("== {} ready after {:.1} ms", bootstrap.display(), cold.as_secs_f64() * 1000.0);
    let mut failed = 0;
    for file in &events {
        let event = std::fs::read(file).with_context(|| format!("could not read {}", file.display()))?;
        let started = std::time::Instant::now();
        let outcome = sup.invoke(event).await.context("the instance could not be restarted")?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match outcome {
            Outcome::Response(body) => {
                println!("== {} ({ms:.1} ms)\n{}", file.display(), String::from_utf8_lossy(&body))
            }
            Outcome::Error(e) => {
                failed += 1;
                println!("== {} ({ms:.1} ms) invocation error\n{e}", file.display());
            }
            Outcome::Timeout => {
                failed += 1;
                println!("== {} timed out after {time_limit_ms} ms (instance restarted)", file.display());
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} events failed", events.len());
    }
    Ok(())
}

fn read_secret(arg: &str, what: &str) -> Result<String> {
    let s = if arg == "-" {
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

fn check_ident(value: &str, what: &str, max: usize) -> Result<()> {
    if value.is_empty() || value.len() > max || !value.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("{what} must be 1 to {max} printable ASCII characters without spaces");
    }
    Ok(())
}

async fn app_command(config: &Config, cmd: AppCommand) -> Result<()> {
    let store = open_store(config, false).await?;
    let now = crate::clock::Clock::now(&SystemClock);
    match cmd {
        AppCommand::Add { appid, secret, login_duration_days, session_duration_secs, token_mode } => {
            check_ident(&appid, "appid", 64)?;
            let secret = read_secret(&secret, "the secret")?;
            let existing = store.get_app(&appid).await.context("could not read apps")?;
            let app = AppRecord {
                appid: appid.clone(),
                secret,
                login_duration_secs: i64::from(login_duration_days) * 86_400,
                session_duration_secs: i64::from(session_duration_secs),
                token_mode: TokenMode::parse(&token_mode).unwrap_or(TokenMode::Stable),
                created_at: existing.as_ref().map_or(now, |a| a.created_at),
                updated_at: now,
            };
            store.put_app(&app).await.context("could not store the app")?;
            if existing.as_ref().is_some_and(|e| e.secret != app.secret || e.token_mode != app.token_mode) {
                store
                    .delete_credentials(&CredKey::all_for_app(&appid))
                    .await
                    .context("could not drop cached tokens")?;
            } else {
                store
                    .clear_credential_failures(&CredKey::all_for_app(&appid))
                    .await
                    .context("could not clear remembered failures")?;
            }
            tracing::info!(appid = %appid, action = if existing.is_some() { "replaced" } else { "added" }, "app registry changed");
            println!("{} app {appid}", if existing.is_some() { "updated" } else { "added" });
        }
        AppCommand::List => {
            let apps = store.list_apps().await.context("could not read apps")?;
            println!("{:<32} {:>14} {:>14} {:<8}", "APPID", "LOGIN_DAYS", "IDLE_SECS", "TOKEN");
            for a in apps {
                println!(
                    "{:<32} {:>14} {:>14} {:<8}",
                    a.appid,
                    a.login_duration_secs / 86_400,
                    a.session_duration_secs,
                    a.token_mode.as_str()
                );
            }
        }
        AppCommand::Remove { appid } => {
            if store.remove_app(&appid).await.context("could not remove the app")? {
                store
                    .delete_credentials(&CredKey::all_for_app(&appid))
                    .await
                    .context("could not drop cached tokens")?;
                tracing::info!(appid = %appid, action = "removed", "app registry changed");
                println!("removed app {appid}");
            } else {
                bail!("no app {appid}");
            }
        }
    }
    Ok(())
}

async fn agent_command(config: &Config, cmd: AgentCommand) -> Result<()> {
    let store = open_store(config, false).await?;
    let now = crate::clock::Clock::now(&SystemClock);
    match cmd {
        AgentCommand::Add { corpid, agentid, secret, remark } => {
            check_ident(&corpid, "corpid", 64)?;
            check_ident(&agentid, "agentid", 64)?;
            let secret = read_secret(&secret, "the secret")?;
            if remark.len() > 255 {
                bail!("the remark must be at most 255 bytes");
            }
            let existing = store.get_agent(&corpid, &agentid).await.context("could not read agents")?;
            let agent = AgentRecord {
                corpid: corpid.clone(),
                agentid: agentid.clone(),
                secret,
                remark,
                created_at: existing.as_ref().map_or(now, |a| a.created_at),
                updated_at: now,
            };
            store.put_agent(&agent).await.context("could not store the agent")?;
            if existing.as_ref().is_some_and(|e| e.secret != agent.secret) {
                store
                    .delete_credentials(&CredKey::all_for_agent(&corpid, &agentid))
                    .await
                    .context("could not drop cached tokens")?;
            } else {
                store
                    .clear_credential_failures(&CredKey::all_for_agent(&corpid, &agentid))
                    .await
                    .context("could not clear remembered failures")?;
            }
            tracing::info!(corpid = %corpid, agentid = %agentid, action = if existing.is_some() { "replaced" } else { "added" }, "agent registry changed");
            println!("{} agent {corpid}/{agentid}", if existing.is_some() { "updated" } else { "added" });
        }
        AgentCommand::List => {
            let agents = store.list_agents().await.context("could not read agents")?;
            println!("{:<32} {:<12} REMARK", "CORPID", "AGENTID");
            for a in agents {
                println!("{:<32} {:<12} {}", a.corpid, a.agentid, a.remark);
            }
        }
        AgentCommand::Remove { corpid, agentid } => {
            if store.remove_agent(&corpid, &agentid).await.context("could not remove the agent")? {
                store
                    .delete_credentials(&CredKey::all_for_agent(&corpid, &agentid))
                    .await
                    .context("could not drop cached tokens")?;
                tracing::info!(corpid = %corpid, agentid = %agentid, action = "removed", "agent registry changed");
                println!("removed agent {corpid}/{agentid}");
            } else {
                bail!("no agent {corpid}/{agentid}");
            }
        }
    }
    Ok(())
}

async fn cos_command(config: &Config, cmd: CosCommand) -> Result<()> {
    let store = open_store(config, false).await?;
    let now = crate::clock::Clock::now(&SystemClock);
    match cmd {
        CosCommand::Add { appid, secret_id, secret_key } => {
            if appid.is_empty() || appid.len() > 20 || !appid.bytes().all(|b| b.is_ascii_digit()) {
                bail!("appid must be the numeric Tencent Cloud APPID");
            }
            check_ident(&secret_id, "the SecretId", 128)?;
            let secret_key = read_secret(&secret_key, "the SecretKey")?;
            let existing = store.get_cos_key(&appid).await.context("could not read COS keys")?;
            let key = CosKeyRecord {
                appid: appid.clone(),
                secret_id,
                secret_key,
                created_at: existing.as_ref().map_or(now, |k| k.created_at),
                updated_at: now,
            };
            store.put_cos_key(&key).await.context("could not store the COS keys")?;
            tracing::info!(cos_appid = %appid, action = if existing.is_some() { "replaced" } else { "added" }, "COS keys changed");
            println!("{} COS keys for {appid}", if existing.is_some() { "updated" } else { "added" });
        }
        CosCommand::List => {
            println!("{:<20} SECRET_ID", "APPID");
            for k in store.list_cos_keys().await.context("could not read COS keys")? {
                let prefix: String = k.secret_id.chars().take(8).collect();
                println!("{:<20} {prefix}…", k.appid);
            }
        }
        CosCommand::Remove { appid } => {
            if store.remove_cos_key(&appid).await.context("could not remove the COS keys")? {
                tracing::info!(cos_appid = %appid, action = "removed", "COS keys changed");
                println!("removed COS keys for {appid}");
            } else {
                bail!("no COS keys for {appid}");
            }
        }
    }
    Ok(())
}

fn format_time(t: i64) -> String {
    if t == 0 {
        return "-".into();
    }
    // UTC, ISO 8601, without a date library: days since the epoch → civil date.
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

async fn key_command(config: &Config, cmd: KeyCommand) -> Result<()> {
    let store = open_store(config, false).await?;
    let now = crate::clock::Clock::now(&SystemClock);
    match cmd {
        KeyCommand::Add { name, apps, corps, all } => {
            if name.is_empty()
                || name.len() > 64
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                bail!("the key name must be 1 to 64 characters of letters, digits, '-', '_' or '.'");
            }
            for id in apps.iter().chain(&corps) {
                check_ident(id, "each appid/corpid", 64)?;
                if id.contains(',') {
                    bail!("appids and corpids cannot contain commas");
                }
            }
            let key = crate::auth::new_key().context("no randomness available")?;
            let record = CallerKeyRecord {
                name: name.clone(),
                key_hash: crate::crypto::sha256_hex(key.as_bytes()),
                scope_all: all,
                scope_apps: apps,
                scope_corps: corps,
                created_at: now,
                last_used_at: 0,
                revoked_at: 0,
            };
            store
                .add_caller_key(&record)
                .await
                .with_context(|| format!("could not add key {name} (is the name taken?)"))?;
            tracing::info!(key_name = %name, action = "created", "caller key changed");
            eprintln!("created key {name}; it is shown only now:");
            println!("{key}");
        }
        KeyCommand::List => {
            println!("{:<24} {:<40} {:<21} {:<21} REVOKED", "NAME", "SCOPE", "CREATED", "LAST_USED");
            for k in store.list_caller_keys().await.context("could not read keys")? {
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
                    parts.join(" ")
                };
                println!(
                    "{:<24} {:<40} {:<21} {:<21} {}",
                    k.name,
                    scope,
                    format_time(k.created_at),
                    format_time(k.last_used_at),
                    format_time(k.revoked_at)
                );
            }
        }
        KeyCommand::Revoke { name } => {
            if store.revoke_caller_key(&name, now).await.context("could not revoke the key")? {
                tracing::info!(key_name = %name, action = "revoked", "caller key changed");
                println!("revoked key {name}");
            } else {
                bail!("no valid key named {name}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn times_format_as_utc() {
        assert_eq!(format_time(0), "-");
        assert_eq!(format_time(1_704_067_200), "2024-01-01T00:00:00Z");
        assert_eq!(format_time(1_750_000_000), "2025-06-15T15:06:40Z");
    }
}
