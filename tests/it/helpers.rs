//! Test helpers: per-test databases on both backends, the service wired to a fake WeChat and a manual clock,
//! and typed calls (`call`, `login`).

use crate::fake_wechat::FakeWeChat;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use wafer_scf::clock::ManualClock;
use wafer_scf::handlers::Settings;
use wafer_scf::registry::KeyScope;
use wafer_scf::request::RequestMeta;
use wafer_scf::service::Service;
use wafer_scf::startup::ServiceBuilder;
use wafer_scf::store::{self, AppRecord, CallerKeyRecord, DatabaseUrl, Storage, StoreOptions, TokenMode};
use wafer_scf::wechat::UpstreamTimeouts;

/// Generate one test per backend from an `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::helpers::Backend::Sqlite).await } )*
        }
        mod mysql {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               #[cfg_attr(not(wafer_mysql_tests), ignore = "MySQL suite off: set WAFER_TEST_MYSQL_URL")]
               async fn $name() {
                   if $crate::helpers::mysql_server_url().is_none() { return; }
                   super::$name($crate::helpers::Backend::Mysql).await
               } )*
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Mysql,
}

/// The MySQL server URL for tests, from `WAFER_TEST_MYSQL_URL`. In CI it must be set: a missing URL fails the
/// test instead of silently skipping the MySQL suite.
pub fn mysql_server_url() -> Option<String> {
    match std::env::var("WAFER_TEST_MYSQL_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI is set but WAFER_TEST_MYSQL_URL is not: the MySQL suite must run in CI")
        }
        _ => None,
    }
}

/// Replace the database name in a mysql:// URL.
pub fn with_db_name(url: &str, db: &str) -> String {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    let (head, tail) = url.split_at(scheme_end);
    let (authority, rest) = match tail.find('/') {
        Some(i) => (&tail[..i], &tail[i..]),
        None => (tail, ""),
    };
    let query = rest.find('?').map(|i| &rest[i..]).unwrap_or("");
    format!("{head}{authority}/{db}{query}")
}

/// A fresh database for one test, dropped when the guard goes.
pub struct TestDb {
    pub url: String,
    mysql_name: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("wafer.db");
                Self { url: format!("sqlite:{}", path.display()), mysql_name: None, _dir: Some(dir) }
            }
            Backend::Mysql => {
                let server = mysql_server_url().expect("MySQL URL");
                let name = format!("wafer_t_{}", wafer_scf::crypto::random_hex(6).unwrap());
                let pool = mysql_async::Pool::new(server.as_str());
                {
                    use mysql_async::prelude::Queryable;
                    let mut conn =
                        pool.get_conn().await.expect("MySQL is unreachable (WAFER_TEST_MYSQL_URL)");
                    conn.query_drop(format!(
                        "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                    ))
                    .await
                    .unwrap();
                }
                pool.disconnect().await.unwrap();
                Self { url: with_db_name(&server, &name), mysql_name: Some((server, name)), _dir: None }
            }
        }
    }

    pub fn database_url(&self) -> DatabaseUrl {
        DatabaseUrl::parse(&self.url).unwrap()
    }

    /// Open a store on this database with the schema applied.
    pub async fn store(&self) -> Storage {
        self.store_with(StoreOptions::default()).await
    }

    pub async fn store_with(&self, opts: StoreOptions) -> Storage {
        store::open(&self.database_url(), &opts, true).await.unwrap()
    }

    /// Every value of every wafer_ table, as text, read straight from the database (no decryption).
    pub async fn raw_dump(&self) -> String {
        let mut out = String::new();
        match self.database_url() {
            DatabaseUrl::Sqlite(path) => {
                let c = rusqlite::Connection::open(path).unwrap();
                let tables: Vec<String> = c
                    .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'wafer_%'")
                    .unwrap()
                    .query_map([], |r| r.get(0))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                for t in tables {
                    let mut st = c.prepare(&format!("SELECT * FROM {t}")).unwrap();
                    let n = st.column_count();
                    let mut rows = st.query([]).unwrap();
                    while let Some(r) = rows.next().unwrap() {
                        for i in 0..n {
                            let v: rusqlite::types::Value = r.get(i).unwrap();
                            out.push_str(&format!("{v:?}\n"));
                        }
                    }
                }
            }
            DatabaseUrl::Mysql(url) => {
                use mysql_async::prelude::Queryable;
                let pool = mysql_async::Pool::new(url.as_str());
                let mut conn = pool.get_conn().await.unwrap();
                let tables: Vec<String> = conn.query("SHOW TABLES LIKE 'wafer\\_%'").await.unwrap();
                for t in tables {
                    let rows: Vec<mysql_async::Row> = conn.query(format!("SELECT * FROM {t}")).await.unwrap();
                    for r in rows {
                        for v in r.unwrap() {
                            out.push_str(&format!(
                                "{}\n",
                                String::from_utf8_lossy(&v.as_sql(true).into_bytes())
                            ));
                        }
                    }
                }
                drop(conn);
                pool.disconnect().await.unwrap();
            }
        }
        out
    }

    /// Run one SQL statement straight against the database.
    pub async fn raw_exec(&self, sql: &str) {
        match self.database_url() {
            DatabaseUrl::Sqlite(path) => {
                rusqlite::Connection::open(path).unwrap().execute_batch(sql).unwrap();
            }
            DatabaseUrl::Mysql(url) => {
                use mysql_async::prelude::Queryable;
                let pool = mysql_async::Pool::new(url.as_str());
                pool.get_conn().await.unwrap().query_drop(sql).await.unwrap();
                pool.disconnect().await.unwrap();
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((server, name)) = self.mysql_name.take() {
            drop_database(&server, &name);
        }
    }
}

/// Drop a MySQL database from a helper thread with its own runtime (drop guards cannot be async).
pub fn drop_database(server: &str, name: &str) {
    let (server, name) = (server.to_owned(), name.to_owned());
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            use mysql_async::prelude::Queryable;
            let pool = mysql_async::Pool::new(server.as_str());
            if let Ok(mut c) = pool.get_conn().await {
                let _ = c.query_drop(format!("DROP DATABASE IF EXISTS {name}")).await;
            }
            let _ = pool.disconnect().await;
        });
    })
    .join();
}

/// POST an envelope to a running server and read the reply envelope.
pub async fn post_envelope(client: &reqwest::Client, url: &str, interface: &str, para: Value) -> Value {
    let body = envelope(interface, para);
    client.post(url).json(&body).send().await.unwrap().json().await.unwrap()
}

/// The access token the token host at `base` (with or without a trailing slash) hands an SDK for `appid`.
pub async fn token_host_token(base: &str, appid: &str, secret: &str) -> String {
    let url = format!(
        "{}/cgi-bin/token?grant_type=client_credential&appid={appid}&secret={secret}",
        base.trim_end_matches('/')
    );
    let reply: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    reply["access_token"].as_str().unwrap_or_else(|| panic!("no token: {reply}")).to_owned()
}

pub const T0: i64 = 1_750_000_000;

/// The service under test with its fakes.
pub struct TestApp {
    pub svc: Arc<Service>,
    pub store: Storage,
    pub clock: Arc<ManualClock>,
    pub wx: FakeWeChat,
    /// The test's database (it lives as long as the app).
    pub db: TestDb,
}

pub fn app_record(appid: &str, secret: &str) -> AppRecord {
    AppRecord {
        appid: appid.parse().unwrap(),
        secret: secret.into(),
        login_duration_secs: 30 * 86_400,
        session_duration_secs: 2_592_000,
        token_mode: TokenMode::Stable,
        created_at: T0,
        updated_at: T0,
    }
}

impl TestApp {
    /// A service with caller authentication off: suites other than `security` test their own concern.
    pub async fn new(backend: Backend) -> Self {
        Self::with_settings(backend, open_settings()).await
    }

    pub async fn with_settings(backend: Backend, settings: Settings) -> Self {
        Self::with_routes(backend, settings, axum::Router::new()).await
    }

    /// A service whose fake WeChat also answers a test's own `routes`.
    pub async fn with_routes(
        backend: Backend,
        settings: Settings,
        routes: axum::Router<Arc<crate::fake_wechat::FakeState>>,
    ) -> Self {
        Self::open(backend, StoreOptions::default(), settings, routes).await
    }

    /// A service over a store opened with `opts` (a master key, a pool size).
    pub async fn with_store_options(backend: Backend, opts: StoreOptions, settings: Settings) -> Self {
        Self::open(backend, opts, settings, axum::Router::new()).await
    }

    async fn open(
        backend: Backend,
        opts: StoreOptions,
        settings: Settings,
        routes: axum::Router<Arc<crate::fake_wechat::FakeState>>,
    ) -> Self {
        Self::over(backend, opts, settings, FakeWeChat::start_with(routes).await, T0).await
    }

    /// A service (its clock at the real time: signatures carry it) whose fake WeChat enforces API security.
    pub async fn secured(
        backend: Backend,
        opts: StoreOptions,
        settings: Settings,
        sf: Arc<crate::fake_secure::SecureFake>,
        routes: axum::Router<Arc<crate::fake_wechat::FakeState>>,
    ) -> Self {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        Self::over(backend, opts, settings, FakeWeChat::start_secured(routes, sf).await, now as i64).await
    }

    async fn over(backend: Backend, opts: StoreOptions, settings: Settings, wx: FakeWeChat, t0: i64) -> Self {
        let db = TestDb::new(backend).await;
        let store = db.store_with(opts).await;
        let clock = Arc::new(ManualClock::new(t0));
        let svc = Arc::new(build(store.clone(), &wx.base_url, clock.clone(), settings));
        Self { svc, store, clock, wx, db }
    }

    /// Register an app both here and at the fake WeChat.
    pub async fn add_app(&self, appid: &str, secret: &str) {
        self.store.registry.put_app(&app_record(appid, secret)).await.unwrap();
        self.wx.register(appid, secret);
    }

    pub async fn add_app_with(&self, app: AppRecord) {
        self.wx.register(&app.appid, &app.secret);
        self.store.registry.put_app(&app).await.unwrap();
    }

    /// Post an envelope; returns the response envelope as JSON.
    pub async fn call(&self, interface: &str, para: Value) -> Value {
        let body = envelope(interface, para);
        self.raw(body.to_string().as_bytes()).await
    }

    /// A bare envelope straight to the service: what a direct SCF invocation is.
    pub async fn raw(&self, body: &[u8]) -> Value {
        let env = self.svc.handle(body, &RequestMeta { direct: true, ..RequestMeta::default() }).await;
        serde_json::from_slice(&env.to_bytes()).unwrap()
    }

    /// Log in `openid` on `appid`; panics unless it succeeds. Returns returnData.
    pub async fn login(&self, appid: &str, openid: &str) -> Value {
        let r =
            self.call("qcloud.cam.id_skey", json!({"appid": appid, "code": self.wx.code_for(openid)})).await;
        assert_eq!(r["returnCode"], 0, "login failed: {r}");
        r["returnData"].clone()
    }

    /// Serve this app over HTTP on a free local port; returns its base URL.
    pub async fn serve_http(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(wafer_scf::serve::serve(listener, self.svc.clone(), std::future::pending()));
        url
    }

    pub async fn auth(&self, data: &Value) -> Value {
        self.call("qcloud.cam.auth", json!({"id": data["id"], "skey": data["skey"]})).await
    }
}

/// A caller key `key` named `name` with `scope`, stored straight away (as `key add` would store it).
pub async fn add_key(store: &Storage, name: &str, key: &str, scope: KeyScope) {
    let KeyScope { apps, corps, all, apis } = scope;
    let record = CallerKeyRecord {
        name: name.into(),
        key_hash: wafer_scf::crypto::sha256_hex(key.as_bytes()),
        scope_all: all,
        scope_apps: apps,
        scope_corps: corps,
        scope_apis: apis,
        created_at: T0,
        ..Default::default()
    };
    store.keys.add_caller_key(&record).await.unwrap();
}

/// A key scope: these apps, corps, everything (`all`), limited to these API path prefixes.
pub fn scope(apps: &[&str], corps: &[&str], all: bool, apis: &[&str]) -> KeyScope {
    let list = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
    KeyScope { apps: list(apps), corps: list(corps), all, apis: list(apis) }
}

/// The envelope a client posts for `interface` with `para`.
pub fn envelope(interface: &str, para: Value) -> Value {
    wafer_scf::envelope::request_body(interface, para)
}

/// Settings with caller authentication off.
pub fn open_settings() -> Settings {
    Settings { caller_auth: wafer_scf::auth::CallerAuthMode::Off, ..Settings::default() }
}

/// Build a service over `store` talking to a WeChat at `base` (500 ms upstream deadline, so a caller's budget
/// for a credential is 2.5 s).
pub fn build(store: Storage, base: &str, clock: Arc<ManualClock>, settings: Settings) -> Service {
    builder(store, base, clock, settings).build().unwrap()
}

/// The builder [`build`] uses, for a test that sets more (HTTP limits, the client address).
pub fn builder(store: Storage, base: &str, clock: Arc<ManualClock>, settings: Settings) -> ServiceBuilder {
    ServiceBuilder::new(store, base)
        .upstream_timeouts(UpstreamTimeouts {
            connect: Duration::from_millis(500),
            total: Duration::from_millis(500),
        })
        .clock(clock)
        .settings(settings)
        .policy(wafer_scf::tokens::Policy {
            lease_ms: 1_500,
            budget_ms: 2_500,
            busy_backoff_ms: 20,
            // The daily budget is what the tests exercise; the hourly one has its own test.
            force_per_hour: 1_000,
            ..Default::default()
        })
}

pub fn code(v: &Value) -> i64 {
    v["returnCode"].as_i64().unwrap_or_else(|| panic!("no returnCode in {v}"))
}

/// Encrypt a plaintext the way WeChat does (AES-128-CBC, PKCS#7, base64 key / iv / result): what a mini-program
/// sends as `encryptedData`. Test-only, so the library carries no encryption of user data.
pub fn encrypt_for_tests(session_key: &str, iv: &str, plaintext: &[u8]) -> Option<String> {
    use aes::cipher::{block_padding::Pkcs7, BlockEncryptMut, KeyIvInit};
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key: [u8; 16] = b64.decode(session_key).ok()?.try_into().ok()?;
    let iv: [u8; 16] = b64.decode(iv).ok()?.try_into().ok()?;
    let ct = cbc::Encryptor::<aes::Aes128>::new(&key.into(), &iv.into())
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    Some(b64.encode(ct))
}

/// An identifier of the type the call wants (`AppId`, `CorpId`, `AgentId`, `CosAppId`), from test text.
pub fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}
