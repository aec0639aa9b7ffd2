//! Benchmark: the SCF path with the real binary as a `bootstrap` child under the runtime API emulator.
//! Reports cold start (exec → init/ready), warm invocation round trip (median, p99), RSS across 100,000 invocations,
//! and the deployment zip size (from `scripts/package.sh`). Run: `cargo bench --bench runtime`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};
use wafer_scf::scf::emulator::{Emulator, Outcome, Supervisor};

const BIN: &str = env!("CARGO_BIN_EXE_wafer-scf");

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite:{}", dir.path().join("bench.db").display());
        // Create and migrate the embedded store, register an app.
        let st = std::process::Command::new(BIN)
            .env("WAFER_DATABASE_URL", &db)
            .args(["app", "add", "--appid", "wxbench0000000001", "--secret", "s"])
            .output()
            .unwrap();
        assert!(st.status.success());

        let emu = Emulator::start(3000).await.unwrap();
        let mut sup = Supervisor::new(emu, BIN.into(), Duration::from_secs(10))
            .arg("runtime")
            .env("WAFER_DATABASE_URL", &db)
            .env("WAFER_WECHAT_BASE_URL", "http://127.0.0.1:9")
            .env("WAFER_LOG", "error")
            .quiet();

        // Cold start: exec → init/ready, 20 times.
        let mut colds = Vec::new();
        for _ in 0..20 {
            sup.kill();
            colds.push(sup.start().await.unwrap());
        }
        colds.sort();
        println!(
            "cold start (exec → init/ready, embedded store, 20 starts): median {:.2} ms, min {:.2} ms, max {:.2} ms (target < 20 ms)",
            percentile(&colds, 0.5),
            colds[0].as_secs_f64() * 1000.0,
            colds[colds.len() - 1].as_secs_f64() * 1000.0
        );

        let pid = sup.pid().unwrap();
        let cheap = br#"{"version":1,"componentName":"MA","interface":{"interfaceName":"qcloud.cam.nope","para":{}}}"#.to_vec();
        let auth = br#"{"version":1,"componentName":"MA","interface":{"interfaceName":"qcloud.cam.auth","para":{"id":"00000000000000000000000000000000","skey":"0000000000000000000000000000000000000000"}}}"#.to_vec();
        for _ in 0..200 {
            sup.invoke(cheap.clone()).await.unwrap();
        }
        let rss_start = rss_kib(pid);
        let mut rss = Vec::new();
        let mut warm = Vec::with_capacity(50_000);
        let mut warm_auth = Vec::with_capacity(50_000);
        for i in 1..=100_000 {
            let (event, bucket) = if i % 2 == 0 { (cheap.clone(), &mut warm) } else { (auth.clone(), &mut warm_auth) };
            let t = Instant::now();
            let o = sup.invoke(event).await.unwrap();
            bucket.push(t.elapsed());
            assert!(matches!(o, Outcome::Response(_)), "{o:?}");
            if i % 10_000 == 0 {
                rss.push((i, rss_kib(pid)));
            }
        }
        assert_eq!(sup.pid(), Some(pid), "no restart during the run");
        warm.sort();
        warm_auth.sort();
        println!(
            "warm round trip through the runtime API, dispatch only (50,000): median {:.3} ms, p99 {:.3} ms (target < 1 ms median)",
            percentile(&warm, 0.5),
            percentile(&warm, 0.99)
        );
        println!(
            "warm round trip, qcloud.cam.auth with an embedded-store read (50,000): median {:.3} ms, p99 {:.3} ms",
            percentile(&warm_auth, 0.5),
            percentile(&warm_auth, 0.99)
        );
        let series: Vec<String> = rss.iter().map(|(i, k)| format!("{i}: {k} KiB")).collect();
        println!("RSS after warm-up {rss_start} KiB; during 100,000 invocations: {}", series.join(", "));
        let zip = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/wafer-scf.zip");
        match std::fs::metadata(&zip) {
            Ok(m) => println!("zip size: {} bytes ({:.2} MiB) (target < 10 MB)", m.len(), m.len() as f64 / 1_048_576.0),
            Err(_) => println!("zip size: run scripts/package.sh first to build dist/wafer-scf.zip"),
        }
    });
}
