//! A call to any WeChat / WeCom server API on a caller's behalf (`qcloud.mimi.call`, `qcloud.work.call`): the path,
//! query and body as the caller gave them, the access token added here. The reply comes back as WeChat sent it —
//! JSON, or bytes (a mini-program code image) with their content type.

use super::UpstreamError;
use serde_json::Value;

/// What WeChat answered.
#[derive(Debug, Clone, PartialEq)]
pub enum ProxyReply {
    Json(Value),
    Bytes { content_type: String, data: Vec<u8> },
}

impl ProxyReply {
    /// WeChat's `errcode` in a JSON reply (0 or absent: success).
    pub fn errcode(&self) -> Option<i64> {
        match self {
            Self::Json(v) => v.get("errcode").and_then(Value::as_i64).filter(|c| *c != 0),
            Self::Bytes { .. } => None,
        }
    }
}

/// One call: `method` to `base` + `path` with `query` and `access_token`, and a JSON `body` for POST. Errors never
/// include the URL (it carries the token).
pub async fn call(
    http: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    query: &[(String, String)],
    token: &str,
    body: Option<&Value>,
) -> Result<ProxyReply, UpstreamError> {
    let mut req =
        http.request(method, format!("{base}{path}")).query(query).query(&[("access_token", token)]);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.map_err(super::send_error)?;
    let status = resp.status();
    if !status.is_success() {
        crate::metrics::upstream("proxy", format!("http_{}", status.as_u16()));
        return Err(UpstreamError::Status(status.as_u16()));
    }
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = resp.bytes().await.map_err(|e| UpstreamError::Network(e.without_url().to_string()))?;
    let reply = match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) if v.is_object() => ProxyReply::Json(v),
        _ => ProxyReply::Bytes { content_type, data: bytes.to_vec() },
    };
    let label = match reply.errcode() {
        Some(c) => format!("errcode_{c}"),
        None => "ok".to_owned(),
    };
    crate::metrics::upstream("proxy", label);
    Ok(reply)
}
