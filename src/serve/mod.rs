//! HTTP mode: the envelope answered on any path over `POST`, on a pre-bound listener, until a shutdown future
//! resolves. Used locally, on a VM, and as the SCF web-function server.

use crate::payload::Payload;
use crate::request::{ClientAddress, RequestMeta};
use crate::service::{Incoming, Input, Route, Service};

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;

mod body;
mod fast;
mod lanes;
mod reply;

use reply::{response, ReplyBody};

/// Serve until `shutdown` resolves; in-flight requests finish first. Each accepted connection is handed to one of
/// [`lanes::count`] lanes, which serves it from then on ([`lanes`]). Connections that take longer than the header
/// timeout to send a request's headers — or sit idle that long between requests — are closed, and beyond
/// `max_connections` new connections are closed as they arrive (see [`crate::service::HttpLimits`]).
pub async fn serve(
    listener: TcpListener,
    service: Arc<Service>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = service.options().http;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut lanes = lanes::Lanes::start(lanes::count(), &service, &stop_rx)?;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut refused = 0u64;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    refused,
                    max = limits.max_connections,
                    "connection limit reached; closing new connections"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        lanes.hand(stream, peer, slot);
    }
    let _ = stop_tx.send(true);
    lanes.finish().await;
    Ok(())
}

/// What HTTP mode does besides answering requests.
pub struct Chores {
    /// Delete expired sessions this often (`WAFER_PURGE_INTERVAL_SECS`; `None`: never).
    pub purge_every: Option<std::time::Duration>,
    /// The storage URL without credentials, for the readiness lines.
    pub storage: String,
}

/// HTTP mode: serve, purge expired sessions periodically, and say when storage is not ready (checking again every
/// few seconds, so a database that comes up later is picked up without a restart).
pub async fn run(
    listener: TcpListener,
    service: Arc<Service>,
    chores: Chores,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Some(every) = chores.purge_every {
        let svc = service.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                if let Err(e) = svc.purge_expired_sessions().await {
                    tracing::warn!(error = %e, "periodic session purge failed");
                }
            }
        });
    }
    tokio::spawn(watch_readiness(service.clone(), chores.storage));
    tokio::spawn(crate::telemetry::report_dropped_lines());
    serve(listener, service, shutdown).await
}

async fn watch_readiness(svc: Arc<Service>, storage: String) {
    use crate::service::Readiness;
    let mut said = None;
    loop {
        let r = svc.readiness().await;
        if said != Some(r) {
            match r {
                Readiness::Ready if said.is_some() => tracing::info!(storage = %storage, "storage is ready"),
                Readiness::Ready => {}
                Readiness::SchemaBehind(_) => tracing::error!(storage = %storage, "{}", r.reason()),
                Readiness::Unreachable(_) => {
                    tracing::error!(storage = %storage, "{} (at {storage}); retrying", r.reason())
                }
            }
            said = Some(r);
        }
        if r == Readiness::Ready {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
}

fn metrics_response(text: String) -> Response {
    let ct = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    (StatusCode::OK, [(header::CONTENT_TYPE, ct)], text).into_response()
}

/// A listener of its own for `GET /metrics` (`WAFER_METRICS_LISTEN`), apart from the one callers reach.
pub async fn serve_metrics(listener: TcpListener) -> std::io::Result<()> {
    let app = Router::new().fallback(|req: Request| async move {
        if req.uri().path() == "/metrics" {
            metrics_response(crate::metrics::text())
        } else {
            StatusCode::NOT_FOUND.into_response()
        }
    });
    axum::serve(listener, app).await
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; draining");
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(0);

/// The request headers the service reads, found in one pass over the request's headers rather than by a hashed
/// lookup per name. Each holds what a lookup by name gives: the first value, `None` when that is not visible ASCII.
#[derive(Default)]
struct Wanted<'h> {
    /// `x-request-id`, `x-scf-request-id`, `x-api-requestid`, in that order of preference.
    request_ids: [Option<Option<&'h str>>; 3],
    wafer_key: Option<Option<&'h str>>,
    authorization: Option<Option<&'h str>>,
    admin_token: Option<Option<&'h str>>,
    /// The last `x-forwarded-for` value (the one the nearest proxy wrote).
    forwarded_for: Option<&'h str>,
}

impl<'h> Wanted<'h> {
    fn find(headers: &'h HeaderMap) -> Self {
        Self::among(headers.iter().map(|(name, value)| (name.as_str(), value.as_bytes())))
    }

    /// From headers as (name, value) pairs, names in any case (a [`HeaderMap`]'s are lowercase already).
    fn among(headers: impl Iterator<Item = (&'h str, &'h [u8])>) -> Self {
        const NAMES: [&str; 7] = [
            "x-request-id",
            "x-scf-request-id",
            "x-api-requestid",
            "x-wafer-key",
            "authorization",
            "x-wafer-admin-token",
            "x-forwarded-for",
        ];
        let mut w = Self::default();
        for (name, value) in headers {
            let Some(i) = NAMES.iter().position(|n| n.len() == name.len() && n.eq_ignore_ascii_case(name))
            else {
                continue;
            };
            let value = visible(value);
            let slot = match i {
                0..=2 => &mut w.request_ids[i],
                3 => &mut w.wafer_key,
                4 => &mut w.authorization,
                5 => &mut w.admin_token,
                _ => {
                    w.forwarded_for = value;
                    continue;
                }
            };
            slot.get_or_insert(value);
        }
        w
    }

    fn header(&self, name: &str) -> Option<&'h str> {
        match name {
            "x-wafer-key" => self.wafer_key.flatten(),
            "authorization" => self.authorization.flatten(),
            "x-wafer-admin-token" => self.admin_token.flatten(),
            _ => None,
        }
    }

    /// The request's meta: its id, the client's address (the peer's, or the nearest proxy's word for it), and the
    /// credentials its headers or `query` carry.
    fn meta(&self, svc: &Service, peer: &Arc<str>, query: Option<&str>) -> RequestMeta {
        let source_ip = match svc.options().client_address {
            ClientAddress::Forwarded => crate::request::last_forwarded(self.forwarded_for),
            ClientAddress::Peer => None,
        };
        RequestMeta {
            request_id: self.request_id(),
            source_ip: Some(source_ip.map_or_else(|| peer.clone(), Arc::from)),
            ..RequestMeta::default()
        }
        .with_credentials(|name| self.header(name), crate::request::query_key(query))
    }

    fn request_id(&self) -> String {
        let given =
            self.request_ids.iter().filter_map(|v| v.flatten()).find_map(crate::request::safe_request_id);
        if let Some(id) = given {
            return id.to_owned();
        }
        // The process id is read once (getpid is a system call on every request otherwise).
        static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let prefix = PREFIX.get_or_init(|| format!("http-{}-", std::process::id()));
        // The sequence number written without `core::fmt` (which costs more than the rest of the id).
        let mut id = Vec::with_capacity(prefix.len() + 20);
        id.extend_from_slice(prefix.as_bytes());
        crate::telemetry::line::unsigned(&mut id, REQUEST_SEQ.fetch_add(1, Ordering::Relaxed));
        String::from_utf8(id).unwrap_or_default()
    }
}

/// A header value as text, as [`HeaderValue::to_str`] gives it: only when every byte is visible ASCII or a tab.
fn visible(value: &[u8]) -> Option<&str> {
    if value.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        std::str::from_utf8(value).ok()
    } else {
        None
    }
}

async fn handle(
    svc: &Service,
    peer: &Arc<str>,
    req: hyper::Request<hyper::body::Incoming>,
    busy: lanes::InHand,
) -> hyper::Response<ReplyBody> {
    let (parts, body) = req.into_parts();
    let route = svc.route(parts.method.as_str(), parts.uri.path(), parts.uri.query());
    let meta = Wanted::find(&parts.headers).meta(svc, peer, parts.uri.query());
    let body = match route {
        Route::Envelope | Route::Http => {
            let declared = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let stream_past = (route == Route::Http).then_some(svc.options().passthrough_body_limit);
            match body::read(body, svc, &meta, stream_past, declared).await {
                Ok(b) => b,
                Err(refused) => {
                    let reply = svc.refusal(route, parts.uri.path(), &refused.error, refused.status.as_u16());
                    return response(reply.with_headers(&[("connection", "close")]), busy);
                }
            }
        }
        // Health, readiness, metrics and wrong methods need no body.
        _ => Payload::default(),
    };
    if route == Route::Envelope {
        let reply = svc.envelope_reply(body.as_full().unwrap_or_default(), &meta).await;
        return response(reply, busy);
    }
    let request = Incoming {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: Input::Payload(body),
    };
    response(svc.respond(route, request, &meta, false).await, busy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_headers_are_what_a_lookup_by_name_gives() {
        let mut h = HeaderMap::new();
        h.append("x-api-requestid", HeaderValue::from_static("api-1"));
        h.append("x-scf-request-id", HeaderValue::from_static("scf-1"));
        h.append("X-Wafer-Key", HeaderValue::from_static("wk_first"));
        h.append("x-wafer-key", HeaderValue::from_static("wk_second"));
        h.append("authorization", HeaderValue::from_bytes(b"Bearer \xff").unwrap());
        h.append("authorization", HeaderValue::from_static("Bearer later"));
        let w = Wanted::find(&h);
        assert_eq!(w.request_id(), "scf-1", "x-scf-request-id is preferred to x-api-requestid");
        for name in ["x-wafer-key", "authorization", "x-wafer-admin-token"] {
            assert_eq!(w.header(name), h.get(name).and_then(|v| v.to_str().ok()), "{name}");
        }
        h.insert("x-request-id", HeaderValue::from_static("given-7"));
        assert_eq!(Wanted::find(&h).request_id(), "given-7");
        h.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.append("x-forwarded-for", HeaderValue::from_static("7.7.7.7, 203.0.113.7"));
        assert_eq!(Wanted::find(&h).forwarded_for, Some("7.7.7.7, 203.0.113.7"), "the last value");
        // Unsafe ids are replaced by a generated one.
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("bad id with spaces"));
        let (a, b) = (Wanted::find(&h).request_id(), Wanted::find(&h).request_id());
        let prefix = format!("http-{}-", std::process::id());
        let seq = |id: &str| id.strip_prefix(&prefix).unwrap().parse::<u64>().unwrap();
        assert!(seq(&b) > seq(&a), "{a} then {b}");
    }
}
