//! The `wafer-scf` binary as a user runs it: configuration errors, the app registry, and `serve` answering
//! logins against a fake WeChat, on both backends.

use crate::both_backends;
use crate::helpers::id;
use crate::helpers::{post_envelope, Backend, TestDb};
use serde_json::{json, Value};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_wafer-scf");

/// A command with a clean WAFER_* environment, run in `dir`.
pub fn wafer(dir: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("WAFER_") {
            c.env_remove(k);
        }
    }
    c.current_dir(dir).env("WAFER_LOG", "info").stdin(Stdio::null());
    c
}

pub fn run_ok(c: &mut Command) -> Output {
    let out = c.output().unwrap();
    assert!(out.status.success(), "command failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether the server listens on `port` (false: it exited first); panics if it does neither within 20 s.
pub async fn wait_listening(port: u16, child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not listen on {port}");
}

/// Spawn a server on a port found free, and wait until it listens. A port found free can be taken by any socket of
/// a parallel test before the server binds it, so a server that exits before listening is tried again on another
/// port; one that never listens fails the test with what it printed (when piped).
pub async fn spawn_listening(mut spawn: impl FnMut(u16) -> Child) -> (Child, u16) {
    const ATTEMPTS: usize = 5;
    for attempt in 1..=ATTEMPTS {
        let port = free_port();
        let mut child = spawn(port);
        if wait_listening(port, &mut child).await {
            return (child, port);
        }
        if attempt == ATTEMPTS {
            let out = child.wait_with_output().unwrap();
            panic!("server exited early {ATTEMPTS} times: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    unreachable!()
}

/// Start `wafer-scf serve` on a free port with the given environment; returns the child and its base URL once it
/// listens. Output goes to pipes when `capture` is set, else to /dev/null.
pub async fn spawn_server(dir: &std::path::Path, env: &[(&str, &str)], capture: bool) -> (Child, String) {
    let out = || if capture { Stdio::piped() } else { Stdio::null() };
    let (child, port) = spawn_listening(|port| {
        let mut c = wafer(dir);
        c.env("WAFER_LISTEN", format!("127.0.0.1:{port}"));
        for (k, v) in env {
            c.env(k, v);
        }
        c.arg("serve").stdout(out()).stderr(out()).spawn().unwrap()
    })
    .await;
    (child, format!("http://127.0.0.1:{port}/"))
}

pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "no graceful exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_configuration_fails_with_one_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value, mention) in [
        ("WAFER_LISTEN", "not-an-address", "--listen"),
        ("WAFER_DATABASE_URL", "postgres://x/y", "--database-url"),
        ("WAFER_WECHAT_BASE_URL", "ftp://x", "--wechat-base-url"),
        ("WAFER_LOG_FORMAT", "xml", "--log-format"),
        ("WAFER_UPSTREAM_TIMEOUT_MS", "0", "--upstream-timeout-ms"),
        ("WAFER_BODY_LIMIT", "lots", "--body-limit"),
    ] {
        let out = wafer(dir.path()).env(var, value).arg("serve").output().unwrap();
        assert!(!out.status.success(), "{var}={value} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(mention), "{var}: {err}");
        assert!(err.contains(var), "the message names the variable the user set: {err}");
        assert!(err.lines().filter(|l| l.starts_with("error")).count() == 1, "{var}: one message: {err}");
    }
    // A log filter that would silently log nothing stops start-up; a bad secret is never echoed.
    let out = wafer(dir.path()).env("WAFER_LOG", "verbose").arg("serve").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("WAFER_LOG"));
    let out = wafer(dir.path()).env("WAFER_MASTER_KEY", "not-the-key-S3CRET").arg("serve").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WAFER_MASTER_KEY") && !err.contains("S3CRET"), "{err}");
    let out = wafer(dir.path())
        .env("WAFER_DATABASE_URL", "mysql://root@127.0.0.1:1/none")
        .arg("app")
        .arg("list")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("could not") && err.lines().count() <= 2, "{err}");
}

pub fn db_env<'a>(c: &'a mut Command, db: &TestDb) -> &'a mut Command {
    c.env("WAFER_DATABASE_URL", &db.url)
}

async fn app_registry_never_prints_secrets(b: Backend) {
    let db = TestDb::new(b).await;
    let dir = tempfile::tempdir().unwrap();
    if b == Backend::Mysql {
        let out = run_ok(db_env(&mut wafer(dir.path()), &db).arg("migrate"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains("applied 0001, 0002, 0003, 0004, 0005, 0006"), "{text}");
        let out = run_ok(db_env(&mut wafer(dir.path()), &db).arg("migrate"));
        assert!(String::from_utf8_lossy(&out.stdout).contains("already up to date"));
    }
    let out = run_ok(db_env(&mut wafer(dir.path()), &db).args([
        "app",
        "add",
        "--appid",
        "wx_cli_1",
        "--secret",
        "S3CRET-one",
        "--login-duration-days",
        "7",
    ]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("added app wx_cli_1"));
    // Secret from stdin.
    let mut child = db_env(&mut wafer(dir.path()), &db)
        .args(["app", "add", "--appid", "wx_cli_2", "--secret", "-", "--token-mode", "classic"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"S3CRET-two\n").unwrap();
    assert!(child.wait_with_output().unwrap().status.success());

    let out = run_ok(db_env(&mut wafer(dir.path()), &db).args(["app", "list"]));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("wx_cli_1") && text.contains("wx_cli_2") && text.contains("classic"), "{text}");
    assert!(!text.contains("S3CRET"), "secrets never printed: {text}");
    let line1 = text.lines().find(|l| l.contains("wx_cli_1")).unwrap();
    assert!(line1.split_whitespace().any(|w| w == "7"), "login days shown: {line1}");

    run_ok(db_env(&mut wafer(dir.path()), &db).args(["app", "remove", "--appid", "wx_cli_1"]));
    let out =
        db_env(&mut wafer(dir.path()), &db).args(["app", "remove", "--appid", "wx_cli_1"]).output().unwrap();
    assert!(!out.status.success(), "removing a missing app fails");
    let out = run_ok(db_env(&mut wafer(dir.path()), &db).args(["app", "list"]));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("wx_cli_1"));

    let out = db_env(&mut wafer(dir.path()), &db)
        .args(["app", "add", "--appid", "has space", "--secret", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

async fn serve_logs_users_in_against_a_fake_wechat(b: Backend) {
    let db = TestDb::new(b).await;
    let dir = tempfile::tempdir().unwrap();
    if b == Backend::Mysql {
        run_ok(db_env(&mut wafer(dir.path()), &db).arg("migrate"));
    }
    let wx = crate::fake_wechat::FakeWeChat::start().await;
    wx.register("wx_serve", "serve-secret-XYZ");
    run_ok(db_env(&mut wafer(dir.path()), &db).args([
        "app",
        "add",
        "--appid",
        "wx_serve",
        "--secret",
        "serve-secret-XYZ",
    ]));

    let env = [
        ("WAFER_DATABASE_URL", db.url.as_str()),
        ("WAFER_WECHAT_BASE_URL", &wx.base_url),
        ("WAFER_LOG_FORMAT", "json"),
    ];
    let (mut child, base) = spawn_server(dir.path(), &env, true).await;
    let url = format!("{base}release/mina_auth/");
    let client = reqwest::Client::new();
    let login =
        post_envelope(&client, &url, "qcloud.cam.id_skey", json!({"code": wx.code_for("u_mo")})).await;
    assert_eq!(login["returnCode"], 0, "{login}");
    let d = &login["returnData"];
    let para = json!({"id": d["id"], "skey": d["skey"], "appid": "wx_serve"});
    let auth = post_envelope(&client, &url, "qcloud.cam.auth", para).await;
    assert_eq!(auth["returnCode"], 0, "{auth}");
    assert_eq!(auth["returnData"]["openid"], "u_mo");

    let status = terminate(&mut child);
    assert!(status.success(), "graceful exit on SIGTERM");
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    let request_lines: Vec<&str> = logs.lines().filter(|l| l.contains("\"message\":\"request\"")).collect();
    assert_eq!(request_lines.len(), 2, "one line per request: {logs}");
    let first: Value = serde_json::from_str(request_lines[0]).unwrap();
    assert_eq!(first["interface"], "qcloud.cam.id_skey");
    assert_eq!(first["appid"], "wx_serve");
    assert_eq!(first["return_code"], 0);
    assert!(first["latency_us"].is_u64() && first["request_id"].is_string());
    for secret in ["serve-secret-XYZ", d["skey"].as_str().unwrap(), &wx.session_key("u_mo")] {
        assert!(!logs.contains(secret), "a secret leaked into the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_with_no_configuration_gets_a_wafer_error_when_wechat_is_unreachable() {
    // No WAFER_DATABASE_URL: the embedded store is created in the working directory.
    let dir = tempfile::tempdir().unwrap();
    run_ok(wafer(dir.path()).args(["app", "add", "--appid", "wx_new", "--secret", "s"]));
    assert!(dir.path().join("wafer.db").exists(), "embedded store created in the working directory");
    let closed = free_port();
    let (mut child, port) = spawn_listening(|port| {
        wafer(dir.path())
            .env("WAFER_LISTEN", format!("127.0.0.1:{port}"))
            .env("WAFER_WECHAT_BASE_URL", format!("http://127.0.0.1:{closed}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    })
    .await;
    let url = format!("http://127.0.0.1:{port}/");
    let r = post_envelope(&reqwest::Client::new(), &url, "qcloud.cam.id_skey", json!({"code": "abc"})).await;
    assert_eq!(r["returnCode"], 1005, "{r}");
    assert!(terminate(&mut child).success());
}

async fn cos_and_agent_registries_never_print_secrets(b: Backend) {
    let db = TestDb::new(b).await;
    let dir = tempfile::tempdir().unwrap();
    db.store().await;
    let cmd = |args: &[&str]| {
        let mut c = wafer(dir.path());
        c.env("WAFER_DATABASE_URL", &db.url).args(args);
        c
    };
    run_ok(&mut cmd(&[
        "cos",
        "add",
        "--appid",
        "1250000000",
        "--secret-id",
        "AKIDabcdefgh123",
        "--secret-key",
        "COS-SECRET-KEY-1",
    ]));
    run_ok(&mut cmd(&[
        "agent",
        "add",
        "--corpid",
        "ww1",
        "--agentid",
        "1000002",
        "--secret",
        "AGENT-SECRET-1",
        "--remark",
        "OA",
    ]));
    let out = run_ok(&mut cmd(&["cos", "list"]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("1250000000")
            && text.contains("AKIDabcd")
            && !text.contains("COS-SECRET")
            && !text.contains("AKIDabcdefgh123"),
        "{text}"
    );
    let out = run_ok(&mut cmd(&["agent", "list"]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("ww1")
            && text.contains("1000002")
            && text.contains("OA")
            && !text.contains("AGENT-SECRET"),
        "{text}"
    );
    let bad =
        cmd(&["cos", "add", "--appid", "wx123", "--secret-id", "a", "--secret-key", "b"]).output().unwrap();
    assert!(!bad.status.success(), "the COS appid is numeric");
    run_ok(&mut cmd(&["cos", "remove", "--appid", "1250000000"]));
    run_ok(&mut cmd(&["agent", "remove", "--corpid", "ww1", "--agentid", "1000002"]));
    assert!(!cmd(&["cos", "remove", "--appid", "1250000000"]).output().unwrap().status.success());
    assert!(!String::from_utf8_lossy(&run_ok(&mut cmd(&["agent", "list"])).stdout).contains("ww1"));
}

async fn serve_purges_expired_sessions_periodically(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.store().await;
    store.registry.put_app(&crate::helpers::app_record("wx_purge", "s")).await.unwrap();
    let old = wafer_scf::store::SessionRecord {
        id: "expired-session".into(),
        skey_hash: "0".repeat(64),
        appid: "wx_purge".parse().unwrap(),
        openid: "o".into(),
        unionid: String::new(),
        session_key: "k".into(),
        user_info: None,
        created_at: 1_000_000,
        last_visit_at: 1_000_000,
    };
    store.sessions.import_session(&old).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = [("WAFER_DATABASE_URL", db.url.as_str()), ("WAFER_PURGE_INTERVAL_SECS", "1")];
    let (mut child, _) = spawn_server(dir.path(), &env, false).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.sessions.get_session("expired-session").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the expired session was never purged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(terminate(&mut child).success());
}

fn stdout_of(c: &mut Command) -> String {
    String::from_utf8_lossy(&run_ok(c).stdout).into_owned()
}

fn stderr_of_failure(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(!out.status.success(), "expected a failure: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `app add` / `agent add` / `cos add` on an existing entry change only what they are given; key mistakes get plain
/// messages.
async fn registry_updates_change_only_what_they_are_given(b: Backend) {
    let db = TestDb::new(b).await;
    let dir = tempfile::tempdir().unwrap();
    let w = || {
        let mut c = wafer(dir.path());
        db_env(&mut c, &db);
        c
    };
    run_ok(w().arg("migrate"));
    let out = stdout_of(w().args([
        "app",
        "add",
        "--appid",
        "wx_keep",
        "--secret",
        "first",
        "--token-mode",
        "classic",
        "--login-duration-days",
        "7",
        "--session-duration-secs",
        "600",
    ]));
    assert!(out.contains("added app wx_keep"), "{out}");
    // Rotating the secret keeps the classic mode and both lifetimes.
    let out = stdout_of(w().args(["app", "add", "--appid", "wx_keep", "--secret", "second"]));
    assert!(out.contains("updated app wx_keep"), "{out}");
    let list = stdout_of(w().args(["app", "list"]));
    let line = list.lines().find(|l| l.contains("wx_keep")).unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols, ["wx_keep", "7", "600", "classic"], "{line}");
    let out = stdout_of(w().args(["app", "add", "--appid", "wx_keep", "--secret", "second"]));
    assert!(out.contains("app wx_keep unchanged"), "{out}");
    let store = db.store().await;
    assert_eq!(store.registry.get_app(&id("wx_keep")).await.unwrap().unwrap().secret, "second");
    let err = stderr_of_failure(w().args(["app", "add", "--appid", "wx_new_without_secret"]));
    assert!(err.contains("give its secret"), "{err}");

    run_ok(w().args([
        "agent",
        "add",
        "--corpid",
        "ww1",
        "--agentid",
        "1000002",
        "--secret",
        "s",
        "--remark",
        "OA",
    ]));
    run_ok(w().args(["agent", "add", "--corpid", "ww1", "--agentid", "1000002", "--secret", "s2"]));
    let agents = stdout_of(w().args(["agent", "list"]));
    assert!(agents.lines().any(|l| l.contains("1000002") && l.trim_end().ends_with("OA")), "{agents}");

    run_ok(w().args(["cos", "add", "--appid", "1250000000", "--secret-id", "AKIDone", "--secret-key", "k1"]));
    run_ok(w().args(["cos", "add", "--appid", "1250000000", "--secret-key", "k2"]));
    let cos = store.registry.get_cos_key(&id("1250000000")).await.unwrap().unwrap();
    assert_eq!((cos.secret_id.as_str(), cos.secret_key.as_str()), ("AKIDone", "k2"));

    let err = stderr_of_failure(w().args(["key", "add", "--name", "nobody"]));
    assert!(err.contains("--apps") && err.contains("--corps") && err.contains("--all"), "{err}");
    run_ok(w().args(["key", "add", "--name", "svc", "--apps", "wx_keep"]));
    let err = stderr_of_failure(w().args(["key", "add", "--name", "svc", "--all"]));
    assert!(err.contains("exists already") && !err.to_lowercase().contains("unique"), "{err}");
    run_ok(w().args(["key", "revoke", "--name", "svc"]));
    let err = stderr_of_failure(w().args(["key", "revoke", "--name", "svc"]));
    assert!(err.contains("revoked already"), "{err}");
    let err = stderr_of_failure(w().args(["key", "revoke", "--name", "ghost"]));
    assert!(err.contains("no key named ghost"), "{err}");
}

both_backends!(
    registry_updates_change_only_what_they_are_given,
    serve_purges_expired_sessions_periodically,
    app_registry_never_prints_secrets,
    serve_logs_users_in_against_a_fake_wechat,
    cos_and_agent_registries_never_print_secrets
);

/// A request that names its session by id only is logged with the session's app, which the handler found (not read
/// back out of the reply): `auth` and `decrypt` (whose reply names no app at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_naming_only_a_session_are_logged_with_its_app() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let wx = crate::fake_wechat::FakeWeChat::start().await;
    wx.register("wx_logged", "logged-secret");
    run_ok(db_env(&mut wafer(dir.path()), &db).args([
        "app",
        "add",
        "--appid",
        "wx_logged",
        "--secret",
        "logged-secret",
    ]));
    let env = [
        ("WAFER_DATABASE_URL", db.url.as_str()),
        ("WAFER_WECHAT_BASE_URL", &wx.base_url),
        ("WAFER_LOG_FORMAT", "json"),
    ];
    let (mut child, url) = spawn_server(dir.path(), &env, true).await;
    let client = reqwest::Client::new();
    let login = post_envelope(
        &client,
        &url,
        "qcloud.cam.id_skey",
        json!({"appid": "wx_logged", "code": wx.code_for("u_logged")}),
    )
    .await;
    assert_eq!(login["returnCode"], 0, "{login}");
    let (id, skey) = (&login["returnData"]["id"], &login["returnData"]["skey"]);
    let auth = post_envelope(&client, &url, "qcloud.cam.auth", json!({"id": id, "skey": skey})).await;
    assert_eq!(auth["returnCode"], 0, "{auth}");
    let iv = "r7BXXKkLb8qrSNn05n0qiA==";
    let sealed = crate::helpers::encrypt_for_tests(
        &wx.session_key("u_logged"),
        iv,
        br#"{"x":1,"watermark":{"appid":"wx_logged"}}"#,
    )
    .unwrap();
    let para = json!({"id": id, "skey": skey, "encrypt_data": sealed, "iv": iv});
    let decrypted = post_envelope(&client, &url, "qcloud.cam.decrypt", para).await;
    assert_eq!(decrypted["returnCode"], 0, "{decrypted}");
    assert!(decrypted["returnData"].get("appid").is_none(), "the reply itself names no app");
    assert!(terminate(&mut child).success());
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<Value> = logs
        .lines()
        .filter(|l| l.contains("\"message\":\"request\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let apps: Vec<(&str, &str)> =
        lines.iter().map(|l| (l["interface"].as_str().unwrap(), l["appid"].as_str().unwrap())).collect();
    assert_eq!(
        apps,
        [
            ("qcloud.cam.id_skey", "wx_logged"),
            ("qcloud.cam.auth", "wx_logged"),
            ("qcloud.cam.decrypt", "wx_logged")
        ],
        "{logs}"
    );
}
