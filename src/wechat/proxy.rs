//! A call to any WeChat / WeCom server API on a caller's behalf (`qcloud.mimi.call`, `qcloud.work.call`, the
//! `/wechat/…` pass-through and the drop-in token host): the path, query and body as the caller gave them, the
//! access token added here. The reply comes back as WeChat sent it — status, content type and bytes: a reply up
//! to [`WHOLE_REPLY`] bytes is read whole (its `errcode` can be looked at), a larger one is handed on as a stream
//! (memory stays bounded by a chunk whatever its size).

use super::relay::{Relay, Reply};
use super::UpstreamError;
use crate::payload::{whole_body, Payload, RequestBody};
use hyper::body::Bytes;
use hyper::header;
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

/// Replies up to this size are read whole; larger ones stream. WeChat's JSON replies (errors included) are far
/// smaller; media, code images and file downloads are what streams.
pub const WHOLE_REPLY: usize = 64 * 1024;

/// How long one call may take in all, a streamed transfer included. Each read still has the upstream deadline
/// (the client's read timeout): only a transfer that keeps moving may last this long.
pub const TRANSFER_LIMIT: Duration = Duration::from_secs(600);

/// What goes to WeChat besides the path and the token.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    None,
    /// Serialised as `application/json`.
    Json(&'a Value),
    /// A body forwarded with its content type (the pass-through): whole, or streamed (then sent once).
    Raw {
        content_type: Option<&'a str>,
        payload: &'a Payload,
    },
}

impl Body<'_> {
    /// Whether the call can be sent again with the same body.
    pub fn resendable(&self) -> bool {
        match self {
            Self::Raw { payload, .. } => payload.resendable(),
            Self::None | Self::Json(_) => true,
        }
    }
}

/// One request to WeChat. `query` is forwarded as given (already encoded pairs); `access_token` is added.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub method: &'a reqwest::Method,
    pub path: &'a str,
    pub query: &'a [(String, String)],
    pub body: Body<'a>,
    /// Headers of the scheme (API security's `Wechatmp-*`); none for a plain call.
    pub headers: &'a [(&'static str, String)],
}

/// What WeChat answered, whatever the status.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    pub content_type: String,
    pub body: Payload,
    /// The `Wechatmp-*` headers of a signed reply (API security).
    pub signed: Option<super::secure::ReplyHeaders>,
    errcode: Option<i64>,
}

/// A body as a JSON object, if it is one.
pub fn json_object(bytes: &[u8]) -> Option<Value> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    serde_json::from_slice::<Value>(bytes).ok().filter(Value::is_object)
}

impl RawReply {
    /// A reply; its `errcode` is read once, here (a streamed reply has none: it is not a JSON error).
    pub fn new(status: u16, content_type: String, body: Payload) -> Self {
        let errcode = body
            .as_full()
            .and_then(json_object)
            .and_then(|v| v.get("errcode").and_then(Value::as_i64))
            .filter(|c| *c != 0);
        Self { status, content_type, body, signed: None, errcode }
    }

    /// The body as a JSON object, if it is whole and one.
    pub fn json(&self) -> Option<Value> {
        self.body.as_full().and_then(json_object)
    }

    /// WeChat's `errcode` in a JSON reply (0 or absent: success).
    pub fn errcode(&self) -> Option<i64> {
        self.errcode
    }
}

/// One call: `method` to `base` + `path` with the query and `access_token`, through the pass-through's client
/// ([`Relay`]). Errors never include the URL (it carries the token). `what` labels the metrics (`proxy`,
/// `passthrough`).
pub async fn call(
    relay: &Relay,
    base: &str,
    out: Outgoing<'_>,
    token: &str,
    what: &'static str,
) -> Result<RawReply, UpstreamError> {
    let deadline = Instant::now() + TRANSFER_LIMIT;
    let req = request(base, out, token)?;
    let reply = relay.send(req, deadline).await?;
    let (status, headers) = (reply.resp.status(), reply.resp.headers());
    if let Some(e) = super::redirect_at(status, headers, base) {
        crate::metrics::upstream(what, "redirect".to_owned());
        return Err(e);
    }
    let content_type =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let signed = super::secure::ReplyHeaders::of(headers);
    let body = read_head(reply).await?;
    let reply = RawReply { signed, ..RawReply::new(status.as_u16(), content_type, body) };
    let label = match (status.as_u16(), reply.errcode()) {
        (200..=299, None) => "ok".to_owned(),
        (200..=299, Some(c)) => format!("errcode_{c}"),
        (s, _) => format!("http_{s}"),
    };
    crate::metrics::upstream(what, label);
    Ok(reply)
}

/// The request: `base` + `path`, the caller's query then `access_token` (URL-encoded here), the body.
fn request(base: &str, out: Outgoing<'_>, token: &str) -> Result<hyper::Request<RequestBody>, UpstreamError> {
    let refused = |what: &str| UpstreamError::Network(format!("the request could not be built: {what}"));
    // The path is checked to be plain ([`super::path`]), so only the query needs encoding: written once, straight
    // into the URI (no URL object parsed and printed on the way).
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(out.query)
        .append_pair("access_token", token)
        .finish();
    let mut req = hyper::Request::builder()
        .method(out.method.clone())
        .uri(format!("{base}{}?{query}", out.path))
        .header(header::USER_AGENT, super::USER_AGENT)
        .header(header::ACCEPT, "*/*");
    for (name, value) in out.headers {
        req = req.header(*name, value);
    }
    let body = match out.body {
        Body::None => whole_body(Bytes::new()),
        Body::Json(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            whole_body(serde_json::to_vec(v).map_err(|_| refused("its JSON body"))?.into())
        }
        Body::Raw { content_type, payload } => {
            if let Some(ct) = content_type {
                req = req.header(header::CONTENT_TYPE, ct);
            }
            payload
                .to_request_body()
                .ok_or_else(|| UpstreamError::Network("the request body was already sent".into()))?
        }
    };
    req.body(body).map_err(|_| refused("its URL or a header"))
}

/// The reply's body: whole when it ends within [`WHOLE_REPLY`] bytes, else what was read and the rest streaming.
async fn read_head(mut reply: Reply) -> Result<Payload, UpstreamError> {
    let len = hyper::body::Body::size_hint(reply.resp.body()).exact();
    let mut head = Vec::with_capacity(len.map_or(1024, |l| l.min(WHOLE_REPLY as u64) as usize));
    while head.len() <= WHOLE_REPLY && len.is_none_or(|l| l <= WHOLE_REPLY as u64) {
        match reply.chunk().await? {
            Some(c) => head.extend_from_slice(&c),
            None => return Ok(Payload::from(head)),
        }
    }
    Ok(Payload::stream(head, reply.into_stream(), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errcodes_are_read_from_json_objects_only() {
        let r = |body: &[u8]| RawReply::new(200, String::new(), Payload::from(body.to_vec()));
        assert_eq!(r(br#" {"errcode":40001,"errmsg":"x"}"#).errcode(), Some(40001));
        assert_eq!(r(br#"{"errcode":0}"#).errcode(), None);
        assert_eq!(r(b"\x89PNG\r\n").errcode(), None);
        assert_eq!(r(b"[1]").json(), None);
    }
}
