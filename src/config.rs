//! Configuration: every `WAFER_*` environment variable, each overridable by a flag, validated at start-up so
//! that a bad value stops the process with one clear message.

use crate::store::DatabaseUrl;
use crate::telemetry::LogFormat;
use clap::Args;
use secrecy::{ExposeSecret, SecretString};
use std::net::SocketAddr;
use std::time::Duration;

/// Settings shared by every subcommand. Flags win over environment variables.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Storage: mysql://user:pass@host:port/db or sqlite:PATH (embedded, the default).
    #[arg(long, env = "WAFER_DATABASE_URL", default_value = "sqlite:wafer.db", value_parser = DatabaseUrl::parse, global = true, hide_env_values = true)]
    pub database_url: DatabaseUrl,

    /// Address the HTTP mode listens on.
    #[arg(long, env = "WAFER_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_listen, global = true)]
    pub listen: SocketAddr,

    /// WeChat API base URL (tests point it at a fake).
    #[arg(long, env = "WAFER_WECHAT_BASE_URL", default_value = "https://api.weixin.qq.com", value_parser = parse_base_url, global = true)]
    pub wechat_base_url: String,

    /// Secondary WeChat API host, used when the primary cannot be reached (default: api2.weixin.qq.com with the
    /// default base; `off` disables it).
    #[arg(long, env = "WAFER_WECHAT_FALLBACK_URL", global = true)]
    pub wechat_fallback_url: Option<String>,

    /// WeCom API base URL (tests point it at a fake).
    #[arg(long, env = "WAFER_WECOM_BASE_URL", default_value = "https://qyapi.weixin.qq.com", value_parser = parse_base_url, global = true)]
    pub wecom_base_url: String,

    /// Admin credential for admin interfaces (`qcloud.work.initagent`). Unset: admin interfaces are off.
    #[arg(long, env = "WAFER_ADMIN_TOKEN", global = true, hide_env_values = true, value_parser = parse_admin_token)]
    pub admin_token: Option<SecretString>,

    /// Caller authentication: credentials (token/ticket/signature/COS interfaces need a scoped key), all, or off.
    #[arg(long, env = "WAFER_CALLER_AUTH", value_enum, default_value = "credentials", global = true)]
    pub caller_auth: crate::auth::CallerAuthMode,

    /// HTTP mode: purge expired sessions this often, in seconds (0: never). SCF: use a timer trigger instead.
    #[arg(long, env = "WAFER_PURGE_INTERVAL_SECS", default_value_t = 3600, global = true)]
    pub purge_interval_secs: u64,

    /// Master key for secrets at rest: base64 of 32 random bytes (`openssl rand -base64 32`). Unset: stored in the clear.
    #[arg(long, env = "WAFER_MASTER_KEY", value_parser = parse_master_key, global = true, hide_env_values = true)]
    pub master_key: Option<crate::store::sealed::Sealer>,

    /// The master key being rotated out: rows sealed with it can still be read until `reencrypt` moves them to
    /// WAFER_MASTER_KEY. Read-only; never used to write.
    #[arg(long, env = "WAFER_MASTER_KEY_PREVIOUS", value_parser = parse_master_key, global = true, hide_env_values = true)]
    pub master_key_previous: Option<crate::store::sealed::Sealer>,

    /// How long a token refresher's lease holds unless renewed, in milliseconds (default 2000). A live refresher
    /// renews it every third of that while its fetch runs; one that dies or is frozen is taken over within it.
    #[arg(long, env = "WAFER_TOKEN_LEASE_MS", value_parser = clap::value_parser!(u64).range(500..=120_000), global = true)]
    pub token_lease_ms: Option<u64>,

    /// Forced token refreshes allowed per app per day, across instances (below WeChat's 20 forced stable tokens).
    #[arg(long, env = "WAFER_FORCE_REFRESH_PER_DAY", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000), global = true)]
    pub force_refresh_per_day: u64,

    /// Forced token refreshes allowed per app per hour, across instances.
    #[arg(long, env = "WAFER_FORCE_REFRESH_PER_HOUR", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1000), global = true)]
    pub force_refresh_per_hour: u64,

    /// A forced refresh naming the current token is honoured only this long after the last fetch (a cooldown
    /// against quota burning; 0 disables it).
    #[arg(long, env = "WAFER_FORCE_MIN_INTERVAL_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3600), global = true)]
    pub force_min_interval_secs: u64,

    /// Logins allowed per app per minute in each process (unset: unlimited); beyond it `1026`.
    #[arg(long, env = "WAFER_LOGIN_LIMIT_PER_APP", value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub login_limit_per_app: Option<u32>,

    /// Logins allowed per source address per minute in each process (unset: unlimited); beyond it `1026`.
    #[arg(long, env = "WAFER_LOGIN_LIMIT_PER_IP", value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub login_limit_per_ip: Option<u32>,

    /// Act as the WeChat API host for existing SDKs: answer `/cgi-bin/token`, `/cgi-bin/stable_token` and
    /// `/cgi-bin/gettoken` from the central cache (authenticated by the registered secret), and pass through calls
    /// that carry a token issued here (default: off).
    #[arg(long, env = "WAFER_TOKEN_HOST", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false", global = true)]
    pub token_host: bool,

    /// The app a login without `appid` uses (default: the only registered app, if there is exactly one).
    #[arg(long, env = "WAFER_DEFAULT_APPID", global = true)]
    pub default_appid: Option<String>,

    /// Apply pending schema migrations at start (default: 1 for `runtime` and for `serve` started by an SCF web
    /// function's `scf_bootstrap`, 0 for a plain `serve`, which says when the schema is behind instead). One process
    /// at a time migrates; the others wait for it.
    #[arg(long, env = "WAFER_AUTO_MIGRATE", value_parser = clap::builder::BoolishValueParser::new(), global = true)]
    pub auto_migrate: Option<bool>,

    /// Manage a deployed server instead of the database: `app`, `agent`, `cos`, `key` and `status` go through its
    /// admin interfaces (https://, or http:// to localhost; needs WAFER_ADMIN_TOKEN).
    #[arg(long, env = "WAFER_SERVER", global = true)]
    pub server: Option<String>,

    /// HTTP mode: answer `GET /metrics` (Prometheus text) on the main listener.
    #[arg(long, env = "WAFER_METRICS", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false", global = true)]
    pub metrics: bool,

    /// HTTP mode: serve `GET /metrics` on this address instead (e.g. 127.0.0.1:9100), apart from callers.
    #[arg(long, env = "WAFER_METRICS_LISTEN", global = true)]
    pub metrics_listen: Option<SocketAddr>,

    /// HTTP mode: time to receive a request's headers, and the longest a kept-alive connection may sit idle.
    #[arg(long, env = "WAFER_HEADER_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=300_000), global = true)]
    pub header_timeout_ms: u64,

    /// HTTP mode: time to receive a request's body.
    #[arg(long, env = "WAFER_BODY_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=300_000), global = true)]
    pub body_timeout_ms: u64,

    /// HTTP mode: where a client's address (per-address login limits, audit lines) comes from: `peer` (the TCP
    /// peer) or `forwarded` (the last X-Forwarded-For entry, which the proxy in front appended; SCF web functions).
    #[arg(long, env = "WAFER_CLIENT_ADDRESS", value_enum, default_value = "peer", global = true)]
    pub client_address: crate::request::ClientAddress,

    /// HTTP mode: connections served at once; more are closed as they arrive.
    #[arg(long, env = "WAFER_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=100_000), global = true)]
    pub max_connections: u64,

    /// Log filter (tracing EnvFilter syntax: error, warn, info, debug, or per-module directives).
    #[arg(long = "log", env = "WAFER_LOG", default_value = "info", value_parser = crate::telemetry::parse_filter, global = true)]
    pub log: String,

    /// Log line format.
    #[arg(long, env = "WAFER_LOG_FORMAT", value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,

    /// Deadline for one upstream (WeChat / WeCom) call, in milliseconds.
    #[arg(long, env = "WAFER_UPSTREAM_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..=60_000), global = true)]
    pub upstream_timeout_ms: u64,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "WAFER_BODY_LIMIT", default_value_t = 65536, value_parser = clap::value_parser!(u64).range(1024..=6_291_456), global = true)]
    pub body_limit: u64,

    /// Largest request body the HTTP pass-through streams on to WeChat (uploads), in bytes; bodies past
    /// `WAFER_BODY_LIMIT` are streamed, not held in memory. Event transports (SCF) carry at most the event's body.
    #[arg(long, env = "WAFER_PASSTHROUGH_BODY_LIMIT", default_value_t = 33_554_432, value_parser = clap::value_parser!(u64).range(1024..=1_073_741_824), global = true)]
    pub passthrough_body_limit: u64,

    /// Live sessions kept per user and app; older ones are dropped at login.
    #[arg(long, env = "WAFER_MAX_SESSIONS_PER_USER", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100), global = true)]
    pub max_sessions_per_user: u64,

    /// Paths to call with WeChat's API security besides the built-in table (comma-separated; an entry ending in `/`
    /// covers every path under it), for apps whose keys are registered.
    #[arg(long, env = "WAFER_API_SECURITY_PATHS", default_value = "", value_parser = parse_secure_paths, global = true)]
    pub api_security_paths: crate::wechat::secure::SecurePaths,

    /// Most MySQL connections per process (default: 10 in HTTP mode, 2 as an SCF runtime).
    #[arg(long, env = "WAFER_DB_POOL_MAX", value_parser = clap::value_parser!(u64).range(1..=200), global = true)]
    pub db_pool_max: Option<u64>,

    /// Deadline for one storage operation, in milliseconds.
    #[arg(long, env = "WAFER_DB_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..=60_000), global = true)]
    pub db_timeout_ms: u64,
}

/// A secret from the command line or environment: kept out of every `Debug` output.
pub fn parse_secret(s: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(s))
}

/// Shortest admin token accepted: it guards every secret the server holds.
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;

/// `WAFER_ADMIN_TOKEN`: empty counts as unset; otherwise at least [`MIN_ADMIN_TOKEN_LEN`] characters.
pub fn parse_admin_token(s: &str) -> Result<SecretString, String> {
    let n = s.trim().chars().count();
    if n > 0 && n < MIN_ADMIN_TOKEN_LEN {
        return Err(format!(
            "WAFER_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_LEN} characters (this one has {n}): \
             make one with `openssl rand -hex 32`"
        ));
    }
    Ok(SecretString::from(s))
}

fn parse_master_key(s: &str) -> Result<crate::store::sealed::Sealer, String> {
    crate::store::sealed::Sealer::from_base64(s)
}

fn parse_base_url(s: &str) -> Result<String, String> {
    let ok = (s.starts_with("http://") || s.starts_with("https://")) && s.len() > "https://".len() - 1;
    if ok && reqwest::Url::parse(s).is_ok() {
        Ok(s.trim_end_matches('/').to_owned())
    } else {
        Err("expected an http:// or https:// URL".into())
    }
}

/// WeChat's documented API host and its secondary.
pub const WECHAT_PRIMARY: &str = "https://api.weixin.qq.com";
pub const WECHAT_SECONDARY: &str = "https://api2.weixin.qq.com";

impl Config {
    /// The secondary WeChat host: as configured (`off` or empty: none), else `api2` when the base is WeChat's own.
    pub fn wechat_fallback(&self) -> Result<Option<String>, String> {
        match self.wechat_fallback_url.as_deref().map(str::trim) {
            Some("" | "off") => Ok(None),
            Some(url) => parse_base_url(url).map(Some).map_err(|e| format!("WAFER_WECHAT_FALLBACK_URL: {e}")),
            None => Ok((self.wechat_base_url == WECHAT_PRIMARY).then(|| WECHAT_SECONDARY.to_owned())),
        }
    }

    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms)
    }

    /// `WAFER_DEFAULT_APPID` with an empty value counts as unset.
    pub fn default_appid(&self) -> Option<crate::ids::AppId> {
        self.default_appid.as_deref().map(str::trim).filter(|a| !a.is_empty()).and_then(|a| a.parse().ok())
    }

    /// `WAFER_ADMIN_TOKEN` with an empty value counts as unset (admin interfaces off).
    pub fn admin_token(&self) -> Option<SecretString> {
        self.admin_token.clone().filter(|t| !t.expose_secret().trim().is_empty())
    }

    /// The token refresh policy for this configuration: a caller waits at most one upstream deadline plus 2 s
    /// for a credential; a refresher's lease lasts 2 s, renewed while it fetches.
    pub fn token_policy(&self) -> crate::tokens::Policy {
        let upstream = self.upstream_timeout_ms as i64;
        crate::tokens::Policy {
            lease_ms: self.token_lease_ms.map_or(crate::tokens::DEFAULT_LEASE_MS, |l| l as i64),
            budget_ms: upstream + 2_000,
            force_per_day: self.force_refresh_per_day as i64,
            force_per_hour: self.force_refresh_per_hour as i64,
            force_min_interval_secs: self.force_min_interval_secs as i64,
            ..crate::tokens::Policy::default()
        }
    }

    /// The handlers' settings this configuration gives: the one place the environment becomes them.
    pub fn settings(&self) -> crate::settings::Settings {
        crate::settings::Settings {
            default_appid: self.default_appid(),
            max_sessions_per_user: self.max_sessions_per_user as usize,
            admin_token: self.admin_token(),
            caller_auth: self.caller_auth,
            master_key: self.master_key.is_some(),
            login_limit_per_app: self.login_limit_per_app,
            login_limit_per_ip: self.login_limit_per_ip,
            token_host: self.token_host,
            api_security_paths: self.api_security_paths.clone(),
        }
    }

    /// What the transports need from this configuration.
    pub fn serve_options(&self) -> crate::settings::ServeOptions {
        crate::settings::ServeOptions {
            body_limit: self.body_limit as usize,
            passthrough_body_limit: self.passthrough_body_limit,
            metrics_route: self.metrics,
            http: crate::settings::HttpLimits {
                header_timeout: Duration::from_millis(self.header_timeout_ms),
                body_timeout: Duration::from_millis(self.body_timeout_ms),
                max_connections: self.max_connections as usize,
            },
            client_address: self.client_address,
        }
    }

    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            max_connections: self.db_pool_max.unwrap_or(10) as usize,
            query_timeout: Duration::from_millis(self.db_timeout_ms),
            sealer: self
                .master_key
                .clone()
                .unwrap_or_else(crate::store::sealed::Sealer::disabled)
                .with_previous(self.master_key_previous.as_ref()),
        }
    }
}

/// A listen address: `IP:PORT`, `localhost:PORT` (127.0.0.1) or `:PORT` (every interface, 0.0.0.0).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let candidate = if let Some(port) = s.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else if let Some(port) = s.strip_prefix("localhost:") {
        format!("127.0.0.1:{port}")
    } else {
        s.to_owned()
    };
    candidate.parse().map_err(|_| {
        "use IP:PORT (127.0.0.1:8080 for this machine only, 0.0.0.0:8080 for every interface), localhost:PORT or :PORT"
            .to_owned()
    })
}

fn parse_secure_paths(s: &str) -> Result<crate::wechat::secure::SecurePaths, String> {
    crate::wechat::secure::SecurePaths::with_extra(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_take_the_forms_people_type() {
        assert_eq!(parse_listen(":8080").unwrap(), "0.0.0.0:8080".parse::<SocketAddr>().unwrap());
        assert_eq!(parse_listen("localhost:9000").unwrap(), "127.0.0.1:9000".parse::<SocketAddr>().unwrap());
        assert_eq!(parse_listen("[::1]:80").unwrap(), "[::1]:80".parse::<SocketAddr>().unwrap());
        assert!(parse_listen("example.com:80").unwrap_err().contains(":PORT"));
    }
}
