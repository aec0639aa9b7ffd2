//! The `wafer-scf` command line: argument types, parsing, and dispatch to the server modes and the registry
//! commands ([`registry`]), which print what the admin operations answer.

mod maintenance;
mod registry;
mod target;

use crate::ids;
use registry::{agent_command, app_command, cos_command, key_command, status_command};

use crate::config::{parse_secret, Config};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use secrecy::SecretString;

#[derive(Debug, Parser)]
#[command(
    name = "wafer-scf",
    version,
    about = "Wafer session and credential server for WeChat mini-programs, official accounts and WeCom",
    after_help = "Examples:
  wafer-scf                                   serve on 127.0.0.1:8080 with the embedded store
  wafer-scf app add --appid wx… --secret -    register an app (the secret is read without echo)
  wafer-scf key add --name backend --apps wx… create a caller key (shown once)
  WAFER_SERVER=https://…scf.tencentcs.com/ WAFER_ADMIN_TOKEN=… wafer-scf status
                                              the same commands against a deployed function"
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
    /// Show the deployment: process, storage, and per app / agent the token's age and remaining life (never the
    /// token), fetches and forced refreshes, the last upstream error, sessions.
    Status {
        /// Also ask WeChat for this API's daily quota for every app (`/cgi-bin/openapi/quota/get`), e.g.
        /// `--quota /wxa/getwxacodeunlimit`.
        #[arg(long)]
        quota: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key and print it once (only its hash is stored).
    Add {
        /// A name for the key (a team, a service).
        #[arg(long)]
        name: String,
        /// Appids (WeChat appids, or Tencent Cloud APPIDs for COS) the key may reach, comma-separated.
        #[arg(long, value_delimiter = ',', conflicts_with = "all")]
        apps: Vec<ids::AppId>,
        /// WeCom corpids the key may reach, comma-separated.
        #[arg(long, value_delimiter = ',', conflicts_with = "all")]
        corps: Vec<ids::CorpId>,
        /// Every app, corp and COS APPID.
        #[arg(long)]
        all: bool,
        /// Limit the token-free calls (`qcloud.mimi.call`, `/wechat/…`) to these API path prefixes,
        /// comma-separated (e.g. /wxa/,/cgi-bin/message/); every path when not given.
        #[arg(long, value_delimiter = ',')]
        apis: Vec<String>,
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
    /// Hold COS credentials for a Tencent Cloud APPID, or change the one given.
    Add {
        /// The numeric Tencent Cloud APPID.
        #[arg(long)]
        appid: ids::CosAppId,
        #[arg(long)]
        secret_id: Option<String>,
        /// The SecretKey. `-` reads it from standard input.
        #[arg(long, value_parser = parse_secret)]
        secret_key: Option<SecretString>,
    },
    /// List held COS credentials (APPID and a SecretId prefix; never the SecretKey).
    List,
    /// Remove held COS credentials.
    Remove {
        #[arg(long)]
        appid: ids::CosAppId,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Register an agent, or change its secret or remark (a new secret drops its cached token and tickets).
    Add {
        /// The WeCom corp's ID (ww…; 我的企业 → 企业信息).
        #[arg(long)]
        corpid: ids::CorpId,
        /// The self-built app's AgentId (digits; 应用管理 → the app).
        #[arg(long)]
        agentid: ids::AgentId,
        /// The app's Secret (needed for a new agent). `-` reads it from standard input.
        #[arg(long, value_parser = parse_secret)]
        secret: Option<SecretString>,
        #[arg(long)]
        remark: Option<String>,
    },
    /// List agents (never prints secrets).
    List,
    /// Remove an agent and its cached credentials.
    Remove {
        #[arg(long)]
        corpid: ids::CorpId,
        #[arg(long)]
        agentid: ids::AgentId,
    },
}

/// An app's settings on the command line; on an existing app only the given ones change.
#[derive(Debug, clap::Args)]
pub struct AppFields {
    /// The mini-program's or official account's AppID (wx…; 开发管理 → 开发设置).
    #[arg(long)]
    appid: ids::AppId,
    /// The AppSecret (needed for a new app). `-` reads it from standard input (keeps it out of shell history).
    #[arg(long, value_parser = parse_secret)]
    secret: Option<SecretString>,
    /// Login lifetime in days (since the login that created the skey). New apps: 30.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3650))]
    login_duration_days: Option<u32>,
    /// Idle lifetime in seconds (since the last successful auth). New apps: 30 days.
    #[arg(long, value_parser = clap::value_parser!(u32).range(60..))]
    session_duration_secs: Option<u32>,
    /// How the access token is fetched: stable (stable_token; new apps) or classic (cgi-bin/token).
    #[arg(long, value_parser = ["stable", "classic"])]
    token_mode: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Register an app, or change the given settings of a registered one (others stay as they are).
    Add(AppFields),
    /// Change the given settings of a registered app (refuses to create one).
    Update(AppFields),
    /// List registered apps (never prints secrets).
    List,
    /// Remove an app and its sessions.
    Remove {
        #[arg(long)]
        appid: ids::AppId,
    },
    /// Register an app's keys for WeChat's API security (API 安全鉴权) — then switch it on in the console — or
    /// switch it off here with --off. Calls to the APIs that take it are then encrypted and signed, their replies
    /// verified and decrypted. Keys are sealed like the AppSecret and never printed.
    #[command(name = "api-security")]
    ApiSecurity(ApiSecurityArgs),
    /// An API's daily quota for the app, as WeChat counts it (limit, used, left).
    Quota {
        #[arg(long)]
        appid: ids::AppId,
        /// The API path, e.g. /wxa/getwxacodeunlimit.
        #[arg(long)]
        api: String,
    },
    /// Reset the app's API call counts with WeChat's clear_quota (a few a month), then lift this server's blocks.
    #[command(name = "clear-quota")]
    ClearQuota {
        #[arg(long)]
        appid: ids::AppId,
    },
    /// Let upstream calls for an app resume after a daily-quota refusal (45009), once WeChat's quota was reset
    /// (`clear_quota` / the console's 接口调用次数清零).
    Unblock {
        #[arg(long)]
        appid: ids::AppId,
    },
}

/// `app api-security`'s arguments: files as the console downloads them, and the SNs it shows beside them.
#[derive(Debug, clap::Args)]
pub struct ApiSecurityArgs {
    #[arg(long)]
    pub appid: ids::AppId,
    /// A file holding the symmetric key as the console shows it (base64 of 32 bytes).
    #[arg(long, required_unless_present = "off")]
    pub sym_key_file: Option<std::path::PathBuf>,
    /// The symmetric key's SN (32 hexadecimal characters).
    #[arg(long, required_unless_present = "off")]
    pub sym_sn: Option<String>,
    /// The app's RSA private key, PEM (PKCS#1 as the console downloads it, or PKCS#8).
    #[arg(long, required_unless_present = "off")]
    pub private_key_file: Option<std::path::PathBuf>,
    /// The SN of the key pair (of the public key set in the console).
    #[arg(long, required_unless_present = "off")]
    pub private_key_sn: Option<String>,
    /// WeChat's platform certificate, PEM; give it twice (with two --cert-sn) during a rotation.
    #[arg(long, required_unless_present = "off")]
    pub cert_file: Vec<std::path::PathBuf>,
    /// The certificate's SN as the console shows it (its 编号, not the X.509 serial), in --cert-file order.
    #[arg(long, required_unless_present = "off")]
    pub cert_sn: Vec<String>,
    /// Switch API security off for the app (its keys are deleted).
    #[arg(long, conflicts_with_all = ["sym_key_file", "sym_sn", "private_key_file", "private_key_sn", "cert_file", "cert_sn"])]
    pub off: bool,
}

/// Parse the command line and run. `main` only prints the error chain.
pub fn run() -> Result<()> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let parsed = command_for(&args)
        .try_get_matches_from(&args)
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => exit_with(e),
    };
    use crate::startup::Mode;
    let mode = match &cli.command {
        Some(Command::Serve) => Mode::Server,
        Some(Command::Runtime { .. }) => Mode::Instance,
        None if crate::scf::runtime::RuntimeClient::base_from_env().is_some() => Mode::Instance,
        None => Mode::Server,
        _ => Mode::Command,
    };
    // A registry command's output is its answer: its info lines (the audit of what changed) are shown only when
    // asked for with WAFER_LOG / --log.
    let quiet = cli.command.as_ref().is_some_and(target::over_the_wire)
        && std::env::var_os("WAFER_LOG").is_none()
        && !std::env::args().any(|a| a == "--log" || a.starts_with("--log="));
    let filter = if quiet { "warn" } else { cli.config.log.as_str() };
    // HTTP mode writes logs off the request's thread; an SCF instance and the one-shot commands write directly.
    let _log_guard = crate::telemetry::init(filter, cli.config.log_format, mode == Mode::Server);
    let rt = crate::startup::async_runtime(mode).context("could not start the async runtime")?;
    rt.block_on(execute(cli))
}

/// Settings only a running server reads: listed in the help of `serve`, `runtime` and the top level, left out of the
/// help of the registry and maintenance commands (they are still accepted there, e.g. from the environment).
const SERVER_ONLY: &[&str] = &[
    "listen",
    "wechat_base_url",
    "wechat_fallback_url",
    "wecom_base_url",
    "caller_auth",
    "purge_interval_secs",
    "token_lease_ms",
    "force_refresh_per_day",
    "force_refresh_per_hour",
    "force_min_interval_secs",
    "login_limit_per_app",
    "login_limit_per_ip",
    "token_host",
    "default_appid",
    "auto_migrate",
    "metrics",
    "metrics_listen",
    "header_timeout_ms",
    "body_timeout_ms",
    "max_connections",
    "client_address",
    "upstream_timeout_ms",
    "body_limit",
    "passthrough_body_limit",
    "max_sessions_per_user",
    "db_pool_max",
];

/// The command line for these arguments: when help is asked for a subcommand other than `serve` / `runtime`, the
/// server-only settings are hidden from it, so each subcommand's help shows what concerns it.
fn command_for(args: &[std::ffi::OsString]) -> clap::Command {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let words: Vec<String> = args.iter().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let sub = words.iter().find(|a| !a.starts_with('-')).map(String::as_str);
    let wants_help = words.iter().any(|a| a == "--help" || a == "-h") || sub == Some("help");
    if wants_help && !matches!(sub, None | Some("serve") | Some("runtime")) {
        for id in SERVER_ONLY {
            cmd = cmd.mut_arg(*id, |a| a.hide(true));
        }
    }
    cmd
}

/// Print a command-line error and exit; a bad value that came from a `WAFER_*` variable is named by that variable
/// (the user set `WAFER_LISTEN`, not `--listen`).
fn exit_with(e: clap::Error) -> ! {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    use clap::CommandFactory;
    if matches!(e.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue) {
        if let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) {
            let long = arg.trim_start_matches('-').split([' ', '=']).next().unwrap_or("").to_owned();
            let cmd = Cli::command();
            let found = cmd.get_arguments().find(|a| a.get_long() == Some(long.as_str()));
            let secret = found.is_some_and(|a| a.is_hide_env_values_set());
            let env = found.and_then(|a| a.get_env()).map(|v| v.to_string_lossy().into_owned());
            let from_env = env.as_ref().filter(|v| {
                std::env::var_os(v).is_some()
                    && !std::env::args().any(|a| a.starts_with(&format!("--{long}")))
            });
            if secret && from_env.is_none() {
                // A secret given as a flag is not echoed either.
                let text = e.to_string();
                let first = text.lines().next().unwrap_or("");
                let why = first.rsplit("': ").next().unwrap_or("invalid value");
                eprintln!("error: --{long}: invalid value (not shown): {why}");
                std::process::exit(2);
            }
            if let Some(var) = from_env {
                let text = e.to_string();
                let first = text.lines().next().unwrap_or("").trim_start_matches("error: ");
                if secret {
                    // Never echo a secret: only why it was refused.
                    let why = first.rsplit("': ").next().unwrap_or("invalid value");
                    eprintln!("error: {var}: invalid value (not shown): {why} (flag --{long})");
                } else {
                    let value = std::env::var(var).unwrap_or_default();
                    // clap lists the accepted values on a line of their own: keep it.
                    let accepted = text
                        .lines()
                        .find_map(|l| l.trim().strip_prefix("[possible values: "))
                        .map(|v| format!("; accepted: {}", v.trim_end_matches(']')))
                        .unwrap_or_default();
                    eprintln!("error: {var}={value:?}: {first}{accepted} (set by {var}; flag --{long})");
                }
                std::process::exit(2);
            }
        }
    }
    e.exit()
}

/// Run a parsed command line.
pub async fn execute(cli: Cli) -> Result<()> {
    let config = cli.config;
    let default = if crate::scf::runtime::RuntimeClient::base_from_env().is_some() {
        Command::Runtime { runtime_api: None }
    } else {
        Command::Serve
    };
    let command = cli.command.unwrap_or(default);
    target::check(&config, &command)?;
    match command {
        Command::Runtime { runtime_api } => crate::startup::run_runtime(&config, runtime_api).await,
        Command::Invoke { file } => maintenance::invoke(&config, &file).await,
        Command::Replay { bootstrap, time_limit_ms, init_timeout_ms, events } => {
            crate::scf::replay::replay(&bootstrap, time_limit_ms, init_timeout_ms, &events).await
        }
        Command::Migrate => maintenance::migrate(&config).await,
        Command::App(cmd) => app_command(&config, cmd).await,
        Command::Agent(cmd) => agent_command(&config, cmd).await,
        Command::Cos(cmd) => cos_command(&config, cmd).await,
        Command::Key(cmd) => key_command(&config, cmd).await,
        Command::Status { quota } => status_command(&config, quota.as_deref()).await,
        Command::Import { from, dry_run } => maintenance::import(&config, &from, dry_run).await,
        Command::Reencrypt => maintenance::reencrypt(&config).await,
        Command::PurgeSessions => maintenance::purge_sessions(&config).await,
        Command::Serve => crate::startup::run_http(&config).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_secret_appears_in_any_debug_output() {
        let cli = Cli::parse_from([
            "wafer-scf",
            "--database-url",
            "mysql://wafer:DBPASS-1@db:3306/wafer",
            "--admin-token",
            "ADMIN-TOKEN-2-of-at-least-32-characters",
            "--master-key",
            "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=",
            "app",
            "add",
            "--appid",
            "wx1",
            "--secret",
            "APP-SECRET-3",
        ]);
        let text = format!("{cli:?}");
        for secret in ["DBPASS-1", "ADMIN-TOKEN-2", "MDEyMzQ1Njc4", "APP-SECRET-3"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("wx1"), "identifiers stay readable: {text}");
        let settings =
            crate::handlers::Settings { admin_token: cli.config.admin_token(), ..Default::default() };
        assert!(!format!("{settings:?}").contains("ADMIN-TOKEN-2"));
        for cmd in [
            vec![
                "wafer-scf",
                "agent",
                "add",
                "--corpid",
                "ww",
                "--agentid",
                "1",
                "--secret",
                "AGENT-SECRET-4",
            ],
            vec!["wafer-scf", "cos", "add", "--appid", "1250000000", "--secret-key", "COS-KEY-5"],
        ] {
            let text = format!("{:?}", Cli::parse_from(&cmd));
            assert!(!text.contains("SECRET-4") && !text.contains("COS-KEY-5"), "{text}");
        }
    }

    #[test]
    fn subcommand_help_shows_only_what_concerns_it() {
        let help = |args: &[&str]| {
            let args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
            match command_for(&args).try_get_matches_from(&args) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("help was not printed"),
            }
        };
        let app_add = help(&["wafer-scf", "app", "add", "--help"]);
        assert!(app_add.contains("--appid") && app_add.contains("--database-url"), "{app_add}");
        assert!(!app_add.contains("--listen") && !app_add.contains("--upstream-timeout-ms"), "{app_add}");
        let serve = help(&["wafer-scf", "serve", "--help"]);
        assert!(serve.contains("--listen") && serve.contains("--upstream-timeout-ms"), "{serve}");
        let top = help(&["wafer-scf", "--help"]);
        assert!(top.contains("--listen") && top.contains("Examples:"), "{top}");
        use clap::CommandFactory;
        for id in SERVER_ONLY {
            assert!(Cli::command().get_arguments().any(|a| a.get_id() == *id), "{id} is a setting");
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
