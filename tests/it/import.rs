//! Migration from the seed: a seed-schema database in MariaDB (the tables of `shared/spec/seed-schema.md` with
//! realistic rows: emoji user_info, duplicate openids, a zero date, bad base64, an over-long appid, an expired
//! token) imported into both backends through the CLI. Legacy id/skey pairs authenticate, expired ones give 60011,
//! valid tokens are served with zero upstream calls, a dry run writes nothing, and a second run imports nothing.

use crate::both_backends;
use crate::cli::{run_ok, wafer};
use crate::fake_wechat::FakeWeChat;
use crate::helpers::id;
use crate::helpers::{build, mysql_server_url, open_settings, with_db_name, Backend, TestDb};
use base64::Engine;
use mysql_async::prelude::Queryable;
use serde_json::{json, Value};
use std::sync::Arc;
use wafer_scf::clock::ManualClock;

const SEED_SCHEMA: &[&str] = &[
    "CREATE TABLE cAppinfo (appid varchar(200) NOT NULL, secret varchar(300) NOT NULL, login_duration int(11) DEFAULT 30,
       session_duration int(11) DEFAULT 2592000, qcloud_appid varchar(300) DEFAULT NULL, ip varchar(50) DEFAULT NULL,
       access_token varchar(521) DEFAULT NULL, expires_in int(11) DEFAULT 7200, update_time datetime DEFAULT NULL,
       PRIMARY KEY (appid)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE cSessionInfo (id int(11) NOT NULL AUTO_INCREMENT, uuid varchar(100) NOT NULL, skey varchar(100) NOT NULL,
       create_time datetime NOT NULL, last_visit_time datetime NOT NULL, open_id varchar(100) NOT NULL,
       session_key varchar(100) NOT NULL, user_info varchar(2048) DEFAULT NULL, union_id varchar(100) DEFAULT NULL,
       appid varchar(100) DEFAULT NULL, PRIMARY KEY (id), KEY auth (uuid, skey), KEY weixin (open_id, session_key))
       ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE cAppinfo_work (corpid varchar(100) NOT NULL, agentid varchar(50) NOT NULL, agentsecret varchar(300) NOT NULL,
       remark varchar(200) DEFAULT NULL, access_token varchar(521) DEFAULT NULL, expires_in int(11) DEFAULT 7200,
       update_time datetime DEFAULT NULL, ticket varchar(521) DEFAULT NULL, ticket_expires_in int(11) DEFAULT 7200,
       ticket_update_time datetime DEFAULT NULL, agent_ticket varchar(521) DEFAULT NULL, agent_update_time datetime DEFAULT NULL,
       UNIQUE KEY corp_agent (corpid, agentid)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
];

/// Local Asia/Shanghai time `secs_ago` seconds ago, as the seed stored it.
fn ago(secs_ago: i64) -> String {
    format!("CONVERT_TZ(UTC_TIMESTAMP() - INTERVAL {secs_ago} SECOND, '+00:00', '+08:00')")
}

struct Seed {
    url: String,
    name: String,
    server: String,
}

impl Drop for Seed {
    fn drop(&mut self) {
        crate::helpers::drop_database(&self.server, &self.name);
    }
}

async fn seed_database() -> Seed {
    let server = mysql_server_url().unwrap();
    let name = format!("wafer_seed_{}", wafer_scf::crypto::random_hex(5).unwrap());
    let pool = mysql_async::Pool::new(server.as_str());
    let mut c = pool.get_conn().await.unwrap();
    c.query_drop(format!("CREATE DATABASE {name} CHARACTER SET utf8mb4")).await.unwrap();
    c.query_drop(format!("USE {name}")).await.unwrap();
    // The seed ran with MySQL's permissive defaults (zero dates were possible).
    c.query_drop("SET SESSION sql_mode = ''").await.unwrap();
    for t in SEED_SCHEMA {
        c.query_drop(*t).await.unwrap();
    }
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let long_appid = "x".repeat(100);
    let stmts = vec![
        format!("INSERT INTO cAppinfo (appid, secret, login_duration, session_duration, access_token, expires_in, update_time) VALUES
            ('wx_seed_app1', 'seed-secret-1', 30, 2592000, 'seed-token-app1', 7200, {}),
            ('wx_seed_app2', 'seed-secret-2', 7, 3600, 'seed-token-app2-expired', 7200, {}),
            ('{long_appid}', 'secret', 30, 2592000, NULL, 7200, NULL)", ago(1000), ago(3 * 3600)),
        format!("INSERT INTO cAppinfo_work VALUES ('ww_seed', '1000002', 'seed-agent-secret', 'OA 审批', 'seed-wc-token', 7200, {0},
            'seed-corp-ticket', 7200, {0}, 'seed-agent-ticket', {0})", ago(600)),
        format!("INSERT INTO cSessionInfo (uuid, skey, create_time, last_visit_time, open_id, session_key, user_info, union_id, appid) VALUES
            ('seed-uuid-1', 'seed-skey-1', {d1}, {h1}, 'o_user1', 'tiihtNczf5v6AKRyjwEUhQ==', '{ui}', 'un1', 'wx_seed_app1'),
            ('seed-uuid-2a', 'seed-skey-2a', {d1}, {h1}, 'o_user2', 'AAAAAAAAAAAAAAAAAAAAAA==', NULL, '', 'wx_seed_app1'),
            ('seed-uuid-2b', 'seed-skey-2b', {h1}, {h1}, 'o_user2', 'AAAAAAAAAAAAAAAAAAAAAA==', NULL, '', 'wx_seed_app1'),
            ('seed-uuid-3', 'seed-skey-3', {d40}, {d1}, 'o_user3', 'AAAAAAAAAAAAAAAAAAAAAA==', NULL, NULL, 'wx_seed_app1'),
            ('seed-uuid-4', 'seed-skey-4', '0000-00-00 00:00:00', '0000-00-00 00:00:00', 'o_user4', 'AAAAAAAAAAAAAAAAAAAAAA==', NULL, NULL, 'wx_seed_app1'),
            ('seed-uuid-5', 'seed-skey-5', {d1}, {h1}, 'o_user5', 'AAAAAAAAAAAAAAAAAAAAAA==', '!!!not base64', NULL, 'wx_seed_app1'),
            ('seed-uuid-6', 'seed-skey-6', {d1}, {h1}, 'o_user6', 'AAAAAAAAAAAAAAAAAAAAAA==', NULL, NULL, '{long80}'),
            ('seed-uuid-8', 'seed-skey-8', {d1}, {h2}, 'o_user8', 'AAAAAAAAAAAAAAAAAAAAAA==', NULL, NULL, 'wx_seed_app2')",
            d1 = ago(86_400), h1 = ago(3600), h2 = ago(2 * 3600), d40 = ago(40 * 86_400),
            ui = b64(r#"{"nickName":"小明😀","city":"深圳","avatarUrl":"http://x/0"}"#), long80 = "y".repeat(80)),
    ];
    for s in stmts {
        c.query_drop(s).await.unwrap();
    }
    drop(c);
    pool.disconnect().await.unwrap();
    Seed { url: with_db_name(&server, &name), name, server }
}

fn import(dir: &std::path::Path, target: &TestDb, from: &str, dry: bool) -> String {
    let mut cmd = wafer(dir);
    cmd.env("WAFER_DATABASE_URL", &target.url).args(["import", "--from", from]);
    if dry {
        cmd.arg("--dry-run");
    }
    String::from_utf8(run_ok(&mut cmd).stdout).unwrap()
}

async fn a_seed_database_is_imported_without_logging_anyone_out(b: Backend) {
    if mysql_server_url().is_none() {
        return; // the source is always MySQL
    }
    let seed = seed_database().await;
    let target = TestDb::new(b).await;
    let dir = tempfile::tempdir().unwrap();
    if b == Backend::Mysql {
        run_ok(wafer(dir.path()).env("WAFER_DATABASE_URL", &target.url).arg("migrate"));
    }

    let dry = import(dir.path(), &target, &seed.url, true);
    assert!(dry.contains("seed (WaferOnSCF)") && dry.contains("dry run"), "{dry}");
    assert!(dry.contains("apps: 2 new") && dry.contains("sessions: 5 new"), "{dry}");
    assert!(!dry.contains(&seed.url) || !seed.url.contains('@'), "no credentials printed");
    let store = target.store().await;
    assert!(store.registry.list_apps().await.unwrap().is_empty(), "a dry run writes nothing");

    let out = import(dir.path(), &target, &seed.url, false);
    for expected in [
        "apps: 2 new, 0 updated, 0 unchanged",
        "agents: 1 new",
        "sessions: 5 new, 0 already present",
        "cached tokens/tickets: 4 new, 0 unchanged, 1 expired",
        "skipped rows: 4",
        "over-long or malformed appid: 1",
        "unparseable date: 1",
        "invalid base64 user_info: 1",
        "over-long or malformed session identifiers: 1",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }

    let again = import(dir.path(), &target, &seed.url, false);
    for expected in [
        "apps: 0 new, 0 updated, 2 unchanged",
        "agents: 0 new, 0 updated, 1 unchanged",
        "sessions: 0 new, 5 already present",
        "4 unchanged",
    ] {
        assert!(again.contains(expected), "second run: missing {expected:?} in:\n{again}");
    }

    // Served by the new server: legacy pairs work, expired ones do not, tokens need no upstream call.
    let app = store.registry.get_app(&id("wx_seed_app1")).await.unwrap().unwrap();
    assert_eq!(app.token_mode, wafer_scf::store::TokenMode::Classic);
    assert_eq!(app.login_duration_secs, 30 * 86_400);
    assert_eq!(
        store.registry.get_app(&id("wx_seed_app2")).await.unwrap().unwrap().session_duration_secs,
        3600
    );
    let wx = FakeWeChat::start().await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let svc = build(store.clone(), &wx.base_url, Arc::new(ManualClock::new(now)), open_settings());
    let call = |iface: &'static str, para: Value| {
        let svc = &svc;
        async move {
            let body = json!({"interface": {"interfaceName": iface, "para": para}}).to_string();
            let env = svc.handle(body.as_bytes(), &Default::default()).await;
            serde_json::from_slice::<Value>(&env.to_bytes()).unwrap()
        }
    };
    let r = call("qcloud.cam.auth", json!({"id": "seed-uuid-1", "skey": "seed-skey-1"})).await;
    assert_eq!(r["returnCode"], 0, "{r}");
    assert_eq!(r["returnData"]["user_info"]["nickName"], "小明😀");
    assert_eq!(r["returnData"]["unionid"], "un1");
    assert_eq!(r["returnData"]["appid"], "wx_seed_app1");
    for (id, skey) in [("seed-uuid-2a", "seed-skey-2a"), ("seed-uuid-2b", "seed-skey-2b")] {
        assert_eq!(
            call("qcloud.cam.auth", json!({"id": id, "skey": skey})).await["returnCode"],
            0,
            "duplicate openid rows all imported"
        );
    }
    assert_eq!(
        call("qcloud.cam.auth", json!({"id": "seed-uuid-1", "skey": "wrong"})).await["returnCode"],
        60012
    );
    assert_eq!(
        call("qcloud.cam.auth", json!({"id": "seed-uuid-3", "skey": "seed-skey-3"})).await["returnCode"],
        60011,
        "login older than 30 days"
    );
    assert_eq!(
        call("qcloud.cam.auth", json!({"id": "seed-uuid-8", "skey": "seed-skey-8"})).await["returnCode"],
        60011,
        "idle past the app's 1 h"
    );

    let r = call("qcloud.mimi.access_token", json!({"appid": "wx_seed_app1"})).await;
    assert_eq!(
        (r["returnMessage"].as_str(), r["returnData"]["access_token"].as_str()),
        (Some("OLD_TOKEN_SUCCESS"), Some("seed-token-app1"))
    );
    let exp = r["returnData"]["exp"].as_i64().unwrap();
    assert!((exp - (now - 1000 + 7200)).abs() <= 5, "expiry from the local update_time: {exp}");
    let agent = json!({"corpid": "ww_seed", "agentid": "1000002"});
    let r = call("qcloud.work.access_token", agent.clone()).await;
    assert_eq!(r["returnData"]["access_token"], "seed-wc-token");
    assert_eq!(call("qcloud.work.ticket", agent.clone()).await["returnData"]["ticket"], "seed-corp-ticket");
    assert_eq!(
        call("qcloud.work.agent.ticket", agent.clone()).await["returnData"]["agent_ticket"],
        "seed-agent-ticket"
    );
    for path in [
        "/cgi-bin/token",
        "/cgi-bin/stable_token",
        "/cgi-bin/gettoken",
        "/cgi-bin/get_jsapi_ticket",
        "/cgi-bin/ticket/get",
    ] {
        assert_eq!(wx.calls(path), 0, "{path}: the first requests after the switch cost no upstream call");
    }
    let agents = store.registry.list_agents().await.unwrap();
    assert_eq!(agents[0].remark, "OA 审批");
}

both_backends!(a_seed_database_is_imported_without_logging_anyone_out);

async fn the_original_wafer_schema_is_detected_and_its_single_app_owns_the_sessions(b: Backend) {
    let Some(server) = mysql_server_url() else { return };
    let name = format!("wafer_orig_{}", wafer_scf::crypto::random_hex(5).unwrap());
    let pool = mysql_async::Pool::new(server.as_str());
    let mut c = pool.get_conn().await.unwrap();
    c.query_drop(format!("CREATE DATABASE {name} CHARACTER SET utf8mb4")).await.unwrap();
    c.query_drop(format!("USE {name}")).await.unwrap();
    for stmt in [
        "CREATE TABLE cAppinfo (appid varchar(200) NOT NULL PRIMARY KEY, secret varchar(300) NOT NULL, login_duration int DEFAULT 30,
           session_duration int DEFAULT 2592000, qcloud_appid varchar(300) DEFAULT NULL, ip varchar(50) DEFAULT NULL)".to_owned(),
        "CREATE TABLE cSessionInfo (id int NOT NULL AUTO_INCREMENT PRIMARY KEY, uuid varchar(100) NOT NULL, skey varchar(100) NOT NULL,
           create_time datetime NOT NULL, last_visit_time datetime NOT NULL, open_id varchar(100) NOT NULL,
           session_key varchar(100) NOT NULL, user_info varchar(2048) DEFAULT NULL)".to_owned(),
        "INSERT INTO cAppinfo (appid, secret) VALUES ('wx_original', 'orig-secret')".to_owned(),
        format!("INSERT INTO cSessionInfo (uuid, skey, create_time, last_visit_time, open_id, session_key) VALUES
           ('orig-uuid', 'orig-skey', {}, {}, 'o_orig', 'AAAAAAAAAAAAAAAAAAAAAA==')", ago(3600), ago(60)),
    ] {
        c.query_drop(stmt).await.unwrap();
    }
    drop(c);
    pool.disconnect().await.unwrap();
    let _cleanup = Seed { url: String::new(), name: name.clone(), server: server.clone() };

    let target = TestDb::new(b).await;
    let dir = tempfile::tempdir().unwrap();
    if b == Backend::Mysql {
        run_ok(wafer(dir.path()).env("WAFER_DATABASE_URL", &target.url).arg("migrate"));
    }
    let out = import(dir.path(), &target, &with_db_name(&server, &name), false);
    assert!(
        out.contains("original Wafer") && out.contains("apps: 1 new") && out.contains("sessions: 1 new"),
        "{out}"
    );
    let store = target.store().await;
    let wx = FakeWeChat::start().await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let svc = build(store, &wx.base_url, Arc::new(ManualClock::new(now)), open_settings());
    let body = json!({"interface": {"interfaceName": "qcloud.cam.auth", "para": {"id": "orig-uuid", "skey": "orig-skey"}}}).to_string();
    let env = svc.handle(body.as_bytes(), &Default::default()).await;
    assert_eq!(env.return_code, 0, "{}", env.return_message);
    assert_eq!(env.return_data.to_value()["appid"], "wx_original");
}

mod original {
    use super::*;
    both_backends!(the_original_wafer_schema_is_detected_and_its_single_app_owns_the_sessions);
}
