//! The SCF custom-runtime loop: `init/ready` once the service is built, then `next` → handle → `response`, forever.
//! "Poll forever" is kept apart from "handle one invocation" so tests run the loop for a fixed number of events.
//! A panic or a malformed event is answered, never fatal; a failing `next` is retried with backoff.

use super::event::{self, Body, Incoming, Origin, Parsed};
use super::wire::{self, Connection, Wait, WireError};
use crate::envelope::{Envelope, ReturnCode, WaferError};
use crate::service::{self, Input, Route, Service};
use crate::telemetry::line;
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

/// An instance logs its metrics as one JSON line every this many invocations.
pub const METRICS_EVERY: u64 = 100;

/// Time kept back from the function's limit to answer before SCF kills the instance.
const DEADLINE_MARGIN_MS: u64 = 100;

/// One invocation as delivered by `/runtime/invocation/next`.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    pub time_limit_ms: Option<u64>,
    pub memory_limit_mb: Option<u64>,
    pub event: Vec<u8>,
}

/// The runtime API client: one keep-alive connection ([`wire`]), one small request per endpoint. Calls take turns
/// (an instance handles one invocation at a time).
#[derive(Debug)]
pub struct RuntimeClient {
    conn: tokio::sync::Mutex<Connection>,
}

impl RuntimeClient {
    /// `base` is `http://host:port` (or `host:port`; the port defaults to 80); `wait` says how replies are waited
    /// for: [`Wait::Blocking`] for an instance, whose thread is its own.
    pub fn new(base: &str, wait: Wait) -> Result<Self, WireError> {
        let addr = base.trim_end_matches('/');
        let addr = addr.strip_prefix("http://").unwrap_or(addr);
        if addr.is_empty() || addr.contains('/') {
            return Err(WireError::Malformed("the runtime API address is http://host:port"));
        }
        let addr = if addr.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
            addr.to_owned()
        } else {
            format!("{addr}:80")
        };
        Ok(Self { conn: tokio::sync::Mutex::new(Connection::new(&addr, wait)) })
    }

    /// The runtime API from `SCF_RUNTIME_API` and `SCF_RUNTIME_API_PORT` (both optional to read).
    pub fn base_from_env() -> Option<String> {
        let host = std::env::var("SCF_RUNTIME_API").ok().filter(|h| !h.is_empty())?;
        if host.starts_with("http://") {
            return Some(host);
        }
        match std::env::var("SCF_RUNTIME_API_PORT").ok().filter(|p| !p.is_empty()) {
            Some(port) => Some(format!("http://{host}:{port}")),
            None => Some(format!("http://{host}")),
        }
    }

    async fn call(&self, method: &str, path: &str, body: &[u8]) -> Result<wire::Reply, WireError> {
        self.conn.lock().await.call(method, path, body).await
    }

    /// `POST /runtime/init/ready` with a non-empty body (an empty one is reported to be rejected).
    pub async fn ready(&self) -> Result<(), WireError> {
        self.call("POST", "/runtime/init/ready", b" ").await.map(drop)
    }

    /// `GET /runtime/invocation/next` (long poll).
    pub async fn next(&self) -> Result<Invocation, WireError> {
        let mut reply = self.call("GET", "/runtime/invocation/next", b"").await?;
        let request_id = reply.header("request_id").unwrap_or_default().to_owned();
        let time_limit_ms = reply.header("time_limit_in_ms").and_then(|v| v.parse().ok());
        let memory_limit_mb = reply.header("memory_limit_in_mb").and_then(|v| v.parse().ok());
        let event = std::mem::take(&mut reply.body);
        Ok(Invocation { request_id, time_limit_ms, memory_limit_mb, event })
    }

    /// `POST /runtime/invocation/response`.
    pub async fn respond(&self, body: Vec<u8>) -> Result<(), WireError> {
        self.call("POST", "/runtime/invocation/response", &body).await.map(drop)
    }

    /// `POST /runtime/invocation/error`.
    pub async fn error(&self, text: &str) -> Result<(), WireError> {
        self.call("POST", "/runtime/invocation/error", text.as_bytes()).await.map(drop)
    }
}

/// The largest reply sent to the runtime API: SCF refuses a synchronous response over 6 MB.
pub const RESPONSE_LIMIT: usize = 6_000_000;

/// Handle one invocation: unwrap the event, dispatch under the invocation's deadline, shape the reply. A reply
/// SCF would refuse (over [`RESPONSE_LIMIT`]) is replaced by `1027 REPLY_TOO_LARGE`.
pub async fn handle(svc: &Service, inv: &Invocation) -> Vec<u8> {
    let mut origin = Origin::Direct;
    let reply = answer(svc, inv, &mut origin).await;
    if reply.len() <= RESPONSE_LIMIT {
        return reply;
    }
    let error = WaferError::new(
        ReturnCode::ReplyTooLarge,
        format!(
            "the reply is {} bytes, over the {RESPONSE_LIMIT} an SCF function may return; \
             large WeChat replies stream only through the HTTP pass-through",
            reply.len()
        ),
    );
    tracing::warn!(request_id = %inv.request_id, return_code = error.code.code(), bytes = reply.len(), "reply too large for SCF");
    event::reply(&origin, 502, &Envelope::error(&error))
}

async fn answer(svc: &Service, inv: &Invocation, origin_out: &mut Origin) -> Vec<u8> {
    let Incoming { origin, method, path, query, content_type, body, meta } = match event::parse(
        &inv.event,
        &inv.request_id,
    ) {
        Parsed::Timer => {
            // A timer trigger is the SCF way to run housekeeping: purge expired sessions.
            let reply = match svc.purge_expired_sessions().await {
                Ok(n) => serde_json::json!({"purged": n}),
                Err(e) => serde_json::json!({"error": e.to_string()}),
            };
            return reply.to_string().into_bytes();
        }
        Parsed::Request(r) => {
            *origin_out = r.origin;
            *r
        }
        Parsed::Reject { origin, status, error } => {
            tracing::info!(request_id = %inv.request_id, return_code = error.code.code(), detail = %error.message, "event rejected");
            return event::reply(&origin, status, &Envelope::error(&error));
        }
    };
    // A direct invocation is an envelope whatever it says; a gateway event is routed like an HTTP request.
    let route = match origin {
        Origin::Direct => Route::Envelope,
        Origin::Gateway => svc.route(&method, &path, query.as_deref()),
    };
    // An envelope in a Function URL or gateway event: its answer is written straight into the reply's body string
    // (what the service's envelope reply gives, escaped).
    let budget = budget(inv.time_limit_ms);
    if let (Origin::Gateway, Route::Envelope, Body::Bytes(b)) = (origin, route, &body) {
        let work = svc.handle(b, &meta);
        let answer = match budget {
            Some(budget) => tokio::time::timeout(budget, work).await.ok(),
            None => Some(work.await),
        };
        return match answer {
            Some(envelope) => event::gateway_envelope(200, &envelope),
            None => shape(origin, svc.too_late(route, inv.time_limit_ms, &meta)),
        };
    }
    let body = match body {
        Body::Bytes(b) => Input::Payload(b.into()),
        Body::Json { value, len } => Input::Parsed { value, len },
    };
    let request = service::Incoming { method, path, query, content_type, body };
    let work = svc.respond(route, request, &meta, true);
    let reply = match budget {
        Some(budget) => tokio::time::timeout(budget, work).await.ok(),
        None => Some(work.await),
    };
    let reply = reply.unwrap_or_else(|| svc.too_late(route, inv.time_limit_ms, &meta));
    shape(origin, reply)
}

/// The time an invocation's work may take: the function's limit less [`DEADLINE_MARGIN_MS`] (at least 50 ms).
fn budget(limit_ms: Option<u64>) -> Option<Duration> {
    limit_ms.map(|limit| Duration::from_millis(limit.saturating_sub(DEADLINE_MARGIN_MS).max(50)))
}

/// The reply to an event of `origin`: the body as it is to a direct invocation, an integration response to a
/// gateway event.
fn shape(origin: Origin, reply: crate::request::HttpReply) -> Vec<u8> {
    // `inline` made every body whole.
    let body = reply.body.into_full().unwrap_or_default();
    match origin {
        Origin::Direct => body.into(),
        Origin::Gateway => event::gateway_reply_bytes(reply.status, &reply.content_type, &body),
    }
}

/// The metrics line: CLS gets the counters too, one JSON line every [`METRICS_EVERY`] invocations. Written by hand
/// where [`crate::telemetry::init`] set up the output (the same bytes as tracing's, at a tenth of the cost: the
/// counters are a few kilobytes, which tracing's formatter escapes through `core::fmt`).
fn log_metrics(served: u64) {
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    let metrics = crate::metrics::json().to_string();
    let (invocations, metrics) = (i64::try_from(served).unwrap_or(i64::MAX), metrics.as_str());
    let fields = [("invocations", line::Value::Int(invocations)), ("metrics", line::Value::Shown(metrics))];
    if !line::write(tracing::Level::INFO, "metrics", &fields) {
        tracing::info!(invocations = served, metrics = %metrics, "metrics");
    }
}

/// Backoff for a failing runtime API: 50 ms doubling to 2 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((50u64 << attempt.min(6)).min(2_000))
}

/// Signal readiness, then serve invocations: forever, or `limit` of them (tests).
pub async fn run(client: &RuntimeClient, svc: &Service, limit: Option<u64>) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        match client.ready().await {
            Ok(()) => break,
            Err(e) if attempt < 8 => {
                tracing::warn!(error = %e, "init/ready failed; retrying");
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(anyhow::anyhow!("the runtime API refused init/ready: {}", e)),
        }
    }
    tracing::info!("runtime ready");
    let mut served = 0u64;
    let mut failures = 0u32;
    while limit.is_none_or(|l| served < l) {
        let inv = match client.next().await {
            Ok(inv) => {
                failures = 0;
                inv
            }
            Err(e) => {
                tracing::warn!(error = %e, "invocation/next failed; retrying");
                tokio::time::sleep(backoff(failures)).await;
                failures = failures.saturating_add(1);
                continue;
            }
        };
        match AssertUnwindSafe(handle(svc, &inv)).catch_unwind().await {
            Ok(body) => {
                if let Err(e) = client.respond(body).await {
                    tracing::error!(request_id = %inv.request_id, error = %e, "could not post the response");
                }
            }
            Err(_) => {
                tracing::error!(request_id = %inv.request_id, "invocation panicked; answered with an error");
                let _ = client.error("internal error").await;
            }
        }
        served += 1;
        if served % METRICS_EVERY == 0 {
            log_metrics(served);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::telemetry::line::testing::{both_lines, stamp};
    use crate::telemetry::{line, LogFormat};

    /// The metrics line written by hand is the line tracing writes for it, in both formats (but for the time).
    #[test]
    fn the_metrics_line_is_the_subscribers_line() {
        crate::metrics::request("qcloud.cam.auth", 0, 0.002);
        let metrics = crate::metrics::json().to_string();
        assert!(metrics.contains("wafer_requests_total") && metrics.contains('"'), "{metrics}");
        for format in [LogFormat::Text, LogFormat::Json] {
            let served = 300u64;
            let fields = [("invocations", line::Value::Int(300)), ("metrics", line::Value::Shown(&metrics))];
            let emit = || tracing::info!(invocations = served, metrics = %metrics, "metrics");
            let (ours, theirs) = both_lines(format, emit, "metrics", &fields);
            let stamp = stamp(format);
            assert_eq!(ours[stamp.end..], theirs[stamp.end..], "{format:?}");
            assert_eq!(ours[..stamp.start], theirs[..stamp.start]);
        }
    }
}
