//! The SCF path: the runtime loop against the emulated runtime API (success, handler error, panic, malformed events,
//! gateway quirks, direct invocation), captured fixtures round-tripped, and the real `bootstrap` as a child process
//! (100 mixed invocations, killed and restarted, frozen with a short MySQL wait_timeout).

use crate::both_backends;
use crate::cli::{run_ok, wafer, BIN};
use crate::faulty::Faulty;
use crate::helpers::{Backend, TestApp, TestDb};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use wafer_scf::scf::emulator::{Emulator, Outcome, Supervisor};
use wafer_scf::scf::runtime::{self, Invocation, RuntimeClient};
use wafer_scf::scf::wire::Wait;

fn envelope(name: &str, para: Value) -> Value {
    crate::helpers::envelope(name, para)
}

fn gateway(body: &Value) -> Vec<u8> {
    json!({"requestContext": {"httpMethod": "ANY", "path": "/mina_auth", "stage": "release"},
        "headers": {"content-type": "application/json"}, "httpMethod": "POST", "path": "/release/mina_auth/",
        "body": body.to_string(), "isBase64Encoded": false})
    .to_string()
    .into_bytes()
}

fn response(o: Outcome) -> Vec<u8> {
    match o {
        Outcome::Response(b) => b,
        other => panic!("expected a response, got {other:?}"),
    }
}

/// The envelope inside a reply, whichever shape it has; and the gateway status if any.
fn unwrap_reply(bytes: &[u8]) -> (Option<u16>, Value) {
    let v: Value = serde_json::from_slice(bytes).unwrap();
    if v.get("statusCode").is_some() {
        assert_eq!(v["isBase64Encoded"], false);
        assert!(v["headers"]["Content-Type"].as_str().unwrap().starts_with("application/json"));
        let inner: Value = serde_json::from_str(v["body"].as_str().unwrap()).unwrap();
        (Some(v["statusCode"].as_u64().unwrap() as u16), inner)
    } else {
        (None, v)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_answers_every_kind_of_event_and_survives_panics() {
    let t = TestApp::new(Backend::Sqlite).await;
    t.add_app("wx_scf", "scf-secret").await;
    let faulty = Faulty::new(t.store.clone());
    let svc = Arc::new(crate::helpers::build(
        faulty.storage(),
        &t.wx.base_url,
        t.clock.clone(),
        crate::helpers::open_settings(),
    ));
    let emu = Emulator::start(3000).await.unwrap();
    let client = RuntimeClient::new(&emu.base_url(), Wait::Async).unwrap();
    let loop_svc = svc.clone();
    let task = tokio::spawn(async move { runtime::run(&client, &loop_svc, Some(7)).await });
    assert!(emu.wait_ready(1, Duration::from_secs(5)).await, "init/ready first");

    // Success, as a direct invocation: a bare envelope in, a bare envelope out.
    let login = envelope("qcloud.cam.id_skey", json!({"appid": "wx_scf", "code": t.wx.code_for("sam")}));
    let (status, env) = unwrap_reply(&response(emu.invoke(login.to_string().into_bytes()).await));
    assert_eq!(status, None);
    assert_eq!(env["returnCode"], 0, "{env}");
    let d = env["returnData"].clone();

    // Through the gateway: an integration response wrapping the same envelope.
    let (status, env) = unwrap_reply(&response(
        emu.invoke(gateway(&envelope("qcloud.cam.auth", json!({"id": d["id"], "skey": d["skey"]})))).await,
    ));
    assert_eq!(status, Some(200));
    assert_eq!(env["returnCode"], 0);

    // A handler error is an envelope like any other.
    let (_, env) =
        unwrap_reply(&response(emu.invoke(gateway(&envelope("qcloud.cam.auth", json!({"id": 1})))).await));
    assert_eq!(env["returnCode"], 1003);

    // A panic deep in a handler is answered, and the loop goes on (past the session cache's lifetime, so the
    // session is read from the store again).
    t.clock.advance(wafer_scf::store::cache::TTL_SECS);
    faulty.panic_sessions.store(true, Ordering::SeqCst);
    let (_, env) = unwrap_reply(&response(
        emu.invoke(gateway(&envelope("qcloud.cam.auth", json!({"id": d["id"], "skey": d["skey"]})))).await,
    ));
    assert_eq!(env["returnCode"], 1099);
    assert_eq!(env["returnMessage"], "INTERNAL_ERR: internal error");
    faulty.panic_sessions.store(false, Ordering::SeqCst);

    // Malformed events: not JSON at all; a gateway event whose body is not a string.
    let (status, env) = unwrap_reply(&response(emu.invoke(b"{{{ not json".to_vec()).await));
    assert_eq!((status, env["returnCode"].as_i64()), (None, Some(1009)));
    let bad = json!({"requestContext": {}, "httpMethod": "POST", "headers": {}, "body": 42})
        .to_string()
        .into_bytes();
    let (status, env) = unwrap_reply(&response(emu.invoke(bad).await));
    assert_eq!(status, Some(400));
    assert!(env["returnMessage"].as_str().unwrap().contains("$.body"), "{env}");

    // Still serving after all that.
    let (_, env) = unwrap_reply(&response(
        emu.invoke(gateway(&envelope("qcloud.cam.auth", json!({"id": d["id"], "skey": d["skey"]})))).await,
    ));
    assert_eq!(env["returnCode"], 0);

    task.await.unwrap().unwrap();
    assert_eq!(emu.ready_times().len(), 1);
    assert_eq!(emu.late_results(), 0, "exactly one result per invocation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_next_is_retried_and_the_loop_keeps_serving() {
    let t = TestApp::new(Backend::Sqlite).await;
    let emu = Emulator::start(5000).await.unwrap();
    emu.fail_next_polls(3);
    let client = RuntimeClient::new(&emu.base_url(), Wait::Async).unwrap();
    let svc = t.svc.clone();
    let task = tokio::spawn(async move { runtime::run(&client, &svc, Some(1)).await });
    let (_, env) = unwrap_reply(&response(
        emu.invoke(envelope("qcloud.cam.nope", json!({})).to_string().into_bytes()).await,
    ));
    assert_eq!(env["returnCode"], 1010);
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_that_never_signals_ready_is_killed_at_the_init_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bootstrap");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let emu = Emulator::start(1000).await.unwrap();
    let mut sup = Supervisor::new(emu, script, Duration::from_millis(500)).quiet();
    let started = std::time::Instant::now();
    let err = sup.start().await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(sup.pid().is_none(), "the child was killed");
}

#[tokio::test]
async fn a_timer_trigger_purges_expired_sessions() {
    let t = TestApp::new(Backend::Sqlite).await;
    let mut app = crate::helpers::app_record("wx_timer", "s");
    app.session_duration_secs = 600;
    t.add_app_with(app).await;
    let stale = t.login("wx_timer", "idle_user").await;
    t.clock.advance(601);
    let live = t.login("wx_timer", "active_user").await;
    let timer =
        br#"{"Type":"Timer","TriggerName":"hourly-purge","Time":"2026-11-23T00:00:00Z","Message":""}"#
            .to_vec();
    let inv =
        Invocation { request_id: "t".into(), time_limit_ms: Some(3000), memory_limit_mb: None, event: timer };
    let reply: Value = serde_json::from_slice(&runtime::handle(&t.svc, &inv).await).unwrap();
    assert_eq!(reply, json!({"purged": 1}));
    assert!(t.store.sessions.get_session(stale["id"].as_str().unwrap()).await.unwrap().is_none());
    assert!(t.store.sessions.get_session(live["id"].as_str().unwrap()).await.unwrap().is_some());
}

#[tokio::test]
async fn captured_and_quirky_gateway_events_round_trip() {
    let t = TestApp::new(Backend::Sqlite).await;
    t.add_app("wx_fixture_app", "fixture-secret").await;
    let cases: &[(&str, Option<u16>, i64)] = &[
        ("apigw-doc-sample-post.json", Some(200), 1002),
        ("apigw-captured-get.json", Some(405), 1009),
        ("apigw-login-post.json", Some(200), 0),
        ("apigw-base64-post.json", Some(200), 60012),
        ("apigw-array-headers-no-request-id.json", Some(200), 0),
        ("apigw-not-json-body.json", Some(200), 1009),
        ("direct-envelope.json", None, 60012),
        // Function URL events: no requestContext, no queryStringParameters.
        ("furl-login-post.json", Some(200), 0),
        ("furl-base64-post.json", Some(200), 60012),
        ("furl-get-root.json", Some(405), 1009),
        ("furl-forwarded-for-query-key.json", Some(200), 0),
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut seen = 1; // furl-get-healthz.json: below.
    for (file, status, code) in cases {
        let event = std::fs::read(dir.join(file)).unwrap();
        let inv = Invocation {
            request_id: "rt-1".into(),
            time_limit_ms: Some(3000),
            memory_limit_mb: Some(128),
            event,
        };
        let reply = runtime::handle(&t.svc, &inv).await;
        let (s, env) = unwrap_reply(&reply);
        assert_eq!(s, *status, "{file}");
        assert_eq!(env["returnCode"], *code, "{file}: {env}");
        assert_eq!(env["version"], 1);
        seen += 1;
    }
    assert_eq!(seen, std::fs::read_dir(&dir).unwrap().count(), "every fixture has a round-trip case");

    // A health check through a Function URL answers plain text.
    let inv = Invocation {
        request_id: "rt-2".into(),
        time_limit_ms: Some(3000),
        memory_limit_mb: Some(128),
        event: std::fs::read(dir.join("furl-get-healthz.json")).unwrap(),
    };
    let reply: Value = serde_json::from_slice(&runtime::handle(&t.svc, &inv).await).unwrap();
    assert_eq!(reply["statusCode"], 200);
    assert_eq!(reply["body"], "ok");
}

/// An envelope in a gateway event that outlasts the function's time limit is answered before SCF's kill: a
/// gateway reply carrying the deadline envelope; the next one, in time, carries its answer.
#[tokio::test]
async fn an_envelope_in_a_gateway_event_past_the_time_limit_gets_the_deadline_envelope() {
    let t = TestApp::new(Backend::Sqlite).await;
    t.add_app("wx_late", "s").await;
    t.wx.delay("/sns/jscode2session", Duration::from_secs(3), 1);
    let login = |openid: &str| {
        gateway(&envelope("qcloud.cam.id_skey", json!({"appid": "wx_late", "code": t.wx.code_for(openid)})))
    };
    let inv = Invocation {
        request_id: "rt-3".into(),
        time_limit_ms: Some(300),
        memory_limit_mb: None,
        event: login("u1"),
    };
    let started = std::time::Instant::now();
    let (status, env) = unwrap_reply(&runtime::handle(&t.svc, &inv).await);
    assert!(started.elapsed() < Duration::from_secs(2), "answered within the limit: {:?}", started.elapsed());
    assert_eq!(status, Some(200));
    assert_eq!(env["returnCode"], 1099, "{env}");
    assert_eq!(
        env["returnMessage"],
        "INTERNAL_ERR: the request did not finish within the function's time limit"
    );
    let inv = Invocation { event: login("u2"), time_limit_ms: Some(3000), ..inv };
    let (status, env) = unwrap_reply(&runtime::handle(&t.svc, &inv).await);
    assert_eq!((status, env["returnCode"].as_i64()), (Some(200), Some(0)), "{env}");
    assert_eq!(env["returnData"]["openid"], "u2", "{env}");
}

/// What a Function URL event tells about its request: the client's address from SCF's headers (for audit lines),
/// SCF's request id, and the caller key from the query.
#[test]
fn function_url_events_name_the_client_and_the_request() {
    use wafer_scf::scf::event::{parse, Origin, Parsed};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let Parsed::Request(r) = parse(&read("furl-login-post.json"), "rt") else { panic!("rejected") };
    assert_eq!(r.origin, Origin::Gateway);
    assert_eq!(r.meta.source_ip.as_deref(), Some("198.51.100.23"));
    assert_eq!(r.meta.request_id, "furl-7f3c2a9e-1d4b-4c8a-9e2f-1234567890ab");
    let Parsed::Request(r) = parse(&read("furl-forwarded-for-query-key.json"), "rt") else {
        panic!("rejected")
    };
    assert_eq!(
        r.meta.source_ip.as_deref(),
        Some("198.51.100.23"),
        "the X-Forwarded-For entry SCF appended, not the client's"
    );
    assert_eq!(r.meta.caller_key.as_deref(), Some("wk_not_a_real_key"));
    let Parsed::Request(r) = parse(&read("furl-base64-post.json"), "rt") else { panic!("rejected") };
    assert!(r.body.into_bytes().starts_with(b"{\"interface\""), "base64 body decoded");
}

/// A deployment-like folder: `bootstrap` and the binary side by side, as in the zip.
pub(crate) fn package_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("bootstrap"), dir.path().join("bootstrap")).unwrap();
    std::fs::copy(BIN, dir.path().join("wafer-scf")).unwrap();
    dir
}

async fn the_real_bootstrap_serves_restarts_and_survives_a_freeze(b: Backend) {
    let db = TestDb::new(b).await;
    let work = tempfile::tempdir().unwrap();
    let wx = crate::fake_wechat::FakeWeChat::start().await;
    wx.register("wx_boot", "boot-secret");
    wx.register("wx_boot_2", "boot-secret-2");
    if b == Backend::Mysql {
        run_ok(wafer(work.path()).env("WAFER_DATABASE_URL", &db.url).arg("migrate"));
    }
    for (a, s) in [("wx_boot", "boot-secret"), ("wx_boot_2", "boot-secret-2")] {
        run_ok(
            wafer(work.path())
                .env("WAFER_DATABASE_URL", &db.url)
                .args(["app", "add", "--appid", a, "--secret", s]),
        );
    }
    // A short server-side wait_timeout: pooled connections die while the instance is frozen.
    let url = if b == Backend::Mysql { format!("{}?wait_timeout=2", db.url) } else { db.url.clone() };
    let pkg = package_dir();
    let emu = Emulator::start(1500).await.unwrap();
    let mut sup = Supervisor::new(emu, pkg.path().join("bootstrap"), Duration::from_secs(10))
        .env("WAFER_DATABASE_URL", &url)
        .env("WAFER_WECHAT_BASE_URL", &wx.base_url)
        .env("WAFER_WECOM_BASE_URL", &wx.base_url)
        .env("WAFER_LOG", "warn")
        .env("WAFER_CALLER_AUTH", "off")
        .quiet();
    let cold = sup.start().await.unwrap();
    assert!(cold < Duration::from_secs(5), "{cold:?}");

    let login = response(
        sup.invoke(
            envelope("qcloud.cam.id_skey", json!({"appid": "wx_boot", "code": wx.code_for("u_ann")}))
                .to_string()
                .into_bytes(),
        )
        .await
        .unwrap(),
    );
    let (_, login) = unwrap_reply(&login);
    assert_eq!(login["returnCode"], 0, "{login}");
    let d = login["returnData"].clone();

    // 100 invocations of mixed interfaces and shapes.
    let expiration =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    for i in 0..100 {
        let (event, want): (Vec<u8>, i64) = match i % 5 {
            0 => (gateway(&envelope("qcloud.cam.auth", json!({"id": d["id"], "skey": d["skey"]}))), 0),
            1 => (
                envelope("qcloud.mimi.access_token", json!({"appid": "wx_boot"})).to_string().into_bytes(),
                0,
            ),
            2 => (
                gateway(&envelope(
                    "qcloud.cos.auth.reusable",
                    json!({"appid": "1250000000", "sid": "AKIDx", "skey": "k", "bucket": "b", "expiration": expiration}),
                )),
                0,
            ),
            3 => (
                gateway(&envelope(
                    "qcloud.cam.id_skey",
                    json!({"appid": "wx_boot", "code": wx.code_for(&format!("u_{i}"))}),
                )),
                0,
            ),
            _ => (gateway(&envelope("qcloud.cam.nope", json!({}))), 1010),
        };
        let (_, env) = unwrap_reply(&response(sup.invoke(event).await.unwrap()));
        assert_eq!(env["returnCode"], want, "invocation {i}: {env}");
    }
    assert_eq!(wx.calls("/cgi-bin/stable_token"), 1, "the token cache stayed warm across invocations");
    assert_eq!(sup.restarts, 0);

    // Killed mid-invocation (an upstream call hangs past the time limit): SCF recycles the instance.
    wx.delay("/cgi-bin/stable_token", Duration::from_secs(5), 1);
    let o = sup
        .invoke(envelope("qcloud.mimi.access_token", json!({"appid": "wx_boot_2"})).to_string().into_bytes())
        .await
        .unwrap();
    // Either the instance answered before the limit (a deadline envelope) or it was killed and restarted.
    if o == Outcome::Timeout {
        assert_eq!(sup.restarts, 1);
    } else {
        let (_, env) = unwrap_reply(&response(o));
        assert_eq!(env["returnCode"], 1099, "{env}");
    }
    // Killed while idle: the next invocation starts a new instance, which serves.
    let pid = sup.pid().unwrap();
    std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, env) = unwrap_reply(&response(
        sup.invoke(gateway(&envelope("qcloud.cam.auth", json!({"id": d["id"], "skey": d["skey"]}))))
            .await
            .unwrap(),
    ));
    assert_eq!(env["returnCode"], 0, "the restarted instance serves: {env}");
    assert!(sup.restarts >= 1);
    assert_ne!(sup.pid().unwrap(), pid);

    // Frozen (SIGSTOP) longer than MySQL's wait_timeout, then thawed: stale pooled connections are replaced.
    let pid = sup.pid().unwrap().to_string();
    std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    let (_, env) = unwrap_reply(&response(
        sup.invoke(gateway(&envelope("qcloud.cam.auth", json!({"id": d["id"], "skey": d["skey"]}))))
            .await
            .unwrap(),
    ));
    assert_eq!(env["returnCode"], 0, "after the freeze: {env}");
    let (_, env) = unwrap_reply(&response(
        sup.invoke(gateway(&envelope(
            "qcloud.cam.id_skey",
            json!({"appid": "wx_boot", "code": wx.code_for("u_after")}),
        )))
        .await
        .unwrap(),
    ));
    assert_eq!(env["returnCode"], 0, "writes too: {env}");
}

both_backends!(the_real_bootstrap_serves_restarts_and_survives_a_freeze);

/// `wafer-scf replay` answers every sample event (Function URL, legacy gateway, direct, timer-free) through the real
/// `bootstrap`, each with a Wafer envelope of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_answers_every_sample_event_through_the_real_bootstrap() {
    let pkg = package_dir();
    let work = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut events: Vec<std::path::PathBuf> =
        std::fs::read_dir(root.join("events")).unwrap().map(|e| e.unwrap().path()).collect();
    events.sort();
    let db = format!("sqlite:{}", work.path().join("replay.db").display());
    run_ok(wafer(work.path()).env("WAFER_DATABASE_URL", &db).args([
        "app",
        "add",
        "--appid",
        "wx1234567890abcdef",
        "--secret",
        "replay-secret",
    ]));
    let out = run_ok(
        wafer(work.path())
            .env("WAFER_DATABASE_URL", &db)
            .env("WAFER_WECHAT_BASE_URL", "http://127.0.0.1:9")
            .env("WAFER_WECOM_BASE_URL", "http://127.0.0.1:9")
            .arg("replay")
            .arg("--bootstrap")
            .arg(pkg.path().join("bootstrap"))
            .args(&events),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for e in &events {
        assert!(text.contains(&e.display().to_string()), "{} answered: {text}", e.display());
    }
    assert_eq!(text.matches("returnCode").count(), events.len(), "one envelope per event: {text}");
}

/// Two runtime instances starting at once on an empty MySQL database migrate it (one at a time, under the
/// migration lock) and both serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(wafer_mysql_tests), ignore = "MySQL suite off: set WAFER_TEST_MYSQL_URL")]
async fn runtime_instances_migrate_an_empty_database_at_start() {
    if crate::helpers::mysql_server_url().is_none() {
        return;
    }
    let db = TestDb::new(Backend::Mysql).await;
    let pkg = package_dir();
    let mut sups = Vec::new();
    for _ in 0..2 {
        let emu = Emulator::start(3000).await.unwrap();
        sups.push(
            Supervisor::new(emu, pkg.path().join("bootstrap"), Duration::from_secs(20))
                .env("WAFER_DATABASE_URL", &db.url)
                .env("WAFER_LOG", "warn")
                .quiet(),
        );
    }
    let (a, b) = sups.split_at_mut(1);
    let (ra, rb) = tokio::join!(a[0].start(), b[0].start());
    ra.unwrap();
    rb.unwrap();
    for sup in &mut sups {
        let reply = response(
            sup.invoke(
                envelope("qcloud.cam.auth", json!({"id": "0".repeat(32), "skey": "s"}))
                    .to_string()
                    .into_bytes(),
            )
            .await
            .unwrap(),
        );
        let (_, env) = unwrap_reply(&reply);
        assert_eq!(env["returnCode"], 60012, "served from a migrated schema, not 1001: {env}");
    }
    let store = wafer_scf::store::open(&db.database_url(), &Default::default(), false).await.unwrap();
    let status = store.schema.schema_status().await.unwrap();
    assert!(status.is_current(), "{status:?}");
}
