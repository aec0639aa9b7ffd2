//! Issue 26, item 5: SCF kills an instance whose invocation runs past the function's limit. Through the runtime
//! emulator and the real bootstrap: a refresh killed mid-fetch leaves a lease that lapses within its short term
//! (the next instance answers with a token inside the limit), and a login killed mid-way — waiting for WeChat, or
//! (MySQL) inside its transaction, after it already deleted an expired session — leaves nothing half-written.

use crate::both_backends;
use crate::cli::{run_ok, wafer};
use crate::fake_wechat::FakeWeChat;
use crate::helpers::{envelope, id, Backend, TestDb};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use wafer_scf::scf::emulator::{Emulator, Outcome, Supervisor};

const APP: &str = "wx_killed";
const SECRET: &str = "killed-secret";
/// The function's time limit in these tests.
const LIMIT_MS: u64 = 3_000;

struct Instance {
    sup: Supervisor,
    wx: FakeWeChat,
    db: TestDb,
    _pkg: tempfile::TempDir,
    _work: tempfile::TempDir,
}

async fn instance(b: Backend) -> Instance {
    let db = TestDb::new(b).await;
    let work = tempfile::tempdir().unwrap();
    let wx = FakeWeChat::start().await;
    wx.register(APP, SECRET);
    run_ok(wafer(work.path()).env("WAFER_DATABASE_URL", &db.url).arg("migrate"));
    run_ok(
        wafer(work.path())
            .env("WAFER_DATABASE_URL", &db.url)
            .args(["app", "add", "--appid", APP, "--secret", SECRET]),
    );
    let pkg = crate::scf::package_dir();
    let emu = Emulator::start(LIMIT_MS).await.unwrap();
    let mut sup = Supervisor::new(emu, pkg.path().join("bootstrap"), Duration::from_secs(10))
        .env("WAFER_DATABASE_URL", &db.url)
        .env("WAFER_WECHAT_BASE_URL", &wx.base_url)
        .env("WAFER_WECOM_BASE_URL", &wx.base_url)
        .env("WAFER_UPSTREAM_TIMEOUT_MS", "20000")
        .env("WAFER_LOG", "warn")
        .env("WAFER_CALLER_AUTH", "off")
        .quiet();
    sup.start().await.unwrap();
    Instance { sup, wx, db, _pkg: pkg, _work: work }
}

/// Invoke `event` and, once `ready` says the instance is mid-way, kill it (SIGKILL) as SCF does at the limit.
async fn invoke_and_kill(
    i: &mut Instance,
    event: Value,
    ready: impl Fn(&FakeWeChat) -> bool + Send + 'static,
) -> (Outcome, Instant) {
    let pid = i.sup.pid().unwrap();
    let wx = i.wx.clone();
    let killer = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready(&wx) {
            assert!(Instant::now() < deadline, "the instance never got mid-way");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
        Instant::now()
    });
    let outcome = i.sup.invoke(event.to_string().into_bytes()).await.unwrap();
    (outcome, killer.await.unwrap())
}

fn envelope_of(o: &Outcome) -> Value {
    match o {
        Outcome::Response(b) => serde_json::from_slice(b).unwrap(),
        other => panic!("expected a response, got {other:?}"),
    }
}

async fn a_refresh_killed_at_the_limit_leaves_no_lease_past_its_term(b: Backend) {
    let mut i = instance(b).await;
    i.wx.delay("/cgi-bin/stable_token", Duration::from_secs(30), 1);
    let token = envelope("qcloud.mimi.access_token", json!({"appid": APP}));
    let (outcome, killed_at) =
        invoke_and_kill(&mut i, token.clone(), |wx| wx.calls("/cgi-bin/stable_token") == 1).await;
    assert_eq!(outcome, Outcome::Timeout, "killed before it answered");
    let killed_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
        as i64
        - killed_at.elapsed().as_millis() as i64;
    let row =
        i.db.store().await.credentials.get_credential(&format!("mp:token:{APP}")).await.unwrap().unwrap();
    assert!(row.value.is_none(), "nothing was stored");
    assert!(row.lease_owner.is_some(), "the dead holder's lease is on the row");
    assert!(
        row.lease_until_ms <= killed_ms + 2_100,
        "the lease ends within its 2 s term of the kill: {} vs killed at {killed_ms}",
        row.lease_until_ms
    );
    // The restarted instance waits out what is left of the lease and fetches, inside the function's limit.
    let started = Instant::now();
    let r = envelope_of(&i.sup.invoke(token.to_string().into_bytes()).await.unwrap());
    assert_eq!(r["returnCode"], 0, "{r}");
    assert_eq!(r["returnMessage"], "NEW_TOKEN_SUCCESS");
    assert!(started.elapsed() < Duration::from_millis(LIMIT_MS), "{:?}", started.elapsed());
    assert_eq!(i.sup.restarts, 1);
}

async fn a_login_killed_while_waiting_for_wechat_stores_nothing(b: Backend) {
    let mut i = instance(b).await;
    i.wx.delay("/sns/jscode2session", Duration::from_secs(30), 1);
    let login = envelope("qcloud.cam.id_skey", json!({"appid": APP, "code": i.wx.code_for("o_killed")}));
    let (outcome, _) = invoke_and_kill(&mut i, login, |wx| wx.calls("/sns/jscode2session") == 1).await;
    assert_eq!(outcome, Outcome::Timeout);
    assert_eq!(i.db.store().await.sessions.count_sessions(&id(APP)).await.unwrap(), 0, "no session");
    // The next login of the same user works at once.
    let again = envelope("qcloud.cam.id_skey", json!({"appid": APP, "code": i.wx.code_for("o_killed")}));
    let r = envelope_of(&i.sup.invoke(again.to_string().into_bytes()).await.unwrap());
    assert_eq!(r["returnCode"], 0, "{r}");
}

both_backends!(
    a_refresh_killed_at_the_limit_leaves_no_lease_past_its_term,
    a_login_killed_while_waiting_for_wechat_stores_nothing,
);

/// MySQL: the login is killed inside its transaction — after deleting the user's expired session, while waiting
/// to rotate the key of the live one (a row another connection holds). The server rolls the transaction back: the
/// expired session is still there, the live one keeps its key, no new session exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(wafer_mysql_tests), ignore = "MySQL suite off: set WAFER_TEST_MYSQL_URL")]
async fn a_login_killed_inside_its_transaction_is_rolled_back_whole() {
    use mysql_async::prelude::Queryable;
    if crate::helpers::mysql_server_url().is_none() {
        return;
    }
    let mut i = instance(Backend::Mysql).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let openid = "o_tx";
    for (sid, created) in [("s_expired", now - 40 * 86_400), ("s_live", now - 60)] {
        i.db.raw_exec(&format!(
            "INSERT INTO wafer_sessions (id, skey_hash, appid, openid, unionid, session_key, user_info, created_at, \
             last_visit_at) VALUES ('{sid}', 'h', '{APP}', '{openid}', '', 'OLDKEY', NULL, {created}, {created})"
        ))
        .await;
    }
    // Another connection holds the live session's row.
    let pool = mysql_async::Pool::new(i.db.url.as_str());
    let mut holder = pool.get_conn().await.unwrap();
    holder.query_drop("START TRANSACTION").await.unwrap();
    holder.query_drop("SELECT id FROM wafer_sessions WHERE id = 's_live' FOR UPDATE").await.unwrap();
    let login = envelope("qcloud.cam.id_skey", json!({"appid": APP, "code": i.wx.code_for(openid)}));
    let pid = i.sup.pid().unwrap();
    let wx = i.wx.clone();
    let url = i.db.url.clone();
    let killer = tokio::spawn(async move {
        // Mid-transaction: WeChat answered, the login deleted the expired session, and its update of the live
        // one waits on the held row (the process list shows the statement).
        let pool = mysql_async::Pool::new(url.as_str());
        let mut c = pool.get_conn().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "the login never waited on the held row");
            let waiting: Option<i64> = c
                .query_first(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST
                     WHERE info LIKE 'UPDATE wafer_sessions SET session_key%'",
                )
                .await
                .unwrap();
            if wx.calls("/sns/jscode2session") == 1 && waiting.unwrap_or(0) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
        drop(c);
        pool.disconnect().await.unwrap();
    });
    let outcome = i.sup.invoke(login.to_string().into_bytes()).await.unwrap();
    killer.await.unwrap();
    assert_eq!(outcome, Outcome::Timeout);
    holder.query_drop("ROLLBACK").await.unwrap();
    let rows: Vec<(String, String)> = holder
        .query(format!("SELECT id, session_key FROM wafer_sessions WHERE openid = '{openid}' ORDER BY id"))
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![("s_expired".to_owned(), "OLDKEY".to_owned()), ("s_live".to_owned(), "OLDKEY".to_owned())],
        "the killed login's delete and insert were rolled back with it"
    );
    drop(holder);
    pool.disconnect().await.unwrap();
}
