//! The platform's quota and diagnosis interfaces through the binary, as an operator uses them: `status --quota`
//! asking WeChat for an API's daily quota for every app, `app clear-quota` behind the admin token showing the
//! resets left and lifting the app's blocks, and a failed call's `rid` explained in a debug log line that carries
//! neither the URL (it has the token) nor a body.

use crate::both_backends;
use crate::cli::{db_env, run_ok, spawn_server, terminate, wafer};
use crate::fake_wechat::FakeWeChat;
use crate::helpers::{Backend, TestDb};
use serde_json::{json, Value};

const APP: &str = "wx_platform_app";
const SECRET: &str = "platform-app-secret";
const ADMIN: &str = "admin-token-for-platform-tests-0123";
const API: &str = "/cgi-bin/message/send";

async fn quota_and_diagnosis_reach_the_operator(b: Backend) {
    let db = TestDb::new(b).await;
    let dir = tempfile::tempdir().unwrap();
    if b == Backend::Mysql {
        run_ok(db_env(&mut wafer(dir.path()), &db).arg("migrate"));
    }
    let wx = FakeWeChat::start().await;
    wx.register(APP, SECRET);
    run_ok(db_env(&mut wafer(dir.path()), &db).args(["app", "add", "--appid", APP, "--secret", SECRET]));
    let env = [
        ("WAFER_DATABASE_URL", db.url.as_str()),
        ("WAFER_WECHAT_BASE_URL", &wx.base_url),
        ("WAFER_ADMIN_TOKEN", ADMIN),
        ("WAFER_CALLER_AUTH", "off"),
        ("WAFER_LOG", "debug"),
    ];
    let (mut server, url) = spawn_server(dir.path(), &env, true).await;
    let http = reqwest::Client::new();
    let send = || async {
        let r =
            http.post(format!("{url}wechat/{APP}{API}")).json(&json!({"touser": "u"})).send().await.unwrap();
        r.json::<Value>().await.unwrap()
    };
    for _ in 0..3 {
        assert_eq!(send().await["touser"], "u");
    }
    // A call WeChat refuses with a rid: explained at debug level.
    wx.fail_next("/business", 45009, 1);
    assert_eq!(send().await["errcode"], 45009);

    let cli = |args: &[&str]| {
        let mut c = wafer(dir.path());
        c.env("WAFER_ADMIN_TOKEN", ADMIN).arg("--server").arg(&url).args(args);
        String::from_utf8_lossy(&run_ok(&mut c).stdout).into_owned()
    };
    let status = cli(&["status", "--quota", API]);
    assert!(status.contains(&format!("{APP:<32} {API}: used 4 of 100000 today, 99996 left")), "{status}");
    let cleared = cli(&["app", "clear-quota", "--appid", APP]);
    assert!(cleared.contains("resets this month: 1 of 10 used, 9 left"), "{cleared}");
    assert!(cli(&["app", "quota", "--appid", APP, "--api", API]).contains("used 0 of 100000 today"));
    // Without the admin token: refused, nothing reset.
    let mut c = wafer(dir.path());
    let out = c.args(["--server", &url, "app", "clear-quota", "--appid", APP]).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(wx.calls("/cgi-bin/clear_quota"), 1);

    assert!(terminate(&mut server).success());
    let logs = String::from_utf8_lossy(&server.wait_with_output().unwrap().stderr).into_owned();
    let line = logs
        .lines()
        .find(|l| l.contains("WeChat's record of the failed call"))
        .unwrap_or_else(|| panic!("{logs}"));
    for part in [
        API,
        "errcode=45009",
        "rid=s-45009",
        "cost_in_ms=42",
        "client_ip=203.0.113.7",
        "recorded_errcode=45009",
    ] {
        assert!(line.contains(part), "{part}: {line}");
    }
    assert!(!logs.contains("access_token=") && !logs.contains("secret-body"), "no URL, no body: {logs}");
}

both_backends!(quota_and_diagnosis_reach_the_operator);
