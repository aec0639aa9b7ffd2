//! HTTP mode over a real socket: any path, POST only, body limit, keep-alive, graceful shutdown.

use crate::helpers::{Backend, TestApp};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::oneshot;

pub(crate) struct Running {
    pub(crate) url: String,
    pub(crate) stop: Option<oneshot::Sender<()>>,
    pub(crate) task: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub(crate) async fn start(svc: Arc<wafer_scf::service::Service>) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(wafer_scf::serve::serve(listener, svc, async {
        let _ = rx.await;
    }));
    Running { url: format!("http://{addr}"), stop: Some(tx), task }
}

/// A server with these HTTP limits over a fresh embedded store (keep the app: it owns the store and the fake).
async fn start_with_limits(limits: wafer_scf::service::HttpLimits) -> (TestApp, Running) {
    let t = TestApp::new(Backend::Sqlite).await;
    let svc = crate::helpers::builder(
        t.store.clone(),
        &t.wx.base_url,
        t.clock.clone(),
        crate::helpers::open_settings(),
    )
    .http_limits(limits)
    .build()
    .unwrap();
    let running = start(Arc::new(svc)).await;
    (t, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_are_answered_on_any_path_over_a_real_socket() {
    let t = TestApp::new(Backend::Sqlite).await;
    t.add_app("wx_http", "s").await;
    let mut running = start(t.svc.clone()).await;
    let client = reqwest::Client::new();

    let login_body = json!({"version": 1, "componentName": "MA",
        "interface": {"interfaceName": "qcloud.cam.id_skey", "para": {"appid": "wx_http", "code": t.wx.code_for("lee")}}});
    let resp =
        client.post(format!("{}/release/mina_auth/", running.url)).json(&login_body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let text = resp.text().await.unwrap();
    assert!(
        text.starts_with(r#"{"returnCode":0,"returnMessage":"NEW_SESSION_SUCCESS","returnData":{"id":"#),
        "{text}"
    );
    let login: Value = serde_json::from_str(&text).unwrap();

    // Same dispatcher, same bytes: an auth through HTTP equals one through the service directly.
    let auth_body = json!({"interface": {"interfaceName": "qcloud.cam.auth",
        "para": {"id": login["returnData"]["id"], "skey": login["returnData"]["skey"]}}});
    for path in ["/", "/mina_auth", "/a/b/c?x=1"] {
        let r =
            client.post(format!("{}{path}", running.url)).body(auth_body.to_string()).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let direct = t.svc.handle(auth_body.to_string().as_bytes(), &Default::default()).await;
        assert_eq!(r.bytes().await.unwrap().to_vec(), direct.to_bytes(), "path {path}");
    }

    // COS signatures answer over HTTP too (v4 with caller keys, v5 with server-held keys).
    t.store
        .registry
        .put_cos_key(&wafer_scf::store::CosKeyRecord {
            appid: "1250000000".parse().unwrap(),
            secret_id: "AKIDhttp".into(),
            secret_key: "http-secret".into(),
            created_at: 0,
            updated_at: 0,
        })
        .await
        .unwrap();
    let v4 = crate::helpers::post_envelope(
        &client,
        &running.url,
        "qcloud.cos.auth.nonreusable",
        json!({"appid": "1250000000", "sid": "AKIDx", "skey": "k", "bucket": "photos", "filepath": "a.jpg"}),
    )
    .await;
    assert_eq!(v4["returnCode"], 0, "{v4}");
    assert!(v4["returnData"].as_str().unwrap().len() > 40);
    let v5 = crate::helpers::post_envelope(
        &client,
        &running.url,
        "qcloud.cos.auth.v5",
        json!({"appid": "1250000000", "bucket": "photos-1250000000", "region": "ap-guangzhou", "method": "GET", "path": "/a.jpg"}),
    )
    .await;
    assert_eq!(v5["returnCode"], 0, "{v5}");
    assert!(v5["returnData"]["url"]
        .as_str()
        .unwrap()
        .starts_with("https://photos-1250000000.cos.ap-guangzhou.myqcloud.com/a.jpg?"));

    // Business errors are HTTP 200 with an envelope.
    let r = client.post(&running.url).body("not json").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["returnCode"], 1009);

    // Wrong method: 405 with an envelope body.
    let r = client.get(format!("{}/mina_auth", running.url)).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<Value>().await.unwrap()["returnCode"], 1009);
    assert_eq!(client.get(format!("{}/healthz", running.url)).send().await.unwrap().status(), 200);

    // Over the body limit: 413 with an envelope, and the server is still healthy.
    let big = "x".repeat(200 * 1024);
    let r = client.post(&running.url).body(big).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["connection"], "close", "the socket is not reused after an oversized body");
    assert_eq!(r.json::<Value>().await.unwrap()["returnCode"], 1020);

    // Many concurrent keep-alive requests.
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (client, url, body) = (client.clone(), running.url.clone(), auth_body.to_string());
        tasks.push(tokio::spawn(async move {
            client.post(url).body(body).send().await.unwrap().json::<Value>().await.unwrap()["returnCode"]
                .as_i64()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), Some(0));
    }

    running.stop.take().unwrap().send(()).unwrap();
    running.task.await.unwrap().unwrap();
    assert!(client.post(&running.url).body("{}").send().await.is_err(), "closed after shutdown");
}

/// A body that arrives in pieces — by its length, or chunked — is answered as one that came whole (the first piece
/// is kept as it arrived until a second one comes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_arriving_in_pieces_is_read_whole() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = TestApp::new(Backend::Sqlite).await;
    t.add_app("wx_pieces", "s").await;
    let mut running = start(t.svc.clone()).await;
    let body =
        json!({"version": 1, "componentName": "MA", "interface": {"interfaceName": "qcloud.cam.id_skey",
        "para": {"appid": "wx_pieces", "code": "not-a-code", "padding": "p".repeat(3000)}}})
        .to_string();
    let expected = t.svc.handle(body.as_bytes(), &Default::default()).await.to_bytes();
    assert_ne!(
        serde_json::from_slice::<Value>(&expected).unwrap()["returnCode"],
        1009,
        "the body is read whole"
    );
    let addr = running.url.trim_start_matches("http://").to_owned();
    let (a, rest) = body.split_at(10);
    let (b, c) = rest.split_at(2000);
    let sized = [
        format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{a}", body.len()),
        b.into(),
        c.into(),
    ];
    let chunk = |p: &str| format!("{:x}\r\n{p}\r\n", p.len());
    let chunked = [
        format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{}", chunk(a)),
        chunk(b),
        format!("{}0\r\n\r\n", chunk(c)),
    ];
    for pieces in [sized, chunked] {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        for piece in &pieces {
            s.write_all(piece.as_bytes()).await.unwrap();
            s.flush().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let reply = loop {
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed before the answer: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                    })
                    .unwrap()
                    .parse()
                    .unwrap();
                if rest.len() >= len {
                    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                    break rest[..len].to_owned();
                }
            }
        };
        assert_eq!(reply.as_bytes(), &expected[..], "{:?}", &pieces[0][..40]);
    }
    running.stop.take().unwrap().send(()).unwrap();
    running.task.await.unwrap().unwrap();
}

/// Slowloris-style clients: idle, partial-header and partial-body connections are closed after the header / body
/// timeouts; beyond the connection cap new connections are closed at once; a legitimate request is answered once
/// the slow ones are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_and_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_t, mut running) = start_with_limits(wafer_scf::service::HttpLimits {
        header_timeout: std::time::Duration::from_millis(400),
        body_timeout: std::time::Duration::from_millis(400),
        max_connections: 60,
    })
    .await;
    let addr = running.url.trim_start_matches("http://").trim_end_matches('/').to_owned();

    let mut socks = Vec::new();
    for i in 0..60 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        match i % 3 {
            0 => {}                                                                     // idle
            1 => s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap(), // partial header
            _ => s
                .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"interface\"")
                .await
                .unwrap(), // partial body
        }
        socks.push(s);
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // At the cap: a new connection is closed without an answer.
    let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(2), extra.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "over the cap: closed");

    // Within a second every slow connection is closed (partial bodies get a 408 first).
    let started = std::time::Instant::now();
    for (i, s) in socks.iter_mut().enumerate() {
        let mut all = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(3), s.read_to_end(&mut all)).await;
        assert!(read.is_ok(), "connection {i} still open after {:?}", started.elapsed());
        if i % 3 == 2 {
            assert!(
                String::from_utf8_lossy(&all).starts_with("HTTP/1.1 408"),
                "{}",
                String::from_utf8_lossy(&all)
            );
        }
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());

    // Room again: a legitimate request is answered.
    let r = reqwest::Client::new().get(format!("{}/healthz", running.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    running.stop.take().unwrap().send(()).unwrap();
    running.task.await.unwrap().unwrap();
}

/// The header timeout counts from the last answer: a kept-alive connection used more often than that stays open for
/// longer than the timeout in all, and is closed once it has been idle that long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_kept_alive_connection_stays_open_and_an_idle_one_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let timeout = std::time::Duration::from_millis(1500);
    let (_t, mut running) =
        start_with_limits(wafer_scf::service::HttpLimits { header_timeout: timeout, ..Default::default() })
            .await;
    let addr = running.url.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = std::time::Instant::now();
    for i in 0..5 {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        let n =
            tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 200") && text.ends_with("ok"), "request {i}: {text}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(started.elapsed() > timeout, "the connection outlived one timeout");
    // Now idle: closed within the timeout (and some slack), without an answer.
    let idle = std::time::Instant::now();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut rest)).await.unwrap();
    assert_eq!(n.unwrap_or(0), 0, "closed without a word");
    assert!(idle.elapsed() < std::time::Duration::from_secs(5), "{:?}", idle.elapsed());
    running.stop.take().unwrap().send(()).unwrap();
    running.task.await.unwrap().unwrap();
}

/// Request heads up to the connection buffer (64 KB) are read — a long cookie included; a larger head is refused
/// with 431, not a crash, and the server answers the next connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_request_heads_are_read_up_to_the_connection_buffer() {
    let t = TestApp::new(Backend::Sqlite).await;
    let running = start(t.svc.clone()).await;
    let client = reqwest::Client::new();
    let body = json!({"interface": {"interfaceName": "qcloud.cam.auth", "para": {"id": "x", "skey": "y"}}});
    let send = |cookie_len: usize| {
        let (client, url, body) = (client.clone(), running.url.clone(), body.to_string());
        async move {
            client.post(format!("{url}/")).header("cookie", "c".repeat(cookie_len)).body(body).send().await
        }
    };
    let r = send(40 * 1024).await.unwrap();
    assert_eq!(r.status(), 200, "a 40 KB cookie is read");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["returnCode"], 60012, "and the envelope answered: {v}");
    let big = send(100 * 1024).await.unwrap();
    assert_eq!(big.status(), 431, "a 100 KB head is refused");
    let again: Value = send(16).await.unwrap().json().await.unwrap();
    assert_eq!(again["returnCode"], 60012, "the server still answers: {again}");
}

/// Each connection is served on one of the server's lanes (a thread and runtime of its own). Stopping the server while
/// a login waits on WeChat lets that login finish and be answered before `serve` returns; connections kept alive on
/// the other lanes are closed, and the listener with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_hand_on_a_lane_is_answered_across_a_stop() {
    let t = TestApp::new(Backend::Sqlite).await;
    t.add_app("wx_lane", "s").await;
    let mut running = start(t.svc.clone()).await;
    // Kept-alive connections on every lane (each client holds its own).
    let idle: Vec<reqwest::Client> = (0..4).map(|_| reqwest::Client::new()).collect();
    for c in &idle {
        assert_eq!(c.get(format!("{}/healthz", running.url)).send().await.unwrap().status(), 200);
    }
    t.wx.delay("/sns/jscode2session", std::time::Duration::from_millis(300), 1);
    let body = json!({"interface": {"interfaceName": "qcloud.cam.id_skey",
        "para": {"appid": "wx_lane", "code": t.wx.code_for("slow")}}});
    let url = running.url.clone();
    let slow = tokio::spawn(async move {
        let r = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while t.wx.calls("/sns/jscode2session") == 0 {
        assert!(std::time::Instant::now() < deadline, "the login never reached WeChat");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    running.stop.take().unwrap().send(()).unwrap();
    let (status, login) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(login["returnMessage"], "NEW_SESSION_SUCCESS", "{login}");
    tokio::time::timeout(std::time::Duration::from_secs(10), running.task)
        .await
        .expect("serve returns once its lanes are done")
        .unwrap()
        .unwrap();
    let addr = running.url.trim_start_matches("http://").to_owned();
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err(), "no longer listening");
}
