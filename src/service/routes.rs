//! Every route a transport can be asked for, answered here in no transport's form ([`HttpReply`]): health,
//! readiness, metrics and wrong methods, envelopes, and the plain-HTTP interfaces. HTTP mode and the SCF runtime
//! only read a body the way the route needs and translate the reply into their bytes.

use super::Service;
use crate::envelope::{Envelope, ReturnCode, WaferError};
use crate::payload::Payload;
use crate::request::{HttpCall, HttpReply, RequestMeta, JSON};
use serde_json::Value;

/// What a transport does with a request, from its method and path alone (the same in HTTP mode and for gateway
/// events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET …/healthz` (or `/health`): the process is alive.
    Health,
    /// `GET …/readyz`: storage reachable and schema current.
    Ready,
    /// `GET …/metrics`: Prometheus text, where enabled (`WAFER_METRICS=1`).
    Metrics,
    /// `POST` on any path: a Wafer envelope.
    Envelope,
    /// A plain-HTTP interface (the `/wechat/…` pass-through, the token host): hand over an
    /// [`HttpCall`](crate::request::HttpCall) to [`Service::handle_http`].
    Http,
    /// Anything else: 405 with an envelope naming the fix.
    WrongMethod,
}

impl Route {
    pub fn of(method: &str, path: &str) -> Self {
        if method.eq_ignore_ascii_case("POST") {
            return Self::Envelope;
        }
        if method.eq_ignore_ascii_case("GET") {
            match path.trim_end_matches('/').rsplit('/').next() {
                Some("healthz" | "health") => return Self::Health,
                Some("readyz") => return Self::Ready,
                Some("metrics") => return Self::Metrics,
                _ => {}
            }
        }
        Self::WrongMethod
    }

    /// The error answered with HTTP 405.
    pub fn wrong_method() -> WaferError {
        WaferError::new(ReturnCode::RequestErr, "use HTTP POST with a JSON body")
    }
}

/// What `GET /readyz` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Storage answered, but its schema is older than this build needs.
    SchemaBehind(crate::store::SchemaStatus),
    /// Storage did not answer in time, refused the connection or the credentials, or has no such database.
    Unreachable(crate::store::Cause),
}

impl Readiness {
    /// One line an operator can act on (no URL, no credentials).
    pub fn reason(&self) -> String {
        match self {
            Self::Ready => "storage reachable, schema current".into(),
            Self::SchemaBehind(s) => {
                format!("schema is behind (version {} of {}): run `wafer-scf migrate`", s.current, s.latest)
            }
            Self::Unreachable(cause) => format!("storage unreachable: {}", cause.describe()),
        }
    }
}

/// A request as a transport hands it over, its body read the way its [`Route`] needs.
pub struct Incoming {
    pub method: String,
    pub path: String,
    /// The raw query string (without `?`), if any.
    pub query: Option<String>,
    pub content_type: Option<String>,
    pub body: Input,
}

/// A request body: whole or streaming in, or JSON the transport already holds parsed (an SCF event's envelope)
/// with its size in bytes as it arrived.
pub enum Input {
    Payload(Payload),
    Parsed { value: Value, len: usize },
}

impl Input {
    fn into_payload(self) -> Payload {
        match self {
            Self::Payload(p) => p,
            Self::Parsed { value, .. } => value.to_string().into_bytes().into(),
        }
    }
}

/// The Prometheus text format.
const METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The refusal of a body larger than `limit` bytes (1020; HTTP 413 where the answer is plain HTTP).
pub fn body_too_large(limit: u64) -> WaferError {
    WaferError::new(ReturnCode::RequestTooLarge, format!("request body is larger than {limit} bytes"))
}

impl Service {
    /// Answer a request on `route` (from [`Service::route`]). Never panics, never fails: every outcome is a reply;
    /// one log line per request. `inline`: the transport cannot stream a reply (an SCF event's): a plain-HTTP reply
    /// is collected up to [`INLINE_LIMIT`](crate::payload::INLINE_LIMIT), else `1027 REPLY_TOO_LARGE`.
    pub async fn respond(&self, route: Route, req: Incoming, meta: &RequestMeta, inline: bool) -> HttpReply {
        match route {
            Route::Envelope => match req.body {
                Input::Payload(p) => self.envelope_reply(p.as_full().unwrap_or_default(), meta).await,
                Input::Parsed { value, len } => {
                    HttpReply::envelope(200, &self.handle_value(value, len, meta).await)
                }
            },
            Route::Http => {
                let Incoming { method, path, query, content_type, body } = req;
                let call = HttpCall { method, path, query, content_type, body: body.into_payload() };
                // Boxed: the pass-through's future is twice the envelope's, and this one is moved whole per request.
                Box::pin(self.handle_http(call, meta, inline)).await
            }
            Route::Health => HttpReply::new(200, "text/plain; charset=utf-8", b"ok".to_vec()),
            Route::Ready => {
                let (status, body) = self.readiness_reply().await;
                HttpReply::new(status, JSON, body.into_bytes())
            }
            Route::Metrics if self.options.metrics_route => match self.metrics(meta) {
                Ok(text) => HttpReply::new(200, METRICS, text.into_bytes()),
                Err(e) => HttpReply::envelope(401, &Envelope::error(&e))
                    .with_headers(&[("www-authenticate", "Bearer realm=\"metrics\"")]),
            },
            Route::Metrics | Route::WrongMethod => {
                let e = Route::wrong_method();
                tracing::info!(request_id = %meta.request_id, method = %crate::request::log_safe(&req.method, 16),
                    path = %crate::request::log_safe(&req.path, 128), return_code = e.code.code(),
                    "request refused: method not allowed");
                HttpReply::envelope(405, &Envelope::error(&e)).with_headers(&[("allow", "POST")])
            }
        }
    }

    /// [`Route::Envelope`]'s answer to a body read whole: what [`Service::respond`] gives, for a transport that
    /// has nothing else of the request to hand over (HTTP mode's hot path: no method, path or header copied).
    pub async fn envelope_reply(&self, body: &[u8], meta: &RequestMeta) -> HttpReply {
        HttpReply::envelope(200, &self.handle(body, meta).await)
    }

    /// The answer to a request refused before its body was read (too large, too slow, broken): an envelope with
    /// `status`, or on the token host's paths WeChat's dialect (what the SDKs there parse).
    pub fn refusal(&self, route: Route, path: &str, e: &WaferError, status: u16) -> HttpReply {
        match route {
            Route::Http => crate::handlers::http::refusal(path, e, status),
            _ => HttpReply::envelope(status, &Envelope::error(e)),
        }
    }

    /// The answer when a request on `route` did not finish within the function's time limit (`limit_ms`): an
    /// envelope (HTTP 200 where envelopes are answered, 504 on the plain-HTTP interfaces).
    pub fn too_late(&self, route: Route, limit_ms: Option<u64>, meta: &RequestMeta) -> HttpReply {
        tracing::error!(request_id = %meta.request_id, limit_ms = limit_ms.unwrap_or(0), "invocation deadline reached");
        let e = WaferError::new(
            ReturnCode::InternalErr,
            "the request did not finish within the function's time limit",
        );
        HttpReply::envelope(if route == Route::Http { 504 } else { 200 }, &Envelope::error(&e))
    }
}
