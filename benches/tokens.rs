//! Benchmark: a warm cached access token answered end to end over HTTP keep-alive, side by side in the same run
//! with a bare axum server that answers a canned envelope (the ceiling for this machine). Load comes from `wrk`
//! (Debian package `wrk`; `scripts/bench.sh` installs it). Run: `cargo bench --bench tokens`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use wafer_scf::startup::ServiceBuilder;
use wafer_scf::store::{self, AppRecord, DatabaseUrl, StoreOptions, TokenMode};

const BODY: &str = r#"{"version":1,"componentName":"MA","interface":{"interfaceName":"qcloud.mimi.access_token","para":{"appid":"wxbench0000000001"}}}"#;

struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn to_ms(s: &str) -> f64 {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let v: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        _ => f64::NAN,
    }
}

fn wrk(url: &str, script: &std::path::Path, secs: u64, conns: u32) -> Run {
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{conns}"), &format!("-d{secs}s"), "--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .expect("wrk is not installed: run scripts/bench.sh (it installs the Debian package wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut run = Run { rps: 0.0, p50_ms: f64::NAN, p99_ms: f64::NAN };
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            run.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("50%") {
            run.p50_ms = to_ms(v);
        } else if let Some(v) = l.strip_prefix("99%") {
            run.p99_ms = to_ms(v);
        } else if l.starts_with("Non-2xx") || l.starts_with("Socket errors") {
            eprintln!("wrk: {l}");
        }
    }
    run
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        // A minimal upstream for the one warm-up fetch.
        let upstream = Router::new().fallback(|| async {
            axum::Json(serde_json::json!({"access_token": format!("bench-token-{}", "x".repeat(120)), "expires_in": 7200}))
        });
        let ul = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_url = format!("http://{}", ul.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(ul, upstream).await });

        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::Sqlite(dir.path().join("bench.db").display().to_string());
        let store = store::open(&url, &StoreOptions::default(), true).await.unwrap();
        store
            .put_app(&AppRecord {
                appid: "wxbench0000000001".into(),
                secret: "bench-secret".into(),
                login_duration_secs: 86_400,
                session_duration_secs: 86_400,
                token_mode: TokenMode::Stable,
                created_at: 0,
                updated_at: 0,
            })
            .await
            .unwrap();
        // A caller key scoped to the app: the default `credentials` mode checks it on every request.
        let key = "wk_bench000000000000000000000000000000000000000000";
        store
            .add_caller_key(&wafer_scf::store::CallerKeyRecord {
                name: "bench".into(),
                key_hash: wafer_scf::crypto::sha256_hex(key.as_bytes()),
                scope_apps: vec!["wxbench0000000001".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        let svc = Arc::new(ServiceBuilder::new(store, &upstream_url).build().unwrap());
        let wl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let wafer_url = format!("http://{}/", wl.local_addr().unwrap());
        tokio::spawn(wafer_scf::serve::serve(wl, svc.clone(), std::future::pending()));

        // Warm the token cache with one real request, and build the canned reply from it.
        let meta = wafer_scf::request::RequestMeta { caller_key: Some(key.into()), ..Default::default() };
        let warm = svc.handle(BODY.as_bytes(), &meta).await;
        assert_eq!(warm.return_code, 0, "{}", warm.return_message);
        let canned = warm.to_bytes();
        let bare = Router::new().fallback(move || {
            let body = canned.clone();
            async move { ([("content-type", "application/json; charset=utf-8")], body) }
        });
        let bl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bare_url = format!("http://{}/", bl.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(bl, bare).await });

        let script = dir.path().join("post.lua");
        std::fs::write(
            &script,
            format!(
                "wrk.method = \"POST\"\nwrk.body = '{BODY}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"X-Wafer-Key\"] = \"{key}\"\n"
            ),
        )
        .unwrap();

        let secs: u64 = std::env::var("BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
        let conns: u32 = std::env::var("BENCH_CONNS").ok().and_then(|s| s.parse().ok()).unwrap_or(32);
        tokio::time::sleep(Duration::from_millis(200)).await;
        println!("warm cached token over HTTP keep-alive: wrk -t1 -c{conns} -d{secs}s, {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
        let mut bare_runs = Vec::new();
        let mut wafer_runs = Vec::new();
        for round in 1..=2 {
            let (bu, wu, sc) = (bare_url.clone(), wafer_url.clone(), script.clone());
            let b = tokio::task::spawn_blocking(move || wrk(&bu, &sc, secs, conns)).await.unwrap();
            let sc = script.clone();
            let w = tokio::task::spawn_blocking(move || wrk(&wu, &sc, secs, conns)).await.unwrap();
            println!(
                "round {round}: bare axum {:>9.0} req/s (p50 {:.3} ms, p99 {:.3} ms) | wafer-scf {:>9.0} req/s (p50 {:.3} ms, p99 {:.3} ms)",
                b.rps, b.p50_ms, b.p99_ms, w.rps, w.p50_ms, w.p99_ms
            );
            bare_runs.push(b);
            wafer_runs.push(w);
        }
        let avg = |v: &[Run], f: fn(&Run) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
        let (b, w) = (avg(&bare_runs, |r| r.rps), avg(&wafer_runs, |r| r.rps));
        println!(
            "mean: bare {b:.0} req/s, wafer-scf {w:.0} req/s (p50 {:.3} ms, p99 {:.3} ms), ratio {:.1}% (target >= 50%)",
            avg(&wafer_runs, |r| r.p50_ms),
            avg(&wafer_runs, |r| r.p99_ms),
            100.0 * w / b
        );
    });
}
