//! HTTP mode's replies as hyper takes them: the status, the headers, and the body whole or streamed — a body type of
//! its own rather than a boxed one (a box, and a call through it for each of the body's frames, per request).

use super::lanes::InHand;
use crate::payload::ChunkStream;
use crate::request::HttpReply;

use axum::http::{header, HeaderValue, StatusCode};
use hyper::body::{Bytes, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A reply's body: whole (taken once written), or streamed with its request in hand until the stream ends.
pub(super) enum ReplyBody {
    Full(Option<Bytes>),
    Stream { chunks: ChunkStream, _busy: InHand },
}

impl ReplyBody {
    fn full(bytes: Bytes) -> Self {
        Self::Full((!bytes.is_empty()).then_some(bytes))
    }
}

impl hyper::body::Body for ReplyBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream { chunks, .. } => {
                chunks.as_mut().poll_next(cx).map(|c| c.map(|c| c.map(Frame::data)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Self::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Stream { .. } => SizeHint::default(),
        }
    }
}

/// A reply in HTTP mode's form: the status, content type and headers as they are, the body whole or streamed. The
/// request is in hand (`busy`) until a streamed body has been written out.
pub(super) fn response(reply: HttpReply, busy: InHand) -> hyper::Response<ReplyBody> {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = match reply.body.into_full() {
        Ok(bytes) => ReplyBody::full(bytes),
        Err(streaming) => ReplyBody::Stream { chunks: streaming.into_stream(), _busy: busy },
    };
    let mut resp = hyper::Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    // The envelope's content type is checked once, at compile time (`from_static` checks each byte when it runs).
    const JSON: HeaderValue = HeaderValue::from_static(crate::request::JSON);
    let content_type = match reply.content_type {
        std::borrow::Cow::Borrowed(ct) if ct == crate::request::JSON => Some(JSON),
        std::borrow::Cow::Borrowed(ct) => Some(HeaderValue::from_static(ct)),
        std::borrow::Cow::Owned(ct) => HeaderValue::from_str(&ct).ok(),
    };
    if let Some(ct) = content_type {
        headers.insert(header::CONTENT_TYPE, ct);
    }
    for (name, value) in reply.headers {
        headers.insert(*name, HeaderValue::from_static(value));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper::body::Body;

    #[tokio::test]
    async fn a_whole_body_is_sent_once_with_its_exact_length() {
        let body = ReplyBody::full(Bytes::from_static(b"{\"returnCode\":0}"));
        assert_eq!(body.size_hint().exact(), Some(16));
        assert!(!body.is_end_stream());
        assert_eq!(body.collect().await.unwrap().to_bytes(), &b"{\"returnCode\":0}"[..]);
        let empty = ReplyBody::full(Bytes::new());
        assert!(empty.is_end_stream(), "no frame for an empty body");
        assert_eq!(empty.size_hint().exact(), Some(0));
        assert!(empty.collect().await.unwrap().to_bytes().is_empty());
    }
}
