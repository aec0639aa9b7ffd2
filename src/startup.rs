//! Building and running a service: from configuration (the CLI's `serve` and `runtime`: listen or poll, migrate, say
//! what is not ready) or piece by piece (tests and benchmarks), so every caller wires the store, the one HTTP client,
//! the clock, the settings and the token policy the same way.

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::handlers::Deps;
use crate::service::Service;
use crate::settings::{ServeOptions, Settings};
use crate::store::{self, Storage};
use crate::tokens::Policy;
use crate::wechat::wecom::WeComClient;
use crate::wechat::{self, UpstreamTimeouts, WeChatClient};
use anyhow::{Context, Result};
use std::sync::Arc;

/// A service under construction. Defaults: system clock, default settings and policy, 5 s upstream deadline.
pub struct ServiceBuilder {
    store: Storage,
    wechat_base: String,
    wechat_fallback: Option<String>,
    wecom_base: String,
    upstream: UpstreamTimeouts,
    clock: Arc<dyn Clock>,
    settings: Settings,
    policy: Policy,
    options: ServeOptions,
}

impl ServiceBuilder {
    /// A service over `store` whose WeChat and WeCom calls go to `upstream_base`.
    pub fn new(store: Storage, upstream_base: &str) -> Self {
        Self {
            store,
            wechat_base: upstream_base.to_owned(),
            wechat_fallback: None,
            wecom_base: upstream_base.to_owned(),
            upstream: UpstreamTimeouts::default(),
            clock: Arc::new(SystemClock),
            settings: Settings::default(),
            policy: Policy::default(),
            options: ServeOptions::default(),
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

    /// What the transports need (body limits, metrics route, HTTP limits, client address).
    pub fn options(mut self, options: ServeOptions) -> Self {
        self.options = options;
        self
    }

    pub fn body_limit(mut self, limit: usize) -> Self {
        self.options.body_limit = limit;
        self
    }

    pub fn http_limits(mut self, limits: crate::settings::HttpLimits) -> Self {
        self.options.http = limits;
        self
    }

    pub fn client_address(mut self, from: crate::request::ClientAddress) -> Self {
        self.options.client_address = from;
        self
    }

    /// Wire it: one keep-alive HTTP client for every upstream call, the credential manager, the gate.
    pub fn build(self) -> Result<Service> {
        let http = wechat::http_client(self.upstream).context("could not build the HTTP client")?;
        let relay = wechat::relay::Relay::new(self.upstream).context("could not build the HTTP client")?;
        for var in wechat::PROXY_VARIABLES {
            if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
                // Only the name: a proxy URL may carry a password.
                tracing::warn!(
                    variable = var,
                    "a proxy is set in the environment and ignored: WeChat and WeCom are called directly, and \
                     their IP whitelists see this host's egress address"
                );
            }
        }
        // Sessions read by auth are served from a short-lived in-process cache (see `store::cache`).
        let store = store::cache::SessionCache::in_front_of(self.store, self.clock.clone());
        let deps = Deps::new(
            store,
            WeChatClient::new(http.clone(), relay, &self.wechat_base)
                .with_fallback(self.wechat_fallback.as_deref()),
            WeComClient::new(http, &self.wecom_base),
            self.clock,
            self.settings,
            self.policy,
        );
        Ok(Service::new(deps, self.options))
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
    let svc = service(config, 1).await?;
    let local = crate::admin::Local {
        store: svc.deps.store.clone(),
        creds: None,
        clock: Arc::new(SystemClock),
        facts: crate::admin::ProcessFacts::of(
            &config.settings(),
            std::time::Instant::now(),
            config.token_policy().force_per_day,
        ),
    };
    Ok(Box::new(CliAdmin { local, svc }))
}

/// The CLI's admin operations without `--server`: over the store, and the ones that call WeChat (quota,
/// clear_quota) through a service built here, as a server runs them.
struct CliAdmin {
    local: crate::admin::Local,
    svc: Service,
}

#[async_trait::async_trait]
impl crate::admin::AdminApi for CliAdmin {
    async fn run(&self, op: crate::admin::ops::AdminOp) -> crate::admin::AdminResult<serde_json::Value> {
        use crate::admin::ops::AdminOp;
        match op {
            AdminOp::AppQuota(_) | AdminOp::AppClearQuota(_) => {
                crate::handlers::admin::run(&self.svc.deps, op)
                    .await
                    .map_err(crate::admin::AdminError::Refused)
            }
            op => self.local.run_op(op).await,
        }
    }
}

/// Open the configured store; with `migrate`, apply pending migrations first.
pub async fn open_store(config: &Config, migrate: bool) -> Result<Storage> {
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
        .settings(config.settings())
        .policy(config.token_policy())
        .options(config.serve_options())
        .build()
}

/// What `migrate` did, in one line: never the same line for both outcomes.
pub fn migrated(applied: &[i64], backend: &str) -> String {
    if applied.is_empty() {
        format!("already up to date ({backend})")
    } else {
        let list: Vec<String> = applied.iter().map(|v| format!("{v:04}")).collect();
        format!("applied {} ({backend})", list.join(", "))
    }
}

fn warn_if_open(config: &Config) {
    if config.caller_auth == crate::auth::CallerAuthMode::Off {
        tracing::warn!(
            "WAFER_CALLER_AUTH=off: anyone who can reach this server gets live access tokens and tickets"
        );
    }
}

/// Apply pending migrations before serving (`WAFER_AUTO_MIGRATE`): concurrent cold starts take the store's
/// migration lock in turn, so the schema is migrated once. A failure is logged and the server starts anyway
/// (`/readyz` says what is wrong; the next start tries again).
async fn auto_migrate(svc: &crate::service::Service) {
    let store = &svc.deps.store;
    match store.schema.migrate().await {
        Ok(applied) if !applied.is_empty() => {
            tracing::info!("schema: {}", migrated(&applied, store.backend()))
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "automatic migration failed; run `wafer-scf migrate`"),
    }
}

/// HTTP mode (`wafer-scf serve`): build the service, migrate if asked (`WAFER_AUTO_MIGRATE=1`, what an SCF web
/// function's `scf_bootstrap` sets), listen, serve until SIGTERM / Ctrl-C.
pub async fn run_http(config: &Config) -> Result<()> {
    warn_if_open(config);
    let svc = Arc::new(service(config, 10).await?);
    if config.auto_migrate.unwrap_or(false) {
        auto_migrate(&svc).await;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("could not listen on {}", config.listen))?;
    let addr = listener.local_addr().context("listener has no address")?;
    tracing::info!(
        %addr, storage = %config.database_url.redacted(), wechat = %config.wechat_base_url,
        version = env!("CARGO_PKG_VERSION"), caller_auth = ?config.caller_auth,
        admin = config.admin_token().is_some(), master_key = config.master_key.is_some(),
        "wafer-scf listening"
    );
    if let Some(addr) = config.metrics_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("WAFER_METRICS_LISTEN: could not listen on {addr}"))?;
        tracing::info!(%addr, "metrics on GET /metrics");
        tokio::spawn(crate::serve::serve_metrics(l));
    }
    let chores = crate::serve::Chores {
        purge_every: (config.purge_interval_secs > 0)
            .then(|| std::time::Duration::from_secs(config.purge_interval_secs)),
        storage: config.database_url.redacted(),
    };
    crate::serve::run(listener, svc, chores, crate::serve::shutdown_signal())
        .await
        .context("HTTP server failed")
}

/// SCF custom runtime (`wafer-scf runtime`, what `bootstrap` runs): build the service, migrate if asked, poll the
/// runtime API.
pub async fn run_runtime(config: &Config, runtime_api: Option<String>) -> Result<()> {
    let base = runtime_api
        .or_else(crate::scf::runtime::RuntimeClient::base_from_env)
        .context("no runtime API: set SCF_RUNTIME_API (and SCF_RUNTIME_API_PORT) or pass --runtime-api")?;
    warn_if_open(config);
    // Everything expensive happens before init/ready: storage pool, schema, HTTP client, caches.
    // One invocation at a time per instance: one connection is all it uses (a fleet of 5,000 instances is then
    // 5,000 connections, not 10,000).
    let svc = service(config, 1).await?;
    if config.auto_migrate.unwrap_or(true) {
        auto_migrate(&svc).await;
    }
    tracing::info!(
        storage = %config.database_url.redacted(), version = env!("CARGO_PKG_VERSION"),
        caller_auth = ?config.caller_auth, admin = config.admin_token().is_some(),
        master_key = config.master_key.is_some(), "wafer-scf runtime starting"
    );
    let ready = svc.readiness().await;
    if ready != crate::service::Readiness::Ready {
        tracing::error!(storage = %config.database_url.redacted(), "{}", ready.reason());
    }
    // The instance's thread is its own: it waits for the runtime API in the kernel (`Wait::Blocking`).
    let client = crate::scf::runtime::RuntimeClient::new(&base, crate::scf::wire::Wait::Blocking)
        .context("could not build the runtime API client")?;
    crate::scf::runtime::run(&client, &svc, None).await
}

/// How the process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `serve`: HTTP mode, many requests at once.
    Server,
    /// `runtime`: an SCF instance, one invocation at a time.
    Instance,
    /// A one-shot command.
    Command,
}

/// The async runtime for `mode`, with the allocator set for it ([`crate::alloc`]). An SCF instance runs on one
/// thread: no wake-ups across threads, one allocator heap. HTTP mode's runtime is one thread too, the first of its
/// lanes (`crate::serve`: the others are threads of their own, one per CPU); the commands use a thread per core.
pub fn async_runtime(mode: Mode) -> std::io::Result<tokio::runtime::Runtime> {
    use crate::alloc::{purge_after, SCF_PURGE_DELAY_MS, SERVE_PURGE_DELAY_MS};
    let mut builder = match mode {
        Mode::Instance => {
            purge_after(SCF_PURGE_DELAY_MS);
            tokio::runtime::Builder::new_current_thread()
        }
        Mode::Server => {
            purge_after(SERVE_PURGE_DELAY_MS);
            tokio::runtime::Builder::new_current_thread()
        }
        Mode::Command => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}
