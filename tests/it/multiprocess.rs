//! Several real server processes sharing one database: exactly one upstream fetch per cold credential however many
//! processes and callers ask, at most one refresh for a burst of `force`, and a lease holder killed mid-refresh
//! does not block the others beyond the lease.

use crate::both_backends;
use crate::cli::{run_ok, spawn_server, terminate, wafer};
use crate::fake_wechat::FakeWeChat;
use crate::helpers::{post_envelope, Backend, TestDb};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::process::Child;
use std::time::{Duration, Instant};

struct Cluster {
    servers: Vec<(Child, String)>,
    wx: FakeWeChat,
    _db: TestDb,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (child, _) in &mut self.servers {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

const APP: &str = "wx_multi";
const CORP: &str = "ww_multi";
const AGENT: &str = "1000005";

async fn cluster(b: Backend, n: usize) -> Cluster {
    cluster_with(b, n, &[]).await
}

/// A cluster whose servers run with `overrides` on top of the usual settings (an upstream deadline, a lease).
async fn cluster_with(b: Backend, n: usize, overrides: &[(&str, &str)]) -> Cluster {
    let db = TestDb::new(b).await;
    let dir = tempfile::tempdir().unwrap();
    let wx = FakeWeChat::start().await;
    wx.register(APP, "multi-secret");
    wx.register("wx_multi_2", "multi-secret-2");
    wx.register(CORP, "agent-secret");
    let env = |c: &mut std::process::Command| {
        c.env("WAFER_DATABASE_URL", &db.url);
    };
    let mut c = wafer(dir.path());
    env(&mut c);
    run_ok(c.arg("migrate"));
    // wx_multi_bad is registered with a secret WeChat does not know; wx_multi_slow answers after the deadline.
    wx.register("wx_multi_slow", "slow-secret");
    for (appid, secret) in [
        (APP, "multi-secret"),
        ("wx_multi_2", "multi-secret-2"),
        ("wx_multi_bad", "not-the-secret"),
        ("wx_multi_slow", "slow-secret"),
    ] {
        let mut c = wafer(dir.path());
        env(&mut c);
        run_ok(c.args(["app", "add", "--appid", appid, "--secret", secret]));
    }
    let mut c = wafer(dir.path());
    env(&mut c);
    run_ok(c.args(["agent", "add", "--corpid", CORP, "--agentid", AGENT, "--secret", "agent-secret"]));

    let server_env = [
        ("WAFER_DATABASE_URL", db.url.as_str()),
        ("WAFER_WECHAT_BASE_URL", &wx.base_url),
        ("WAFER_WECOM_BASE_URL", &wx.base_url),
        // Lease: one upstream deadline + 1 s = 2 s; a caller's budget: + 2 s = 3 s.
        ("WAFER_UPSTREAM_TIMEOUT_MS", "1000"),
        // The force burst below names a token fetched a moment ago: no cooldown in this cluster.
        ("WAFER_FORCE_MIN_INTERVAL_SECS", "0"),
        ("WAFER_DB_POOL_MAX", "4"),
        ("WAFER_LOG", "warn"),
        ("WAFER_CALLER_AUTH", "off"),
    ];
    let mut env: Vec<(&str, &str)> =
        server_env.iter().filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k)).copied().collect();
    env.extend_from_slice(overrides);
    let mut servers = Vec::new();
    for _ in 0..n {
        servers.push(spawn_server(dir.path(), &env, false).await);
    }
    Cluster { servers, wx, _db: db, _dir: dir }
}

/// `n` concurrent calls spread round-robin over the servers; returns every reply.
async fn burst(c: &Cluster, n: usize, interface: &str, para: impl Fn(usize) -> Value) -> Vec<Value> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = c.servers[i % c.servers.len()].1.clone();
        let body = crate::helpers::envelope(interface, para(i));
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client.post(url).json(&body).send().await.unwrap().json::<Value>().await.unwrap()
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn values(replies: &[Value], field: &str) -> HashSet<String> {
    replies
        .iter()
        .map(|r| {
            assert_eq!(r["returnCode"], 0, "{r}");
            r["returnData"][field].as_str().unwrap().to_owned()
        })
        .collect()
}

async fn four_processes_and_two_hundred_callers_cause_one_fetch_per_credential(b: Backend) {
    let c = cluster(b, 4).await;
    // A slow upstream widens the race window: every process is asking while the first fetch is in flight.
    c.wx.delay("/cgi-bin/stable_token", Duration::from_millis(300), 1);
    let replies = burst(&c, 200, "qcloud.mimi.access_token", |_| json!({"appid": APP})).await;
    assert_eq!(values(&replies, "access_token").len(), 1, "every caller gets the same token");
    assert_eq!(c.wx.calls("/cgi-bin/stable_token"), 1, "exactly one upstream token fetch");
    let fresh = replies.iter().filter(|r| r["returnMessage"] == "NEW_TOKEN_SUCCESS").count();
    assert_eq!(fresh, 1, "exactly one caller saw the fetch");

    c.wx.delay("/cgi-bin/gettoken", Duration::from_millis(300), 1);
    let agent = json!({"corpid": CORP, "agentid": AGENT});
    let replies = burst(&c, 200, "qcloud.work.access_token", |_| agent.clone()).await;
    assert_eq!(values(&replies, "access_token").len(), 1);
    assert_eq!(c.wx.calls("/cgi-bin/gettoken"), 1, "one WeCom token fetch");

    c.wx.delay("/cgi-bin/get_jsapi_ticket", Duration::from_millis(300), 1);
    let replies = burst(&c, 200, "qcloud.work.ticket", |_| agent.clone()).await;
    assert_eq!(values(&replies, "ticket").len(), 1);
    assert_eq!(c.wx.calls("/cgi-bin/get_jsapi_ticket"), 1, "one corp ticket fetch");

    c.wx.delay("/cgi-bin/ticket/get", Duration::from_millis(300), 1);
    let replies = burst(&c, 200, "qcloud.work.agent.ticket", |_| agent.clone()).await;
    assert_eq!(values(&replies, "agent_ticket").len(), 1);
    assert_eq!(c.wx.calls("/cgi-bin/ticket/get"), 1, "one agent ticket fetch");
    assert_eq!(c.wx.calls("/cgi-bin/gettoken"), 1, "tickets reused the cached token");

    // A burst of 50 force calls naming the bad token: at most one refresh.
    let old = replies_token(&c).await;
    let replies = burst(
        &c,
        50,
        "qcloud.mimi.access_token",
        |_| json!({"appid": APP, "force": true, "access_token": old}),
    )
    .await;
    let tokens = values(&replies, "access_token");
    assert_eq!(c.wx.calls(&format!("/cgi-bin/stable_token|{APP}|force")), 1, "one forced refresh");
    assert_eq!(tokens.len(), 1);
    assert!(!tokens.contains(&old));
}

async fn replies_token(c: &Cluster) -> String {
    let r = burst(c, 1, "qcloud.mimi.access_token", |_| json!({"appid": APP})).await;
    r[0]["returnData"]["access_token"].as_str().unwrap().to_owned()
}

async fn a_lease_holder_killed_mid_refresh_is_taken_over_after_its_lease(b: Backend) {
    let mut c = cluster(b, 2).await;
    // The first fetch hangs far longer than the 2 s lease; the process making it is then killed.
    c.wx.delay("/cgi-bin/stable_token", Duration::from_secs(30), 1);
    let holder_url = c.servers[0].1.clone();
    let hung = tokio::spawn(async move {
        let body = json!({"interface": {"interfaceName": "qcloud.mimi.access_token", "para": {"appid": "wx_multi_2"}}});
        let _ = reqwest::Client::new().post(holder_url).json(&body).send().await;
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.wx.calls("/cgi-bin/stable_token") == 0 {
        assert!(Instant::now() < deadline, "the holder never called upstream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.servers[0].0.kill().unwrap();
    c.servers[0].0.wait().unwrap();
    hung.abort();

    let started = Instant::now();
    let other = c.servers[1].1.clone();
    let para = json!({"appid": "wx_multi_2"});
    let r = post_envelope(&reqwest::Client::new(), &other, "qcloud.mimi.access_token", para).await;
    assert_eq!(r["returnCode"], 0, "{r}");
    assert_eq!(r["returnMessage"], "NEW_TOKEN_SUCCESS");
    let waited = started.elapsed();
    // The lease (upstream deadline 1 s + 1 s) runs out, the waiter takes over at once, well inside its 3 s budget.
    assert!(waited < Duration::from_millis(3_500), "taken over within the bounded wait: {waited:?}");
    assert_eq!(c.wx.calls("/cgi-bin/stable_token"), 2, "the dead holder's call and the take-over");
    let status = terminate(&mut c.servers[1].0);
    assert!(status.success());
}

/// 4 processes × 32 callers for an app with a wrong secret, and for one whose WeChat answers after the deadline:
/// at most one upstream call per process, every caller the same answer within its budget, and the next burst is
/// answered from the shared row and memory with no upstream call at all.
async fn upstream_faults_are_shared_across_processes(b: Backend) {
    let c = cluster(b, 4).await;
    c.wx.delay("/cgi-bin/stable_token", Duration::from_secs(10), 0);
    for (appid, want, slow) in [("wx_multi_bad", 40013, false), ("wx_multi_slow", 1005, true)] {
        if slow {
            // Only this app's calls are slow: the fake delays by path, so the bad app is done first.
            c.wx.delay("/cgi-bin/stable_token", Duration::from_secs(10), 1_000);
        }
        let before = c.wx.calls("/cgi-bin/stable_token");
        let started = Instant::now();
        let replies = burst(&c, 128, "qcloud.mimi.access_token", |_| json!({"appid": appid})).await;
        let worst = started.elapsed();
        for r in &replies {
            assert_eq!(r["returnCode"], want, "{appid}: {r}");
        }
        let calls = c.wx.calls("/cgi-bin/stable_token") - before;
        assert!((1..=4).contains(&calls), "{appid}: {calls} upstream calls for 128 callers on 4 processes");
        assert!(worst < Duration::from_millis(4_500), "{appid}: worst wait {worst:?} (budget 3 s)");

        let started = Instant::now();
        let replies = burst(&c, 128, "qcloud.mimi.access_token", |_| json!({"appid": appid})).await;
        assert!(replies.iter().all(|r| r["returnCode"] == want), "{appid}: {}", replies[0]);
        assert_eq!(c.wx.calls("/cgi-bin/stable_token") - before, calls, "{appid}: remembered everywhere");
        assert!(started.elapsed() < Duration::from_secs(2), "{appid}: {:?}", started.elapsed());
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill").arg(sig).arg(child.id().to_string()).status().unwrap();
    assert!(ok.success(), "kill {sig}");
}

/// Wait until the fake has seen `n` calls of `path`.
async fn until_calls(c: &Cluster, path: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.wx.calls(path) < n {
        assert!(Instant::now() < deadline, "{path} was not called {n} times");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A token fetch sent to server `i` in the background (its reply, when it comes).
fn ask(c: &Cluster, i: usize, appid: &str) -> tokio::task::JoinHandle<Value> {
    let url = c.servers[i].1.clone();
    let appid = appid.to_owned();
    tokio::spawn(async move {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        post_envelope(&client, &url, "qcloud.mimi.access_token", json!({"appid": appid})).await
    })
}

/// Issue 26, item 1: WeChat answers token fetches in 2 s (deadline 5 s); the instance holding the refresh lease is
/// killed 0.7 s into its fetch. The holder renewed its short lease while it lived, so the lease lapses about 2 s
/// later: a caller on another instance takes over and gets a token — not `1005` after waiting out its budget.
async fn a_refresher_killed_mid_fetch_is_taken_over_within_the_lease(b: Backend) {
    let mut c = cluster_with(b, 2, &[("WAFER_UPSTREAM_TIMEOUT_MS", "5000")]).await;
    c.wx.delay("/cgi-bin/stable_token", Duration::from_secs(2), 2);
    let first = ask(&c, 0, APP);
    until_calls(&c, "/cgi-bin/stable_token", 1).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    c.servers[0].0.kill().unwrap();
    c.servers[0].0.wait().unwrap();
    first.abort();
    let started = Instant::now();
    let r = ask(&c, 1, APP).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(r["returnCode"], 0, "a token, not an error: {r}");
    assert_eq!(r["returnMessage"], "NEW_TOKEN_SUCCESS");
    // At most the rest of the dead holder's lease (< 2 s) and one 2 s fetch: well inside the 7 s budget.
    assert!(waited < Duration::from_millis(5_000), "taken over within the lease: {waited:?}");
    assert_eq!(c.wx.calls("/cgi-bin/stable_token"), 2, "the dead holder's fetch and the take-over");
}

/// Issue 26, item 1: a caller whose budget runs out while another instance holds the lease (here: frozen with a
/// long lease) is told that another instance is refreshing (`1028`), never that WeChat failed.
async fn a_caller_that_gives_up_waiting_is_told_another_instance_is_refreshing(b: Backend) {
    let overrides = [("WAFER_UPSTREAM_TIMEOUT_MS", "1000"), ("WAFER_TOKEN_LEASE_MS", "60000")];
    let c = cluster_with(b, 2, &overrides).await;
    c.wx.delay("/cgi-bin/stable_token", Duration::from_secs(30), 1);
    let first = ask(&c, 0, APP);
    until_calls(&c, "/cgi-bin/stable_token", 1).await;
    signal(&c.servers[0].0, "-STOP");
    let started = Instant::now();
    let r = ask(&c, 1, APP).await.unwrap();
    let waited = started.elapsed();
    signal(&c.servers[0].0, "-CONT");
    first.abort();
    assert_eq!(r["returnCode"], 1028, "{r}");
    assert!(r["returnMessage"].as_str().unwrap().starts_with("REFRESH_IN_PROGRESS: another instance"), "{r}");
    assert!(waited >= Duration::from_millis(2_900) && waited < Duration::from_millis(4_500), "{waited:?}");
    assert_eq!(c.wx.calls("/cgi-bin/stable_token"), 1, "nothing was fetched past the holder's lease");
}

/// Issue 26, item 2: an instance frozen mid-fetch (SIGSTOP) resumes after another instance took over and stored a
/// newer classic token. Its write is fenced out and it adopts the stored token — the one WeChat keeps valid —
/// instead of serving (or storing) the one it fetched, which dies five minutes after the newer one was issued.
async fn a_paused_refresher_adopts_the_newer_token(b: Backend) {
    let c = cluster_with(b, 2, &[("WAFER_UPSTREAM_TIMEOUT_MS", "10000")]).await;
    let mut add = wafer(c._dir.path());
    add.env("WAFER_DATABASE_URL", &c._db.url);
    run_ok(
        add.args(["app", "add", "--appid", "wx_multi_classic", "--secret", "classic-secret"])
            .args(["--token-mode", "classic"]),
    );
    c.wx.register("wx_multi_classic", "classic-secret");
    c.wx.delay("/cgi-bin/token", Duration::from_secs(2), 2);
    let frozen = ask(&c, 0, "wx_multi_classic");
    until_calls(&c, "/cgi-bin/token", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&c.servers[0].0, "-STOP");
    // The other instance waits out the frozen holder's lease (≤ 2 s), fetches, stores the newer token.
    let newer = ask(&c, 1, "wx_multi_classic").await.unwrap();
    assert_eq!(newer["returnCode"], 0, "{newer}");
    let newer = newer["returnData"]["access_token"].as_str().unwrap().to_owned();
    signal(&c.servers[0].0, "-CONT");
    let resumed = frozen.await.unwrap();
    assert_eq!(resumed["returnCode"], 0, "{resumed}");
    assert_eq!(
        resumed["returnData"]["access_token"],
        newer.as_str(),
        "the frozen caller gets the stored token"
    );
    assert_eq!(c.wx.calls("/cgi-bin/token"), 2, "the frozen fetch and the take-over");
    assert!(c.wx.token_valid(&newer));
    for i in 0..2 {
        let r = ask(&c, i, "wx_multi_classic").await.unwrap();
        assert_eq!(
            r["returnData"]["access_token"],
            newer.as_str(),
            "instance {i} serves the newer token: {r}"
        );
    }
}

both_backends!(
    upstream_faults_are_shared_across_processes,
    four_processes_and_two_hundred_callers_cause_one_fetch_per_credential,
    a_lease_holder_killed_mid_refresh_is_taken_over_after_its_lease,
    a_refresher_killed_mid_fetch_is_taken_over_within_the_lease,
    a_caller_that_gives_up_waiting_is_told_another_instance_is_refreshing,
    a_paused_refresher_adopts_the_newer_token,
);
