//! Reading a request's body in HTTP mode: whole within `WAFER_BODY_LIMIT` and the body timeout; for the
//! pass-through, a larger body becomes a stream handed on as it arrives (`WAFER_PASSTHROUGH_BODY_LIMIT`), each
//! chunk within the body timeout.

use crate::envelope::{ReturnCode, WaferError};
use crate::payload::{ChunkStream, Payload};
use crate::request::RequestMeta;
use crate::service::Service;
use axum::http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};

/// A body refused before it was read whole: the error, and the status an envelope answer carries (the caller's
/// interface decides the answer's dialect). The connection is closed after it: the rest may still be in flight.
pub(super) struct Refused {
    pub error: WaferError,
    pub status: StatusCode,
}

/// Read a request body within the body timeout and the body limit; the answer to send otherwise. With
/// `stream_past`, a body larger than the limit (`declared` by its Content-Length or found so as it arrives) is
/// returned as a stream of at most `stream_past` bytes instead.
pub(super) async fn read(
    mut body: Incoming,
    svc: &Service,
    meta: &RequestMeta,
    stream_past: Option<u64>,
    declared: Option<u64>,
) -> Result<Payload, Refused> {
    if let (Some(limit), Some(len)) = (stream_past, declared) {
        if len > limit {
            return Err(too_large_or_broken(
                StatusCode::PAYLOAD_TOO_LARGE,
                meta,
                limit as usize,
                "request refused: body too large",
            ));
        }
    }
    // A body that arrives in one piece (nearly every one: it comes with the headers) is kept as it is, not copied.
    let mut first: Option<Bytes> = None;
    // Only when a second piece arrives: sized once for the body its Content-Length declares instead of grown as it
    // arrives — up to 16 KB: a length declared is not a body sent, and many slow connections must not each hold the
    // body limit's worth.
    let mut bytes = Vec::new();
    // Set when the body first keeps the reader waiting (a body that came with its headers needs no clock).
    let mut body_deadline = None;
    loop {
        // A body that has already arrived (nearly every one: it comes with the headers) is taken without a timer.
        let next = match futures_util::future::poll_immediate(next(&mut body)).await {
            Some(next) => Ok(next),
            None => {
                let deadline = *body_deadline
                    .get_or_insert_with(|| tokio::time::Instant::now() + svc.options().http.body_timeout);
                tokio::time::timeout_at(deadline, next(&mut body)).await
            }
        };
        let chunk = match next {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ok(first.map_or_else(|| bytes.into(), Payload::from)),
            Err(_) => {
                let error =
                    WaferError::new(ReturnCode::RequestErr, "the request body did not arrive in time");
                tracing::info!(request_id = %meta.request_id, return_code = error.code.code(), "request refused: body too slow");
                return Err(Refused { error, status: StatusCode::REQUEST_TIMEOUT });
            }
        };
        let Ok(chunk) = chunk else {
            // The client went away mid-body: nobody is left to answer.
            return Err(too_large_or_broken(
                StatusCode::BAD_REQUEST,
                meta,
                svc.options().body_limit,
                "request body unreadable",
            ));
        };
        if first.is_none() && bytes.is_empty() && chunk.len() <= svc.options().body_limit {
            first = Some(chunk);
            continue;
        }
        if let Some(f) = first.take() {
            bytes.reserve(declared.map_or(0, |n| n.min(PRESIZE_LIMIT) as usize).max(f.len() + chunk.len()));
            bytes.extend_from_slice(&f);
        }
        if bytes.len() + chunk.len() > svc.options().body_limit {
            if let Some(limit) = stream_past.filter(|l| (bytes.len() + chunk.len()) as u64 <= *l) {
                bytes.extend_from_slice(&chunk);
                let rest = limit - bytes.len() as u64;
                let rest = crate::payload::limited(incoming(body, svc.options().http.body_timeout), rest);
                return Ok(Payload::stream(bytes, rest, declared));
            }
            // Read (and drop) the rest so the client can finish sending and read the answer, then close.
            drain(body).await;
            return Err(too_large_or_broken(
                StatusCode::PAYLOAD_TOO_LARGE,
                meta,
                stream_past.map_or(svc.options().body_limit, |l| l as usize),
                "request refused: body too large",
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
}

/// The body's next piece of data (`None` at its end; trailers, which an HTTP/1 request body seldom has, are passed
/// over).
async fn next(body: &mut Incoming) -> Option<Result<Bytes, hyper::Error>> {
    loop {
        match body.frame().await? {
            Ok(frame) => match frame.into_data() {
                Ok(data) => return Some(Ok(data)),
                Err(_trailers) => continue,
            },
            Err(e) => return Some(Err(e)),
        }
    }
}

/// Most memory set aside for a body before it has arrived.
const PRESIZE_LIMIT: u64 = 16 * 1024;

/// Largest oversized body read and dropped before the 413 is sent, and how long that may take.
pub(super) const DRAIN_LIMIT: usize = 8 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

pub(super) async fn drain(mut body: Incoming) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut seen = 0usize;
        while let Some(Ok(chunk)) = next(&mut body).await {
            seen += chunk.len();
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
}

/// The refusal of a body that was too large (or broken).
pub(super) fn too_large_or_broken(
    status: StatusCode,
    meta: &RequestMeta,
    limit: usize,
    what: &str,
) -> Refused {
    let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
        crate::service::body_too_large(limit as u64)
    } else {
        WaferError::new(ReturnCode::RequestErr, "the request body could not be read")
    };
    tracing::info!(request_id = %meta.request_id, return_code = error.code.code(), "{what}");
    Refused { error, status }
}

/// The rest of a request body as it arrives, each chunk within `idle` of the one before.
fn incoming(body: Incoming, idle: std::time::Duration) -> ChunkStream {
    Box::pin(futures_util::stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        match tokio::time::timeout(idle, next(&mut body)).await {
            Ok(Some(Ok(c))) => Some((Ok(c), Some(body))),
            Ok(None) => None,
            Ok(Some(Err(e))) => Some((Err(std::io::Error::other(e.to_string())), None)),
            Err(_) => Some((Err(std::io::Error::other("the request body stopped arriving")), None)),
        }
    }))
}
