//! Benchmark: a fleet of instances on one MySQL, as SCF scales the function out. `FLEET_INSTANCES` processes
//! (`wafer-scf serve`, release build, a pool of 2 connections each) share one fresh database; ~100 concurrent callers
//! spread over them do logins, auths, access-token reads and token-free calls (`/wechat/{appid}/…`), and halfway
//! through the token is invalidated behind the servers' back (as another party's classic refresh would).
//!
//! Printed per fleet size: requests and failures, upstream token fetches (cold, and per rotation), the peak of MySQL
//! connections (`Max_used_connections`), storage statements per request by kind (`Questions` and `Com_*` deltas),
//! and p50 / p99 per interface. Needs `WAFER_TEST_MYSQL_URL`. Run:
//! `WAFER_TEST_MYSQL_URL=mysql://root@127.0.0.1:3306/test cargo bench --bench fleet`
//! (`FLEET_INSTANCES`, default `12,48`; `FLEET_REQUESTS`, default 18000; `FLEET_CALLERS`, default 100;
//! `FLEET_RUNS`, default 1: rounds per size, for the spread of the login tail).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../tests/it/fake_secure.rs"]
mod fake_secure;
#[allow(dead_code)]
#[path = "../tests/it/fake_wechat.rs"]
mod fake_wechat;
#[allow(dead_code)]
#[path = "support/load.rs"]
mod load;
#[path = "support/mysql.rs"]
mod support;

use mysql_async::prelude::Queryable;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const APPID: &str = "wxfleet000000001";
const SECRET: &str = "fleet-secret";
/// Users logged in before the burst, whose sessions the auths use.
const USERS: usize = 400;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
enum Op {
    Login,
    Auth,
    Token,
    Call,
}

impl Op {
    /// The mix: 10 % logins, 50 % auths, 20 % token reads, 20 % token-free calls.
    fn of(n: usize) -> Self {
        match n % 10 {
            0 => Self::Login,
            1..=5 => Self::Auth,
            6 | 7 => Self::Token,
            _ => Self::Call,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Login => "login (qcloud.cam.id_skey)",
            Self::Auth => "auth (qcloud.cam.auth)",
            Self::Token => "token (qcloud.mimi.access_token)",
            Self::Call => "token-free call (/wechat/…)",
        }
    }
}

struct Fleet {
    children: Vec<Child>,
    urls: Vec<String>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_fleet(n: usize, db: &str, wechat: &str) -> Fleet {
    let mut fleet = Fleet { children: Vec::new(), urls: Vec::new() };
    for _ in 0..n {
        let port = load::free_port();
        let child = Command::new(load::bench_bin())
            .arg("serve")
            .env_clear()
            .envs(std::env::var("SERVER_WORKERS").ok().map(|v| ("TOKIO_WORKER_THREADS", v)))
            .env("WAFER_DATABASE_URL", db)
            .env("WAFER_WECHAT_BASE_URL", wechat)
            .env("WAFER_LISTEN", format!("127.0.0.1:{port}"))
            .env("WAFER_LOG", "warn")
            .env("WAFER_DB_POOL_MAX", "2")
            .env("WAFER_CALLER_AUTH", "off")
            .env("WAFER_PURGE_INTERVAL_SECS", "0")
            .env("TOKIO_WORKER_THREADS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        fleet.children.push(child);
        fleet.urls.push(format!("http://127.0.0.1:{port}/"));
    }
    for url in &fleet.urls {
        let port: u16 = url.trim_end_matches('/').rsplit(':').next().unwrap().parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "an instance did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    fleet
}

/// The server's global counters this benchmark reads.
async fn status(conn: &mut mysql_async::Conn) -> HashMap<String, i64> {
    let rows: Vec<(String, String)> = conn
        .query(
            "SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', 'Com_select', 'Com_insert', 'Com_update', \
             'Com_delete', 'Com_stmt_execute', 'Com_stmt_prepare', 'Com_begin', 'Com_commit', \
             'Max_used_connections', 'Innodb_row_lock_waits', 'Innodb_row_lock_time', 'Innodb_data_fsyncs')",
        )
        .await
        .unwrap();
    rows.into_iter().map(|(k, v)| (k, v.parse().unwrap_or(0))).collect()
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

struct Outcome {
    requests: usize,
    failures: usize,
    fetches_cold: usize,
    fetches_rotation: usize,
    latencies: HashMap<Op, Vec<Duration>>,
    before: HashMap<String, i64>,
    after: HashMap<String, i64>,
    elapsed: Duration,
}

async fn run(instances: usize, server: &str) -> Outcome {
    let requests = env_or("FLEET_REQUESTS", 18_000);
    let callers = env_or("FLEET_CALLERS", 100);
    let wx = fake_wechat::FakeWeChat::start().await;
    wx.register(APPID, SECRET);
    let db = support::fresh_database(server).await;
    let store = wafer_scf::store::open(
        &wafer_scf::store::DatabaseUrl::parse(&db).unwrap(),
        &wafer_scf::store::StoreOptions::default(),
        true,
    )
    .await
    .unwrap();
    let app = wafer_scf::store::AppRecord {
        appid: APPID.parse().unwrap(),
        secret: SECRET.into(),
        login_duration_secs: 30 * 86_400,
        session_duration_secs: 2_592_000,
        token_mode: wafer_scf::store::TokenMode::Stable,
        created_at: 0,
        updated_at: 0,
    };
    store.registry.put_app(&app).await.unwrap();
    let fleet = spawn_fleet(instances, &db, &wx.base_url);
    let client = reqwest::Client::builder().pool_max_idle_per_host(callers).build().unwrap();
    let urls = Arc::new(fleet.urls.clone());
    let post = {
        let (client, urls) = (client.clone(), urls.clone());
        move |i: usize, body: Value| {
            let url = urls[i % urls.len()].clone();
            let client = client.clone();
            async move { client.post(url).json(&body).send().await.ok()?.json::<Value>().await.ok() }
        }
    };
    let envelope = |name: &str, para: Value| json!({"interface": {"interfaceName": name, "para": para}});
    // Sessions for the auths, logged in before the burst.
    let mut sessions = Vec::new();
    for u in 0..USERS {
        let code = format!("ok:fleet_user_{u}:warm");
        let r = post(u, envelope("qcloud.cam.id_skey", json!({"appid": APPID, "code": code}))).await.unwrap();
        assert_eq!(r["returnCode"], 0, "{r}");
        sessions.push((r["returnData"]["id"].clone(), r["returnData"]["skey"].clone()));
    }
    // The cold token fetch, once.
    let r = post(0, envelope("qcloud.mimi.access_token", json!({"appid": APPID}))).await.unwrap();
    assert_eq!(r["returnCode"], 0, "{r}");
    let fetches_cold = wx.calls("/cgi-bin/stable_token");

    let pool = mysql_async::Pool::new(server);
    let mut stats = pool.get_conn().await.unwrap();
    stats.query_drop("FLUSH STATUS").await.unwrap();
    let before = status(&mut stats).await;
    let sessions = Arc::new(sessions);
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let rotated = Arc::new(AtomicBool::new(false));
    let latencies: Arc<Mutex<HashMap<Op, Vec<Duration>>>> = Arc::default();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let (sessions, next, failures, rotated, latencies) =
            (sessions.clone(), next.clone(), failures.clone(), rotated.clone(), latencies.clone());
        let (wx, post, client) = (wx.clone(), post.clone(), client.clone());
        let urls = urls.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine: Vec<(Op, Duration)> = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= requests {
                    break;
                }
                if n == requests / 2 && !rotated.swap(true, Ordering::SeqCst) {
                    // Halfway: the current token dies upstream, unknown to every instance.
                    let current =
                        post(0, envelope("qcloud.mimi.access_token", json!({"appid": APPID}))).await;
                    if let Some(t) = current.as_ref().and_then(|r| r["returnData"]["access_token"].as_str()) {
                        wx.invalidate(t);
                    }
                }
                let op = Op::of(n);
                let t0 = Instant::now();
                let ok = match op {
                    Op::Login => {
                        let code = format!("ok:fleet_new_{caller}_{n}:{n}");
                        let r =
                            post(n, envelope("qcloud.cam.id_skey", json!({"appid": APPID, "code": code})))
                                .await;
                        r.is_some_and(|r| r["returnCode"] == 0)
                    }
                    Op::Auth => {
                        let (id, skey) = &sessions[n % sessions.len()];
                        let r = post(n, envelope("qcloud.cam.auth", json!({"id": id, "skey": skey}))).await;
                        r.is_some_and(|r| r["returnCode"] == 0)
                    }
                    Op::Token => {
                        let r = post(n, envelope("qcloud.mimi.access_token", json!({"appid": APPID}))).await;
                        r.is_some_and(|r| r["returnCode"] == 0)
                    }
                    Op::Call => {
                        let url =
                            format!("{}wechat/{APPID}/cgi-bin/message/subscribe/send", urls[n % urls.len()]);
                        let r = client.post(url).json(&json!({"touser": format!("o{n}")})).send().await.ok();
                        match r {
                            Some(r) if r.status().is_success() => {
                                r.json::<Value>().await.is_ok_and(|v| v["errcode"] == 0)
                            }
                            _ => false,
                        }
                    }
                };
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                mine.push((op, t0.elapsed()));
            }
            let mut all = latencies.lock().unwrap();
            for (op, d) in mine {
                all.entry(op).or_default().push(d);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let after = status(&mut stats).await;
    drop(stats);
    pool.disconnect().await.unwrap();
    let fetches_rotation = wx.calls("/cgi-bin/stable_token") - fetches_cold;
    drop(fleet);
    let latencies = Arc::try_unwrap(latencies).unwrap().into_inner().unwrap();
    Outcome {
        requests,
        failures: failures.load(Ordering::Relaxed),
        fetches_cold,
        fetches_rotation,
        latencies,
        before,
        after,
        elapsed,
    }
}

fn report(instances: usize, o: &Outcome) {
    let delta =
        |k: &str| (o.after.get(k).copied().unwrap_or(0) - o.before.get(k).copied().unwrap_or(0)) as f64;
    let per = |k: &str| delta(k) / o.requests as f64;
    println!(
        "fleet of {instances} instances × pool 2: {} requests in {:.1} s ({:.0}/s), {} failures",
        o.requests,
        o.elapsed.as_secs_f64(),
        o.requests as f64 / o.elapsed.as_secs_f64(),
        o.failures
    );
    println!(
        "  upstream token fetches: {} cold, {} for the one rotation; peak MySQL connections (Max_used_connections): {}",
        o.fetches_cold,
        o.fetches_rotation,
        o.after.get("Max_used_connections").copied().unwrap_or(0)
    );
    println!(
        "  statements per request: {:.2} (select {:.2}, insert {:.2}, update {:.2}, delete {:.2}, prepared executions {:.2}, \
         prepares {:.3}, commits {:.2}); row lock waits {} ({} ms); fsyncs {:.2}/request",
        per("Questions"),
        per("Com_select"),
        per("Com_insert"),
        per("Com_update"),
        per("Com_delete"),
        per("Com_stmt_execute"),
        per("Com_stmt_prepare"),
        per("Com_commit"),
        delta("Innodb_row_lock_waits"),
        delta("Innodb_row_lock_time"),
        per("Innodb_data_fsyncs"),
    );
    let mut ops: Vec<_> = o.latencies.iter().collect();
    ops.sort_by_key(|(op, _)| **op);
    for (op, lat) in ops {
        let mut lat = lat.clone();
        lat.sort_unstable();
        println!(
            "  {:<34} {:>6} requests  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
            op.name(),
            lat.len(),
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            percentile(&lat, 1.0)
        );
    }
}

fn main() {
    let Ok(server) = std::env::var("WAFER_TEST_MYSQL_URL") else {
        println!("fleet: set WAFER_TEST_MYSQL_URL (a MySQL or MariaDB server) to run this benchmark");
        return;
    };
    let sizes: Vec<usize> = std::env::var("FLEET_INSTANCES")
        .unwrap_or_else(|_| "12,48".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runs = env_or("FLEET_RUNS", 1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for n in sizes {
        for _ in 0..runs {
            let o = rt.block_on(run(n, &server));
            report(n, &o);
        }
    }
}
