//! Benchmark: WeChat misbehaving under steady load, and login bursts. For each upstream fault (wrong secret, busy,
//! slow beyond the deadline, garbage, HTTP 502, connection reset), 32 callers ask for the token of an app with no
//! cached token over HTTP for a few seconds; printed: upstream calls and calls/s, worst and p99 wait, return codes.
//! Then bursts of concurrent logins with neighbouring openids on the smallest and largest appid of the table:
//! success rate and logins/s. On the embedded store, and on MySQL when `WAFER_TEST_MYSQL_URL` is set.
//! Run: `cargo bench --bench faults` (`BENCH_SECS` sets the seconds per fault, default 5).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../tests/it/fake_secure.rs"]
mod fake_secure;
#[allow(dead_code)]
#[path = "../tests/it/fake_wechat.rs"]
mod fake_wechat;
#[path = "support/mysql.rs"]
mod support;

use fake_wechat::{FakeWeChat, Fault};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wafer_scf::handlers::Settings;
use wafer_scf::startup::ServiceBuilder;
use wafer_scf::store::{self, AppRecord, DatabaseUrl, Storage, StoreOptions, TokenMode};
use wafer_scf::wechat::UpstreamTimeouts;

const STABLE: &str = "/cgi-bin/stable_token";
const UPSTREAM_MS: u64 = 1_000;

fn app(appid: &str, secret: &str) -> AppRecord {
    AppRecord {
        appid: appid.parse().unwrap(),
        secret: secret.into(),
        login_duration_secs: 86_400,
        session_duration_secs: 86_400,
        token_mode: TokenMode::Stable,
        created_at: 0,
        updated_at: 0,
    }
}

/// A fresh store on the embedded backend or a fresh MySQL database.
async fn fresh_store(mysql: Option<&str>, dir: &std::path::Path, n: usize) -> Storage {
    let url = match mysql {
        None => DatabaseUrl::Sqlite(dir.join(format!("faults{n}.db")).display().to_string()),
        Some(server) => DatabaseUrl::parse(&support::fresh_database(server).await).unwrap(),
    };
    store::open(&url, &StoreOptions::default(), true).await.unwrap()
}

async fn server(store: Storage, upstream: &str, policy_from_deadline: bool) -> String {
    let policy = if policy_from_deadline {
        wafer_scf::tokens::Policy {
            lease_ms: UPSTREAM_MS as i64 + 1_000,
            budget_ms: UPSTREAM_MS as i64 + 2_000,
            ..Default::default()
        }
    } else {
        Default::default()
    };
    let svc = ServiceBuilder::new(store, upstream)
        .upstream_timeouts(UpstreamTimeouts {
            connect: Duration::from_millis(UPSTREAM_MS),
            total: Duration::from_millis(UPSTREAM_MS),
        })
        .settings(Settings { caller_auth: wafer_scf::auth::CallerAuthMode::Off, ..Settings::default() })
        .policy(policy)
        .build()
        .unwrap();
    let svc = Arc::new(svc);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    tokio::spawn(wafer_scf::serve::serve(l, svc, std::future::pending()));
    url
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// `callers` tasks asking for `body` in a loop for `secs`; latencies and return codes.
async fn load(url: &str, body: Value, callers: usize, secs: u64) -> (Vec<Duration>, BTreeMap<i64, usize>) {
    let client = reqwest::Client::builder().pool_max_idle_per_host(callers).build().unwrap();
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (client, url, body) = (client.clone(), url.to_owned(), body.to_string());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while Instant::now() < until {
                let started = Instant::now();
                let r = client.post(&url).body(body.clone()).send().await;
                let code = match r {
                    Ok(r) => {
                        r.json::<Value>().await.ok().and_then(|v| v["returnCode"].as_i64()).unwrap_or(-999)
                    }
                    Err(_) => -998,
                };
                out.push((started.elapsed(), code));
            }
            out
        }));
    }
    let mut waits = Vec::new();
    let mut codes = BTreeMap::new();
    for t in tasks {
        for (w, c) in t.await.unwrap() {
            waits.push(w);
            *codes.entry(c).or_default() += 1;
        }
    }
    waits.sort();
    (waits, codes)
}

async fn faults(mysql: Option<&str>, dir: &std::path::Path, secs: u64) {
    type Inject<'a> = &'a dyn Fn(&FakeWeChat);
    let faults: [(&str, Inject); 5] = [
        ("wrong secret", &|wx| wx.register("wxfault0000000001", "what-wechat-has")),
        ("busy (-1)", &|wx| wx.fail_next(STABLE, -1, usize::MAX)),
        ("slow beyond the deadline", &|wx| wx.delay(STABLE, Duration::from_secs(3), usize::MAX)),
        ("garbage reply", &|wx| wx.fault_next(STABLE, Fault::Garbage, usize::MAX)),
        ("HTTP 502", &|wx| wx.fault_next(STABLE, Fault::Status(502), usize::MAX)),
    ];
    let mut n = 0;
    for (name, inject) in faults {
        n += 1;
        let wx = FakeWeChat::start().await;
        wx.register("wxfault0000000001", "registered");
        inject(&wx);
        let store = fresh_store(mysql, dir, n).await;
        store.registry.put_app(&app("wxfault0000000001", "registered")).await.unwrap();
        let url = server(store, &wx.base_url, true).await;
        let body = json!({"interface": {"interfaceName": "qcloud.mimi.access_token", "para": {"appid": "wxfault0000000001"}}});
        let (waits, codes) = load(&url, body, 32, secs).await;
        report(name, wx.calls(STABLE), secs, &waits, &codes);
    }
    // Connection reset: a port that accepts and hangs up, counting the attempts.
    let (base, attempts) = fake_wechat::hang_up_listener().await;
    let store = fresh_store(mysql, dir, 99).await;
    store.registry.put_app(&app("wxfault0000000001", "registered")).await.unwrap();
    let url = server(store, &base, true).await;
    let body = json!({"interface": {"interfaceName": "qcloud.mimi.access_token", "para": {"appid": "wxfault0000000001"}}});
    let (waits, codes) = load(&url, body, 32, secs).await;
    report("connection reset", attempts.load(Ordering::SeqCst), secs, &waits, &codes);
}

fn report(name: &str, calls: usize, secs: u64, waits: &[Duration], codes: &BTreeMap<i64, usize>) {
    let codes: Vec<String> = codes.iter().map(|(c, n)| format!("{c}×{n}")).collect();
    println!(
        "  {name:<26} {calls:>4} upstream calls ({:>5.2}/s) | {:>7} requests | worst {:>7.1} ms, p99 {:>7.1} ms | codes {}",
        calls as f64 / secs as f64,
        waits.len(),
        percentile(waits, 1.0).as_secs_f64() * 1000.0,
        percentile(waits, 0.99).as_secs_f64() * 1000.0,
        codes.join(" ")
    );
}

async fn logins(mysql: Option<&str>, dir: &std::path::Path) {
    let wx = FakeWeChat::start().await;
    let store = fresh_store(mysql, dir, 1000).await;
    let apps = ["wx0000000000000000", "wx5555555555555555", "wxzzzzzzzzzzzzzzzz"];
    for a in apps {
        wx.register(a, "s");
        store.registry.put_app(&app(a, "s")).await.unwrap();
    }
    let url = server(store, &wx.base_url, false).await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    for (label, width, rounds) in [("32-way", 32usize, 6usize), ("64-way", 64, 4)] {
        let (mut ok, mut total) = (0usize, 0usize);
        let mut waits = Vec::new();
        let started = Instant::now();
        for round in 0..rounds {
            // Alternate the smallest and largest appid; the same neighbouring openids log in again each round.
            let appid = if round % 2 == 0 { apps[0] } else { apps[2] };
            let mut tasks = Vec::new();
            for i in 0..width {
                let body = json!({"interface": {"interfaceName": "qcloud.cam.id_skey",
                    "para": {"appid": appid, "code": wx.code_for(&format!("oN{i:04}"))}}});
                let (client, url) = (client.clone(), url.clone());
                tasks.push(tokio::spawn(async move {
                    let t0 = Instant::now();
                    let r: Value = client.post(url).json(&body).send().await.unwrap().json().await.unwrap();
                    (t0.elapsed(), r["returnCode"].as_i64())
                }));
            }
            for t in tasks {
                let (w, c) = t.await.unwrap();
                total += 1;
                ok += usize::from(c == Some(0));
                waits.push(w);
            }
        }
        let secs = started.elapsed().as_secs_f64();
        waits.sort();
        println!(
            "  login bursts {label}: {ok}/{total} succeeded ({:.1} %), {:.0} logins/s, p50 {:.1} ms, p99 {:.1} ms",
            100.0 * ok as f64 / total as f64,
            total as f64 / secs,
            percentile(&waits, 0.5).as_secs_f64() * 1000.0,
            percentile(&waits, 0.99).as_secs_f64() * 1000.0,
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let secs: u64 = std::env::var("BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
        let dir = tempfile::tempdir().unwrap();
        let mysql = std::env::var("WAFER_TEST_MYSQL_URL").ok().filter(|u| !u.is_empty());
        println!(
            "upstream faults: 32 callers for {secs} s each, upstream deadline {UPSTREAM_MS} ms, caller budget {} ms",
            UPSTREAM_MS + 2_000
        );
        let mut backends = vec![("sqlite", None)];
        if let Some(m) = mysql.as_deref() {
            backends.push(("mysql", Some(m)));
        }
        for (name, url) in &backends {
            println!("{name}:");
            faults(*url, dir.path(), secs).await;
            logins(*url, dir.path()).await;
        }
    });
}
