//! The response envelope written by hand: the bytes serde_json writes for it, without its serializer's per-byte
//! escaping loop and per-field calls (on the cached token's path, writing the reply cost more than reading the
//! request). JSON values a handler built are still written by serde_json; strings and integers by the log line's
//! writers ([`crate::telemetry::line`]).

use super::{Data, Envelope};
use crate::telemetry::line::{int, json_string as string, needs_escape};

impl Envelope {
    /// The JSON bytes sent on the wire: `{"returnCode":…,"returnMessage":…,"returnData":…,"version":…,
    /// "componentName":…}`, byte for byte what serde_json writes for [`Envelope`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + self.return_message.len() + self.return_data.len_hint());
        out.extend_from_slice(b"{\"returnCode\":");
        int(&mut out, self.return_code);
        out.extend_from_slice(b",\"returnMessage\":");
        string(&mut out, &self.return_message);
        out.extend_from_slice(b",\"returnData\":");
        if self.return_data.write(&mut out).is_err() {
            // Writing a JSON value into memory cannot fail (its keys are strings); should it ever, the reply says so.
            return br#"{"returnCode":1099,"returnMessage":"INTERNAL_ERR","returnData":"","version":1,"componentName":"MA"}"#
                .to_vec();
        }
        out.extend_from_slice(b",\"version\":");
        int(&mut out, self.version);
        out.extend_from_slice(b",\"componentName\":");
        string(&mut out, self.component_name);
        out.push(b'}');
        out
    }

    /// Append the envelope's JSON as a JSON string, quotes included: what escaping [`Envelope::to_bytes`] as a string
    /// gives, byte for byte (a Function URL reply carries its body so). An envelope with flat data and no string
    /// that needs escaping — a token's or a ticket's — is written straight in its escaped form: escaping the JSON
    /// once written cost more than writing it, with a quote every dozen bytes. Any other is written, then escaped.
    pub fn write_as_string(&self, out: &mut Vec<u8>) {
        let plain = |s: &str| !needs_escape(s.as_bytes());
        let flat = match &self.return_data {
            Data::Flat(f)
                if plain(&self.return_message)
                    && plain(self.component_name)
                    && plain(f.int().0)
                    && f.fields().all(|(k, v)| plain(k) && plain(v)) =>
            {
                f
            }
            _ => {
                let _ = serde_json::to_writer(out, &*String::from_utf8_lossy(&self.to_bytes()));
                return;
            }
        };
        out.reserve(112 + self.return_message.len() + self.return_data.len_hint() * 5 / 4);
        out.extend_from_slice(br#""{\"returnCode\":"#);
        int(out, self.return_code);
        out.extend_from_slice(br#",\"returnMessage\":\""#);
        out.extend_from_slice(self.return_message.as_bytes());
        out.extend_from_slice(br#"\",\"returnData\":{"#);
        for (k, v) in flat.fields() {
            out.extend_from_slice(br#"\""#);
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(br#"\":\""#);
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(br#"\","#);
        }
        let (k, n) = flat.int();
        out.extend_from_slice(br#"\""#);
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(br#"\":"#);
        int(out, n);
        out.extend_from_slice(br#"},\"version\":"#);
        int(out, self.version);
        out.extend_from_slice(br#",\"componentName\":\""#);
        out.extend_from_slice(self.component_name.as_bytes());
        out.extend_from_slice(br#"\"}""#);
    }
}

impl Data {
    /// Append this data as JSON.
    pub(super) fn write(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match self {
            Self::Json(v) => serde_json::to_writer(&mut *out, v),
            Self::Flat(f) => {
                out.push(b'{');
                for (k, v) in f.fields() {
                    string(out, k);
                    out.push(b':');
                    string(out, v);
                    out.push(b',');
                }
                let (k, n) = f.int();
                string(out, k);
                out.push(b':');
                int(out, n);
                out.push(b'}');
                Ok(())
            }
        }
    }

    /// About how many bytes the data takes as JSON (exact for flat data without escapes; a guess otherwise).
    fn len_hint(&self) -> usize {
        match self {
            Self::Json(_) => 64,
            Self::Flat(f) => f.fields().map(|(k, v)| k.len() + v.len() + 6).sum::<usize>() + 32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Flat, WaferError};
    use serde_json::{json, Value};

    /// Every envelope is written as serde_json writes it: plain and escaped strings (every control character,
    /// quotes, backslashes, DEL, non-ASCII), flat and JSON data, errors, extreme integers.
    #[test]
    fn envelopes_are_written_as_serde_json_writes_them() {
        let mut awkward: Vec<String> = (0u8..0x20).map(|b| format!("a{}b", b as char)).collect();
        awkward.extend(
            ["", "plain", "q\"uote", "back\\slash", "del\u{7f}", "中文 é \u{85} 🙂", "</script>", "\u{2028}"]
                .map(String::from),
        );
        let mut envelopes = vec![
            Envelope::error(&WaferError::para("code", "is missing")),
            Envelope::ok("OK", Value::Null),
            Envelope::ok("OK", json!({"a": [1, 2.5, {"b": null}], "c": "d\"e", "n": -7})),
            Envelope::ok("OK", Flat::new([], ("n", i64::MIN))),
        ];
        for s in &awkward {
            envelopes.push(Envelope::ok(s.clone(), Value::String(s.clone())));
            envelopes.push(Envelope::ok(
                "ACCESS_TOKEN_SUCCESS",
                Flat::new([("appid", s.clone()), ("access_token", s.clone())], ("exp", i64::MAX)),
            ));
            envelopes.push(Envelope::ok(
                "TICKET_SUCCESS",
                Flat::new(
                    [("corpid", "ww1".into()), ("agentid", s.clone()), ("ticket", "t".into())],
                    ("exp", 0),
                ),
            ));
        }
        // And as a JSON string, as escaping those bytes gives it.
        let as_string = |e: &Envelope| {
            let mut out = b"x".to_vec();
            e.write_as_string(&mut out);
            assert_eq!(
                out[1..],
                serde_json::to_vec(&String::from_utf8(e.to_bytes()).unwrap()).unwrap()[..],
                "{e:?}"
            );
        };
        for mut e in envelopes {
            assert_eq!(e.to_bytes(), serde_json::to_vec(&e).unwrap(), "{e:?}");
            as_string(&e);
            e.return_code = -1;
            e.version = i64::MAX;
            assert_eq!(e.to_bytes(), serde_json::to_vec(&e).unwrap(), "{e:?}");
            as_string(&e);
            e.return_message = "q\"uote".into();
            as_string(&e);
        }
    }
}
