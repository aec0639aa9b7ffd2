//! What a transport knows about a request besides its body. HTTP mode ([`crate::serve`]) and SCF events
//! ([`crate::scf::event`]) build it the same way from their headers; the gate and audit lines read it.

use crate::payload::Payload;

/// A request's metadata: correlation id, presented credentials, client address.
#[derive(Clone, Default)]
pub struct RequestMeta {
    /// Gateway / runtime / HTTP request id, for log correlation.
    pub request_id: String,
    /// `X-Wafer-Key` (or bearer token / `key` query parameter) presented by the caller.
    pub caller_key: Option<String>,
    /// `X-Wafer-Admin-Token` presented by the caller.
    pub admin_token: Option<String>,
    /// The client's address as the transport saw it (peer address, or the gateway's `sourceIp`), for audit logs.
    /// Shared: HTTP mode writes a connection's peer address once, not once per request.
    pub source_ip: Option<std::sync::Arc<str>>,
    /// A direct SCF invocation (console test, `scf invoke`, the API): it has no headers, so credentials may come
    /// in `para` (`para.admin_token`). Never set for HTTP requests, whose bodies end up in proxy logs.
    pub direct: bool,
}

impl std::fmt::Debug for RequestMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMeta")
            .field("request_id", &self.request_id)
            .field("caller_key", &self.caller_key.as_ref().map(|_| "<present>"))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<present>"))
            .field("source_ip", &self.source_ip)
            .field("direct", &self.direct)
            .finish()
    }
}

impl RequestMeta {
    /// Credentials from request headers (`header` looks a name up case-insensitively) and the query's `key`
    /// parameter, in the one order every transport uses: `X-Wafer-Key`, then `Authorization: Bearer`, then `?key=`.
    pub fn with_credentials<'h>(
        mut self,
        header: impl Fn(&str) -> Option<&'h str>,
        query_key: Option<String>,
    ) -> Self {
        self.caller_key = header("x-wafer-key")
            .map(|v| v.trim().to_owned())
            .or_else(|| {
                header("authorization").and_then(|a| {
                    a.strip_prefix("Bearer ")
                        .or_else(|| a.strip_prefix("bearer "))
                        .map(|t| t.trim().to_owned())
                })
            })
            .or(query_key);
        self.admin_token = header("x-wafer-admin-token").map(|v| v.trim().to_owned());
        self
    }
}

/// A request answered as plain HTTP rather than with an envelope (the `/wechat/…` pass-through, the drop-in token
/// host): what a transport hands over.
#[derive(Debug, Default)]
pub struct HttpCall {
    pub method: String,
    pub path: String,
    /// The raw query string (without `?`), if any.
    pub query: Option<String>,
    pub content_type: Option<String>,
    /// Whole, or (HTTP mode, past `WAFER_BODY_LIMIT`) streaming in.
    pub body: Payload,
}

/// The content type of every JSON answer of ours.
pub const JSON: &str = "application/json; charset=utf-8";

/// An answer in no transport's form: status, content type, extra headers and body (whole or streaming). HTTP mode
/// and the SCF runtime only translate it into their bytes.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub content_type: std::borrow::Cow<'static, str>,
    /// Headers besides the content type (`Allow`, `WWW-Authenticate`, `Connection`).
    pub headers: &'static [(&'static str, &'static str)],
    pub body: Payload,
}

impl HttpReply {
    /// A body of `content_type`, with no other header.
    pub fn new(
        status: u16,
        content_type: impl Into<std::borrow::Cow<'static, str>>,
        body: impl Into<Payload>,
    ) -> Self {
        Self { status, content_type: content_type.into(), headers: &[], body: body.into() }
    }

    /// A JSON body.
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Self::new(status, JSON, body.to_string().into_bytes())
    }

    /// An envelope, with `status`.
    pub fn envelope(status: u16, env: &crate::envelope::Envelope) -> Self {
        Self::new(status, JSON, env.to_bytes())
    }

    /// The same reply with these extra headers.
    pub fn with_headers(self, headers: &'static [(&'static str, &'static str)]) -> Self {
        Self { headers, ..self }
    }
}

/// A caller-supplied request id, if it is safe to log: 1 to 64 characters of letters, digits, `-`, `_`, `.`, `:`.
/// Anything else (spaces, control characters, `=`) could forge log fields, and is replaced by our own id.
pub fn safe_request_id(candidate: &str) -> Option<&str> {
    let ok = !candidate.is_empty()
        && candidate.len() <= 64
        && candidate.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then_some(candidate)
}

/// A caller-supplied value for a log line: printable ASCII kept (at most `max` characters), anything else —
/// CR, LF, ESC, bidi controls, spaces, quotes — escaped as `\u{…}`, so no value can start a line or fake a field.
pub fn log_safe(value: &str, max: usize) -> String {
    // The usual value (an appid, an address) has nothing to escape: copied as it is.
    if value.len() <= max && value.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len().min(max));
    for c in value.chars().take(max) {
        if c.is_ascii_graphic() && c != '"' && c != '\\' {
            out.push(c);
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    out
}

/// Where HTTP mode takes a request's client address from (`WAFER_CLIENT_ADDRESS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ClientAddress {
    /// The TCP peer: right when clients connect directly.
    #[default]
    Peer,
    /// The last `X-Forwarded-For` entry — the one the proxy in front appended (an SCF web function, a load
    /// balancer); the peer when there is none. Entries before it are the client's to choose and never used.
    Forwarded,
}

/// The address a proxy appended: the last entry of the last `X-Forwarded-For` value (earlier entries, and earlier
/// headers, come from the client and can be anything). Escaped for logs.
pub fn last_forwarded(last_value: Option<&str>) -> Option<String> {
    let entry = last_value?.rsplit(',').next()?.trim();
    (!entry.is_empty()).then(|| log_safe(entry, 64))
}

/// The `key` parameter of a raw query string, percent-decoded.
pub fn query_key(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes()).find(|(k, _)| k == "key").map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(headers: &[(&'static str, &'static str)], query: Option<&str>) -> RequestMeta {
        let h = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| *v);
        RequestMeta::default().with_credentials(h, query_key(query))
    }

    #[test]
    fn caller_key_sources_in_order() {
        assert_eq!(meta(&[], Some("a=1&key=abc%2Bd")).caller_key.as_deref(), Some("abc+d"));
        assert_eq!(
            meta(&[("Authorization", "Bearer tok")], Some("key=q")).caller_key.as_deref(),
            Some("tok")
        );
        let m = meta(&[("Authorization", "Bearer tok"), ("X-Wafer-Key", " hdr ")], None);
        assert_eq!(m.caller_key.as_deref(), Some("hdr"));
        assert!(m.admin_token.is_none());
        let m = meta(&[("x-wafer-admin-token", "s3cr3t-admin")], None);
        assert_eq!(m.admin_token.as_deref(), Some("s3cr3t-admin"));
        assert!(!format!("{m:?}").contains("s3cr3t"), "Debug hides presented credentials");
    }

    #[test]
    fn caller_supplied_values_cannot_forge_log_lines() {
        assert_eq!(safe_request_id("abc-123_x.y:z"), Some("abc-123_x.y:z"));
        assert_eq!(safe_request_id("abc return_code=0"), None);
        assert_eq!(safe_request_id(&"a".repeat(65)), None);
        assert_eq!(safe_request_id(""), None);
        let forged = "\u{1b}[2Jwx1\r\n2026-01-01 INFO admin action corpid=evil\u{202e}";
        let safe = log_safe(forged, 200);
        assert!(
            !safe.contains('\n')
                && !safe.contains('\r')
                && !safe.contains('\u{1b}')
                && !safe.contains('\u{202e}')
        );
        assert!(!safe.contains(' '), "no space: a value cannot start another field: {safe}");
        assert!(safe.contains("\\u{a}"), "{safe}");
        assert_eq!(log_safe("wx1234567890abcdef", 64), "wx1234567890abcdef");
        // Plain values are copied whole only when they fit: longer ones are cut at `max` like any other.
        assert_eq!(log_safe("wx1234567890abcdef", 4), "wx12");
        assert_eq!(log_safe("wx12", 4), "wx12");
        assert_eq!(log_safe("a\"b", 8), "a\\u{22}b");
        assert_eq!(log_safe("a\\b", 8), "a\\u{5c}b");
    }

    #[test]
    fn the_forwarded_address_is_the_one_the_proxy_appended() {
        assert_eq!(last_forwarded(Some("6.6.6.6, 203.0.113.7")).as_deref(), Some("203.0.113.7"));
        assert_eq!(last_forwarded(Some("203.0.113.7")).as_deref(), Some("203.0.113.7"));
        assert_eq!(last_forwarded(Some("1.1.1.1,")), None);
        assert_eq!(last_forwarded(Some("")), None);
        assert_eq!(last_forwarded(None), None);
        assert_eq!(last_forwarded(Some("x, a b\u{1b}")).as_deref(), Some("a\\u{20}b\\u{1b}"));
    }

    #[test]
    fn query_keys_decode_like_a_form() {
        assert_eq!(query_key(Some("key=a%2")).as_deref(), Some("a%2"));
        assert_eq!(query_key(Some("key=%41+b")).as_deref(), Some("A b"));
        assert_eq!(query_key(Some("x=1")), None);
        assert_eq!(query_key(None), None);
    }
}
