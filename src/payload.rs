//! A body in memory or still arriving: what the pass-through and the token host forward in both directions, so
//! a reply (or an upload) of any size crosses the server with memory bounded by a chunk, not by the body.
//! Small bodies are read whole (they may be inspected and sent again); larger ones are a head already read plus
//! the rest as a stream, which can be sent once.

use futures_util::{Stream, StreamExt};
use hyper::body::{Bytes, Frame};
use std::pin::Pin;
use std::sync::Mutex;

/// The largest body carried inside one response — an envelope's `data`, an SCF function's reply — rather than
/// streamed: its base64 stays below SCF's 6 MB response limit. Larger ones get `1027 REPLY_TOO_LARGE`.
pub const INLINE_LIMIT: usize = 4 * 1024 * 1024;

/// The chunks of a body still arriving.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// A body sent upstream: whole or streamed.
pub type RequestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// A whole body to send upstream (none, when `bytes` is empty).
pub fn whole_body(bytes: Bytes) -> RequestBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

/// Why [`Payload::collect`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the body could not be read: {0}")]
    Broken(String),
}

/// A body: whole, or a head plus a stream (taken once).
pub struct Payload(Inner);

enum Inner {
    /// Whole: as it arrived (a request's body read in one piece is not copied), or as it was written.
    Full(Bytes),
    Stream {
        head: Vec<u8>,
        rest: Mutex<Option<ChunkStream>>,
        len: Option<u64>,
    },
}

impl Default for Payload {
    fn default() -> Self {
        Self(Inner::Full(Bytes::new()))
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Inner::Full(b) => write!(f, "Payload::Full({} bytes)", b.len()),
            Inner::Stream { head, len, .. } => {
                write!(f, "Payload::Stream(head {} bytes, length {len:?})", head.len())
            }
        }
    }
}

impl From<Vec<u8>> for Payload {
    /// A vector with a little spare room is trimmed first: `Bytes` takes one with spare room by allocating a header
    /// for it, while the allocator trims a block in place (mimalloc keeps a block that shrinks by less than half)
    /// or copies a small one.
    fn from(b: Vec<u8>) -> Self {
        let bytes =
            if b.capacity() - b.len() <= TRIM_SPARE { Bytes::from(b.into_boxed_slice()) } else { b.into() };
        Self(Inner::Full(bytes))
    }
}

/// Most spare room a whole body's vector is trimmed of (see `From<Vec<u8>>`).
const TRIM_SPARE: usize = 1024;

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Self {
        Self(Inner::Full(b))
    }
}

impl Payload {
    /// A body of which `head` has been read and `rest` is still arriving (`len`: the whole length, if known).
    pub fn stream(head: Vec<u8>, rest: ChunkStream, len: Option<u64>) -> Self {
        Self(Inner::Stream { head, rest: Mutex::new(Some(rest)), len })
    }

    /// The bytes, when the body is whole.
    pub fn as_full(&self) -> Option<&[u8]> {
        match &self.0 {
            Inner::Full(b) => Some(b),
            Inner::Stream { .. } => None,
        }
    }

    /// The bytes when whole, else the payload back.
    pub fn into_full(self) -> Result<Bytes, Self> {
        match self.0 {
            Inner::Full(b) => Ok(b),
            other => Err(Self(other)),
        }
    }

    /// No body at all.
    pub fn is_empty(&self) -> bool {
        self.as_full().is_some_and(<[u8]>::is_empty)
    }

    /// Whether the body can be sent more than once (it is whole).
    pub fn resendable(&self) -> bool {
        self.as_full().is_some()
    }

    /// The whole length, when known.
    pub fn len(&self) -> Option<u64> {
        match &self.0 {
            Inner::Full(b) => Some(b.len() as u64),
            Inner::Stream { len, .. } => *len,
        }
    }

    /// The body for an outgoing request: a copy when whole, the stream itself (once; `None` after) otherwise.
    pub fn to_request_body(&self) -> Option<RequestBody> {
        match &self.0 {
            Inner::Full(b) => Some(whole_body(b.clone())),
            Inner::Stream { head, rest, .. } => {
                let rest = rest.lock().ok()?.take()?;
                let frames = chain(head.clone(), rest).map(|c| c.map(Frame::data));
                Some(RequestBody::new(http_body_util::StreamBody::new(frames)))
            }
        }
    }

    /// Every chunk, head first (a whole body is one chunk).
    pub fn into_stream(self) -> ChunkStream {
        match self.0 {
            Inner::Full(b) => Box::pin(futures_util::stream::once(async move { Ok(b) })),
            Inner::Stream { head, rest, .. } => {
                let rest = rest
                    .into_inner()
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| Box::pin(futures_util::stream::empty()));
                chain(head, rest)
            }
        }
    }

    /// The whole body in memory, if it is at most `limit` bytes; reading stops as soon as it is not.
    pub async fn collect(self, limit: usize) -> Result<Vec<u8>, CollectError> {
        if self.len().is_some_and(|l| l > limit as u64) {
            return Err(CollectError::TooLarge(limit));
        }
        let (mut out, rest) = match self.0 {
            Inner::Full(b) => {
                return if b.len() > limit { Err(CollectError::TooLarge(limit)) } else { Ok(b.into()) }
            }
            Inner::Stream { head, rest, len } => {
                // The announced length (already checked against the limit) sized once: no doubling copies.
                let mut head = head;
                if let Some(len) = len {
                    head.reserve_exact((len as usize).saturating_sub(head.len()));
                }
                (head, rest.into_inner().ok().flatten())
            }
        };
        if out.len() > limit {
            return Err(CollectError::TooLarge(limit));
        }
        let Some(mut rest) = rest else { return Err(CollectError::Broken("already sent".into())) };
        while let Some(chunk) = rest.next().await {
            let chunk = chunk.map_err(|e| CollectError::Broken(e.to_string()))?;
            if out.len() + chunk.len() > limit {
                return Err(CollectError::TooLarge(limit));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

/// `head`, then `rest`.
fn chain(head: Vec<u8>, rest: ChunkStream) -> ChunkStream {
    let first = (!head.is_empty()).then(|| Ok(Bytes::from(head)));
    Box::pin(futures_util::stream::iter(first).chain(rest))
}

/// A stream that stops with an error once more than `limit` bytes have passed (a body sent in chunks, with no
/// length given up front, that turns out too large).
pub fn limited(stream: ChunkStream, limit: u64) -> ChunkStream {
    Box::pin(stream.scan((0u64, false), move |(seen, done), chunk| {
        if *done {
            return futures_util::future::ready(None);
        }
        let item = chunk.and_then(|c| {
            *seen += c.len() as u64;
            if *seen > limit {
                Err(std::io::Error::other(format!("the body is larger than {limit} bytes")))
            } else {
                Ok(c)
            }
        });
        *done = item.is_err();
        futures_util::future::ready(Some(item))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> ChunkStream {
        let v: Vec<Result<Bytes, std::io::Error>> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures_util::stream::iter(v))
    }

    #[tokio::test]
    async fn a_stream_is_collected_within_its_limit_and_taken_once() {
        let p = Payload::stream(b"ab".to_vec(), chunks(&[b"cd", b"ef"]), None);
        assert!(!p.resendable());
        assert!(p.to_request_body().is_some());
        assert!(p.to_request_body().is_none(), "a stream is sent once");
        let p = Payload::stream(b"ab".to_vec(), chunks(&[b"cd", b"ef"]), None);
        assert_eq!(p.collect(6).await.unwrap(), b"abcdef");
        let p = Payload::stream(b"ab".to_vec(), chunks(&[b"cd", b"ef"]), None);
        assert!(matches!(p.collect(5).await, Err(CollectError::TooLarge(5))));
        let p = Payload::stream(Vec::new(), chunks(&[]), Some(10));
        assert!(
            matches!(p.collect(5).await, Err(CollectError::TooLarge(5))),
            "a known length is checked first"
        );
        assert_eq!(Payload::from(b"xy".to_vec()).collect(2).await.unwrap(), b"xy");
    }

    #[tokio::test]
    async fn a_body_kept_as_it_arrived_is_whole() {
        let shared = || Payload::from(Bytes::from_static(b"{\"a\":1}"));
        let p = shared();
        assert_eq!(p.as_full(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(p.len(), Some(7));
        assert!(p.resendable() && !p.is_empty());
        assert!(p.to_request_body().is_some() && p.to_request_body().is_some(), "sent as often as asked");
        assert_eq!(shared().into_full().unwrap(), &b"{\"a\":1}"[..]);
        assert_eq!(shared().collect(7).await.unwrap(), b"{\"a\":1}");
        assert!(matches!(shared().collect(6).await, Err(CollectError::TooLarge(6))));
        let mut s = shared().into_stream();
        assert_eq!(s.next().await.unwrap().unwrap(), &b"{\"a\":1}"[..]);
        assert!(s.next().await.is_none());
        assert_eq!(format!("{:?}", shared()), "Payload::Full(7 bytes)");
    }

    #[tokio::test]
    async fn a_limited_stream_fails_past_its_limit() {
        let mut s = limited(chunks(&[b"abc", b"def", b"ghi"]), 6);
        assert_eq!(s.next().await.unwrap().unwrap(), "abc");
        assert_eq!(s.next().await.unwrap().unwrap(), "def");
        assert!(s.next().await.unwrap().is_err());
        let all: Vec<_> = Payload::stream(b"h".to_vec(), chunks(&[b"i"]), None).into_stream().collect().await;
        assert_eq!(all.len(), 2);
    }
}
