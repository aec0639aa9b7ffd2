//! What a transport knows about a request besides its body. HTTP mode ([`crate::serve`]) and SCF events
//! ([`crate::scf::event`]) build it the same way from their headers; the gate and audit lines read it.

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
    pub source_ip: Option<String>,
}

impl std::fmt::Debug for RequestMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMeta")
            .field("request_id", &self.request_id)
            .field("caller_key", &self.caller_key.as_ref().map(|_| "<present>"))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<present>"))
            .field("source_ip", &self.source_ip)
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
    fn query_keys_decode_like_a_form() {
        assert_eq!(query_key(Some("key=a%2")).as_deref(), Some("a%2"));
        assert_eq!(query_key(Some("key=%41+b")).as_deref(), Some("A b"));
        assert_eq!(query_key(Some("x=1")), None);
        assert_eq!(query_key(None), None);
    }
}
