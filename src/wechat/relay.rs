//! The HTTP client of calls made on a caller's behalf ([`super::proxy`]): hyper's own, so that each connection's
//! reads can be held to [`RELAY_BUFFER`]. A reply streams through the server chunk by chunk, and each chunk is a
//! slice of that buffer, alive until the caller has taken it; reqwest's client (the one for tokens, tickets and
//! logins) grows its reads to ~400 KB and has no setting for it (32 concurrent downloads through it peaked at
//! 58–66 MiB). Its deadlines are reqwest's: connecting within the connect timeout, the reply's head within the upstream
//! deadline of the call's start, each chunk of the body within the upstream deadline of the last one.

use super::{UpstreamError, UpstreamTimeouts};
use crate::payload::{ChunkStream, RequestBody};
use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::Duration;
use tokio::time::Instant;

/// What one upstream connection of the pass-through reads at a time (hyper's `max_buf_size`). A read fills what
/// is free of its buffer's allocation, which grows by doubling: a chunk handed on is at most twice this. Measured
/// with 32 concurrent 10 MB downloads (`cargo bench --bench streaming`): 64 KiB peaked at ~22 MiB but cost ~35 %
/// more CPU per GB when the relay shared its cores (76–78 % of the bare relay's throughput); 256 KiB peaks at
/// 41–49 MiB with the throughput and CPU of unbounded reads (91–102 % of the bare relay, 0.59–0.69 s per GB).
pub const RELAY_BUFFER: usize = 256 * 1024;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The pass-through's keep-alive client (TLS verified against the Mozilla roots, as reqwest's).
#[derive(Clone)]
pub struct Relay {
    client: Client<Connector, RequestBody>,
    /// The upstream deadline: for the reply's head, then between two chunks of its body.
    read: Duration,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("read", &self.read).finish_non_exhaustive()
    }
}

impl Relay {
    pub fn new(t: UpstreamTimeouts) -> Result<Self, rustls::Error> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(t.connect));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(50))
            .http1_max_buf_size(RELAY_BUFFER)
            .build(https);
        Ok(Self { client, read: t.total })
    }

    /// Send `req`; its reply's head must come within the upstream deadline (and before `deadline`).
    pub async fn send(
        &self,
        req: hyper::Request<RequestBody>,
        deadline: Instant,
    ) -> Result<Reply, UpstreamError> {
        let within = (Instant::now() + self.read).min(deadline);
        match tokio::time::timeout_at(within, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Network("no reply within the upstream deadline".into())),
            Ok(Err(e)) if e.is_connect() => Err(UpstreamError::Unreachable(described(&e))),
            Ok(Err(e)) => Err(UpstreamError::Network(described(&e))),
            Ok(Ok(resp)) => Ok(Reply { resp, read: self.read, deadline }),
        }
    }
}

/// A reply whose head has arrived; its body is read chunk by chunk under the deadlines.
pub struct Reply {
    pub resp: hyper::Response<Incoming>,
    read: Duration,
    deadline: Instant,
}

impl Reply {
    /// The next chunk of the body (`None` at its end).
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        next_chunk(self.resp.body_mut(), self.read, self.deadline).await
    }

    /// The rest of the body as a stream.
    pub fn into_stream(self) -> ChunkStream {
        let (read, deadline) = (self.read, self.deadline);
        Box::pin(futures_util::stream::unfold(self.resp.into_body(), move |mut body| async move {
            match next_chunk(&mut body, read, deadline).await {
                Ok(Some(c)) => Some((Ok(c), body)),
                Ok(None) => None,
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), body)),
            }
        }))
    }
}

async fn next_chunk(
    body: &mut Incoming,
    read: Duration,
    deadline: Instant,
) -> Result<Option<Bytes>, UpstreamError> {
    loop {
        let within = (Instant::now() + read).min(deadline);
        match tokio::time::timeout_at(within, body.frame()).await {
            Err(_) => {
                return Err(UpstreamError::Network("the reply stalled past the upstream deadline".into()))
            }
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => return Err(UpstreamError::Network(described(&e))),
            // Trailers, and empty chunks, carry nothing to hand on.
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) if !data.is_empty() => return Ok(Some(data)),
                _ => {}
            },
        }
    }
}

/// An error and its causes, one line. hyper's errors name no URL (and so no token).
fn described(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-connection upstream: reads the request head, answers a body of `body_len` bytes of which it sends
    /// `send`, then stalls for `stall` before closing.
    async fn upstream(body_len: usize, send: usize, stall: Duration) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {body_len}\r\n\r\n");
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(&vec![7u8; send]).await.unwrap();
            tokio::time::sleep(stall).await;
        });
        format!("http://{addr}/cgi-bin/media/get")
    }

    fn get(url: &str) -> hyper::Request<RequestBody> {
        hyper::Request::get(url).body(crate::payload::whole_body(Bytes::new())).unwrap()
    }

    fn relay(read_ms: u64) -> Relay {
        let t = UpstreamTimeouts { connect: Duration::from_secs(2), total: Duration::from_millis(read_ms) };
        Relay::new(t).unwrap()
    }

    #[tokio::test]
    async fn a_large_reply_arrives_in_chunks_no_larger_than_the_buffer() {
        // 8 MB written at once: a read asks for at most the buffer's size, into what is free of the buffer's
        // allocation (which may have doubled: up to twice it).
        let len = 8 << 20;
        let url = upstream(len, len, Duration::ZERO).await;
        let far = Instant::now() + Duration::from_secs(30);
        let mut reply = relay(5_000).send(get(&url), far).await.unwrap();
        let (mut total, mut largest) = (0, 0);
        while let Some(c) = reply.chunk().await.unwrap() {
            total += c.len();
            largest = largest.max(c.len());
        }
        assert_eq!(total, len);
        assert!(largest <= 2 * RELAY_BUFFER, "a chunk of {largest} bytes");
        assert!(largest >= 8 * 1024, "chunks of {largest} bytes at most: the reads did not grow at all");
    }

    #[tokio::test]
    async fn a_reply_that_stalls_fails_at_the_read_deadline() {
        let url = upstream(1 << 20, 1000, Duration::from_secs(30)).await;
        let far = Instant::now() + Duration::from_secs(30);
        // 2 s: the head too must come within it, on a loaded machine as well.
        let reply = relay(2_000).send(get(&url), far).await.unwrap();
        let started = std::time::Instant::now();
        let mut stream = reply.into_stream();
        let mut outcome = Ok(());
        while let Some(c) = futures_util::StreamExt::next(&mut stream).await {
            if let Err(e) = c {
                outcome = Err(e.to_string());
                break;
            }
        }
        let waited = started.elapsed();
        assert!(outcome.unwrap_err().contains("stalled"));
        assert!(waited >= Duration::from_millis(1_900) && waited < Duration::from_secs(15), "{waited:?}");
    }

    #[tokio::test]
    async fn the_call_deadline_ends_a_transfer_before_the_read_deadline() {
        // The transfer limit (here 2 s from the start) ends a body still arriving, whatever the read deadline.
        let started = std::time::Instant::now();
        let url = upstream(1 << 20, 1000, Duration::from_secs(30)).await;
        let mut reply = relay(60_000).send(get(&url), Instant::now() + Duration::from_secs(2)).await.unwrap();
        assert!(reply.chunk().await.unwrap().is_some());
        assert!(reply.chunk().await.is_err());
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(1_900) && waited < Duration::from_secs(20), "{waited:?}");
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_reported_so_without_its_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/cgi-bin/x?access_token=SECRET");
        let far = Instant::now() + Duration::from_secs(30);
        match relay(2_000).send(get(&url), far).await {
            Err(UpstreamError::Unreachable(m)) => {
                assert!(!m.contains("SECRET") && !m.contains("/cgi-bin"), "{m}")
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[tokio::test]
    async fn an_upstream_whose_certificate_is_not_trusted_is_refused() {
        // A TLS server (openssl's) with a self-signed certificate for 127.0.0.1: the handshake happens, and the
        // certificate is refused as from an unknown issuer (checked against the Mozilla roots, never taken as
        // presented).
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let (key, cert) = (key.to_str().unwrap(), cert.to_str().unwrap());
        let minted = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
            ])
            .args(["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .output()
            .expect("openssl is needed");
        assert!(minted.status.success(), "{}", String::from_utf8_lossy(&minted.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept", &port.to_string(), "-cert", cert, "-key", key])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let listening = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < listening, "openssl s_server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let far = Instant::now() + Duration::from_secs(30);
        let outcome = relay(10_000).send(get(&format!("https://127.0.0.1:{port}/cgi-bin/x")), far).await;
        let _ = server.kill();
        let _ = server.wait();
        match outcome {
            Err(UpstreamError::Unreachable(m)) => assert!(m.contains("UnknownIssuer"), "{m}"),
            other => panic!("{:?}", other.map(|r| r.resp.status())),
        }
    }
}
