//! An operator's first day, from outside: a web function (`serve` with `WAFER_AUTO_MIGRATE=1`, what
//! `scf_bootstrap` runs) creates its own schema — several cold starts at once migrate once — and is then set up
//! from a laptop through `--server` alone.

use crate::both_backends;
use crate::cli::{run_ok, spawn_server, terminate, wafer};
use crate::fake_wechat::FakeWeChat;
use crate::helpers::{post_envelope, Backend, TestDb};
use serde_json::{json, Value};

const ADMIN: &str = "first-day-admin-token-0123456789abcdef";

async fn ready(url: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{url}readyz")).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn a_web_function_creates_its_schema_and_is_set_up_from_a_laptop(b: Backend) {
    let db = TestDb::new(b).await;
    let wx = FakeWeChat::start().await;
    wx.register("wx_first_day", "first-day-secret");
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("WAFER_DATABASE_URL", db.url.as_str()),
        ("WAFER_WECHAT_BASE_URL", wx.base_url.as_str()),
        ("WAFER_ADMIN_TOKEN", ADMIN),
        ("WAFER_AUTO_MIGRATE", "1"),
        ("WAFER_LOG", "warn"),
    ];
    // Three cold starts at once on an empty database.
    let mut servers =
        futures_util::future::join_all((0..3).map(|_| spawn_server(dir.path(), &env, false))).await;
    for (_, url) in &servers {
        let (status, body) = ready(url).await;
        assert_eq!(status, 200, "every instance serves a migrated schema: {body}");
    }

    // The laptop: no database access, only the Function URL and the admin token.
    let url = servers[0].1.clone();
    let laptop = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let mut c = wafer(laptop.path());
        c.env("WAFER_SERVER", &url).env("WAFER_ADMIN_TOKEN", ADMIN).args(args);
        c
    };
    run_ok(&mut cli(&["app", "add", "--appid", "wx_first_day", "--secret", "first-day-secret"]));
    let listed = String::from_utf8_lossy(&run_ok(&mut cli(&["app", "list"])).stdout).into_owned();
    assert!(listed.contains("wx_first_day"), "{listed}");
    assert!(!laptop.path().join("wafer.db").exists(), "nothing was created on the laptop");

    // A user logs in through another instance: one database, one schema.
    let http = reqwest::Client::new();
    let r =
        post_envelope(&http, &servers[2].1, "qcloud.cam.id_skey", json!({"code": wx.code_for("o_first")}))
            .await;
    assert_eq!(r["returnCode"], 0, "{r}");
    for (child, _) in &mut servers {
        assert!(terminate(child).success());
    }
}

/// Without the setting, a plain `serve` leaves a MySQL schema alone and says so in `/readyz`; the embedded store is
/// the no-setup default and always creates its own.
async fn a_plain_serve_leaves_the_schema_alone(b: Backend) {
    let db = TestDb::new(b).await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("WAFER_DATABASE_URL", db.url.as_str()), ("WAFER_LOG", "warn")];
    let (mut server, url) = spawn_server(dir.path(), &env, false).await;
    let (status, body) = ready(&url).await;
    if b == Backend::Sqlite {
        assert_eq!(status, 200, "{body}");
    } else {
        assert_eq!(status, 503, "{body}");
        assert!(body.to_string().contains("wafer-scf migrate"), "says what to do: {body}");
    }
    assert!(terminate(&mut server).success());
}

both_backends!(
    a_web_function_creates_its_schema_and_is_set_up_from_a_laptop,
    a_plain_serve_leaves_the_schema_alone
);

/// `serve` against a MySQL it cannot use says why — in `/readyz` and in its log — without the password.
#[tokio::test]
#[cfg_attr(not(wafer_mysql_tests), ignore = "MySQL suite off: set WAFER_TEST_MYSQL_URL")]
async fn unreachable_storage_is_reported_with_its_cause() {
    let Some(server) = crate::helpers::mysql_server_url() else { return };
    let url = reqwest::Url::parse(&server).unwrap();
    let (host, port) = (url.host_str().unwrap().to_owned(), url.port().unwrap_or(3306));
    let dir = tempfile::tempdir().unwrap();
    for (db_url, says) in [
        (format!("mysql://nobody:pw-Secret-9@{host}:{port}/test"), "access denied"),
        (crate::helpers::with_db_name(&server, "wafer_no_such_db_x"), "unknown database"),
        ("mysql://root:pw-Secret-9@127.0.0.1:1/test".to_owned(), "connection refused"),
    ] {
        let env = [("WAFER_DATABASE_URL", db_url.as_str())];
        let (mut child, base) = spawn_server(dir.path(), &env, true).await;
        let (status, body) = ready(&base).await;
        assert_eq!(status, 503, "{body}");
        assert!(body["reason"].as_str().unwrap().contains(says), "{db_url}: {body}");
        terminate(&mut child);
        let out = child.wait_with_output().unwrap();
        let logs = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(logs.contains(says), "the log line names the cause: {logs}");
        assert!(!logs.contains("pw-Secret-9"), "never the password: {logs}");
    }
}

/// Every command honours `--server` or refuses it; none acts on a store the user did not name — and a read of the
/// embedded store where there is none says so instead of creating an empty one.
#[test]
fn commands_act_only_on_the_store_the_user_named() {
    let dir = tempfile::tempdir().unwrap();
    let remote = "https://wafer.example.com/";
    for (args, says) in [
        (&["migrate"][..], "--server is not used by `wafer-scf migrate`"),
        (&["purge-sessions"], "purges expired sessions itself"),
        (&["reencrypt"], "--server is not used by `wafer-scf reencrypt`"),
    ] {
        let out = wafer(dir.path()).env("WAFER_SERVER", remote).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    for args in [&["app", "list"][..], &["key", "list"], &["status"], &["purge-sessions"]] {
        let out = wafer(dir.path()).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no embedded store at") && err.contains("wafer.db"), "{args:?}: {err}");
        assert!(String::from_utf8_lossy(&out.stdout).is_empty(), "no empty table: {args:?}");
    }
    assert!(!dir.path().join("wafer.db").exists(), "nothing was created");
    run_ok(wafer(dir.path()).args(["app", "add", "--appid", "wx_here", "--secret", "s"]));
    let listed = run_ok(wafer(dir.path()).args(["app", "list"]));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("wx_here"), "found where it was created");
}

/// The small things a new user trips on: listen addresses, enum settings, quiet registry commands, no table header
/// before an error.
#[test]
fn settings_and_registry_commands_say_what_they_mean() {
    let dir = tempfile::tempdir().unwrap();
    let out = wafer(dir.path()).env("WAFER_CALLER_AUTH", "bogus").arg("serve").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("accepted: credentials, all, off"), "{err}");
    let out = wafer(dir.path()).env("WAFER_LISTEN", "nohost").arg("serve").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("localhost:PORT or :PORT"), "{err}");

    let mut add = wafer(dir.path());
    add.env_remove("WAFER_LOG").args(["app", "add", "--appid", "wx_quiet", "--secret", "s"]);
    let out = add.output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "added app wx_quiet");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("registry changed"),
        "no log line beside the answer"
    );

    let out = wafer(dir.path())
        .env("WAFER_SERVER", "http://127.0.0.1:1/")
        .env("WAFER_ADMIN_TOKEN", "an-admin-token-of-at-least-32-characters")
        .args(["app", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no header before the error: {}", String::from_utf8_lossy(&out.stdout));
}
