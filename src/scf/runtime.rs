//! The SCF custom-runtime loop: `init/ready` once the service is built, then `next` → handle → `response`, forever.
//! "Poll forever" is kept apart from "handle one invocation" so tests run the loop for a fixed number of events.
//! A panic or a malformed event is answered, never fatal; a failing `next` is retried with backoff.

use super::event::{self, Body, Incoming, Origin, Parsed};
use crate::envelope::{Envelope, ReturnCode, WaferError};
use crate::service::{self, Input, Route, Service};
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

/// The runtime API client: one keep-alive connection, one small request per endpoint.
#[derive(Debug, Clone)]
pub struct RuntimeClient {
    http: reqwest::Client,
    base: String,
}

impl RuntimeClient {
    /// `base` is `http://host:port`.
    pub fn new(base: &str) -> Result<Self, reqwest::Error> {
        // No overall timeout: `next` is a long poll. Connects still fail fast.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { http, base: base.trim_end_matches('/').to_owned() })
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

    /// `POST /runtime/init/ready` with a non-empty body (an empty one is reported to be rejected).
    pub async fn ready(&self) -> Result<(), reqwest::Error> {
        self.http
            .post(format!("{}/runtime/init/ready", self.base))
            .body(" ")
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// `GET /runtime/invocation/next` (long poll).
    pub async fn next(&self) -> Result<Invocation, reqwest::Error> {
        let resp = self
            .http
            .get(format!("{}/runtime/invocation/next", self.base))
            .send()
            .await?
            .error_for_status()?;
        // Header names are matched case-insensitively by the HTTP library.
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let request_id = header("request_id").unwrap_or_default();
        let time_limit_ms = header("time_limit_in_ms").and_then(|v| v.trim().parse().ok());
        let memory_limit_mb = header("memory_limit_in_mb").and_then(|v| v.trim().parse().ok());
        let event = resp.bytes().await?.to_vec();
        Ok(Invocation { request_id, time_limit_ms, memory_limit_mb, event })
    }

    /// `POST /runtime/invocation/response`.
    pub async fn respond(&self, body: Vec<u8>) -> Result<(), reqwest::Error> {
        self.http
            .post(format!("{}/runtime/invocation/response", self.base))
            .body(body)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// `POST /runtime/invocation/error`.
    pub async fn error(&self, text: &str) -> Result<(), reqwest::Error> {
        self.http
            .post(format!("{}/runtime/invocation/error", self.base))
            .body(text.to_owned())
            .send()
            .await?
            .error_for_status()?;
        Ok(())
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
    let body = match body {
        Body::Bytes(b) => Input::Payload(b.into()),
        Body::Json { value, len } => Input::Parsed { value, len },
    };
    let request = service::Incoming { method, path, query, content_type, body };
    let work = svc.respond(route, request, &meta, true);
    let reply = match inv.time_limit_ms {
        Some(limit) => {
            let budget = Duration::from_millis(limit.saturating_sub(DEADLINE_MARGIN_MS).max(50));
            match tokio::time::timeout(budget, work).await {
                Ok(r) => r,
                Err(_) => svc.too_late(route, Some(limit), &meta),
            }
        }
        None => work.await,
    };
    // `inline` made every body whole.
    let body = reply.body.into_full().unwrap_or_default();
    match origin {
        Origin::Direct => body,
        Origin::Gateway => event::gateway_reply_bytes(reply.status, &reply.content_type, body),
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
                tracing::warn!(error = %e.without_url(), "init/ready failed; retrying");
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(anyhow::anyhow!("the runtime API refused init/ready: {}", e.without_url())),
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
                tracing::warn!(error = %e.without_url(), "invocation/next failed; retrying");
                tokio::time::sleep(backoff(failures)).await;
                failures = failures.saturating_add(1);
                continue;
            }
        };
        match AssertUnwindSafe(handle(svc, &inv)).catch_unwind().await {
            Ok(body) => {
                if let Err(e) = client.respond(body).await {
                    tracing::error!(request_id = %inv.request_id, error = %e.without_url(), "could not post the response");
                }
            }
            Err(_) => {
                tracing::error!(request_id = %inv.request_id, "invocation panicked; answered with an error");
                let _ = client.error("internal error").await;
            }
        }
        served += 1;
        if served % METRICS_EVERY == 0 {
            // CLS gets the counters too: one JSON line every so many invocations.
            tracing::info!(invocations = served, metrics = %crate::metrics::json(), "metrics");
        }
    }
    Ok(())
}
