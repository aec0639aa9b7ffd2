//! HTTP mode on the wire: envelope requests read and answered without hyper give the replies hyper gives —
//! pipelined, split, in any header case — and every request left to hyper (chunked, `Expect`, `Connection: close`,
//! another method, a malformed head) is answered by it with the bytes read before it took the connection over.

use crate::helpers::{add_key, scope, Backend, TestApp};
use crate::http::{start, Running};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raw connection and what it has read and not yet taken as a reply.
struct Wire {
    s: tokio::net::TcpStream,
    got: Vec<u8>,
}

/// One reply: its status line, headers (names lowercase, in order) and body.
struct Reply {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

impl Wire {
    async fn connect(url: &str) -> Self {
        let s = tokio::net::TcpStream::connect(url.trim_start_matches("http://")).await.unwrap();
        Self { s, got: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    /// The next reply (interim `100 Continue` replies included), within 5 s.
    async fn reply(&mut self) -> Reply {
        loop {
            if let Some(end) = self.got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(self.got[..end].to_vec()).unwrap();
                let mut lines = head.split("\r\n");
                let status_line = lines.next().unwrap().to_owned();
                let headers: Vec<(String, String)> = lines
                    .map(|l| {
                        let (n, v) = l.split_once(':').unwrap();
                        (n.to_ascii_lowercase(), v.trim().to_owned())
                    })
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .map_or(0, |(_, v)| v.parse().unwrap());
                if self.got.len() >= end + 4 + len {
                    let body = self.got[end + 4..end + 4 + len].to_vec();
                    self.got.drain(..end + 4 + len);
                    return Reply { status_line, headers, body };
                }
            }
            let mut buf = [0u8; 8192];
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), self.s.read(&mut buf))
                .await
                .expect("a reply within 5 s")
                .unwrap();
            assert!(n > 0, "closed before a whole reply: {}", String::from_utf8_lossy(&self.got));
            self.got.extend_from_slice(&buf[..n]);
        }
    }

    /// Whether the server closes the connection (with nothing more to read) within 5 s.
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(5), self.s.read_to_end(&mut rest)).await;
        matches!(read, Ok(Ok(0))) && self.got.is_empty()
    }
}

fn post(path: &str, headers: &str, body: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n{body}", body.len())
}

fn chunked(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    )
}

/// What tells two replies apart besides their date: the status line, the header names and values, the body.
fn shape(r: &Reply) -> (String, Vec<(String, String)>, Vec<u8>) {
    let headers = r.headers.iter().filter(|(n, _)| n != "date").cloned().collect();
    (r.status_line.clone(), headers, r.body.clone())
}

/// A server over a fresh embedded store (keep the app: it owns the store), an auth envelope that fails the same way
/// every time, and the bytes the service answers it with.
async fn serving_an_auth() -> (TestApp, Running, String, Vec<u8>) {
    let t = TestApp::new(Backend::Sqlite).await;
    let running = start(t.svc.clone()).await;
    let body = json!({"interface": {"interfaceName": "qcloud.cam.auth", "para": {"id": "x", "skey": "y"}}})
        .to_string();
    let expected = t.svc.handle(body.as_bytes(), &Default::default()).await.to_bytes();
    (t, running, body, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_requests_get_hypers_reply_pipelined_split_or_handed_over() {
    let (_t, mut running, body, expected) = serving_an_auth().await;
    let mut w = Wire::connect(&running.url).await;

    // Two requests in one write, then one whose head arrives in two writes.
    w.send(format!("{}{}", post("/", "", &body), post("/mina_auth?x=1", "", &body)).as_bytes()).await;
    let (first, second) = (w.reply().await, w.reply().await);
    let split = post("/", "X-Request-Id: split-1\r\n", &body);
    w.send(&split.as_bytes()[..20]).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    w.send(&split.as_bytes()[20..]).await;
    let third = w.reply().await;
    for r in [&first, &second, &third] {
        assert_eq!(r.status_line, "HTTP/1.1 200 OK");
        assert_eq!(r.body, expected);
        assert_eq!(r.header("content-type"), Some("application/json; charset=utf-8"));
        assert_eq!(r.header("content-length"), Some(expected.len().to_string().as_str()));
        assert!(r.header("date").is_some_and(|d| d.ends_with(" GMT") && d.len() == 29), "{:?}", r.headers);
    }

    // A chunked request is hyper's, from there on: its reply is the same, the date aside, and the connection goes
    // on with hyper (a GET, then an envelope again).
    w.send(chunked("/", &body).as_bytes()).await;
    let by_hyper = w.reply().await;
    assert_eq!(shape(&by_hyper), shape(&first), "the same reply from hyper and from the fast path");
    w.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let health = w.reply().await;
    assert_eq!((health.status_line.as_str(), health.body.as_slice()), ("HTTP/1.1 200 OK", &b"ok"[..]));
    w.send(post("/", "", &body).as_bytes()).await;
    assert_eq!(w.reply().await.body, expected);

    // A request the fast path answers, pipelined with one it leaves to hyper: both answered, in order.
    let mut w = Wire::connect(&running.url).await;
    w.send(format!("{}{}{}", post("/", "", &body), chunked("/", &body), post("/", "", &body)).as_bytes())
        .await;
    for i in 0..3 {
        assert_eq!(w.reply().await.body, expected, "reply {i}");
    }

    // `Connection: close`: answered, then closed; `Connection: keep-alive` stays open.
    let mut w = Wire::connect(&running.url).await;
    w.send(post("/", "Connection: keep-alive\r\n", &body).as_bytes()).await;
    assert_eq!(w.reply().await.body, expected);
    w.send(post("/", "Connection: close\r\n", &body).as_bytes()).await;
    let last = w.reply().await;
    assert_eq!(last.body, expected);
    assert_eq!(last.header("connection"), Some("close"));
    assert!(w.closed().await, "closed after `Connection: close`");

    running.stop.take().unwrap().send(()).unwrap();
    running.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_left_to_hyper_are_answered_by_it() {
    let (_t, mut running, body, expected) = serving_an_auth().await;

    // `Expect: 100-continue`: hyper's interim reply, then the answer.
    let mut w = Wire::connect(&running.url).await;
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    w.send(head.as_bytes()).await;
    assert_eq!(w.reply().await.status_line, "HTTP/1.1 100 Continue");
    w.send(body.as_bytes()).await;
    assert_eq!(w.reply().await.body, expected);

    // Malformed heads and framing get hyper's 400, and nothing is answered as an envelope.
    for bad in [
        "POST / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\nContent-Length: 2\r\n\r\n{}".to_owned(),
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}".to_owned(),
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\n{}".to_owned(),
    ] {
        let mut w = Wire::connect(&running.url).await;
        w.send(bad.as_bytes()).await;
        let r = w.reply().await;
        assert!(r.status_line.starts_with("HTTP/1.1 400"), "{bad:?}: {}", r.status_line);
        assert!(w.closed().await, "{bad:?}: closed after the 400");
    }

    // A body over the limit is hyper's refusal: 413 with an envelope, and the connection closed.
    let mut w = Wire::connect(&running.url).await;
    w.send(post("/", "", &"x".repeat(200 * 1024)).as_bytes()).await;
    let r = w.reply().await;
    assert_eq!(r.status_line, "HTTP/1.1 413 Payload Too Large");
    assert_eq!(r.json()["returnCode"], 1020);

    // HTTP/1.0 and other methods: hyper's answers.
    let mut w = Wire::connect(&running.url).await;
    w.send(format!("POST / HTTP/1.0\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes()).await;
    assert_eq!(w.reply().await.body, expected);
    let mut w = Wire::connect(&running.url).await;
    w.send(b"GET /mina_auth HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let r = w.reply().await;
    assert!(r.status_line.starts_with("HTTP/1.1 405"), "{}", r.status_line);
    assert_eq!(r.json()["returnCode"], 1009);

    running.stop.take().unwrap().send(()).unwrap();
    running.task.await.unwrap().unwrap();
}

/// The caller's key is read from its headers in any case, and from the query, on the fast path as through hyper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_read_in_any_header_case() {
    let t = TestApp::with_settings(Backend::Sqlite, wafer_scf::handlers::Settings::default()).await;
    t.add_app("wx_wire", "s").await;
    add_key(&t.store, "wire", "wk_wire_secret", scope(&["wx_wire"], &[], false, &[])).await;
    let mut running = start(t.svc.clone()).await;
    let body = crate::helpers::envelope("qcloud.mimi.access_token", json!({"appid": "wx_wire"})).to_string();
    let mut w = Wire::connect(&running.url).await;
    let mut codes = Vec::new();
    for (path, headers) in [
        ("/", ""),
        ("/", "X-WAFER-KEY: wk_wire_secret\r\n"),
        ("/", "x-wafer-key: wk_wire_secret\r\n"),
        ("/", "AUTHORIZATION: Bearer wk_wire_secret\r\n"),
        ("/?key=wk_wire_secret", ""),
        ("/", "X-Wafer-Key: wk_wrong\r\n"),
    ] {
        w.send(post(path, headers, &body).as_bytes()).await;
        let r = w.reply().await;
        codes.push(r.json()["returnCode"].as_i64().unwrap());
        if codes.last() == Some(&0) {
            assert!(r.json()["returnData"]["access_token"].as_str().is_some_and(|t| !t.is_empty()));
        }
    }
    assert_eq!(codes[1..5], [0, 0, 0, 0], "{codes:?}");
    assert!(codes[0] != 0 && codes[5] != 0, "no key, or a wrong one, is refused: {codes:?}");
    running.stop.take().unwrap().send(()).unwrap();
    running.task.await.unwrap().unwrap();
}
