//! What a deployment configures besides its storage and upstream endpoints, as plain data: the handlers' knobs
//! ([`Settings`]) and the transports' limits ([`ServeOptions`]). [`crate::config::Config`] turns the environment into
//! these in one step; tests and benchmarks build them directly.

/// Behaviour knobs that are not per-app.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `WAFER_DEFAULT_APPID`: the app a login without `appid` uses.
    pub default_appid: Option<crate::ids::AppId>,
    /// Live sessions kept per (appid, openid); the oldest beyond this are dropped at login.
    pub max_sessions_per_user: usize,
    /// `WAFER_ADMIN_TOKEN`: admin interfaces are off when unset.
    pub admin_token: Option<secrecy::SecretString>,
    /// `WAFER_CALLER_AUTH`.
    pub caller_auth: crate::auth::CallerAuthMode,
    /// Whether secrets at rest are sealed (`WAFER_MASTER_KEY`), for the status report.
    pub master_key: bool,
    /// Logins allowed per app, and per source address, per minute in each process (`None`: unlimited).
    pub login_limit_per_app: Option<u32>,
    pub login_limit_per_ip: Option<u32>,
    /// `WAFER_TOKEN_HOST`: answer SDKs' `/cgi-bin/token` and pass through calls carrying tokens issued here.
    pub token_host: bool,
    /// The paths called with WeChat's API security (the built-in table and `WAFER_API_SECURITY_PATHS`).
    pub api_security_paths: crate::wechat::secure::SecurePaths,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_appid: None,
            max_sessions_per_user: DEFAULT_MAX_SESSIONS_PER_USER,
            admin_token: None,
            caller_auth: crate::auth::CallerAuthMode::Credentials,
            master_key: false,
            login_limit_per_app: None,
            login_limit_per_ip: None,
            token_host: false,
            api_security_paths: crate::wechat::secure::SecurePaths::default(),
        }
    }
}

/// Live sessions kept per (appid, openid) unless configured otherwise: a phone, a tablet, a PC client,
/// a developer tool and one spare.
pub const DEFAULT_MAX_SESSIONS_PER_USER: usize = 5;

/// What the transports need: body limits, the metrics route, HTTP mode's connection limits and where a client's
/// address comes from.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Largest body accepted whole (`WAFER_BODY_LIMIT`).
    pub body_limit: usize,
    /// Largest body the HTTP pass-through streams on (`WAFER_PASSTHROUGH_BODY_LIMIT`).
    pub passthrough_body_limit: u64,
    /// Answer `GET /metrics` on the service's own listener (`WAFER_METRICS=1`).
    pub metrics_route: bool,
    /// HTTP mode's limits on slow, idle and too many connections.
    pub http: HttpLimits,
    /// Where HTTP mode takes a client's address from (`WAFER_CLIENT_ADDRESS`).
    pub client_address: crate::request::ClientAddress,
}

/// Default largest request body accepted, in bytes.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Default largest body streamed on by the HTTP pass-through (`WAFER_PASSTHROUGH_BODY_LIMIT`): 32 MiB, above
/// WeChat's and WeCom's media upload limits.
pub const DEFAULT_PASSTHROUGH_BODY_LIMIT: u64 = 32 * 1024 * 1024;

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            body_limit: DEFAULT_BODY_LIMIT,
            passthrough_body_limit: DEFAULT_PASSTHROUGH_BODY_LIMIT,
            metrics_route: false,
            http: HttpLimits::default(),
            client_address: crate::request::ClientAddress::Peer,
        }
    }
}

/// HTTP mode's limits on connections.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Time to receive a request's headers; also the longest a kept-alive connection may sit idle.
    pub header_timeout: std::time::Duration,
    /// Time to receive a request's body.
    pub body_timeout: std::time::Duration,
    /// Connections served at once; more are closed as they arrive.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: std::time::Duration::from_secs(10),
            body_timeout: std::time::Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}
