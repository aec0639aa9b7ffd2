//! Benchmark: token-free calls through `/wechat/{appid}/…` against the same calls made straight to the fake WeChat,
//! side by side in one run. The server is the release binary `wafer-scf serve` (embedded store, info logs to a
//! file); the fake runs in this process. Printed:
//!
//! - 10 MB binary replies (`/cgi-bin/media/get`), 32 concurrent downloads with `wrk`: MB/s straight from the fake
//!   and through the server in five alternating rounds, the ratio per round, its median and spread (goal ≥ 80 %),
//!   and the server's RSS sampled during the downloads and its peak (`VmHWM`, goal < 64 MB), with how much of it is
//!   anonymous memory (`RssAnon`) rather than the binary's own pages. The rounds run twice ([`Placement`]): as the
//!   scheduler places the processes, and with the relays on a core of their own, apart from the fake and wrk (as
//!   deployed, where WeChat and the callers are other machines); `BENCH_PLACEMENT=scheduler|apart` runs one. Beside them, in the
//!   same rounds, a bare relay: this bench binary run again as a process of its own, an axum server that sends
//!   each request on to the fake with reqwest and streams the reply back, nothing else — the least any HTTP relay does, so what one reaches on
//!   this machine (the relay's ceiling), and ours against it, and the relay's own peak RSS;
//! - small JSON calls (`/cgi-bin/message/subscribe/send`) at a fixed rate that leaves the machine room (open loop,
//!   `BENCH_RATE` calls/s, default 1,000): p50/p99 straight and through, in five alternating rounds, and the added
//!   p99's median and spread (goal ≤ 0.5 ms), beside what the bare relay adds (p50 and p99).
//!
//! Run: `cargo bench --bench streaming` (`BENCH_SECS`, seconds per side per round, default 4).
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
#[allow(dead_code)]
#[path = "support/media.rs"]
mod media;

use load::{spawn_server, wrk, APPID, KEY, SECRET};
use serde_json::{json, Value};
use std::io::BufRead;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;
const MEDIA: usize = 10 * 1024 * 1024;
fn downloads() -> u32 {
    std::env::var("BENCH_DOWNLOADS").ok().and_then(|v| v.parse().ok()).unwrap_or(32)
}

/// The median of `values` and their range, sorted in place.
fn spread(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[values.len() / 2], values[0], values[values.len() - 1])
}

/// A wrk script for GET downloads carrying the caller key.
fn download_script(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("download.lua");
    std::fs::write(&p, format!("wrk.method = \"GET\"\nwrk.headers[\"X-Wafer-Key\"] = \"{KEY}\"\n")).unwrap();
    p
}

/// Calls at `rate` per second for `secs`, open loop (each call starts on schedule, whatever the others do); the
/// sorted latencies. A call that fails or does not answer `errcode` 0 stops the bench.
async fn paced(client: &reqwest::Client, url: &str, body: &str, rate: u64, secs: u64) -> Vec<Duration> {
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..rate * secs {
        tick.tick().await;
        let (client, url, body) = (client.clone(), url.to_owned(), body.to_owned());
        calls.spawn(async move {
            let t = Instant::now();
            let r = client.post(&url).header("X-Wafer-Key", KEY).body(body).send().await.unwrap();
            let text = r.text().await.unwrap();
            let took = t.elapsed();
            assert!(text.contains("\"errcode\":0"), "{text}");
            took
        });
    }
    let mut out = Vec::new();
    while let Some(t) = calls.join_next().await {
        out.push(t.unwrap());
    }
    out.sort();
    out
}

/// Set in the bare relay's environment: the upstream it relays to.
const RELAY_UPSTREAM: &str = "BENCH_BARE_RELAY_UPSTREAM";

/// The bare relay (this binary, run with [`RELAY_UPSTREAM`] set): every request sent on to the upstream (method,
/// path, query and body) and the reply's body streamed back as it arrives, status and content type kept. Prints its port, then serves until killed.
fn bare_relay(upstream: String) {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let client = reqwest::Client::new();
        let app = axum::Router::new().fallback(move |req: Request| {
            let (client, upstream) = (client.clone(), upstream.clone());
            async move {
                let pq = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
                let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
                let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap();
                let resp = client.request(method, format!("{upstream}{pq}")).body(body).send().await.unwrap();
                let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
                let ct = resp.headers().get(header::CONTENT_TYPE).cloned();
                let body = Body::from_stream(futures_util::stream::unfold(resp, |mut r| async move {
                    r.chunk().await.transpose().map(|c| (c, r))
                }));
                let mut out = (status, body).into_response();
                if let Some(ct) = ct {
                    out.headers_mut().insert(header::CONTENT_TYPE, ct);
                }
                out
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", l.local_addr().unwrap().port());
        axum::serve(l, app).await.unwrap();
    });
}

/// Start the bare relay in a process of its own; its base URL.
fn spawn_bare_relay(upstream: &str) -> (std::process::Child, String) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(RELAY_UPSTREAM, upstream)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut port).unwrap();
    (child, format!("http://127.0.0.1:{}", port.trim()))
}

fn main() {
    if let Ok(upstream) = std::env::var(RELAY_UPSTREAM) {
        return bare_relay(upstream);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let secs: u64 = std::env::var("BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
    let rate: u64 = std::env::var("BENCH_RATE").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite:{}", dir.path().join("bench.db").display());
        load::prepare(&db).await;
        let wx = fake_wechat::FakeWeChat::start_with(media::routes()).await;
        wx.register(APPID, SECRET);
        let log = dir.path().join("server.log");
        let (mut child, url) = spawn_server(&db, &wx.base_url, &log);
        let pid = child.id();
        let client = reqwest::Client::new();

        // The current token (for the direct calls) and one checked download each way.
        let envelope = json!({"version": 1, "componentName": "MA", "interface": {"interfaceName": "qcloud.mimi.access_token", "para": {"appid": APPID}}});
        let warm: Value =
            client.post(&url).header("X-Wafer-Key", KEY).json(&envelope).send().await.unwrap().json().await.unwrap();
        let token = warm["returnData"]["access_token"].as_str().unwrap().to_owned();
        let direct_media = format!("{}/cgi-bin/media/get?access_token={token}&media_id={MEDIA}", wx.base_url);
        let through_media = format!("{url}/wechat/{APPID}/cgi-bin/media/get?media_id={MEDIA}");
        let (mut relay, relay_url) = spawn_bare_relay(&wx.base_url);
        let relay_media = format!("{relay_url}/cgi-bin/media/get?access_token={token}&media_id={MEDIA}");
        for u in [&direct_media, &through_media, &relay_media] {
            let got = client.get(u).header("X-Wafer-Key", KEY).send().await.unwrap().bytes().await.unwrap();
            assert!(got == media::media(MEDIA), "{u}: {} bytes, not the fake's", got.len());
        }
        println!(
            "token-free calls on {} cores: straight to the fake WeChat and through wafer-scf serve's /wechat/{{appid}}/ (release build, embedded store, info logs to a file)",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
        );

        // 10 MB downloads, 32 at a time: alternating rounds, first as the scheduler places the processes, then with
        // the relays on a core of their own; the server's RSS sampled while they run.
        let script = download_script(dir.path());
        let urls = [direct_media.as_str(), relay_media.as_str(), through_media.as_str()];
        for placement in [Placement::Scheduler, Placement::RelaysApart] {
            if std::env::var("BENCH_PLACEMENT").is_ok_and(|only| only != placement.key()) {
                continue;
            }
            if !placement.apply(&[pid, relay.id()]) {
                println!("10 MB replies, {}: skipped (needs taskset and 2 CPUs)", placement.name());
                continue;
            }
            download_rounds(&script, urls, secs, pid, placement).await;
        }
        Placement::Scheduler.apply(&[pid, relay.id()]);
        println!(
            "server peak RSS over the whole run (VmHWM): {:.1} MiB (goal < 64 MB)",
            load::status_kib(pid, "VmHWM:") as f64 / 1024.0
        );
        println!(
            "  the bare relay's peak (VmHWM, glibc's allocator, no limits of its own): {:.1} MiB",
            load::status_kib(relay.id(), "VmHWM:") as f64 / 1024.0
        );

        // Small JSON calls at a fixed rate: what the server adds to each.
        let body = json!({"touser": "o_bench", "template_id": "t", "data": {"thing1": {"value": "会议提醒"}}}).to_string();
        let direct_call = format!("{}/cgi-bin/message/subscribe/send?access_token={token}", wx.base_url);
        let through_call = format!("{url}/wechat/{APPID}/cgi-bin/message/subscribe/send");
        paced(&client, &through_call, &body, rate, 1).await;
        let relay_call = format!("{relay_url}/cgi-bin/message/subscribe/send?access_token={token}");
        paced(&client, &relay_call, &body, rate, 1).await;
        let (mut added_p50, mut added_p99) = (Vec::new(), Vec::new());
        let (mut relay_p50, mut relay_p99) = (Vec::new(), Vec::new());
        let mut last = None;
        for _ in 0..ROUNDS {
            let direct = paced(&client, &direct_call, &body, rate, secs).await;
            let bare = paced(&client, &relay_call, &body, rate, secs).await;
            let through = paced(&client, &through_call, &body, rate, secs).await;
            added_p50.push(load::percentile_ms(&through, 0.5) - load::percentile_ms(&direct, 0.5));
            added_p99.push(load::percentile_ms(&through, 0.99) - load::percentile_ms(&direct, 0.99));
            relay_p50.push(load::percentile_ms(&bare, 0.5) - load::percentile_ms(&direct, 0.5));
            relay_p99.push(load::percentile_ms(&bare, 0.99) - load::percentile_ms(&direct, 0.99));
            last = Some((direct, through));
        }
        let _ = relay.kill();
        let _ = relay.wait();
        let (direct, through) = last.unwrap();
        println!("small JSON calls at {rate} calls/s (open loop), {secs} s per side per round:");
        println!(
            "  straight to the fake WeChat        p50 {:.3} ms  p99 {:.3} ms (last round)",
            load::percentile_ms(&direct, 0.5),
            load::percentile_ms(&direct, 0.99)
        );
        println!(
            "  through /wechat/{{appid}}/           p50 {:.3} ms  p99 {:.3} ms (last round)",
            load::percentile_ms(&through, 0.5),
            load::percentile_ms(&through, 0.99)
        );
        let shown: Vec<String> = added_p99.iter().map(|v| format!("{v:+.3}")).collect();
        let (p50, _, _) = spread(&mut added_p50);
        let (p99, low, high) = spread(&mut added_p99);
        println!(
            "  added by the server: p50 {p50:+.3} ms, p99 {p99:+.3} ms (median of {ROUNDS} alternating rounds; p99 {low:+.3} to {high:+.3}; rounds {}) (goal p99 ≤ 0.5 ms)",
            shown.join(", ")
        );
        let (rp50, _, _) = spread(&mut relay_p50);
        let (rp99, rlow, rhigh) = spread(&mut relay_p99);
        println!(
            "  added by the bare relay: p50 {rp50:+.3} ms, p99 {rp99:+.3} ms (median of {ROUNDS} rounds; {rlow:+.3} to {rhigh:+.3}) — what any relay adds here"
        );
        load::stop(&mut child);
    });
}

/// Where the download rounds run. On two cores, the fake, wrk and a relay share both CPUs, and each byte relayed is
/// copied twice more than one fetched straight (into the relay and out of it), so a relay is held to about half of
/// straight by the CPU it takes from the other two, not by itself. Deployed, the relay has CPUs of its own, apart from
/// WeChat's and the caller's: so the rounds are also run with the relays on one core and the fake and wrk on the
/// other, where straight and through give the fake and wrk the same CPU and the relay's own cost shows.
#[derive(Clone, Copy)]
enum Placement {
    /// Wherever the scheduler puts them.
    Scheduler,
    /// This process (the fake WeChat) and wrk on CPU 0; the server and the bare relay on CPU 1.
    RelaysApart,
}

impl Placement {
    /// Its name in `BENCH_PLACEMENT`.
    fn key(self) -> &'static str {
        match self {
            Self::Scheduler => "scheduler",
            Self::RelaysApart => "apart",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Scheduler => "placed by the scheduler (fake, wrk and relay sharing the cores)",
            Self::RelaysApart => "relays on a core of their own (fake and wrk on CPU 0, the relay on CPU 1)",
        }
    }

    /// Pin this process (and so the wrk it starts) and the relays; `false` when that cannot be done.
    fn apply(self, relays: &[u32]) -> bool {
        let (cpus, all) = load::all_cpus();
        let (here, there) = match self {
            Self::RelaysApart if cpus >= 2 => ("0", "1"),
            Self::RelaysApart => return false,
            Self::Scheduler => (all.as_str(), all.as_str()),
        };
        load::pin(std::process::id(), here) && relays.iter().all(|&pid| load::pin(pid, there))
    }
}

/// Five alternating rounds of 10 MB downloads under `placement`, straight (`urls[0]`), through the bare relay
/// (`urls[1]`) and through the server (`urls[2]`, whose RSS is sampled meanwhile); the figures printed.
async fn download_rounds(script: &Path, urls: [&str; 3], secs: u64, pid: u32, placement: Placement) {
    // The server's highest RSS samples: all of it, and its anonymous part (`RssAnon`: the heap and stacks, without
    // the binary's own pages, which are page cache, shared and reclaimable), in KiB.
    let (mut rss_max, mut anon_max) = (0, 0);
    let (mut ratios, mut direct_mbs, mut through_mbs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut relay_ratios, mut relay_mbs, mut against_relay) = (Vec::new(), Vec::new(), Vec::new());
    let mut cpu_per_gb = Vec::new();
    let mbs = |r: &load::Run| r.bytes / r.secs / 1_048_576.0;
    let download = |url: &str| {
        let (s, u) = (script.to_owned(), url.to_owned());
        tokio::task::spawn_blocking(move || wrk(&u, &s, secs, downloads()))
    };
    for _ in 0..ROUNDS {
        let direct = download(urls[0]).await.unwrap();
        let bare = download(urls[1]).await.unwrap();
        assert_eq!(bare.non_2xx, 0, "every download through the bare relay succeeds");
        let sampling = Arc::new(AtomicBool::new(true));
        let flag = sampling.clone();
        let sampler = tokio::spawn(async move {
            let (mut max, mut anon) = (0, 0);
            while flag.load(Ordering::Relaxed) {
                max = load::status_kib(pid, "VmRSS:").max(max);
                anon = load::status_kib(pid, "RssAnon:").max(anon);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (max, anon)
        });
        let cpu = load::cpu_secs(pid);
        let through = download(urls[2]).await.unwrap();
        cpu_per_gb.push((load::cpu_secs(pid) - cpu) / (through.bytes / 1_073_741_824.0));
        sampling.store(false, Ordering::Relaxed);
        let (max, anon) = sampler.await.unwrap();
        (rss_max, anon_max) = (rss_max.max(max), anon_max.max(anon));
        assert_eq!(through.non_2xx, 0, "every download through the server succeeds");
        direct_mbs.push(mbs(&direct));
        through_mbs.push(mbs(&through));
        relay_mbs.push(mbs(&bare));
        ratios.push(mbs(&through) / mbs(&direct));
        relay_ratios.push(mbs(&bare) / mbs(&direct));
        against_relay.push(mbs(&through) / mbs(&bare));
    }
    let shown: Vec<String> = ratios.iter().map(|r| format!("{:.0}%", 100.0 * r)).collect();
    let (ratio, low, high) = spread(&mut ratios);
    let (d, _, _) = spread(&mut direct_mbs);
    let (t, _, _) = spread(&mut through_mbs);
    println!(
        "10 MB replies, {} concurrent downloads, {secs} s per side per round, {}:",
        downloads(),
        placement.name()
    );
    println!("  straight from the fake WeChat      median {d:>7.0} MB/s");
    println!("  through /wechat/{{appid}}/           median {t:>7.0} MB/s");
    println!(
        "  through ÷ straight: {:.0}% (median of {ROUNDS} alternating rounds; {:.0}–{:.0}%; rounds {}) (goal ≥ 80%)",
        100.0 * ratio,
        100.0 * low,
        100.0 * high,
        shown.join(", ")
    );
    let (r, _, _) = spread(&mut relay_mbs);
    let (rr, rlow, rhigh) = spread(&mut relay_ratios);
    let (ar, alow, ahigh) = spread(&mut against_relay);
    println!(
        "  a bare relay (axum + reqwest, streaming, nothing else) median {r:>7.0} MB/s: {:.0}% of straight ({:.0}–{:.0}%) — what any relay reaches here",
        100.0 * rr,
        100.0 * rlow,
        100.0 * rhigh
    );
    println!(
        "  through ÷ bare relay: {:.0}% (median of {ROUNDS} rounds; {:.0}–{:.0}%)",
        100.0 * ar,
        100.0 * alow,
        100.0 * ahigh
    );
    let (cpu, _, _) = spread(&mut cpu_per_gb);
    let rest = match placement {
        Placement::Scheduler => "the rest of the machine's time is the fake's and wrk's",
        Placement::RelaysApart => "the relay has that core to itself",
    };
    println!(
        "  server CPU per GB relayed: {cpu:.2} s (median) — one core relays {:.0} MB/s; {rest}",
        1024.0 / cpu
    );
    println!(
        "  server RSS during these downloads: highest sample {:.1} MiB (goal < 64 MB), of which anonymous memory (heap, stacks; RssAnon) {:.1} MiB — the rest is the binary's own pages (page cache: shared, reclaimable)",
        rss_max as f64 / 1024.0,
        anon_max as f64 / 1024.0,
    );
}
