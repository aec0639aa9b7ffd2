//! WeChat and storage misbehaving, with many callers at once: every upstream fault costs one upstream call and is
//! answered from memory until its retry, no caller waits past its budget, a still-valid token keeps being served,
//! registration changes clear remembered failures, login bursts never fail for storage contention, and a frozen
//! database is failed fast and reported by `/readyz`.

use crate::both_backends;
use crate::fake_wechat::Fault;
use crate::helpers::id;
use crate::helpers::{build, code, open_settings, Backend, TestApp, TestDb};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wafer_scf::request::RequestMeta;
use wafer_scf::service::Service;

const APP: &str = "wx_resilient";
const STABLE: &str = "/cgi-bin/stable_token";
/// The test services' budget (helpers: 500 ms upstream deadline, 2.5 s budget) plus scheduling slack.
const WORST_WAIT: Duration = Duration::from_millis(3_500);

/// `n` concurrent calls of one interface; every reply and the slowest wait.
async fn burst(
    svc: &Arc<Service>,
    n: usize,
    interface: &str,
    para: impl Fn(usize) -> Value,
) -> (Vec<Value>, Duration) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let svc = svc.clone();
        let body = json!({"interface": {"interfaceName": interface, "para": para(i)}}).to_string();
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let env = svc.handle(body.as_bytes(), &RequestMeta::default()).await;
            (serde_json::from_slice::<Value>(&env.to_bytes()).unwrap(), started.elapsed())
        }));
    }
    let mut replies = Vec::new();
    let mut worst = Duration::ZERO;
    for t in tasks {
        let (r, waited) = t.await.unwrap();
        worst = worst.max(waited);
        replies.push(r);
    }
    (replies, worst)
}

async fn token_burst(svc: &Arc<Service>, n: usize) -> (Vec<Value>, Duration) {
    burst(svc, n, "qcloud.mimi.access_token", |_| json!({"appid": APP})).await
}

/// Every reply has the same return code (and, for errors, the same message); returns the code.
fn one_answer(replies: &[Value]) -> i64 {
    let first = &replies[0];
    for r in replies {
        assert_eq!(r["returnCode"], first["returnCode"], "{r} vs {first}");
        if code(first) != 0 {
            assert_eq!(r["returnMessage"], first["returnMessage"], "{r} vs {first}");
        }
    }
    code(first)
}

#[derive(Debug, Clone, Copy)]
enum Upstream {
    WrongSecret,
    Busy,
    SlowBeyondDeadline,
    Garbage,
    BadGateway,
}

async fn inject(t: &TestApp, fault: Upstream) {
    match fault {
        // Registered here with a secret WeChat does not know.
        Upstream::WrongSecret => t.wx.register(APP, "the-real-secret"),
        Upstream::Busy => t.wx.fail_next(STABLE, -1, 10_000),
        Upstream::SlowBeyondDeadline => t.wx.delay(STABLE, Duration::from_secs(3), 10_000),
        Upstream::Garbage => t.wx.fault_next(STABLE, Fault::Garbage, 10_000),
        Upstream::BadGateway => t.wx.fault_next(STABLE, Fault::Status(502), 10_000),
    }
}

fn heal(t: &TestApp, fault: Upstream) {
    match fault {
        Upstream::WrongSecret => t.wx.register(APP, "registered-secret"),
        Upstream::Busy => t.wx.fail_next(STABLE, -1, 0),
        Upstream::SlowBeyondDeadline => t.wx.delay(STABLE, Duration::ZERO, 0),
        Upstream::Garbage | Upstream::BadGateway => t.wx.fault_next(STABLE, Fault::Garbage, 0),
    }
}

async fn each_upstream_fault_costs_one_fetch_shared_by_every_caller_and_is_remembered(b: Backend) {
    for (fault, want_code, want_calls) in [
        (Upstream::WrongSecret, 40013, 1),
        // "System busy" is retried inside the one fetch, within the budget.
        (Upstream::Busy, 1005, 3),
        (Upstream::SlowBeyondDeadline, 1005, 1),
        (Upstream::Garbage, 1007, 1),
        (Upstream::BadGateway, 1005, 1),
    ] {
        let t = TestApp::new(b).await;
        t.add_app(APP, "registered-secret").await;
        inject(&t, fault).await;

        let (replies, worst) = token_burst(&t.svc, 32).await;
        assert_eq!(one_answer(&replies), want_code, "{fault:?}: {}", replies[0]);
        assert_eq!(t.wx.calls(STABLE), want_calls, "{fault:?}: one fetch shared by 32 callers");
        assert!(worst < WORST_WAIT, "{fault:?}: worst wait {worst:?}");

        // Remembered: the next burst is answered at once, with the same answer and no upstream call.
        let (again, worst) = token_burst(&t.svc, 32).await;
        assert_eq!(one_answer(&again), want_code, "{fault:?}");
        assert_eq!(again[0]["returnMessage"], replies[0]["returnMessage"]);
        assert_eq!(t.wx.calls(STABLE), want_calls, "{fault:?}: remembered, not retried");
        assert!(worst < Duration::from_millis(1_000), "{fault:?}: answered from memory, took {worst:?}");

        // After the window, one caller tries again and everyone gets the outcome.
        heal(&t, fault);
        t.clock.advance(31);
        let (healed, _) = token_burst(&t.svc, 32).await;
        assert_eq!(one_answer(&healed), 0, "{fault:?}: {}", healed[0]);
        assert_eq!(t.wx.calls(STABLE), want_calls + 1, "{fault:?}: one fetch after the window");
    }
}

async fn transient_failures_back_off_and_configuration_errors_wait_a_fixed_window(b: Backend) {
    let t = TestApp::new(b).await;
    t.add_app(APP, "registered-secret").await;
    t.wx.fault_next(STABLE, Fault::Status(502), 10_000);
    assert_eq!(code(&token_burst(&t.svc, 8).await.0[0]), 1005);
    // First failure: 1 s. Second: 2 s. Third: 4 s.
    for (advance, calls) in [(1, 2), (1, 2), (1, 3), (2, 3), (2, 4)] {
        t.clock.advance(advance);
        token_burst(&t.svc, 8).await;
        assert_eq!(t.wx.calls(STABLE), calls, "after {advance} s more");
    }

    let t = TestApp::new(b).await;
    t.add_app(APP, "registered-secret").await;
    t.wx.fail_next(STABLE, 40164, 10_000);
    let (r, _) = token_burst(&t.svc, 8).await;
    assert_eq!(one_answer(&r), 40164);
    assert!(r[0]["returnMessage"].as_str().unwrap().contains("whitelist"), "{}", r[0]);
    t.clock.advance(10);
    token_burst(&t.svc, 8).await;
    assert_eq!(t.wx.calls(STABLE), 1, "a configuration error is not retried within its window");
    t.clock.advance(6);
    token_burst(&t.svc, 8).await;
    assert_eq!(t.wx.calls(STABLE), 2, "and is retried after it");
}

async fn a_refused_connection_is_remembered_too(b: Backend) {
    // A port that accepts and hangs up at once, counting the attempts.
    let (base, attempts) = crate::fake_wechat::hang_up_listener().await;
    let db = TestDb::new(b).await;
    let store = db.store().await;
    store.registry.put_app(&crate::helpers::app_record(APP, "s")).await.unwrap();
    let clock = Arc::new(wafer_scf::clock::ManualClock::new(crate::helpers::T0));
    let svc = Arc::new(build(store, &base, clock.clone(), open_settings()));
    let (r, worst) = token_burst(&svc, 32).await;
    assert_eq!(one_answer(&r), 1005);
    assert!(worst < WORST_WAIT);
    let first = attempts.load(Ordering::SeqCst);
    assert!((1..=2).contains(&first), "one fetch (the HTTP client may retry a reset once): {first}");
    token_burst(&svc, 32).await;
    assert_eq!(attempts.load(Ordering::SeqCst), first, "remembered: no new connection");
}

async fn a_valid_token_keeps_being_served_while_its_refresh_fails(b: Backend) {
    let t = TestApp::new(b).await;
    t.add_app(APP, "registered-secret").await;
    let (ok, _) = token_burst(&t.svc, 1).await;
    let token = ok[0]["returnData"]["access_token"].clone();
    // Inside the refresh margin, still valid; WeChat now fails every refresh.
    t.clock.advance(7200 - 200);
    t.wx.fault_next(STABLE, Fault::Status(502), 10_000);
    for _ in 0..3 {
        let (r, _) = token_burst(&t.svc, 32).await;
        assert_eq!(one_answer(&r), 0);
        assert!(r.iter().all(|x| x["returnData"]["access_token"] == token));
    }
    assert_eq!(t.wx.calls(STABLE), 2, "one fetch, one failed refresh, then remembered");
}

async fn writing_the_registration_again_clears_a_remembered_failure(b: Backend) {
    let t = TestApp::new(b).await;
    t.add_app(APP, "registered-secret").await;
    t.wx.register(APP, "the-real-secret");
    assert_eq!(code(&token_burst(&t.svc, 4).await.0[0]), 40013);

    // Another process (the CLI) writes the right secret and drops the app's cached credentials.
    let mut fixed = crate::helpers::app_record(APP, "the-real-secret");
    fixed.updated_at += 5;
    t.store.registry.put_app(&fixed).await.unwrap();
    t.store.credentials.delete_credentials(&wafer_scf::tokens::CredKey::all_for_app(&id(APP))).await.unwrap();
    assert_eq!(code(&token_burst(&t.svc, 4).await.0[0]), 40013, "this process re-checks every 2 s");
    assert_eq!(t.wx.calls(STABLE), 1);
    t.clock.advance(3);
    let (r, _) = token_burst(&t.svc, 4).await;
    assert_eq!(one_answer(&r), 0, "{}", r[0]);
    assert_eq!(t.wx.calls(STABLE), 2);

    // WeCom: `initagent` on this process clears at once, even with an unchanged secret (the operator fixed the
    // trusted IPs in the console).
    let admin = "admin-token-for-resilience";
    let settings = wafer_scf::handlers::Settings { admin_token: Some(admin.into()), ..open_settings() };
    let t = TestApp::with_settings(b, settings).await;
    t.wx.fail_next("/cgi-bin/gettoken", 60020, 10_000);
    t.wx.register("ww_res", "agent-secret");
    let init = json!({"corpid": "ww_res", "agentid": "1000002", "agentsecret": "agent-secret", "admin_token": admin});
    assert_eq!(code(&t.call("qcloud.work.initagent", init.clone()).await), 0);
    let wecom = json!({"corpid": "ww_res", "agentid": "1000002"});
    assert_eq!(code(&t.call("qcloud.work.access_token", wecom.clone()).await), 40164);
    assert_eq!(code(&t.call("qcloud.work.access_token", wecom.clone()).await), 40164);
    assert_eq!(t.wx.calls("/cgi-bin/gettoken"), 1);
    t.wx.fail_next("/cgi-bin/gettoken", 60020, 0);
    assert_eq!(code(&t.call("qcloud.work.initagent", init).await), 0);
    assert_eq!(code(&t.call("qcloud.work.access_token", wecom).await), 0);
    assert_eq!(t.wx.calls("/cgi-bin/gettoken"), 2);
}

async fn login_bursts_with_neighbouring_openids_never_fail(b: Backend) {
    let t = TestApp::new(b).await;
    // The smallest and the largest appid of the table, with other apps' sessions around them.
    let apps = ["wx0000000000000000", "wx5555555555555555", "wxzzzzzzzzzzzzzzzz"];
    for a in apps {
        t.add_app(a, "s").await;
    }
    let svc = t.svc.clone();
    let wx = t.wx.clone();
    for round in 0..3 {
        for appid in [apps[0], apps[2]] {
            let wx = wx.clone();
            let (replies, _) = burst(
                &svc,
                32,
                "qcloud.cam.id_skey",
                move |i| json!({"appid": appid, "code": wx.code_for(&format!("oN{:04}", i))}),
            )
            .await;
            let failed: Vec<&Value> = replies.iter().filter(|r| r["returnCode"] != 0).collect();
            assert!(
                failed.is_empty(),
                "round {round}, {appid}: {} of 32 failed: {}",
                failed.len(),
                failed[0]
            );
        }
    }
    // 64-way, a single app, each user twice at once.
    let wx2 = wx.clone();
    let (replies, _) = burst(
        &svc,
        64,
        "qcloud.cam.id_skey",
        move |i| json!({"appid": apps[1], "code": wx2.code_for(&format!("oM{:04}", i / 2))}),
    )
    .await;
    let failed = replies.iter().filter(|r| r["returnCode"] != 0).count();
    assert_eq!(failed, 0, "{:?}", replies.iter().find(|r| r["returnCode"] != 0));
    // Every session works.
    for r in &replies {
        assert_eq!(code(&t.auth(&r["returnData"]).await), 0);
    }
}

async fn the_same_login_stored_twice_is_one_stored_login(b: Backend) {
    // What a retry after a lost commit acknowledgement does: the session's own id is already there.
    let t = TestApp::new(b).await;
    t.add_app(APP, "s").await;
    let s = wafer_scf::store::SessionRecord {
        id: "a".repeat(32),
        skey_hash: "b".repeat(64),
        appid: APP.parse().unwrap(),
        openid: "o1".into(),
        unionid: String::new(),
        session_key: "k".into(),
        user_info: None,
        created_at: crate::helpers::T0,
        last_visit_at: crate::helpers::T0,
    };
    t.store.sessions.create_session(&s, 5, crate::helpers::T0).await.unwrap();
    t.store
        .sessions
        .create_session(&s, 5, crate::helpers::T0)
        .await
        .expect("a repeated write of a stored login succeeds");
    assert!(t.store.sessions.get_session(&s.id).await.unwrap().is_some());
}

both_backends!(
    each_upstream_fault_costs_one_fetch_shared_by_every_caller_and_is_remembered,
    transient_failures_back_off_and_configuration_errors_wait_a_fixed_window,
    a_refused_connection_is_remembered_too,
    a_valid_token_keeps_being_served_while_its_refresh_fails,
    writing_the_registration_again_clears_a_remembered_failure,
    login_bursts_with_neighbouring_openids_never_fail,
    the_same_login_stored_twice_is_one_stored_login,
);

/// A TCP proxy in front of MySQL that can be frozen: connections stay open, nothing moves.
struct FreezableProxy {
    addr: std::net::SocketAddr,
    frozen: Arc<AtomicBool>,
}

impl FreezableProxy {
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (f, upstream) = (f.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { return };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pump(cr, sw, f.clone()));
                    tokio::spawn(pump(sr, cw, f));
                });
            }
        });
        Self { addr, frozen }
    }

    fn freeze(&self, on: bool) {
        self.frozen.store(on, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A frozen MySQL: after a few requests run into the storage deadline, the rest fail at once with 1001; tokens
/// cached in memory keep being served; `/readyz` says 503 while frozen and 200 once it thaws.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(wafer_mysql_tests), ignore = "MySQL suite off: set WAFER_TEST_MYSQL_URL")]
async fn a_frozen_database_is_failed_fast_and_reported_not_ready() {
    if crate::helpers::mysql_server_url().is_none() {
        return;
    }
    let db = TestDb::new(Backend::Mysql).await;
    db.store().await; // migrate
    let direct = db.url.clone();
    let after_at = direct.split_once('@').unwrap().1;
    let host_port = after_at.split('/').next().unwrap().to_owned();
    let host_port = if host_port.contains(':') { host_port } else { format!("{host_port}:3306") };
    let proxy = FreezableProxy::start(host_port.clone()).await;
    let proxied = direct.replace(&host_port, &proxy.addr.to_string());
    let opts = wafer_scf::store::StoreOptions {
        query_timeout: Duration::from_millis(300),
        ..wafer_scf::store::StoreOptions::default()
    };
    let store =
        wafer_scf::store::open(&wafer_scf::store::DatabaseUrl::parse(&proxied).unwrap(), &opts, false)
            .await
            .unwrap();
    let wx = crate::fake_wechat::FakeWeChat::start().await;
    wx.register(APP, "s");
    store.registry.put_app(&crate::helpers::app_record(APP, "s")).await.unwrap();
    let clock = Arc::new(wafer_scf::clock::ManualClock::new(crate::helpers::T0));
    let svc = Arc::new(build(store, &wx.base_url, clock, open_settings()));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(wafer_scf::serve::serve(listener, svc.clone(), std::future::pending()));
    let client = reqwest::Client::new();
    let ready = |client: reqwest::Client, url: String| async move {
        let r = client.get(format!("{url}/readyz")).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    // Set-up (before the freeze): each storage step has a 300 ms deadline, which a loaded machine may miss once;
    // what is tested starts at the freeze.
    let setup_deadline = Instant::now() + Duration::from_secs(10);
    let token = loop {
        let r = token_burst(&svc, 1).await.0;
        let token = r[0]["returnData"]["access_token"].clone();
        if token.is_string() && ready(client.clone(), url.clone()).await.0 == 200 {
            break token;
        }
        assert!(Instant::now() < setup_deadline, "no token before the freeze: {}", r[0]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let login = |i: usize| json!({"appid": APP, "code": wx.code_for(&format!("frozen{i}"))});

    proxy.freeze(true);
    let mut slow = 0;
    let started = Instant::now();
    for i in 0..20 {
        let t0 = Instant::now();
        let r = burst(&svc, 1, "qcloud.cam.id_skey", |_| login(i)).await.0;
        // A storage failure: reading the app (1001), or — the app being cached in memory — storing the session
        // (1006).
        assert!([1001, 1006].contains(&code(&r[0])), "{}", r[0]);
        if t0.elapsed() >= Duration::from_millis(250) {
            slow += 1;
        }
    }
    assert!(slow <= 4, "{slow} of 20 requests waited for the deadline; the rest must fail fast");
    assert!(started.elapsed() < Duration::from_secs(3), "20 requests took {:?}", started.elapsed());
    // Cached credentials are still served.
    let (r, _) = token_burst(&svc, 8).await;
    assert!(r.iter().all(|x| x["returnData"]["access_token"] == token), "{}", r[0]);
    let (status, body) = ready(client.clone(), url.clone()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert!(body["reason"].as_str().unwrap().contains("unreachable"), "{body}");

    proxy.freeze(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = burst(&svc, 1, "qcloud.cam.id_skey", |_| login(100)).await.0;
        if code(&r[0]) == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {}", r[0]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ready(client, url).await.0, 200);
}

/// `/readyz` on an unmigrated MySQL database names the fix; after `migrate` it is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(wafer_mysql_tests), ignore = "MySQL suite off: set WAFER_TEST_MYSQL_URL")]
async fn readyz_reports_a_schema_that_is_behind() {
    if crate::helpers::mysql_server_url().is_none() {
        return;
    }
    let db = TestDb::new(Backend::Mysql).await;
    let store = wafer_scf::store::open(&db.database_url(), &Default::default(), false).await.unwrap();
    let clock = Arc::new(wafer_scf::clock::ManualClock::new(crate::helpers::T0));
    let svc = Arc::new(build(store.clone(), "http://127.0.0.1:1", clock, open_settings()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(wafer_scf::serve::serve(listener, svc, std::future::pending()));
    let client = reqwest::Client::new();
    assert_eq!(client.get(format!("{url}/healthz")).send().await.unwrap().status(), 200, "alive");
    let r = client.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(body["reason"].as_str().unwrap().contains("wafer-scf migrate"), "{body}");
    store.schema.migrate().await.unwrap();
    assert_eq!(client.get(format!("{url}/readyz")).send().await.unwrap().status(), 200);
}
