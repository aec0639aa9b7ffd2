//! A call to any WeChat / WeCom server API on a caller's behalf (`qcloud.mimi.call`, `qcloud.work.call`, the
//! `/wechat/…` pass-through and the drop-in token host): the path, query and body as the caller gave them, the
//! access token added here. The reply comes back as WeChat sent it — status, content type and bytes: a reply up
//! to [`WHOLE_REPLY`] bytes is read whole (its `errcode` can be looked at), a larger one is handed on as a stream
//! (memory stays bounded by a chunk whatever its size).

use super::UpstreamError;
use crate::payload::Payload;
use serde_json::Value;
use std::time::Duration;

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

/// One call: `method` to `base` + `path` with the query and `access_token`. Errors never include the URL (it
/// carries the token). `what` labels the metrics (`proxy`, `passthrough`).
pub async fn call(
    http: &reqwest::Client,
    base: &str,
    out: Outgoing<'_>,
    token: &str,
    what: &'static str,
) -> Result<RawReply, UpstreamError> {
    let mut req = http
        .request(out.method.clone(), format!("{base}{}", out.path))
        .query(out.query)
        .query(&[("access_token", token)])
        .timeout(TRANSFER_LIMIT);
    for (name, value) in out.headers {
        req = req.header(*name, value);
    }
    match out.body {
        Body::None => {}
        Body::Json(v) => req = req.json(v),
        Body::Raw { content_type, payload } => {
            if let Some(ct) = content_type {
                req = req.header(reqwest::header::CONTENT_TYPE, ct);
            }
            let Some(body) = payload.to_request_body() else {
                return Err(UpstreamError::Network("the request body was already sent".into()));
            };
            req = req.body(body);
        }
    }
    let resp = req.send().await.map_err(super::send_error)?;
    if let Some(e) = super::redirect_of(&resp) {
        crate::metrics::upstream(what, "redirect".to_owned());
        return Err(e);
    }
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let signed = super::secure::ReplyHeaders::of(resp.headers());
    let body = read_head(resp).await?;
    let reply = RawReply { signed, ..RawReply::new(status, content_type, body) };
    let label = match (status, reply.errcode()) {
        (200..=299, None) => "ok".to_owned(),
        (200..=299, Some(c)) => format!("errcode_{c}"),
        (s, _) => format!("http_{s}"),
    };
    crate::metrics::upstream(what, label);
    Ok(reply)
}

/// The reply's body: whole when it ends within [`WHOLE_REPLY`] bytes, else what was read and the rest streaming.
async fn read_head(mut resp: reqwest::Response) -> Result<Payload, UpstreamError> {
    let len = resp.content_length();
    let mut head = Vec::with_capacity(len.map_or(1024, |l| l.min(WHOLE_REPLY as u64) as usize));
    let broken = |e: reqwest::Error| UpstreamError::Network(e.without_url().to_string());
    while head.len() <= WHOLE_REPLY && len.is_none_or(|l| l <= WHOLE_REPLY as u64) {
        match resp.chunk().await.map_err(broken)? {
            Some(c) => head.extend_from_slice(&c),
            None => return Ok(Payload::from(head)),
        }
    }
    Ok(Payload::stream(head, crate::payload::response_stream(resp), len))
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
