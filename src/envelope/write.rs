//! The response envelope written by hand: the bytes serde_json writes for it, without its serializer's per-byte
//! escaping loop and per-field calls (on the cached token's path, writing the reply cost more than reading the
//! request). JSON values a handler built are still written by serde_json.

use super::{Data, Envelope};
use crate::telemetry::line::int;

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

/// `s` as a JSON string, escaped exactly as serde_json escapes it. The usual string — nothing to escape — is
/// found so by one pass the compiler vectorises and copied whole.
pub fn string(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        // Rare (a message or value with a quote, a backslash or a control character): serde_json's own escaping.
        let _ = serde_json::to_writer(&mut *out, s);
        return;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// Whether any byte is one JSON escapes: a control character (below 0x20), `"` or `\`. Every other byte, non-ASCII
/// included, is written as it is.
fn needs_escape(bytes: &[u8]) -> bool {
    // Eight bytes at a time, with the word tricks for "some byte is below n" and "some byte is zero" (exact as
    // yes-or-no answers): a few operations a word instead of a branch and a table lookup a byte.
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let below = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGH;
    let words = bytes.chunks_exact(8);
    let rest = words.remainder().iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
    let mut found = 0u64;
    for word in words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let v = u64::from_ne_bytes(w);
        found |=
            below(v, 0x20) | below(v ^ (ONES * u64::from(b'"')), 1) | below(v ^ (ONES * u64::from(b'\\')), 1);
    }
    rest || found != 0
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
        for mut e in envelopes {
            assert_eq!(e.to_bytes(), serde_json::to_vec(&e).unwrap(), "{e:?}");
            e.return_code = -1;
            e.version = i64::MAX;
            assert_eq!(e.to_bytes(), serde_json::to_vec(&e).unwrap(), "{e:?}");
        }
    }

    #[test]
    fn only_controls_quotes_and_backslashes_need_escaping() {
        for b in 0u8..=255 {
            let expected = b < 0x20 || b == b'"' || b == b'\\';
            assert_eq!(needs_escape(&[b'x', b, b'y']), expected, "{b:#x}");
            // In a word and in the rest after the words, at every place, beside every other byte.
            for at in 0..20 {
                for other in [b'a', 0x7f, 0x80, 0xff, 0x1f, b'"'] {
                    let mut s = vec![other; 20];
                    s[at] = b;
                    let expected = expected || other == 0x1f || other == b'"';
                    assert_eq!(needs_escape(&s), expected, "{b:#x} at {at} beside {other:#x}");
                }
            }
        }
        assert!(!needs_escape(&[]));
        // Random strings of bytes around the edges, against the plain test.
        let alphabet = [0u8, 0x1f, 0x20, 0x21, b'"', b'#', b'[', b'\\', b']', 0x7f, 0x80, 0xa2, 0xdc, 0xff];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 33) as usize;
            let s: Vec<u8> = (0..len).map(|i| alphabet[((seed >> (i % 60)) % 14) as usize]).collect();
            let plain = s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
            assert_eq!(needs_escape(&s), plain, "{s:?}");
        }
    }
}
