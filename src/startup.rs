//! Building a running service: from configuration (the CLI) or piece by piece (tests and benchmarks), so every
//! caller wires the store, the one HTTP client, the clock, the settings and the token policy the same way.

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::handlers::{Deps, Settings};
use crate::service::Service;
use crate::store::{self, Store};
use crate::tokens::Policy;
use crate::wechat::wecom::WeComClient;
use crate::wechat::{self, UpstreamTimeouts, WeChatClient};
use anyhow::{Context, Result};
use std::sync::Arc;

/// A service under construction. Defaults: system clock, default settings and policy, 5 s upstream deadline.
pub struct ServiceBuilder {
    store: Arc<dyn Store>,
    wechat_base: String,
    wechat_fallback: Option<String>,
    wecom_base: String,
    upstream: UpstreamTimeouts,
    clock: Arc<dyn Clock>,
    settings: Settings,
    policy: Policy,
    body_limit: usize,
}

impl ServiceBuilder {
    /// A service over `store` whose WeChat and WeCom calls go to `upstream_base`.
    pub fn new(store: Arc<dyn Store>, upstream_base: &str) -> Self {
        Self {
            store,
            wechat_base: upstream_base.to_owned(),
            wechat_fallback: None,
            wecom_base: upstream_base.to_owned(),
            upstream: UpstreamTimeouts::default(),
            clock: Arc::new(SystemClock),
            settings: Settings::default(),
            policy: Policy::default(),
            body_limit: crate::service::DEFAULT_BODY_LIMIT,
        }
    }

    /// A secondary WeChat host for when the primary cannot be reached.
    pub fn wechat_fallback(mut self, fallback: Option<&str>) -> Self {
        self.wechat_fallback = fallback.map(str::to_owned);
        self
    }

    pub fn wecom_base(mut self, base: &str) -> Self {
        self.wecom_base = base.to_owned();
        self
    }

    pub fn upstream_timeouts(mut self, t: UpstreamTimeouts) -> Self {
        self.upstream = t;
        self
    }

    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    pub fn body_limit(mut self, limit: usize) -> Self {
        self.body_limit = limit;
        self
    }

    /// Wire it: one keep-alive HTTP client for every upstream call, the credential manager, the gate.
    pub fn build(self) -> Result<Service> {
        let http = wechat::http_client(self.upstream).context("could not build the HTTP client")?;
        // Sessions read by auth are served from a short-lived in-process cache (see `store::cache`).
        let store: Arc<dyn Store> = Arc::new(store::cache::SessionCache::new(self.store, self.clock.clone()));
        let deps = Deps::new(
            store,
            WeChatClient::new(http.clone(), &self.wechat_base).with_fallback(self.wechat_fallback.as_deref()),
            WeComClient::new(http, &self.wecom_base),
            self.clock,
            self.settings,
            self.policy,
        );
        let mut svc = Service::new(deps);
        svc.body_limit = self.body_limit;
        Ok(svc)
    }
}

/// The admin operations for the CLI: through the server named by `--server` / `WAFER_SERVER`, else over the
/// configured store.
pub async fn admin_api(config: &Config) -> Result<Box<dyn crate::admin::AdminApi>> {
    use secrecy::ExposeSecret;
    if let Some(url) = config.server.as_deref().filter(|u| !u.trim().is_empty()) {
        let token = config.admin_token().map(|t| t.expose_secret().to_owned()).unwrap_or_default();
        return Ok(Box::new(crate::remote::Remote::new(url.trim(), &token).map_err(anyhow::Error::msg)?));
    }
    let store = open_store(config, false).await?;
    Ok(Box::new(crate::admin::Local {
        store,
        creds: None,
        clock: Arc::new(SystemClock),
        facts: crate::admin::ProcessFacts {
            started: std::time::Instant::now(),
            caller_auth: config.caller_auth,
            admin: config.admin_token().is_some(),
            master_key: config.master_key.is_some(),
            force_budget: config.force_refresh_per_day as i64,
        },
    }))
}

/// Open the configured store; with `migrate`, apply pending migrations first.
pub async fn open_store(config: &Config, migrate: bool) -> Result<Arc<dyn Store>> {
    store::open(&config.database_url, &config.store_options(), migrate)
        .await
        .with_context(|| format!("could not open storage {}", config.database_url.redacted()))
}

/// Build the service from configuration. `default_pool` is the MySQL pool size when `WAFER_DB_POOL_MAX` is not set
/// (SCF instances want 1–2 connections).
pub async fn service(config: &Config, default_pool: u64) -> Result<Service> {
    let mut config = config.clone();
    config.db_pool_max = Some(config.db_pool_max.unwrap_or(default_pool));
    let fallback = config.wechat_fallback().map_err(anyhow::Error::msg)?;
    let store = open_store(&config, false).await?;
    ServiceBuilder::new(store, &config.wechat_base_url)
        .wechat_fallback(fallback.as_deref())
        .wecom_base(&config.wecom_base_url)
        .upstream_timeouts(UpstreamTimeouts {
            connect: config.upstream_timeout().min(std::time::Duration::from_secs(3)),
            total: config.upstream_timeout(),
        })
        .settings(Settings {
            default_appid: config.default_appid(),
            max_sessions_per_user: config.max_sessions_per_user as usize,
            admin_token: config.admin_token(),
            caller_auth: config.caller_auth,
            master_key: config.master_key.is_some(),
            login_limit_per_app: config.login_limit_per_app,
            login_limit_per_ip: config.login_limit_per_ip,
            token_host: config.token_host,
        })
        .policy(config.token_policy())
        .body_limit(config.body_limit as usize)
        .build()
        .map(|mut svc| {
            svc.metrics_route = config.metrics;
            svc.http_limits = crate::service::HttpLimits {
                header_timeout: std::time::Duration::from_millis(config.header_timeout_ms),
                body_timeout: std::time::Duration::from_millis(config.body_timeout_ms),
                max_connections: config.max_connections as usize,
            };
            svc
        })
}
