//! A call to any WeChat / WeCom server API on a caller's behalf (`qcloud.mimi.call`, `qcloud.work.call`, the
//! `/wechat/…` pass-through and the drop-in token host): the path, query and body as the caller gave them, the
//! access token added here. The reply comes back as WeChat sent it — status, content type and bytes.

use super::UpstreamError;
use serde_json::Value;

/// What goes to WeChat besides the path and the token.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    None,
    /// Serialised as `application/json`.
    Json(&'a Value),
    /// Bytes forwarded with their content type (the pass-through).
    Raw {
        content_type: Option<&'a str>,
        bytes: &'a [u8],
    },
}

/// One request to WeChat. `query` is forwarded as given (already encoded pairs); `access_token` is added.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub method: &'a reqwest::Method,
    pub path: &'a str,
    pub query: &'a [(String, String)],
    pub body: Body<'a>,
}

/// What WeChat answered, whatever the status.
#[derive(Debug, Clone, PartialEq)]
pub struct RawReply {
    pub status: u16,
    pub content_type: String,
    pub bytes: Vec<u8>,
    errcode: Option<i64>,
}

impl RawReply {
    /// A reply; its `errcode` is read once, here.
    pub fn new(status: u16, content_type: String, bytes: Vec<u8>) -> Self {
        let mut reply = Self { status, content_type, bytes, errcode: None };
        reply.errcode =
            reply.json().and_then(|v| v.get("errcode").and_then(Value::as_i64)).filter(|c| *c != 0);
        reply
    }

    /// The body as a JSON object, if it is one.
    pub fn json(&self) -> Option<Value> {
        let first = self.bytes.iter().find(|b| !b.is_ascii_whitespace())?;
        if *first != b'{' {
            return None;
        }
        serde_json::from_slice::<Value>(&self.bytes).ok().filter(Value::is_object)
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
        .query(&[("access_token", token)]);
    match out.body {
        Body::None => {}
        Body::Json(v) => req = req.json(v),
        Body::Raw { content_type, bytes } => {
            if let Some(ct) = content_type {
                req = req.header(reqwest::header::CONTENT_TYPE, ct);
            }
            req = req.body(bytes.to_vec());
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
    let bytes = resp.bytes().await.map_err(|e| UpstreamError::Network(e.without_url().to_string()))?;
    let reply = RawReply::new(status, content_type, bytes.to_vec());
    let label = match (status, reply.errcode()) {
        (200..=299, None) => "ok".to_owned(),
        (200..=299, Some(c)) => format!("errcode_{c}"),
        (s, _) => format!("http_{s}"),
    };
    crate::metrics::upstream(what, label);
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errcodes_are_read_from_json_objects_only() {
        let r = |body: &[u8]| RawReply::new(200, String::new(), body.to_vec());
        assert_eq!(r(br#" {"errcode":40001,"errmsg":"x"}"#).errcode(), Some(40001));
        assert_eq!(r(br#"{"errcode":0}"#).errcode(), None);
        assert_eq!(r(b"\x89PNG\r\n").errcode(), None);
        assert_eq!(r(b"[1]").json(), None);
    }
}
