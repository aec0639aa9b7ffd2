//! A gateway event's request, however the event was read: as the usual Function URL or gateway event, straight
//! into borrowed text ([`read_usual`]), or as a JSON value with every quirk ([`super::event::parse`]). Both hand
//! their fields to [`finish`]: header and query lookups, the request id, the client address, the body.

use super::event::{Body, Incoming, Origin, Parsed};
use crate::request::RequestMeta;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// The usual gateway event read without building a JSON value for it (its headers alone are a map of a dozen or
/// more strings): read by hand ([`super::usual`]); `None` for any other event, which the caller reads as a JSON
/// value. What this returns is what reading the JSON value gives, which tests check across the quirks and for every
/// event a byte away from a usual one.
pub(super) fn read_usual(event: &[u8], runtime_request_id: &str) -> Option<Parsed> {
    // Checked as UTF-8 once, whole: an event that is not UTF-8 is the JSON value's reading to refuse.
    let text = std::str::from_utf8(event).ok()?;
    let u = super::usual::read(text)?;
    // A gateway event without doubt (what the JSON value's reading checks by the fields' presence, null included),
    // whose method is a string (a null one is refused there).
    let gateway = u.context.is_some() || u.headers.is_some() || u.path.is_some();
    let (true, Some(method)) = (gateway, u.method) else {
        return None;
    };
    let body = match u.body {
        None => Body::Bytes(Vec::new()),
        Some(s) => match string_body(s, u.base64.unwrap_or(false)) {
            Ok(b) => b,
            Err(refused) => return Some(refused),
        },
    };
    let context = u.context.as_ref();
    let fields = Fields {
        headers: Headers::Pairs(u.headers.as_deref().unwrap_or_default()),
        queries: [&u.query_string, &u.query_parameters]
            .into_iter()
            .flatten()
            .map(|q| Params::Pairs(q))
            .collect(),
        method: method.to_ascii_uppercase(),
        path: u.path.map_or_else(|| "/".to_owned(), Cow::into_owned),
        body,
        context_request_id: context.and_then(|c| c.request_id.as_deref()),
        context_source_ip: context.and_then(|c| c.source_ip.as_deref()),
    };
    Some(finish(fields, runtime_request_id))
}

/// A string body: base64-decoded when the event says so (a body that does not decode is refused).
pub(super) fn string_body(s: Cow<'_, str>, base64: bool) -> Result<Body, Parsed> {
    use base64::Engine;
    if !base64 {
        return Ok(Body::Bytes(s.into_owned().into_bytes()));
    }
    base64::engine::general_purpose::STANDARD.decode(s.trim()).map(Body::Bytes).map_err(|_| {
        super::event::reject(
            Origin::Gateway,
            400,
            "$.body",
            "is not valid base64 although isBase64Encoded is true",
        )
    })
}

/// The headers, as either reading holds them.
pub(super) enum Headers<'a> {
    Value(Option<&'a Map<String, Value>>),
    Pairs(&'a [(Cow<'a, str>, Cow<'a, str>)]),
}

impl<'a> Headers<'a> {
    /// A header's value (names in any case): a list gives its first string.
    fn first(&self, name: &str) -> Option<&'a str> {
        self.lookup(name, false)
    }

    /// The last value of a header (the one a proxy in front added last), for addresses.
    fn last(&self, name: &str) -> Option<&'a str> {
        self.lookup(name, true)
    }

    /// `name`'s value found from the front, or from the back: of a list, its first or its last string.
    fn lookup(&self, name: &str, from_back: bool) -> Option<&'a str> {
        fn pick<I: DoubleEndedIterator>(
            mut it: I,
            from_back: bool,
            p: impl FnMut(&I::Item) -> bool,
        ) -> Option<I::Item> {
            if from_back {
                it.rfind(p)
            } else {
                it.find(p)
            }
        }
        match self {
            Self::Value(h) => match pick((*h)?.iter(), from_back, |(k, _)| k.eq_ignore_ascii_case(name))?.1 {
                Value::String(s) => Some(s.as_str()),
                Value::Array(a) => pick(a.iter().filter_map(Value::as_str), from_back, |_| true),
                _ => None,
            },
            Self::Pairs(p) => {
                pick(p.iter(), from_back, |(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| &**v)
            }
        }
    }
}

/// One map of query parameters (`queryString`, `queryStringParameters`), as either reading holds it.
pub(super) enum Params<'a> {
    Value(&'a Map<String, Value>),
    Pairs(&'a [(Cow<'a, str>, Cow<'a, str>)]),
}

impl Params<'_> {
    fn is_empty(&self) -> bool {
        match self {
            Self::Value(m) => m.is_empty(),
            Self::Pairs(p) => p.is_empty(),
        }
    }

    /// `key` (a caller key in the query): a list gives its first string.
    fn key(&self) -> Option<String> {
        match self {
            Self::Value(m) => match m.get("key")? {
                Value::String(s) => Some(s.clone()),
                Value::Array(a) => a.iter().find_map(Value::as_str).map(str::to_owned),
                _ => None,
            },
            Self::Pairs(p) => p.iter().find(|(k, _)| k == "key").map(|(_, v)| v.clone().into_owned()),
        }
    }

    /// The parameters as a query string (lists give one pair per element, a null a key alone).
    fn query_string(&self) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        match self {
            Self::Value(m) => {
                for (k, v) in m.iter() {
                    let values = match v {
                        Value::Array(a) => a.iter().collect::<Vec<_>>(),
                        v => vec![v],
                    };
                    for v in values {
                        match v {
                            Value::String(s) => out.append_pair(k, s),
                            Value::Null => out.append_key_only(k),
                            v => out.append_pair(k, &v.to_string()),
                        };
                    }
                }
            }
            Self::Pairs(p) => {
                out.extend_pairs(p.iter().map(|(k, v)| (&**k, &**v)));
            }
        }
        out.finish()
    }
}

/// What a gateway event says of its request, read either way.
pub(super) struct Fields<'a> {
    pub(super) headers: Headers<'a>,
    /// `queryString`, then `queryStringParameters`, as far as present.
    pub(super) queries: Vec<Params<'a>>,
    /// Upper-case.
    pub(super) method: String,
    pub(super) path: String,
    pub(super) body: Body,
    pub(super) context_request_id: Option<&'a str>,
    pub(super) context_source_ip: Option<&'a str>,
}

/// The request a gateway event carries.
pub(super) fn finish(f: Fields<'_>, runtime_request_id: &str) -> Parsed {
    let headers = &f.headers;
    let request_id = f
        .context_request_id
        .or_else(|| headers.first("x-api-requestid"))
        .or_else(|| headers.first("x-scf-request-id"))
        .and_then(crate::request::safe_request_id)
        .or_else(|| crate::request::safe_request_id(runtime_request_id))
        .unwrap_or("-")
        .to_owned();
    // Only what the platform sets: the gateway's sourceIp, else the last x-scf-remote-addr value (SCF's own), else
    // the X-Forwarded-For entry the platform appended (the last one of the last value; earlier entries are the
    // client's to choose).
    let source_ip = f
        .context_source_ip
        .filter(|ip| !ip.is_empty())
        .map(|ip| crate::request::log_safe(ip, 64))
        .or_else(|| crate::request::last_forwarded(headers.last("x-scf-remote-addr")))
        .or_else(|| crate::request::last_forwarded(headers.last("x-forwarded-for")));
    let meta = RequestMeta { request_id, source_ip: source_ip.map(Into::into), ..RequestMeta::default() }
        .with_credentials(|name| headers.first(name), f.queries.iter().find_map(Params::key));
    // The first map that has parameters.
    let query = f.queries.iter().find(|q| !q.is_empty()).map(Params::query_string);
    let content_type = headers.first("content-type").map(str::to_owned);
    Parsed::Request(Box::new(Incoming {
        origin: Origin::Gateway,
        method: f.method,
        path: f.path,
        query,
        content_type,
        body: f.body,
        meta,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::event::{parse, parse_value};
    use super::super::usual::MOST_PAIRS;
    use super::*;

    /// Everything a parse gives, credentials included.
    fn describe(p: Parsed) -> String {
        match p {
            Parsed::Timer => "timer".into(),
            Parsed::Reject { origin, status, error } => {
                format!("reject {origin:?} {status} {} {}", error.code.code(), error.message)
            }
            Parsed::Request(r) => {
                let m = &r.meta;
                let line = format!(
                    "{:?} {} {} {:?} {:?} id={} key={:?} admin={:?} ip={:?} direct={} ",
                    r.origin,
                    r.method,
                    r.path,
                    r.query,
                    r.content_type,
                    m.request_id,
                    m.caller_key,
                    m.admin_token,
                    m.source_ip,
                    m.direct
                );
                let json = matches!(r.body, Body::Json { .. });
                format!("{line}json={json} body={:?}", String::from_utf8_lossy(&r.body.into_bytes()))
            }
        }
    }

    /// The usual events are read straight into their fields, and give what reading them as a JSON value gives.
    #[test]
    fn the_usual_events_read_straight_give_what_the_json_value_gives() {
        let usual = [
            r#"{"headers":{"content-type":"application/json","x-wafer-key":"wk_1","x-scf-request-id":"r-1","x-forwarded-for":"198.51.100.23"},"httpMethod":"POST","path":"/","queryString":{},"body":"{\"version\":1}","isBase64Encoded":false}"#,
            r#"{"requestContext":{"requestId":"ctx-1","sourceIp":"203.0.113.7","identity":{},"stage":"release","nested":{"a":[1,{"b":null}]}},"headers":{"Content-Type":"text/plain","Authorization":"Bearer wk_2","X-Forwarded-For":"6.6.6.6, 203.0.113.9"},"httpMethod":"post","path":"/release/x","body":"hi"}"#,
            r#"{"headers":{"host":"h"},"httpMethod":"GET","path":"/wechat/wx1/cgi-bin/media/get","queryString":{"access_token":"wk_3","media_id":"5 6&7"}}"#,
            r#"{"requestContext":{},"headers":{},"httpMethod":"POST","path":"/","body":"{}","queryString":{},"queryStringParameters":{"key":"wk_4"}}"#,
            r#"{"headers":{"x-wafer-key":"first","X-Wafer-Key":"other case","x-wafer-key":"last"},"httpMethod":"POST","path":"/"}"#,
            r#"{"headers":{"content-type":"application/json"},"httpMethod":"POST","path":"/","body":"eyJhIjoxfQ==","isBase64Encoded":true}"#,
            r#"{"headers":{"content-type":"application/json"},"httpMethod":"POST","path":"/","body":"%%%","isBase64Encoded":true}"#,
            r#"{"headers":{"x-wafer-key":"wk_\"5\"\u00e9","x-api-requestid":"gw\u00e9"},"httpMethod":"POST","path":"/p\u00e9","body":"\u4e2d\n"}"#,
            r#"{"requestContext":{"requestId":null,"sourceIp":""},"headers":{"x-scf-remote-addr":"6.6.6.6, 203.0.113.10","x-wafer-admin-token":" adm "},"httpMethod":"get","path":"/healthz","body":null,"isBase64Encoded":null}"#,
            r#"{"requestContext":{"requestId":"a","requestId":"b"},"httpMethod":"DELETE"}"#,
            r#"{"headers":null,"httpMethod":"POST","path":"/x","queryString":null,"queryStringParameters":{"key":"k1","key":"k2"}}"#,
            r#"{"Type":null,"headers":{},"httpMethod":"POST","path":"/"}"#,
            r#"{"headers":{},"httpMethod":"POST","path":"/","n":[[[[1]]]],"h":{"x-wafer-key":5}}"#,
            "\n {\"headers\":{},\"httpMethod\":\"POST\",\"path\":\"/\",\"body\":\"x\"} \n",
            r#"{"requestContext":{"requestTime":1733300000,"n":-0.25,"requestId":"r\u003c1\u003e"},"headers":{"x-wafer-key":"a\u0026b"},"httpMethod":"POST","path":"/","body":"\ud83d\ude00\/\b\f\r\t"}"#,
        ];
        for ev in usual {
            let fast = read_usual(ev.as_bytes(), "rt-9").unwrap_or_else(|| panic!("not read straight: {ev}"));
            assert_eq!(describe(fast), describe(parse_value(ev.as_bytes(), "rt-9")), "{ev}");
        }
    }

    /// Everything else is the JSON value's to read, and `parse` gives what it gives.
    #[test]
    fn other_events_are_read_as_json_values() {
        let other = [
            r#"{"headers":{"X-Wafer-Key":["k1","k2"]},"httpMethod":"POST","path":"/"}"#,
            r#"{"headers":{},"httpMethod":"GET","path":"/","queryString":{"debug":true,"tag":["a","b"],"n":null}}"#,
            r#"{"headers":{},"httpMethod":"POST","path":"/","body":"eyJhIjoxfQ==","isBase64Encoded":"true"}"#,
            r#"{"requestContext":{},"headers":{},"httpMethod":"POST","path":"/","body":{"interface":{"interfaceName":"x","para":{}}}}"#,
            r#"{"requestContext":{},"httpMethod":"POST","headers":{},"body":5}"#,
            r#"{"requestContext":{},"httpMethod":null,"headers":{}}"#,
            r#"{"requestContext":{"requestId":"x"},"headers":{"x-wafer-key":"k"}}"#,
            r#"{"requestContext":["id","203.0.113.7"],"httpMethod":"POST","path":"/"}"#,
            r#"{"requestContext":"x","httpMethod":"POST","path":"/"}"#,
            r#"{"requestContext":{"requestId":5},"httpMethod":"POST","path":"/"}"#,
            r#"{"requestContext":null,"httpMethod":"POST"}"#,
            r#"{"headers":{},"httpMethod":"POST","path":"/a","path":"/b"}"#,
            r#"{"headers":"x","httpMethod":"POST","path":"/"}"#,
            r#"{"Type":"Timer","TriggerName":"hourly","httpMethod":"POST","headers":{}}"#,
            r#"{"Type":"Timer","httpMethod":"POST","headers":{}}"#,
            r#"{"Type":"Timer","TriggerName":"hourly","Time":"2024-01-01T00:00:00Z","Message":""}"#,
            r#"{"version":1,"componentName":"MA","interface":{"interfaceName":"qcloud.cam.auth","para":{}}}"#,
            r#"{"httpMethod":"POST"}"#,
            r#"["headers","httpMethod","path"]"#,
            r#"{"headers":{},"httpMethod":"POST","path":"/","n":1e400}"#,
            r#"{"headers":{},"httpMethod":"POST","path":"/","n":1e2}"#,
            r#"{"headers":{},"httpMethod":"POST","path":"/","s":"\ud83d"}"#,
            r#"{"headers":{"k":"\ude00"},"httpMethod":"POST","path":"/"}"#,
            "not json",
            "",
        ];
        let many = |n: usize| (0..n).map(|i| format!(r#""x-h{i}":"v{i}""#)).collect::<Vec<_>>().join(",");
        let crowded = [MOST_PAIRS, MOST_PAIRS + 1].map(|n| {
            format!(r#"{{"headers":{{{},"x-wafer-key":"k"}},"httpMethod":"POST","path":"/"}}"#, many(n))
        });
        assert!(read_usual(crowded[0].replace(r#","x-wafer-key":"k""#, "").as_bytes(), "rt").is_some());
        for ev in other.iter().copied().chain(crowded.iter().map(String::as_str)) {
            assert!(read_usual(ev.as_bytes(), "rt-9").is_none(), "read straight: {ev}");
            assert_eq!(describe(parse(ev.as_bytes(), "rt-9")), describe(parse_value(ev.as_bytes(), "rt-9")));
        }
    }

    /// An event as a mini-program's request arrives in it through a Function URL.
    const FUNCTION_URL: &str = r#"{"requestContext":{"serviceId":"service-1","path":"/","httpMethod":"ANY","identity":{},"requestId":"b8b6c6d2","sourceIp":"198.51.100.23","stage":"release","n":[1,-2.5,true,null]},"headers":{"accept":"*/*","content-length":"97","content-type":"application/json","x-forwarded-for":"198.51.100.23","x-scf-request-id":"b8b6c6d2","x-wafer-key":"wk_\u00e9"},"httpMethod":"POST","path":"/","queryString":{},"queryStringParameters":{},"pathParameters":{},"stageVariables":{"stage":"release"},"body":"{\"version\":1,\"interface\":{\"interfaceName\":\"qcloud.mimi.access_token\",\"para\":{}}}","isBase64Encoded":false}"#;

    /// Every event one byte away from a usual one (each byte replaced by each of a set that matters to JSON, or
    /// dropped), and every prefix of it, gives what reading it as a JSON value gives: among them, reading straight
    /// accepts none that reading refuses, and reads none differently.
    #[test]
    fn every_event_a_byte_away_from_a_usual_one_gives_what_the_json_value_gives() {
        let bases = [
            FUNCTION_URL,
            r#"{"Type":null,"requestContext":{"requestId":"a","requestId":"b"},"headers":{"X-Wafer-Key":"k","x-wafer-key":"\ud83d\ude00"},"httpMethod":"get","path":"/healthz","body":"eyJhIjoxfQ==","isBase64Encoded":true}"#,
            r#"{"requestContext":{"requestTime":1733300000,"n":[-0.25,{}]},"headers":{"k":"a\u0026b\/\t"},"queryString":{"key":"q"},"httpMethod":"POST","body":"\u4e2d"}"#,
        ];
        // Each byte that matters to JSON, a two-byte character, a byte UTF-8 never has, and nothing (a byte dropped).
        let swaps: Vec<&[u8]> =
            b"\"\\{}[],: 0-entu\x01\xff".chunks(1).chain([&b"\xc3\xa9"[..], b""]).collect();
        let (mut checked, mut in_place) = (0, 0);
        for base in bases {
            let base = base.as_bytes();
            let mut variants: Vec<Vec<u8>> = (0..base.len()).map(|n| base[..n].to_vec()).collect();
            for i in 0..base.len() {
                for swap in &swaps {
                    variants.push([&base[..i], swap, &base[i + 1..]].concat());
                }
            }
            assert!(read_usual(base, "rt-9").is_some(), "{}", String::from_utf8_lossy(base));
            for v in variants {
                in_place += usize::from(read_usual(&v, "rt-9").is_some());
                assert_eq!(
                    describe(parse(&v, "rt-9")),
                    describe(parse_value(&v, "rt-9")),
                    "{}",
                    String::from_utf8_lossy(&v)
                );
                checked += 1;
            }
        }
        // Nearly half of them are still usual events (a letter changed in a string), read straight.
        assert!(checked > 15_000 && in_place * 5 > checked * 2, "{in_place} of {checked} read in place");
    }
}
