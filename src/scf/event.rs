//! SCF events: Function URL events (the HTTP endpoint of a function today), legacy API Gateway integration events
//! (with their real-world quirks), timer triggers and bare Wafer envelopes invoked directly, turned into a request
//! for the [`Service`](crate::service::Service), and the reply shaped to match.

use super::gateway;
use crate::envelope::{Envelope, ReturnCode, WaferError};
use crate::request::RequestMeta;
use crate::telemetry::line;
use serde_json::{Map, Value};

/// Where an event came from, which decides the shape of the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A Function URL event, or a legacy API Gateway integration event: answer with `{statusCode, headers, body}`.
    Gateway,
    /// A direct invocation (console test, `scf invoke`) with a bare envelope: answer with a bare envelope.
    Direct,
}

/// A request extracted from an event.
pub struct Incoming {
    pub origin: Origin,
    /// HTTP method for gateway events (`POST` for direct ones).
    pub method: String,
    pub path: String,
    /// The query string rebuilt from the event's parameters (gateway events), for plain-HTTP interfaces.
    pub query: Option<String>,
    pub content_type: Option<String>,
    pub body: Body,
    pub meta: RequestMeta,
}

/// A request body from an event: bytes, or JSON the event already held parsed (a direct invocation is its own
/// envelope; some gateways hand over an object body), which is passed on as it is rather than written out and read
/// again.
#[derive(Debug)]
pub enum Body {
    Bytes(Vec<u8>),
    Json {
        value: Value,
        /// Its size in bytes as JSON, for the body limit.
        len: usize,
    },
}

impl Body {
    /// The body as bytes (written out only for an already-parsed body).
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Self::Bytes(b) => b,
            Self::Json { value, .. } => value.to_string().into_bytes(),
        }
    }
}

/// The size of `value` written as compact JSON, counted without writing it anywhere.
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, value);
    c.0
}

/// What to do with an event: one parse classifies it.
pub enum Parsed {
    /// An SCF timer trigger (`{"Type":"Timer","TriggerName":…,"Time":…,"Message":…}`).
    Timer,
    Request(Box<Incoming>),
    /// The event itself is malformed; answer this at once.
    Reject {
        origin: Origin,
        status: u16,
        error: WaferError,
    },
}

/// Build the reply bytes for an origin.
pub fn reply(origin: &Origin, status: u16, envelope: &Envelope) -> Vec<u8> {
    match origin {
        Origin::Direct => envelope.to_bytes(),
        Origin::Gateway => gateway_envelope(status, envelope),
    }
}

/// A gateway reply carrying an envelope as JSON: what [`gateway_reply`] gives for its bytes, the body string
/// written straight ([`Envelope::write_as_string`]).
pub fn gateway_envelope(status: u16, envelope: &Envelope) -> Vec<u8> {
    let mut out = integration(status, crate::request::JSON, false, 320);
    envelope.write_as_string(&mut out);
    out.push(b'}');
    out
}

/// A gateway reply carrying bytes: text as it is, anything else base64-encoded (`isBase64Encoded: true`).
pub fn gateway_reply_bytes(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let textual = content_type.starts_with("text/") || content_type.contains("json");
    match std::str::from_utf8(body) {
        Ok(text) if textual || content_type.is_empty() => gateway_reply(status, content_type, text),
        _ => encoded(status, content_type, body),
    }
}

/// The integration response (`isBase64Encoded`, `statusCode`, `headers` with the content type, `body`), written
/// straight into one buffer of the right size: a reply of several megabytes is held once, not once per step.
fn integration(status: u16, content_type: &str, base64: bool, body_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body_len + content_type.len() + 96);
    out.extend_from_slice(if base64 { b"{\"isBase64Encoded\":true" } else { b"{\"isBase64Encoded\":false" });
    out.extend_from_slice(b",\"statusCode\":");
    out.extend_from_slice(status.to_string().as_bytes());
    out.extend_from_slice(b",\"headers\":{\"Content-Type\":");
    line::json_string(&mut out, content_type);
    out.extend_from_slice(b"},\"body\":");
    out
}

fn encoded(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let len = base64::encoded_len(body.len(), true).unwrap_or(0);
    let mut out = integration(status, content_type, true, len + 4);
    out.push(b'"');
    let at = out.len();
    out.resize(at + len, 0);
    let written = base64::engine::general_purpose::STANDARD.encode_slice(body, &mut out[at..]).unwrap_or(0);
    out.truncate(at + written);
    out.extend_from_slice(b"\"}");
    out
}

pub fn gateway_reply(status: u16, content_type: &str, body: &str) -> Vec<u8> {
    // Escaping lengthens a body only where it has quotes, backslashes or control characters: a little room is kept.
    let mut out = integration(status, content_type, false, body.len() + body.len() / 16 + 4);
    let _ = serde_json::to_writer(&mut out, body);
    out.push(b'}');
    out
}

fn is_gateway(o: &Map<String, Value>) -> bool {
    o.contains_key("requestContext")
        || (o.contains_key("httpMethod") && (o.contains_key("headers") || o.contains_key("path")))
}

pub(super) fn reject(origin: Origin, status: u16, path: &str, why: &str) -> Parsed {
    Parsed::Reject {
        origin,
        status,
        error: WaferError::new(ReturnCode::RequestErr, format!("event field {path} {why}")),
    }
}

/// Parse a raw event. `runtime_request_id` is the runtime's `request_id` header, the last fallback for logs. The
/// usual Function URL or gateway event is read straight into its fields ([`gateway::read_usual`]); any other is read
/// as a JSON value ([`parse_value`]), which gives the same request for the usual ones.
pub fn parse(event: &[u8], runtime_request_id: &str) -> Parsed {
    gateway::read_usual(event, runtime_request_id).unwrap_or_else(|| parse_value(event, runtime_request_id))
}

/// Any event, read as a JSON value.
pub(super) fn parse_value(event: &[u8], runtime_request_id: &str) -> Parsed {
    let value: Value = match serde_json::from_slice(event) {
        Ok(v) => v,
        // Not JSON at all: answer as a direct invocation would be answered.
        Err(e) => {
            return Parsed::Reject {
                origin: Origin::Direct,
                status: 200,
                error: WaferError::new(
                    ReturnCode::RequestErr,
                    format!("event is not JSON (line {}, column {})", e.line(), e.column()),
                ),
            }
        }
    };
    let Value::Object(mut o) = value else {
        return reject(Origin::Direct, 200, "$", "must be a JSON object");
    };
    if o.get("Type").and_then(Value::as_str) == Some("Timer") && o.contains_key("TriggerName") {
        return Parsed::Timer;
    }
    if !is_gateway(&o) {
        return Parsed::Request(Box::new(Incoming {
            origin: Origin::Direct,
            method: "POST".into(),
            path: "/".into(),
            query: None,
            content_type: None,
            body: Body::Json { value: Value::Object(o), len: event.len() },
            meta: RequestMeta {
                request_id: crate::request::safe_request_id(runtime_request_id).unwrap_or("-").to_owned(),
                direct: true,
                ..RequestMeta::default()
            },
        }));
    }
    let body_field = o.remove("body");
    let o = &o;
    let headers = match o.get("headers") {
        None | Some(Value::Null) => None,
        Some(Value::Object(h)) => Some(h),
        Some(_) => return reject(Origin::Gateway, 400, "$.headers", "must be an object"),
    };
    let mut queries = Vec::new();
    for field in ["queryString", "queryStringParameters"] {
        match o.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(q)) => queries.push(gateway::Params::Value(q)),
            Some(_) => return reject(Origin::Gateway, 400, &format!("$.{field}"), "must be an object"),
        }
    }
    let method = match o.get("httpMethod") {
        Some(Value::String(m)) => m.to_ascii_uppercase(),
        None => "POST".into(),
        Some(_) => return reject(Origin::Gateway, 400, "$.httpMethod", "must be a string"),
    };
    let path = o.get("path").and_then(Value::as_str).unwrap_or("/").to_owned();
    let base64 = match o.get("isBase64Encoded") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        Some(_) => return reject(Origin::Gateway, 400, "$.isBase64Encoded", "must be a boolean"),
    };
    let body = match body_field {
        None | Some(Value::Null) => Body::Bytes(Vec::new()),
        Some(Value::String(s)) => match gateway::string_body(s.into(), base64) {
            Ok(b) => b,
            Err(refused) => return refused,
        },
        // Some gateways hand over an already-parsed JSON body.
        Some(value @ Value::Object(_)) => Body::Json { len: json_len(&value), value },
        Some(_) => return reject(Origin::Gateway, 400, "$.body", "must be a string"),
    };
    let context = |field: &str| o.get("requestContext").and_then(|c| c.get(field)).and_then(Value::as_str);
    let fields = gateway::Fields {
        headers: gateway::Headers::Value(headers),
        queries,
        method,
        path,
        body,
        context_request_id: context("requestId"),
        context_source_ip: context("sourceIp"),
    };
    gateway::finish(fields, runtime_request_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integration_responses_are_what_serde_writes() {
        use base64::Engine;
        let serde = |b64: bool, status: u16, ct: &str, body: &str| {
            serde_json::to_vec(&serde_json::json!({"isBase64Encoded": b64, "statusCode": status,
                "headers": {"Content-Type": ct}, "body": body}))
            .unwrap()
        };
        let text = "{\"a\":\"引号 \\\" and \\u0001 \u{1}\"}";
        assert_eq!(gateway_reply(200, "application/json", text), serde(false, 200, "application/json", text));
        let bin: Vec<u8> = (0..=255u8).cycle().take(1001).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bin);
        assert_eq!(gateway_reply_bytes(502, "image/png", &bin), serde(true, 502, "image/png", &b64));
        assert_eq!(gateway_reply_bytes(200, "text/plain", b"\xff"), serde(true, 200, "text/plain", "/w=="));
        assert_eq!(gateway_reply_bytes(200, "", b"x\"y"), serde(false, 200, "", "x\"y"));
        // An envelope written straight into the body string: what its bytes give.
        let flat = |token: &str| {
            crate::envelope::Flat::new(
                [("appid", "wx1".into()), ("access_token", token.into())],
                ("exp", 7200),
            )
        };
        for e in [
            Envelope::ok("ACCESS_TOKEN_SUCCESS", flat("plain-token")),
            Envelope::ok("ACCESS_TOKEN_SUCCESS", flat("t\"k\\\n")),
            Envelope::error(&WaferError::para("code", "is missing")),
            Envelope::ok("OK", serde_json::json!({"a": "b\"c"})),
        ] {
            let text = String::from_utf8(e.to_bytes()).unwrap();
            assert_eq!(
                gateway_envelope(401, &e),
                serde(false, 401, "application/json; charset=utf-8", &text)
            );
        }
    }

    #[test]
    fn the_client_address_is_what_the_platform_appended() {
        let ip = |headers: &str| {
            let ev = format!(r#"{{"httpMethod":"GET","path":"/healthz","headers":{headers}}}"#);
            let Parsed::Request(r) = parse(ev.as_bytes(), "rt") else { panic!("rejected") };
            r.meta.source_ip
        };
        assert_eq!(ip(r#"{"X-Forwarded-For":"6.6.6.6, 203.0.113.7"}"#).as_deref(), Some("203.0.113.7"));
        assert_eq!(
            ip(r#"{"x-forwarded-for":["6.6.6.6","7.7.7.7, 203.0.113.8"]}"#).as_deref(),
            Some("203.0.113.8")
        );
        assert_eq!(ip(r#"{"x-scf-remote-addr":["6.6.6.6","203.0.113.9"]}"#).as_deref(), Some("203.0.113.9"));
        assert_eq!(ip(r#"{"x-real-ip":"6.6.6.6"}"#), None, "a header the platform does not set is not used");
        let gw = br#"{"requestContext":{"sourceIp":"198.51.100.1"},"httpMethod":"GET","path":"/healthz","headers":{"x-forwarded-for":"6.6.6.6"}}"#;
        let Parsed::Request(r) = parse(gw, "rt") else { panic!("rejected") };
        assert_eq!(r.meta.source_ip.as_deref(), Some("198.51.100.1"));
    }

    #[test]
    fn gateway_quirks_are_accepted() {
        let ev = br#"{"requestContext":{"httpMethod":"ANY","path":"/x"},"headers":{"X-Wafer-Key":["k1","k2"],"x-api-requestid":"gw-1"},
            "httpMethod":"post","path":"/release/mina_auth/","queryString":{"debug":true,"tag":["a","b"]},
            "body":"eyJhIjoxfQ==","isBase64Encoded":true}"#;
        let Parsed::Request(r) = parse(ev, "rt-1") else { panic!("rejected") };
        assert_eq!(r.origin, Origin::Gateway);
        assert_eq!(r.method, "POST");
        assert_eq!(r.meta.request_id, "gw-1");
        assert_eq!(r.meta.caller_key.as_deref(), Some("k1"));
        assert_eq!(r.body.into_bytes(), br#"{"a":1}"#);
    }

    #[test]
    fn json_an_event_already_holds_is_passed_on_parsed_with_its_size() {
        let direct = br#"{"interface":{"interfaceName":"qcloud.cam.auth","para":{"id":"a","skey":"b"}}}"#;
        let Parsed::Request(r) = parse(direct, "rt") else { panic!("rejected") };
        match r.body {
            Body::Json { value, len } => {
                assert_eq!(len, direct.len());
                assert_eq!(value["interface"]["para"]["skey"], "b");
            }
            Body::Bytes(_) => panic!("a direct envelope is already parsed"),
        }
        let gateway = br#"{"requestContext":{},"headers":{},"httpMethod":"POST","path":"/",
            "body": {"interface": {"interfaceName": "x", "para": {"k": "v\u00e9"}}}}"#;
        let Parsed::Request(r) = parse(gateway, "rt") else { panic!("rejected") };
        match r.body {
            Body::Json { value, len } => {
                let written = value.to_string();
                assert_eq!(len, written.len(), "{written}");
                assert_eq!(value["interface"]["para"]["k"], "v\u{e9}");
            }
            Body::Bytes(_) => panic!("an object body is passed on parsed"),
        }
    }

    #[test]
    fn an_empty_query_string_does_not_hide_query_string_parameters() {
        let ev = br#"{"requestContext":{},"headers":{},"httpMethod":"POST","path":"/","body":"{}",
            "queryString":{},"queryStringParameters":{"key":"wk_from_parameters"}}"#;
        let Parsed::Request(r) = parse(ev, "rt") else { panic!("rejected") };
        assert_eq!(r.meta.caller_key.as_deref(), Some("wk_from_parameters"));
    }

    #[test]
    fn timer_events_are_recognised() {
        let timer = |ev: &[u8]| matches!(parse(ev, "rt"), Parsed::Timer);
        assert!(timer(
            br#"{"Type":"Timer","TriggerName":"hourly","Time":"2024-01-01T00:00:00Z","Message":""}"#
        ));
        assert!(!timer(br#"{"Type":"Timer"}"#));
        assert!(!timer(br#"{"interface":{"interfaceName":"Timer","para":{}}}"#));
    }

    #[test]
    fn missing_body_and_request_id_fall_back() {
        let ev =
            br#"{"requestContext":{},"headers":{},"httpMethod":"GET","path":"/","queryString":{"key":"qk"}}"#;
        let Parsed::Request(r) = parse(ev, "rt-2") else { panic!("rejected") };
        assert_eq!(r.meta.request_id, "rt-2");
        assert_eq!(r.meta.caller_key.as_deref(), Some("qk"));
        assert!(r.body.into_bytes().is_empty());
    }

    #[test]
    fn direct_envelopes_and_malformed_events() {
        let Parsed::Request(r) = parse(br#"{"interface":{"interfaceName":"x","para":{}}}"#, "rt") else {
            panic!()
        };
        assert_eq!(r.origin, Origin::Direct);
        match parse(b"not json", "rt") {
            Parsed::Reject { origin: Origin::Direct, error, .. } => {
                assert!(error.message.contains("not JSON"))
            }
            _ => panic!(),
        }
        match parse(br#"{"requestContext":{},"httpMethod":"POST","headers":{},"body":5}"#, "rt") {
            Parsed::Reject { origin: Origin::Gateway, status: 400, error } => {
                assert!(error.message.contains("$.body"))
            }
            _ => panic!(),
        }
        match parse(br#"{"requestContext":{},"httpMethod":"POST","body":"%%%","isBase64Encoded":true}"#, "rt")
        {
            Parsed::Reject { error, .. } => assert!(error.message.contains("base64")),
            _ => panic!(),
        }
    }

    #[test]
    fn replies_match_the_origin() {
        let env = Envelope::ok("OK", Value::Null);
        assert_eq!(reply(&Origin::Direct, 200, &env), env.to_bytes());
        let g: Value = serde_json::from_slice(&reply(&Origin::Gateway, 200, &env)).unwrap();
        assert_eq!(g["statusCode"], 200);
        assert_eq!(g["isBase64Encoded"], false);
        assert_eq!(g["headers"]["Content-Type"], "application/json; charset=utf-8");
        assert_eq!(g["body"].as_str().unwrap().as_bytes(), env.to_bytes().as_slice());
    }
}
