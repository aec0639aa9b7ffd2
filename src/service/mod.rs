//! The transport-independent entry point: raw body + request metadata in, envelope out. HTTP mode and the SCF
//! runtime both call [`Service::handle`], so they give byte-identical envelopes. Panics are caught here and
//! answered; one structured log line is written per request.

use crate::auth::Gate;
use crate::envelope::{self, Envelope, Para, ReturnCode, WaferError};
use crate::handlers::{Deps, Interface, Reply};
use crate::request::{HttpCall, HttpReply, RequestMeta};

mod line;
mod routes;

use futures_util::FutureExt;
use line::RequestLine;
pub use routes::{body_too_large, Incoming, Input, Readiness, Route};
use serde_json::Value;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

pub use crate::settings::{HttpLimits, ServeOptions, DEFAULT_BODY_LIMIT, DEFAULT_PASSTHROUGH_BODY_LIMIT};

/// The service: handler dependencies, the caller gate, and transport-independent limits.
pub struct Service {
    pub deps: Deps,
    gate: Gate,
    options: ServeOptions,
}

impl Service {
    /// The service over `deps`, with what its transports need (`options`). Built by
    /// [`crate::startup::ServiceBuilder`].
    pub fn new(deps: Deps, options: ServeOptions) -> Self {
        let gate = Gate::new(
            deps.settings.caller_auth,
            deps.settings.admin_token.as_ref().map(secrecy::ExposeSecret::expose_secret),
            deps.store.keys.clone(),
            deps.clock.clone(),
        );
        Self { deps, gate, options }
    }

    /// What the transports read: body limits, the metrics route, HTTP mode's limits.
    pub fn options(&self) -> &ServeOptions {
        &self.options
    }

    /// Handle one request body. Never panics, never fails: every outcome is an envelope.
    pub async fn handle(&self, body: &[u8], meta: &RequestMeta) -> Envelope {
        self.answer(Raw::Bytes(body), meta).await
    }

    /// Handle a request that arrived already parsed (an SCF event's envelope), `len` bytes long as it arrived:
    /// checked and answered exactly as its bytes would be, without reading it a second time.
    pub async fn handle_value(&self, value: Value, len: usize, meta: &RequestMeta) -> Envelope {
        self.answer(Raw::Value(value, len), meta).await
    }

    async fn answer(&self, input: Raw<'_>, meta: &RequestMeta) -> Envelope {
        let started = Instant::now();
        let Dispatched { interface, appid, caller, result } =
            AssertUnwindSafe(self.dispatch(input, meta)).catch_unwind().await.unwrap_or_else(|_| {
                Dispatched { interface: "-", appid: String::new(), caller: None, result: Err(panicked()) }
            });
        let (envelope, failure) = match result {
            Ok((message, data)) => (Envelope::ok(message, data), None),
            Err(e) => (Envelope::error(&e), Some(e)),
        };
        let latency_us = started.elapsed().as_micros() as u64;
        crate::metrics::request(interface, envelope.return_code, latency_us as f64 / 1e6);
        let detail = failure.as_ref().map(|e| e.detail.as_deref().unwrap_or(""));
        let line = RequestLine {
            request_id: &meta.request_id,
            interface,
            appid: &appid,
            return_code: envelope.return_code,
            latency_us,
            caller: caller.as_ref().map_or("", crate::auth::Caller::name),
            detail,
        };
        match &failure {
            Some(e)
                if matches!(
                    e.code,
                    ReturnCode::DbErr | ReturnCode::ChangeSessionErr | ReturnCode::InternalErr
                ) =>
            {
                line.error()
            }
            _ => line.info(),
        }
        envelope
    }

    /// What a transport does with a request: [`Route::of`], unless a plain-HTTP interface claims it.
    pub fn route(&self, method: &str, path: &str, query: Option<&str>) -> Route {
        if crate::handlers::http::claims(path, query, self.deps.settings.token_host) {
            Route::Http
        } else {
            Route::of(method, path)
        }
    }

    /// Answer a plain-HTTP request. Never panics: every outcome is a reply; one log line per request. A transport
    /// that cannot stream a reply (an SCF event's) asks for it `inline`: collected up to
    /// [`INLINE_LIMIT`](crate::payload::INLINE_LIMIT), else `1027 REPLY_TOO_LARGE`.
    pub async fn handle_http(&self, call: HttpCall, meta: &RequestMeta, inline: bool) -> HttpReply {
        use crate::handlers::http::{self, HttpInterface};
        let started = Instant::now();
        let mut name = "http";
        let result = AssertUnwindSafe(async {
            // Bodies that arrived whole (an SCF event's) are held to the plain-HTTP interfaces' own limit, as
            // streamed ones are.
            let limit = self.options.passthrough_body_limit;
            if call.body.as_full().is_some_and(|b| b.len() as u64 > limit) {
                return Err(body_too_large(limit));
            }
            let parsed = http::parse(&call, meta)?;
            name = parsed.name();
            let reply = match parsed {
                HttpInterface::Pass(p) => http::pass(&self.deps, &self.gate, &p, &call, meta).await,
                HttpInterface::Host(h) => crate::handlers::token_host::handle(&self.deps, h, &call).await,
            }?;
            if inline && !reply.body.resendable() {
                let body =
                    crate::handlers::proxy::inline(reply.body, crate::wechat::Upstream::WeChat).await?;
                return Ok(HttpReply { body: body.into(), ..reply });
            }
            Ok(reply)
        })
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(panicked()));
        let latency_us = started.elapsed().as_micros() as u64;
        let reply = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(request_id = %meta.request_id, interface = %name, return_code = e.code.code(), latency_us,
                    detail = e.detail.as_deref().unwrap_or(""), "request");
                crate::metrics::request(name, e.code.code(), latency_us as f64 / 1e6);
                return http::refusal(&call.path, &e, e.code.http_status());
            }
        };
        crate::metrics::request(name, 0, latency_us as f64 / 1e6);
        tracing::info!(request_id = %meta.request_id, interface = %name, status = reply.status, latency_us, "request");
        reply
    }

    /// `GET /metrics` on the main listener (`WAFER_METRICS=1`): the Prometheus text for a caller presenting the
    /// admin token (`Authorization: Bearer …` or `X-Wafer-Admin-Token`), else the refusal (HTTP 401).
    /// `WAFER_METRICS_LISTEN` serves the text without a token, on an address callers do not reach.
    pub fn metrics(&self, meta: &RequestMeta) -> Result<String, WaferError> {
        self.gate.authorize_metrics(meta).map(|()| crate::metrics::text())
    }

    /// Whether storage is reachable and its schema current (`GET /readyz`, start-up checks).
    pub async fn readiness(&self) -> Readiness {
        match self.deps.store.schema.schema_status().await {
            Ok(s) if s.is_current() => Readiness::Ready,
            Ok(s) => Readiness::SchemaBehind(s),
            Err(e) => {
                tracing::debug!(error = %e, "readiness: storage unreachable");
                Readiness::Unreachable(e.cause)
            }
        }
    }

    /// `GET /readyz` as a status and a JSON body.
    pub async fn readiness_reply(&self) -> (u16, String) {
        let r = self.readiness().await;
        let ready = r == Readiness::Ready;
        (if ready { 200 } else { 503 }, serde_json::json!({"ready": ready, "reason": r.reason()}).to_string())
    }

    /// Delete every session that has expired under its app's rules (timer events, the HTTP mode's periodic purge).
    pub async fn purge_expired_sessions(&self) -> Result<u64, WaferError> {
        let n = self
            .deps
            .store
            .sessions
            .purge_expired_sessions(self.deps.clock.now())
            .await
            .map_err(WaferError::db)?;
        tracing::info!(purged = n, "expired sessions purged");
        Ok(n)
    }

    async fn dispatch(&self, input: Raw<'_>, meta: &RequestMeta) -> Dispatched {
        let fail =
            |interface, appid, error| Dispatched { interface, appid, caller: None, result: Err(error) };
        let len = match &input {
            Raw::Bytes(b) => b.len(),
            Raw::Value(_, len) => *len,
        };
        if len > self.options.body_limit {
            return fail("-", String::new(), body_too_large(self.options.body_limit as u64));
        }
        let parsed = match input {
            Raw::Bytes(b) => envelope::parse_request(b),
            Raw::Value(v, _) => envelope::parse_value(v),
        };
        let req = match parsed {
            Ok(r) => r,
            Err(e) => return fail("-", String::new(), e),
        };
        // Logged before validation: escaped so that no caller-supplied byte can forge a log line.
        let appid = match req.para.get("appid").or_else(|| req.para.get("corpid")) {
            Some(Value::String(a)) => crate::request::log_safe(a, 64),
            _ => String::new(),
        };
        let parsed = match Interface::parse(&req.interface_name, Para(&req.para)) {
            Ok(p) => p,
            Err(e) => return fail(Interface::known_name(&req.interface_name).unwrap_or("-"), appid, e),
        };
        let interface = parsed.name();
        // A direct invocation has no headers: its caller key may come in `para.caller_key`.
        let para_key = req.para.get("caller_key").and_then(Value::as_str).filter(|_| meta.direct);
        let keyed;
        let meta = match para_key {
            Some(k) if meta.caller_key.is_none() => {
                keyed = RequestMeta { caller_key: Some(k.to_owned()), ..meta.clone() };
                &keyed
            }
            _ => meta,
        };
        let grant = match self.gate.authorize(parsed.access(), meta).await {
            Ok(g) => g,
            Err(e) => return fail(interface, appid, e),
        };
        let result = AssertUnwindSafe(parsed.handle(&self.deps, meta, grant.session_scope.as_ref()))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(panicked()));
        // A request that named no app (a session named by id) is logged with the app its handler found.
        let appid = match (&result, appid.is_empty()) {
            (Ok(Reply { app: Some(a), .. }), true) => crate::request::log_safe(a, 64),
            _ => appid,
        };
        Dispatched { interface, appid, caller: grant.caller, result: result.map(|r| (r.message, r.data)) }
    }
}

/// A request body as it reached the envelope dispatcher.
enum Raw<'a> {
    Bytes(&'a [u8]),
    /// Already parsed, and how many bytes it came in.
    Value(Value, usize),
}

fn panicked() -> WaferError {
    WaferError::new(ReturnCode::InternalErr, "internal error").with_detail("handler panicked")
}

/// What one request came to: its envelope's content and its log line's fields, returned whole.
struct Dispatched {
    /// The canonical interface name (`-` until known).
    interface: &'static str,
    /// The app the request names (escaped for the log), or else the one its reply names.
    appid: String,
    /// The verified caller (its key's name is logged).
    caller: Option<crate::auth::Caller>,
    result: Result<(&'static str, crate::envelope::Data), WaferError>,
}
