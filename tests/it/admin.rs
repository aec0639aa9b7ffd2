//! Running a deployment with nothing but the function: every admin interface over HTTP and through a direct SCF
//! invocation, refused without the admin token; the CLI's `--server` driving a spawned server for each subcommand;
//! the status report.

use crate::both_backends;
use crate::cli::{run_ok, spawn_server, terminate, wafer};
use crate::helpers::id;
use crate::helpers::{code, open_settings, Backend, TestApp, TestDb};
use serde_json::{json, Value};
use wafer_scf::handlers::Settings;
use wafer_scf::request::RequestMeta;

const ADMIN: &str = "admin-token-for-admin-tests-0123456789";

fn para_for(name: &str) -> Value {
    match name {
        "qcloud.admin.app.add" => json!({"appid": "wx_admin_1", "secret": "S3CRET-admin"}),
        "qcloud.admin.app.update" => json!({"appid": "wx_admin_1", "session_duration_secs": 600}),
        "qcloud.admin.app.remove" | "qcloud.admin.app.unblock" => json!({"appid": "wx_admin_1"}),
        "qcloud.admin.app.api_security" => json!({"appid": "wx_admin_1", "off": true}),
        "qcloud.admin.app.quota" => json!({"appid": "wx_admin_1", "api": "/wxa/getwxacode"}),
        "qcloud.admin.app.clear_quota" => json!({"appid": "wx_admin_1"}),
        "qcloud.admin.agent.add" => {
            json!({"corpid": "ww_admin", "agentid": 1000002, "secret": "AGENT-S3CRET"})
        }
        "qcloud.admin.agent.remove" => json!({"corpid": "ww_admin", "agentid": "1000002"}),
        "qcloud.admin.cos.add" => {
            json!({"appid": "1250000000", "secret_id": "AKIDadmin", "secret_key": "COS-S3CRET"})
        }
        "qcloud.admin.cos.remove" => json!({"appid": "1250000000"}),
        "qcloud.admin.key.add" => json!({"name": "svc", "apps": ["wx_admin_1"]}),
        "qcloud.admin.key.revoke" => json!({"name": "svc"}),
        _ => json!({}),
    }
}

/// The admin interfaces in an order in which each succeeds.
const ORDER: &[&str] = &[
    "qcloud.admin.app.add",
    "qcloud.admin.app.update",
    "qcloud.admin.app.api_security",
    "qcloud.admin.app.quota",
    "qcloud.admin.app.clear_quota",
    "qcloud.admin.app.list",
    "qcloud.admin.app.unblock",
    "qcloud.admin.agent.add",
    "qcloud.admin.agent.list",
    "qcloud.admin.cos.add",
    "qcloud.admin.cos.list",
    "qcloud.admin.key.add",
    "qcloud.admin.key.list",
    "qcloud.admin.key.revoke",
    "qcloud.admin.status",
    "qcloud.admin.cos.remove",
    "qcloud.admin.agent.remove",
    "qcloud.admin.app.remove",
];

async fn every_admin_interface_needs_the_token_and_never_echoes_a_secret(b: Backend) {
    let names: Vec<&str> =
        wafer_scf::handlers::interface_names().filter(|n| n.starts_with("qcloud.admin.")).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    let mut ordered = ORDER.to_vec();
    ordered.sort_unstable();
    assert_eq!(sorted, ordered, "every admin interface is tested");

    let settings = Settings { admin_token: Some(ADMIN.into()), ..open_settings() };
    let t = TestApp::with_settings(b, settings).await;
    t.wx.register("wx_admin_1", "S3CRET-admin");
    let call = |name: &'static str, meta: RequestMeta, para: Value| {
        let svc = t.svc.clone();
        async move {
            let body = json!({"interface": {"interfaceName": name, "para": para}}).to_string();
            serde_json::from_slice::<Value>(&svc.handle(body.as_bytes(), &meta).await.to_bytes()).unwrap()
        }
    };
    for (i, name) in ORDER.iter().enumerate() {
        // No token, a wrong one: refused before anything is touched. (Each name's failures come from an address
        // of their own: failed admin authentications are limited per address.)
        let from = || RequestMeta { source_ip: Some(format!("192.0.2.{i}").into()), ..Default::default() };
        assert_eq!(code(&call(name, from(), para_for(name)).await), 1024, "{name}");
        let wrong = RequestMeta { admin_token: Some("wrong".into()), ..from() };
        assert_eq!(code(&call(name, wrong, para_for(name)).await), 1024, "{name}");
        // The header token (HTTP), or para.admin_token (a direct invocation).
        let r = if name.ends_with(".list") || name.ends_with("status") {
            let mut p = para_for(name);
            p["admin_token"] = json!(ADMIN);
            // Over HTTP a token in the body is refused (bodies end up in proxy logs); a direct invocation has
            // no headers and may carry it.
            let http = call(name, RequestMeta::default(), p.clone()).await;
            assert_eq!(code(&http), 1024, "{name}: {http}");
            assert!(http["returnMessage"].as_str().unwrap().contains("X-Wafer-Admin-Token"));
            call(name, RequestMeta { direct: true, ..Default::default() }, p).await
        } else {
            let meta = RequestMeta { admin_token: Some(ADMIN.into()), ..Default::default() };
            call(name, meta, para_for(name)).await
        };
        assert_eq!(code(&r), 0, "{name}: {r}");
        let text = r.to_string();
        for secret in ["S3CRET-admin", "AGENT-S3CRET", "COS-S3CRET"] {
            assert!(!text.contains(secret), "{name} echoed a secret: {text}");
        }
        if *name == "qcloud.admin.key.add" {
            assert!(r["returnData"]["key"].as_str().unwrap().starts_with("wk_"), "the key, once");
        }
        if *name == "qcloud.admin.app.update" {
            let app = t.store.registry.get_app(&id("wx_admin_1")).await.unwrap().unwrap();
            assert_eq!(
                (app.session_duration_secs, app.secret.as_str()),
                (600, "S3CRET-admin"),
                "only what was given"
            );
        }
        if *name == "qcloud.admin.status" {
            let s = &r["returnData"];
            assert_eq!(s["process"]["admin"], true);
            assert_eq!(s["apps"][0]["id"], "wx_admin_1");
            assert_eq!(s["apps"][0]["sessions"], 0);
            assert_eq!(s["agents"][0]["id"], "ww_admin/1000002");
        }
    }
    assert!(t.store.registry.get_app(&id("wx_admin_1")).await.unwrap().is_none(), "removed at the end");
    // An update of an app that does not exist is refused and points to add.
    let meta = RequestMeta { admin_token: Some(ADMIN.into()), ..Default::default() };
    let r = call("qcloud.admin.app.update", meta, json!({"appid": "wx_nope", "secret": "x"})).await;
    assert_eq!(code(&r), 1012, "{r}");
}

/// The CLI's `--server` drives a spawned server for every registry subcommand and `status`.
async fn the_cli_manages_a_running_server_with_server(b: Backend) {
    let db = TestDb::new(b).await;
    let dir = tempfile::tempdir().unwrap();
    run_ok(wafer(dir.path()).env("WAFER_DATABASE_URL", &db.url).arg("migrate"));
    let env = [("WAFER_DATABASE_URL", db.url.as_str()), ("WAFER_ADMIN_TOKEN", ADMIN), ("WAFER_LOG", "warn")];
    let (mut server, url) = spawn_server(dir.path(), &env, false).await;
    // The client side knows no database: everything goes through the server.
    let cli = |args: &[&str]| {
        let mut c = wafer(dir.path());
        c.env("WAFER_SERVER", &url)
            .env("WAFER_ADMIN_TOKEN", ADMIN)
            .env("WAFER_DATABASE_URL", "mysql://nobody@127.0.0.1:1/none");
        c.args(args);
        c
    };
    let out = |args: &[&str]| String::from_utf8_lossy(&run_ok(&mut cli(args)).stdout).into_owned();

    assert!(out(&[
        "app",
        "add",
        "--appid",
        "wx_remote",
        "--secret",
        "REMOTE-S3CRET",
        "--token-mode",
        "classic"
    ])
    .contains("added app wx_remote"));
    assert!(out(&["app", "update", "--appid", "wx_remote", "--login-duration-days", "7"])
        .contains("updated app wx_remote"));
    let list = out(&["app", "list"]);
    let line = list.lines().find(|l| l.contains("wx_remote")).unwrap();
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        ["wx_remote", "7", "2592000", "classic"],
        "{list}"
    );
    assert!(!list.contains("REMOTE-S3CRET"));
    assert!(out(&[
        "agent",
        "add",
        "--corpid",
        "ww_remote",
        "--agentid",
        "1000009",
        "--secret",
        "s",
        "--remark",
        "OA"
    ])
    .contains("added agent"));
    assert!(out(&["agent", "list"]).contains("ww_remote"));
    assert!(out(&["cos", "add", "--appid", "1250000009", "--secret-id", "AKIDremote", "--secret-key", "k"])
        .contains("added COS keys"));
    assert!(out(&["cos", "list"]).contains("AKIDremo…"));
    let key = out(&[
        "key",
        "add",
        "--name",
        "remote-svc",
        "--apps",
        "wx_remote",
        "--apis",
        "/wxa/,/cgi-bin/message/",
    ]);
    assert!(key.trim().starts_with("wk_"), "{key}");
    let keys = out(&["key", "list"]);
    assert!(keys.contains("remote-svc") && keys.contains("apis=/wxa/,/cgi-bin/message/"), "{keys}");
    let status = out(&["status"]);
    assert!(status.contains("admin on") && status.contains("schema 8/8"), "{status}");
    assert!(status.lines().any(|l| l.starts_with("wx_remote") && l.contains("classic")), "{status}");
    assert!(status.lines().any(|l| l.starts_with("ww_remote/1000009")), "{status}");
    assert!(out(&["key", "revoke", "--name", "remote-svc"]).contains("revoked key remote-svc"));
    assert!(out(&["cos", "remove", "--appid", "1250000009"]).contains("removed"));
    assert!(out(&["agent", "remove", "--corpid", "ww_remote", "--agentid", "1000009"]).contains("removed"));
    assert!(out(&["app", "unblock", "--appid", "wx_remote"]).contains("unblocked"));
    assert!(out(&["app", "remove", "--appid", "wx_remote"]).contains("removed app wx_remote"));

    // The server's database has seen it all.
    let store = db.store().await;
    assert!(store.registry.get_app(&id("wx_remote")).await.unwrap().is_none());
    assert_eq!(store.keys.list_caller_keys().await.unwrap()[0].name, "remote-svc");

    // Wrong token, plain http to another host: plain messages.
    let err = cli(&["app", "list"])
        .env("WAFER_ADMIN_TOKEN", "wrong-admin-token-of-32-characters!")
        .output()
        .unwrap();
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("1024"));
    let err = cli(&["app", "list"]).env("WAFER_SERVER", "http://example.com/").output().unwrap();
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("https://"),
        "{}",
        String::from_utf8_lossy(&err.stderr)
    );
    assert!(terminate(&mut server).success());
}

both_backends!(
    every_admin_interface_needs_the_token_and_never_echoes_a_secret,
    the_cli_manages_a_running_server_with_server,
);

fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no sample {name_and_labels} in:\n{text}"))
}

/// `GET /metrics` after a scripted mix of requests: every counter moved by exactly what was done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_scripted_mix_of_requests() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let wx = crate::fake_wechat::FakeWeChat::start().await;
    wx.register("wx_metrics", "m-secret");
    for (appid, secret) in [("wx_metrics", "m-secret"), ("wx_metrics_bad", "wrong")] {
        run_ok(
            wafer(dir.path())
                .env("WAFER_DATABASE_URL", &db.url)
                .args(["app", "add", "--appid", appid, "--secret", secret]),
        );
    }
    let metrics_port = crate::cli::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let env = [
        ("WAFER_DATABASE_URL", db.url.as_str()),
        ("WAFER_WECHAT_BASE_URL", wx.base_url.as_str()),
        ("WAFER_CALLER_AUTH", "off"),
        ("WAFER_METRICS", "1"),
        ("WAFER_ADMIN_TOKEN", ADMIN),
        ("WAFER_METRICS_LISTEN", metrics_addr.as_str()),
        ("WAFER_LOG", "warn"),
    ];
    let (mut server, url) = spawn_server(dir.path(), &env, false).await;
    let client = reqwest::Client::new();
    let post = |iface: &'static str, para: Value| crate::helpers::post_envelope(&client, &url, iface, para);
    for _ in 0..3 {
        assert_eq!(code(&post("qcloud.cam.auth", json!({"id": "0".repeat(32), "skey": "s"})).await), 60012);
    }
    assert_eq!(
        code(&post("qcloud.cam.id_skey", json!({"appid": "wx_metrics", "code": wx.code_for("m1")})).await),
        0
    );
    for _ in 0..2 {
        assert_eq!(code(&post("qcloud.mimi.access_token", json!({"appid": "wx_metrics"})).await), 0);
    }
    for _ in 0..2 {
        assert_eq!(code(&post("qcloud.mimi.access_token", json!({"appid": "wx_metrics_bad"})).await), 40013);
    }
    // On the public listener /metrics needs the admin token, as a bearer token (what Prometheus sends).
    let refused = client.get(format!("{url}metrics")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["www-authenticate"], "Bearer realm=\"metrics\"");
    let wrong =
        client.get(format!("{url}metrics")).bearer_auth("wk_not_the_admin_token").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let text =
        client.get(format!("{url}metrics")).bearer_auth(ADMIN).send().await.unwrap().text().await.unwrap();
    assert_eq!(sample(&text, r#"wafer_requests_total{interface="qcloud.cam.auth",code="60012"}"#), 3.0);
    assert_eq!(sample(&text, r#"wafer_requests_total{interface="qcloud.cam.id_skey",code="0"}"#), 1.0);
    assert_eq!(sample(&text, r#"wafer_requests_total{interface="qcloud.mimi.access_token",code="0"}"#), 2.0);
    assert_eq!(
        sample(&text, r#"wafer_requests_total{interface="qcloud.mimi.access_token",code="40013"}"#),
        2.0
    );
    assert_eq!(
        sample(&text, r#"wafer_upstream_calls_total{endpoint="/cgi-bin/stable_token",result="ok"}"#),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"wafer_upstream_calls_total{endpoint="/cgi-bin/stable_token",result="errcode_40125"}"#
        ),
        1.0,
        "the wrong secret cost one call, the second request was remembered"
    );
    assert_eq!(
        sample(&text, r#"wafer_upstream_calls_total{endpoint="/sns/jscode2session",result="ok"}"#),
        1.0
    );
    assert_eq!(sample(&text, r#"wafer_credential_events_total{event="refresh"}"#), 1.0);
    assert_eq!(sample(&text, r#"wafer_credential_events_total{event="hit"}"#), 1.0);
    assert_eq!(sample(&text, r#"wafer_credential_events_total{event="remembered_failure"}"#), 1.0);
    assert_eq!(sample(&text, r#"wafer_request_seconds_count{interface="qcloud.cam.auth"}"#), 3.0);
    assert!(sample(&text, r#"wafer_storage_operations_total{backend="sqlite"}"#) > 5.0);
    assert!(text.contains("wafer_build_info{version="));
    // The separate metrics listener serves the same.
    let other =
        client.get(format!("http://{metrics_addr}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(other.contains(r#"wafer_requests_total{interface="qcloud.cam.auth",code="60012"} 3"#), "{other}");
    assert!(terminate(&mut server).success());

    // Off by default: GET /metrics is just a wrong method.
    let (mut plain, url) = spawn_server(dir.path(), &[("WAFER_DATABASE_URL", db.url.as_str())], false).await;
    assert_eq!(client.get(format!("{url}metrics")).send().await.unwrap().status(), 405);
    assert!(terminate(&mut plain).success());
}

/// Caller-supplied values cannot forge log lines in the text format: an appid with CR/LF/ESC/U+202E is escaped, a
/// request id with spaces or `=` is replaced by our own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_supplied_values_cannot_forge_log_lines() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("WAFER_DATABASE_URL", db.url.as_str()), ("WAFER_LOG", "info"), ("WAFER_LOG_FORMAT", "text")];
    let (mut server, url) = spawn_server(dir.path(), &env, true).await;
    let client = reqwest::Client::new();
    let forged = "\u{1b}[2Jwx1\r\n2026-01-01T00:00:00Z INFO admin action corpid=evil\u{202e}";
    let body =
        json!({"interface": {"interfaceName": "qcloud.cam.id_skey", "para": {"appid": forged, "code": "c"}}});
    let r = client
        .post(&url)
        .header("X-Request-Id", "abc return_code=0 forged=1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.text().await;
    let body = json!({"interface": {"interfaceName": "qcloud.work.access_token", "para": {"corpid": forged, "agentid": "1"}}});
    let _ = client.post(&url).json(&body).send().await.unwrap().text().await;
    assert!(terminate(&mut server).success());
    let mut stderr = String::new();
    use std::io::Read;
    server.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(stderr.lines().all(|l| !l.starts_with("2026-01-01T00:00:00Z")), "a forged line: {stderr}");
    assert!(!stderr.contains('\u{1b}') && !stderr.contains('\u{202e}'), "{stderr:?}");
    assert!(!stderr.contains("request_id=abc"), "the request id was replaced: {stderr}");
    assert!(stderr.contains("\\u{a}"), "escaped, still readable: {stderr}");
}

/// Any command on a database that was never migrated says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(wafer_mysql_tests), ignore = "MySQL suite off: set WAFER_TEST_MYSQL_URL")]
async fn commands_on_an_unmigrated_database_point_to_migrate() {
    if crate::helpers::mysql_server_url().is_none() {
        return;
    }
    let db = TestDb::new(Backend::Mysql).await;
    let dir = tempfile::tempdir().unwrap();
    for args in [&["app", "list"][..], &["key", "list"], &["status"]] {
        let out = wafer(dir.path()).env("WAFER_DATABASE_URL", &db.url).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("run `wafer-scf migrate`"), "{args:?}: {err}");
    }
}
