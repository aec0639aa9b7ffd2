//! The Wafer envelope: request parsing, the response shape, errors mapped to return codes, and typed `para` access.

mod codes;
mod data;
mod para;
mod write;

pub use codes::ReturnCode;
pub use data::{Data, Flat};
pub use para::{Para, ParaMap, MAX_FIELD_LEN};

use serde::Serialize;
use serde_json::Value;
use std::borrow::Cow;

/// A JSON string as the document held it: borrowed unless it had escapes (serde's own `Cow<str>` is always owned).
#[derive(serde::Deserialize)]
pub struct Text<'a>(#[serde(borrow)] pub Cow<'a, str>);

/// Deepest JSON nesting accepted in a request body. Deeper bodies are refused before any handler runs.
pub const MAX_JSON_DEPTH: usize = 32;

/// An error as the caller sees it: a return code and a message that never carries secrets or request echoes.
/// `detail` is for logs only (it must not carry secrets either).
#[derive(Debug, Clone, PartialEq)]
pub struct WaferError {
    pub code: ReturnCode,
    pub message: Cow<'static, str>,
    pub detail: Option<String>,
}

impl WaferError {
    pub fn new(code: ReturnCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self { code, message: message.into(), detail: None }
    }

    /// Attach a log-only detail (a cause chain, an upstream errcode). Never shown to callers.
    pub fn with_detail(mut self, detail: impl std::fmt::Display) -> Self {
        self.detail = Some(detail.to_string());
        self
    }

    pub fn para(field: &str, why: &str) -> Self {
        Self::new(ReturnCode::ParaErr, format!("para.{field} {why}"))
    }

    pub fn db(detail: impl std::fmt::Display) -> Self {
        Self::new(ReturnCode::DbErr, "storage failure").with_detail(detail)
    }

    pub fn auth() -> Self {
        Self::new(ReturnCode::AuthErr, "id/skey do not match a session of this app")
    }
}

impl std::fmt::Display for WaferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code.name(), self.code.code(), self.message)
    }
}

impl std::error::Error for WaferError {}

/// The response envelope. Field order is the wire order unmodified Wafer SDKs expect.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope {
    #[serde(rename = "returnCode")]
    pub return_code: i64,
    #[serde(rename = "returnMessage")]
    pub return_message: std::borrow::Cow<'static, str>,
    #[serde(rename = "returnData")]
    pub return_data: Data,
    pub version: i64,
    #[serde(rename = "componentName")]
    pub component_name: &'static str,
}

impl Envelope {
    pub fn ok(message: impl Into<std::borrow::Cow<'static, str>>, data: impl Into<Data>) -> Self {
        Self {
            return_code: 0,
            return_message: message.into(),
            return_data: data.into(),
            version: 1,
            component_name: "MA",
        }
    }

    pub fn error(err: &WaferError) -> Self {
        Self {
            return_code: err.code.code(),
            return_message: format!("{}: {}", err.code.name(), err.message).into(),
            return_data: Data::Json(Value::String(String::new())),
            version: 1,
            component_name: "MA",
        }
    }
}

/// A request envelope for `interface` with `para`, as a client sends it (the CLI's `--server`, tests).
pub fn request_body(interface: &str, para: Value) -> Value {
    serde_json::json!({"version": 1, "componentName": "MA", "interface": {"interfaceName": interface, "para": para}})
}

/// A parsed request: the interface name and its `para` object. Nothing about the interface is checked yet.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub interface_name: Cow<'a, str>,
    pub para: ParaMap<'a>,
}

/// Parse a raw body into a [`Request`], with a distinct return code for each failure.
/// The order of checks is: JSON object (1009), nesting depth (1020), `interface.interfaceName` (1002),
/// then `para` (1011). An unknown name is the dispatcher's business (1010).
pub fn parse_request(body: &[u8]) -> Result<Request<'_>, WaferError> {
    if json_depth_exceeds(body, MAX_JSON_DEPTH) {
        return Err(WaferError::new(
            ReturnCode::RequestTooLarge,
            format!("request JSON is nested deeper than {MAX_JSON_DEPTH} levels"),
        ));
    }
    // The usual request goes straight to what is used; anything unusual takes the general path below, which says
    // precisely what is wrong.
    // Checked as UTF-8 once, whole: read from bytes, serde_json checks each string on its own, which cost more than
    // the rest of the reading. A body that is not UTF-8 takes the general path, which says where.
    let Ok(text) = std::str::from_utf8(body) else {
        return parse_general(body);
    };
    match serde_json::from_str::<fast::Root>(text) {
        Ok(fast::Root(Some(r))) => Ok(r),
        _ => parse_general(body),
    }
}

/// Any body, read as a JSON value: the precise error for what is missing or malformed.
fn parse_general(body: &[u8]) -> Result<Request<'static>, WaferError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        WaferError::new(ReturnCode::RequestErr, "request body is not valid JSON").with_detail(e)
    })?;
    request_from_value(value)
}

/// A request that arrived already parsed (an SCF event is one JSON document: a direct invocation's envelope, or a
/// gateway event's object body), checked exactly as [`parse_request`] checks bytes.
pub fn parse_value(value: Value) -> Result<Request<'static>, WaferError> {
    fn deeper_than(v: &Value, max: usize) -> bool {
        match v {
            _ if max == 0 => matches!(v, Value::Object(_) | Value::Array(_)),
            Value::Object(m) => m.values().any(|v| deeper_than(v, max - 1)),
            Value::Array(a) => a.iter().any(|v| deeper_than(v, max - 1)),
            _ => false,
        }
    }
    if deeper_than(&value, MAX_JSON_DEPTH) {
        return Err(WaferError::new(
            ReturnCode::RequestTooLarge,
            format!("request JSON is nested deeper than {MAX_JSON_DEPTH} levels"),
        ));
    }
    request_from_value(value)
}

fn request_from_value(value: Value) -> Result<Request<'static>, WaferError> {
    let Value::Object(mut root) = value else {
        return Err(WaferError::new(ReturnCode::RequestErr, "request body is not a JSON object"));
    };
    let Some(Value::Object(mut interface)) = root.remove("interface") else {
        return Err(WaferError::new(ReturnCode::NoInterface, "interface.interfaceName is missing"));
    };
    let interface_name = match interface.remove("interfaceName") {
        Some(Value::String(s)) if !s.is_empty() => Cow::Owned(s),
        _ => return Err(WaferError::new(ReturnCode::NoInterface, "interface.interfaceName is missing")),
    };
    let para = match interface.remove("para") {
        Some(Value::Object(p)) => p.into(),
        _ => return Err(WaferError::new(ReturnCode::NoPara, "interface.para is missing or not an object")),
    };
    Ok(Request { interface_name, para })
}

/// A well-formed request read without building the envelope's own objects: only `interface.interfaceName` (a
/// non-empty string) and `interface.para` (an object) are kept, everything else is skipped. Objects only (serde
/// would also read a struct from an array); a repeated field or any other surprise fails, and the caller falls back.
mod fast {
    use super::{ParaMap, Request, Text};
    use serde::de::{Deserializer, Error, IgnoredAny, MapAccess, Visitor};

    pub struct Root<'a>(pub Option<Request<'a>>);

    struct RootVisitor;
    struct InterfaceVisitor;
    struct Interface<'a>(Request<'a>);

    impl<'de> serde::Deserialize<'de> for Root<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(RootVisitor)
        }
    }

    impl<'de> Visitor<'de> for RootVisitor {
        type Value = Root<'de>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an envelope object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Root<'de>, A::Error> {
            let mut interface = None;
            while let Some(Text(key)) = map.next_key()? {
                if key == "interface" {
                    if interface.is_some() {
                        return Err(A::Error::custom("repeated interface"));
                    }
                    interface = Some(map.next_value::<Interface>()?.0);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(Root(interface))
        }
    }

    impl<'de> serde::Deserialize<'de> for Interface<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(InterfaceVisitor)
        }
    }

    impl<'de> Visitor<'de> for InterfaceVisitor {
        type Value = Interface<'de>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an interface object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Interface<'de>, A::Error> {
            let (mut name, mut para) = (None, None);
            while let Some(Text(key)) = map.next_key()? {
                match &*key {
                    "interfaceName" if name.is_none() => name = Some(map.next_value::<Text>()?.0),
                    "para" if para.is_none() => para = Some(map.next_value::<ParaMap>()?),
                    "interfaceName" | "para" => return Err(A::Error::custom("repeated field")),
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            match (name, para) {
                (Some(interface_name), Some(para)) if !interface_name.is_empty() => {
                    Ok(Interface(Request { interface_name, para }))
                }
                _ => Err(A::Error::custom("incomplete interface")),
            }
        }
    }
}

/// Cheap pre-scan so that a deeply nested body is refused before serde recurses into it.
/// Brackets inside strings are skipped; the scan is linear and allocation-free.
fn json_depth_exceeds(body: &[u8], max: usize) -> bool {
    // Depth grows only at a `{` or `[`: a body holding no more of them than `max`, strings included, cannot exceed it.
    // That is the usual request, settled by one count the compiler vectorises instead of a walk through its strings.
    // (`b | 0x20` is `{` for exactly `{` and `[`; counted in byte-wide sums of at most 255.)
    let openings: usize = body
        .chunks(255)
        .map(|c| usize::from(c.iter().fold(0u8, |n, &b| n.wrapping_add(u8::from(b | 0x20 == b'{')))))
        .sum();
    if openings <= max {
        return false;
    }
    json_depth_walk(body, max)
}

/// The nesting depth followed byte by byte, outside strings: whether it ever exceeds `max`.
fn json_depth_walk(body: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The count that settles the usual body agrees with the walk on every body: bodies of brackets, quotes and
    /// escapes at and around the limit, each with brackets hidden in strings.
    #[test]
    fn the_bracket_count_never_contradicts_the_depth_walk() {
        let pieces: [&[u8]; 9] = [b"{", b"[", b"}", b"]", b"\"", b"\\", b"a", b"\"{[{[\"", b":"];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        // xorshift64: the same bodies on every run.
        let mut next = |below: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        };
        for _ in 0..20_000 {
            let mut body = Vec::new();
            for _ in 0..next(90) {
                body.extend_from_slice(pieces[next(pieces.len())]);
            }
            for max in [0, 1, 4, 32] {
                assert_eq!(json_depth_exceeds(&body, max), json_depth_walk(&body, max), "{max} {body:?}");
            }
        }
        let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
        assert!(json_depth_exceeds(deep.as_bytes(), MAX_JSON_DEPTH));
        let hidden = format!(r#"{{"a":"{}"}}"#, "[".repeat(100));
        assert!(!json_depth_exceeds(hidden.as_bytes(), MAX_JSON_DEPTH), "brackets in a string are not depth");
    }

    #[test]
    fn envelope_keys_are_in_wire_order() {
        let text = String::from_utf8(Envelope::ok("OK", Value::Null).to_bytes()).unwrap();
        assert_eq!(
            text,
            r#"{"returnCode":0,"returnMessage":"OK","returnData":null,"version":1,"componentName":"MA"}"#
        );
    }

    #[test]
    fn error_envelope_has_empty_string_data() {
        let env = Envelope::error(&WaferError::para("code", "is missing"));
        assert_eq!(env.return_code, 1003);
        assert_eq!(env.return_data, Data::Json(Value::String(String::new())));
        assert!(env.return_message.contains("para.code"));
    }

    #[test]
    fn the_fast_reading_agrees_with_the_general_one() {
        let bodies = [
            r#"{"version":1,"componentName":"MA","interface":{"interfaceName":"qcloud.cam.auth","para":{"id":"a","skey":"b"}}}"#,
            r#"{"interface":{"para":{"x":[1,{"y":null}]},"interfaceName":"n","extra":{"deep":[1,2]}},"z":1}"#,
            r#"{"interface":{"interfaceName":"n","para":{}},"interface":{"interfaceName":"m","para":{"a":1}}}"#,
            r#"{"interface":{"interfaceName":"n","interfaceName":"m","para":{}}}"#,
            r#"{"interface":{"interfaceName":"n","para":{"a":1},"para":{"b":2}}}"#,
            r#"{"interface":{"interfaceName":"n","para":{"k"ey":"vé"}}}"#,
            r#"{"interface":{"interfaceName":"","para":{}}}"#,
            r#"{"interface":{"interfaceName":1,"para":{}}}"#,
            r#"{"interface":{"interfaceName":"n","para":[]}}"#,
            r#"{"interface":{"interfaceName":"n"}}"#,
            r#"{"interface":["n",{}]}"#,
            r#"[{"interfaceName":"n","para":{}}]"#,
            r#"{"interface":null}"#,
            r#"{}"#,
            r#""x""#,
            r#"{"interface":{"interfaceName":"n","para":{}}} trailing"#,
            r#"{"interface":{"interfaceName":"n","para":{}}"#,
            // Names with escapes (read as owned text; the usual ones are borrowed from the body).
            r#"{"\u0069nterface":{"interface\u004eame":"n","p\u0061ra":{"a":1}},"v\"":1}"#,
        ];
        for b in bodies {
            let fast = parse_request(b.as_bytes()).map(|r| (r.interface_name, r.para)).map_err(|e| e.code);
            let general = parse_general(b.as_bytes()).map(|r| (r.interface_name, r.para)).map_err(|e| e.code);
            assert_eq!(fast, general, "{b}");
        }
        let r = parse_request(bodies[0].as_bytes()).unwrap();
        assert_eq!((&*r.interface_name, r.para.to_map().len()), ("qcloud.cam.auth", 2));
        assert!(matches!(r.interface_name, Cow::Borrowed(_)), "the usual name is borrowed from the body");
        let r = parse_request(bodies[bodies.len() - 1].as_bytes()).unwrap();
        assert_eq!((&*r.interface_name, r.para.get("a")), ("n", Some(&Value::from(1))));
    }

    #[test]
    fn a_parsed_value_is_checked_as_its_bytes_are() {
        let nest = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let bodies = [
            r#"{"interface":{"interfaceName":"n","para":{"a":1}}}"#.to_owned(),
            r#"{"interface":{"interfaceName":"","para":{}}}"#.to_owned(),
            r#"{"interface":{"interfaceName":"n"}}"#.to_owned(),
            r#"[1]"#.to_owned(),
            format!(r#"{{"interface":{{"interfaceName":"n","para":{{"x":{}}}}}}}"#, nest(29)),
            format!(r#"{{"interface":{{"interfaceName":"n","para":{{"x":{}}}}}}}"#, nest(30)),
            format!(r#"{{"interface":{{"interfaceName":"n","para":{{}}}},"x":{}}}"#, nest(31)),
            format!(r#"{{"interface":{{"interfaceName":"n","para":{{}}}},"x":{}}}"#, nest(32)),
        ];
        for b in &bodies {
            let from_bytes =
                parse_request(b.as_bytes()).map(|r| (r.interface_name, r.para)).map_err(|e| e.code);
            let value: Value = serde_json::from_slice(b.as_bytes()).unwrap();
            let from_value = parse_value(value).map(|r| (r.interface_name, r.para)).map_err(|e| e.code);
            assert_eq!(from_bytes, from_value, "{b}");
        }
        assert!(parse_value(serde_json::from_str(&bodies[5]).unwrap()).is_err(), "depth limit reached");
        assert!(parse_value(serde_json::from_str(&bodies[4]).unwrap()).is_ok(), "just under it");
    }

    #[test]
    fn parse_checks_in_protocol_order() {
        let code = |b: &str| parse_request(b.as_bytes()).unwrap_err().code;
        assert_eq!(code("nope"), ReturnCode::RequestErr);
        assert_eq!(code("[1,2]"), ReturnCode::RequestErr);
        assert_eq!(code("{}"), ReturnCode::NoInterface);
        assert_eq!(code(r#"{"interface":{"interfaceName":5}}"#), ReturnCode::NoInterface);
        assert_eq!(code(r#"{"interface":{"interfaceName":"x"}}"#), ReturnCode::NoPara);
        assert_eq!(code(r#"{"interface":{"interfaceName":"x","para":[]}}"#), ReturnCode::NoPara);
        let ok = parse_request(br#"{"interface":{"interfaceName":"x","para":{"a":"b"}}}"#).unwrap();
        assert_eq!(ok.interface_name, "x");
    }

    #[test]
    fn deep_nesting_is_refused_but_brackets_in_strings_are_not_counted() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(parse_request(deep.as_bytes()).unwrap_err().code, ReturnCode::RequestTooLarge);
        let body = format!(
            r#"{{"interface":{{"interfaceName":"x","para":{{"a":"{}\"{}"}}}}}}"#,
            "[".repeat(100),
            "{".repeat(100)
        );
        assert!(parse_request(body.as_bytes()).is_ok());
    }
}
