//! Benchmarks' load and servers: `wrk` runs parsed ([`wrk`]), the release binary started as `wafer-scf serve`
//! ([`spawn_server`]), a store made ready for it — an app and a caller key — ([`prepare`]), a process's CPU time.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use wafer_scf::store::{self, AppRecord, CallerKeyRecord, DatabaseUrl, StoreOptions, TokenMode};

pub const APPID: &str = "wxbench0000000001";
pub const SECRET: &str = "bench-secret";
pub const KEY: &str = "wk_bench000000000000000000000000000000000000000000";

/// Register the bench app (stable tokens, day-long sessions) and a caller key scoped to it in the store at `db`.
pub async fn prepare(db: &str) {
    let store = store::open(&DatabaseUrl::parse(db).unwrap(), &StoreOptions::default(), true).await.unwrap();
    store
        .registry
        .put_app(&AppRecord {
            appid: APPID.parse().unwrap(),
            secret: SECRET.into(),
            login_duration_secs: 86_400,
            session_duration_secs: 86_400,
            token_mode: TokenMode::Stable,
            created_at: 0,
            updated_at: 0,
        })
        .await
        .unwrap();
    // The default `credentials` mode checks the key on every token request and token-free call.
    store
        .keys
        .add_caller_key(&CallerKeyRecord {
            name: "bench".into(),
            key_hash: wafer_scf::crypto::sha256_hex(KEY.as_bytes()),
            scope_apps: vec![APPID.into()],
            ..Default::default()
        })
        .await
        .unwrap();
}

/// What one wrk run printed.
pub struct Run {
    pub rps: f64,
    pub requests: u64,
    /// Bytes read, and the run's length in seconds (`… requests in 4.00s, 12.05GB read`).
    pub bytes: f64,
    pub secs: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub failures: u64,
    pub non_2xx: u64,
}

/// wrk's `318234 requests in 3.00s, 61.29MB read`: the requests, the seconds and the bytes read.
fn requests_line(l: &str) -> Option<(u64, f64, f64)> {
    let (n, rest) = l.split_once(' ')?;
    let rest = rest.strip_prefix("requests in ")?;
    let (secs, read) = rest.split_once("s, ")?;
    let read = read.strip_suffix(" read")?;
    let unit = read.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(read.len());
    let scale = match &read[unit..] {
        "B" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => f64::NAN,
    };
    Some((n.parse().ok()?, secs.parse().ok()?, read[..unit].parse::<f64>().ok()? * scale))
}

/// CPU time (user and system) a process has used so far, in seconds, from `/proc/<pid>/stat`.
pub fn cpu_secs(pid: u32) -> f64 {
    let (user, system) = cpu_split(pid);
    user + system
}

/// CPU time a process has used so far in user space and in the kernel, in seconds, from `/proc/<pid>/stat`.
pub fn cpu_split(pid: u32) -> (f64, f64) {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let per_sec = *TICKS.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output().ok();
        out.and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis start at the third (state); utime and stime are the 14th and 15th.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) / per_sec, tick(12) / per_sec)
}

/// Context switches the threads of a process have made so far: (voluntary — it waited —, involuntary — it was
/// preempted), summed over `/proc/<pid>/task/*/status`.
pub fn switches(pid: u32) -> (u64, u64) {
    let mut sum = (0, 0);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return sum };
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        for line in status.lines() {
            let value =
                |l: &str| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            if line.starts_with("voluntary_ctxt_switches:") {
                sum.0 += value(line);
            } else if line.starts_with("nonvoluntary_ctxt_switches:") {
                sum.1 += value(line);
            }
        }
    }
    sum
}

pub fn to_ms(s: &str) -> f64 {
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

/// Run wrk with a Lua script; `failures:` is printed by scripts that check bodies.
pub fn wrk(url: &str, script: &Path, secs: u64, conns: u32) -> Run {
    let out = Command::new("wrk")
        .args(["-t2", &format!("-c{conns}"), &format!("-d{secs}s"), "--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .expect("wrk is not installed: run scripts/bench.sh (it installs the Debian package wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut run = Run {
        rps: 0.0,
        requests: 0,
        bytes: 0.0,
        secs: 0.0,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        failures: 0,
        non_2xx: 0,
    };
    for line in text.lines() {
        let l = line.trim();
        if let Some((n, secs, bytes)) = requests_line(l) {
            (run.requests, run.secs, run.bytes) = (n, secs, bytes);
        } else if let Some(v) = l.strip_prefix("Requests/sec:") {
            run.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("50%") {
            run.p50_ms = to_ms(v);
        } else if let Some(v) = l.strip_prefix("99%") {
            run.p99_ms = to_ms(v);
        } else if let Some(v) = l.strip_prefix("failures:") {
            run.failures = v.trim().parse().unwrap_or(u64::MAX);
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            run.non_2xx = v.trim().parse().unwrap_or(u64::MAX);
        } else if l.starts_with("Socket errors") {
            eprintln!("wrk {url}: {l}");
        }
    }
    run
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The binary under test: this build's, or `BENCH_BIN` (another build, one with symbols to profile).
pub fn bench_bin() -> String {
    std::env::var("BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wafer-scf").into())
}

/// Stop a server spawned by [`spawn_server`] as an operator would (SIGTERM) and wait for it.
pub fn stop(child: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}

/// The binary under test ([`bench_bin`]) as `wafer-scf serve` over `db`, with its logs written to `log`; the child
/// and its base URL once it listens.
pub fn spawn_server(db: &str, wechat: &str, log: &Path) -> (Child, String) {
    let port = free_port();
    let mut child = Command::new(bench_bin())
        .arg("serve")
        .env_clear()
        .env("WAFER_DATABASE_URL", db)
        .env("WAFER_WECHAT_BASE_URL", wechat)
        .env("WAFER_LISTEN", format!("127.0.0.1:{port}"))
        .env("WAFER_LOG", std::env::var("BENCH_LOG").unwrap_or_else(|_| "info".into()))
        .env("WAFER_PURGE_INTERVAL_SECS", "0")
        .envs(std::env::var("SERVER_WORKERS").ok().map(|v| ("TOKIO_WORKER_THREADS", v)))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (child, format!("http://127.0.0.1:{port}"));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the server did not listen");
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `VmHWM:`); 0 when unreadable.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

/// The `p` quantile of sorted latencies, in milliseconds (NaN when there are none).
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

/// Pin every thread of process `pid` to `cpus`, a `taskset` list ("0", "0-1"); `false` when that fails.
pub fn pin(pid: u32, cpus: &str) -> bool {
    Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// How many CPUs this process may run on, and the `taskset` list of all of them.
pub fn all_cpus() -> (usize, String) {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    (cpus, format!("0-{}", cpus - 1))
}
