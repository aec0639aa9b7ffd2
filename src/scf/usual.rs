//! The usual Function URL or gateway event, read by hand in one pass over its text: the fields a request needs are
//! taken as borrowed text (copied only where a string has escapes), every other field is checked as JSON and
//! passed over. Anything that is not plainly a usual event — a field of another type, a known field given twice, a
//! number with an exponent, a lone surrogate, deep nesting — stops the reading, and the event is read as a JSON
//! value instead ([`super::event::parse_value`]), which decides. So where this reading gives an event, it gives what
//! that one gives; the tests in [`super::gateway`] check it for every event a byte away from a usual one.

use std::borrow::Cow;

/// Headers or query parameters: strings, in the event's order; a name given twice keeps its first place and its
/// last value, as a JSON value's object does.
pub(super) type Pairs<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// The most headers or query parameters read by hand (each new name is compared with those before it); an event
/// with more, far beyond a real request's, is read as a JSON value, whose objects are hashed.
pub(super) const MOST_PAIRS: usize = 64;

/// Deeper nesting in a field passed over is left to the JSON value's reading (its own limit is 128).
const MOST_DEPTH: usize = 64;

/// `requestContext`: only its `requestId` and `sourceIp`.
#[derive(Debug, Default)]
pub(super) struct Context<'a> {
    pub(super) request_id: Option<Cow<'a, str>>,
    pub(super) source_ip: Option<Cow<'a, str>>,
}

/// What a usual event says; `None` for a field that is absent or null.
#[derive(Debug, Default)]
pub(super) struct Usual<'a> {
    pub(super) context: Option<Context<'a>>,
    pub(super) headers: Option<Pairs<'a>>,
    pub(super) query_string: Option<Pairs<'a>>,
    pub(super) query_parameters: Option<Pairs<'a>>,
    pub(super) method: Option<Cow<'a, str>>,
    pub(super) path: Option<Cow<'a, str>>,
    pub(super) body: Option<Cow<'a, str>>,
    pub(super) base64: Option<bool>,
}

/// The event is not a usual one (or not JSON at all): the JSON value's reading decides.
struct Unusual;

type Read<T> = Result<T, Unusual>;

/// Read `text` as a usual event: an object whose known fields have their usual types and whose `Type` (a timer's)
/// is absent or null.
pub(super) fn read(text: &str) -> Option<Usual<'_>> {
    let mut r = Reader { text, bytes: text.as_bytes(), at: 0 };
    let usual = r.event().ok()?;
    r.space();
    (r.at == r.bytes.len()).then_some(usual)
}

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn event(&mut self) -> Read<Usual<'a>> {
        let mut u = Usual::default();
        let mut seen = 0u16;
        self.object(|r, key| {
            let field = match &*key {
                "Type" => 0,
                "requestContext" => 1,
                "headers" => 2,
                "queryString" => 3,
                "queryStringParameters" => 4,
                "httpMethod" => 5,
                "path" => 6,
                "body" => 7,
                "isBase64Encoded" => 8,
                _ => return r.skip(1),
            };
            if seen & (1 << field) != 0 {
                return Err(Unusual);
            }
            seen |= 1 << field;
            match field {
                // A timer's `Type`: the JSON value's reading classifies such an event.
                0 => r.nullable(|_| Err::<(), _>(Unusual)).map(drop)?,
                1 => u.context = r.nullable(Self::context)?,
                2 => u.headers = r.nullable(Self::pairs)?,
                3 => u.query_string = r.nullable(Self::pairs)?,
                4 => u.query_parameters = r.nullable(Self::pairs)?,
                5 => u.method = r.nullable(Self::text)?,
                6 => u.path = r.nullable(Self::text)?,
                7 => u.body = r.nullable(Self::text)?,
                _ => u.base64 = r.nullable(Self::boolean)?,
            }
            Ok(())
        })?;
        Ok(u)
    }

    fn context(&mut self) -> Read<Context<'a>> {
        let mut c = Context::default();
        self.object(|r, name| {
            match &*name {
                "requestId" => c.request_id = r.nullable(Self::text)?,
                "sourceIp" => c.source_ip = r.nullable(Self::text)?,
                _ => r.skip(2)?,
            }
            Ok(())
        })?;
        Ok(c)
    }

    fn pairs(&mut self) -> Read<Pairs<'a>> {
        let mut pairs: Pairs<'a> = Vec::with_capacity(16);
        self.object(|r, name| {
            let value = r.text()?;
            let full = pairs.len() == MOST_PAIRS;
            match pairs.iter_mut().find(|(n, _)| *n == name) {
                Some(pair) => pair.1 = value,
                None if full => return Err(Unusual),
                None => pairs.push((name, value)),
            }
            Ok(())
        })?;
        Ok(pairs)
    }

    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.space();
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> Read<()> {
        if self.peek() != Some(byte) {
            return Err(Unusual);
        }
        self.at += 1;
        Ok(())
    }

    /// `null` is `None`; anything else is read by `f`.
    fn nullable<T>(&mut self, f: impl FnOnce(&mut Self) -> Read<T>) -> Read<Option<T>> {
        if self.peek() == Some(b'n') {
            return self.literal(b"null").map(|()| None);
        }
        f(self).map(Some)
    }

    /// An object, each member's key handed to `member`, which reads the value.
    fn object(&mut self, mut member: impl FnMut(&mut Self, Cow<'a, str>) -> Read<()>) -> Read<()> {
        self.sequence(b'{', b'}', |r| {
            let key = r.text()?;
            r.eat(b':')?;
            member(r, key)
        })
    }

    /// `open`, items read by `item` and separated by commas, `close`.
    fn sequence(&mut self, open: u8, close: u8, mut item: impl FnMut(&mut Self) -> Read<()>) -> Read<()> {
        self.eat(open)?;
        if self.peek() == Some(close) {
            self.at += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b) if b == close => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(Unusual),
            }
        }
    }

    /// Any JSON value, checked and passed over.
    fn skip(&mut self, depth: usize) -> Read<()> {
        if depth > MOST_DEPTH {
            return Err(Unusual);
        }
        match self.peek() {
            Some(b'"') => self.text().map(drop),
            Some(b'{') => self.object(|r, _| r.skip(depth + 1)),
            Some(b'[') => self.sequence(b'[', b']', |r| r.skip(depth + 1)),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(Unusual),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Read<()> {
        if !self.bytes[self.at..].starts_with(word) {
            return Err(Unusual);
        }
        self.at += word.len();
        Ok(())
    }

    fn boolean(&mut self) -> Read<bool> {
        match self.peek() {
            Some(b't') => self.literal(b"true").map(|()| true),
            _ => self.literal(b"false").map(|()| false),
        }
    }

    /// A number as JSON writes it, without an exponent and short enough for any float: such a number is read alike
    /// by every reading (one with an exponent may be beyond a float's range, which the JSON value's reading refuses).
    fn number(&mut self) -> Read<()> {
        let (b, start) = (self.bytes, self.at);
        let mut at = start + usize::from(b.get(start) == Some(&b'-'));
        let digits = |mut at: usize| {
            while let Some(b'0'..=b'9') = b.get(at) {
                at += 1;
            }
            at
        };
        at = match b.get(at) {
            Some(b'0') => at + 1,
            Some(b'1'..=b'9') => digits(at),
            _ => return Err(Unusual),
        };
        if b.get(at) == Some(&b'.') {
            let fraction = digits(at + 1);
            if fraction == at + 1 {
                return Err(Unusual);
            }
            at = fraction;
        }
        if matches!(b.get(at), Some(b'e' | b'E')) || at - start > 300 {
            return Err(Unusual);
        }
        self.at = at;
        Ok(())
    }

    /// A string: borrowed when it has no escapes.
    fn text(&mut self) -> Read<Cow<'a, str>> {
        self.eat(b'"')?;
        let start = self.at;
        let at = self.plain(start);
        match self.bytes.get(at) {
            Some(b'"') => {
                self.at = at + 1;
                Ok(Cow::Borrowed(&self.text[start..at]))
            }
            Some(b'\\') => self.escaped(start, at),
            // A control character, or the end.
            _ => Err(Unusual),
        }
    }

    /// The rest of a string whose first escape is at `at`: kept out of [`Reader::text`], which reads most strings
    /// (names and plain values) and stays small.
    #[inline(never)]
    fn escaped(&mut self, start: usize, mut at: usize) -> Read<Cow<'a, str>> {
        // With escapes: unescaped into bytes, a word at a time through plain words and a byte at a time elsewhere
        // (a JSON body in an event has an escaped quote every dozen bytes or so). The bytes are the text's own,
        // between escapes that write whole characters, so they are UTF-8; the check is kept all the same.
        // Room for the rest of the event or a kilobyte more than the plain start, whichever is less: a body with
        // escapes is read without growing, unless it is long.
        let mut out = Vec::with_capacity((self.bytes.len() - start).min(at - start + 1024));
        out.extend_from_slice(&self.bytes[start..at]);
        loop {
            match self.bytes.get(at) {
                Some(b'"') => {
                    self.at = at + 1;
                    return String::from_utf8(out).map(Cow::Owned).map_err(|_| Unusual);
                }
                Some(b'\\') => at = self.escape(at + 1, &mut out)?,
                // A control character, or the end.
                _ => return Err(Unusual),
            }
            // The plain bytes up to the next quote, backslash or control character: whole words, then the bytes
            // before the one that ends the run (or, near the end, the rest of the run).
            let run = loop {
                match self.bytes.get(at..at + 8).and_then(|w| <&[u8; 8]>::try_from(w).ok()) {
                    Some(word) => match crate::telemetry::line::ends_run(u64::from_le_bytes(*word)) {
                        0 => {
                            out.extend_from_slice(word);
                            at += 8;
                        }
                        found => break &word[..(found.trailing_zeros() / 8) as usize],
                    },
                    None => break &self.bytes[at..self.plain(at)],
                }
            };
            for &b in run {
                out.push(b);
            }
            at += run.len();
        }
    }

    /// The first byte from `from` on that ends a run of plain string bytes (a quote, a backslash or a control
    /// character), or the end.
    fn plain(&self, from: usize) -> usize {
        from + crate::telemetry::line::plain_len(&self.bytes[from..])
    }

    /// The escape whose letter is at `at`, appended to `out` (as UTF-8); where the string goes on.
    fn escape(&self, at: usize, out: &mut Vec<u8>) -> Read<usize> {
        let c = match self.bytes.get(at) {
            Some(b'"') => b'"',
            Some(b'\\') => b'\\',
            Some(b'/') => b'/',
            Some(b'b') => 0x08,
            Some(b'f') => 0x0c,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'u') => {
                let (c, next) = match self.hex(at + 1)? {
                    high @ 0xD800..=0xDBFF if self.bytes.get(at + 5..at + 7) == Some(b"\\u") => {
                        match self.hex(at + 7)? {
                            low @ 0xDC00..=0xDFFF => {
                                (0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00), at + 11)
                            }
                            _ => return Err(Unusual),
                        }
                    }
                    // A lone surrogate.
                    0xD800..=0xDFFF => return Err(Unusual),
                    n => (n, at + 5),
                };
                let c = char::from_u32(c).ok_or(Unusual)?;
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                return Ok(next);
            }
            _ => return Err(Unusual),
        };
        out.push(c);
        Ok(at + 1)
    }

    /// Four hex digits at `at`.
    fn hex(&self, at: usize) -> Read<u32> {
        let digits = self.bytes.get(at..at + 4).ok_or(Unusual)?;
        digits.iter().try_fold(0u32, |n, &d| Ok(n << 4 | char::from(d).to_digit(16).ok_or(Unusual)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_borrowed_unless_they_have_escapes() {
        let u = read(
            r#"{"httpMethod":"POST","path":"/a\/b","body":"x\"\u00e9\ud83d\ude00\n","headers":{"k":"v"}}"#,
        )
        .unwrap();
        assert!(matches!(u.method, Some(Cow::Borrowed("POST"))));
        assert_eq!(u.path.as_deref(), Some("/a/b"));
        assert_eq!(u.body.as_deref(), Some("x\"é😀\n"));
        assert!(matches!(&u.headers.unwrap()[0], (Cow::Borrowed("k"), Cow::Borrowed("v"))));
    }

    #[test]
    fn strings_with_escapes_read_as_serde_json_reads_them() {
        let alphabet = [
            "a",
            "\\\"",
            "\\\\",
            "\\/",
            "\\n",
            "\\u00e9",
            "\\ud83d\\ude00",
            "é",
            "中",
            "😀",
            " ",
            "\\t",
            "0",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            crate::telemetry::line::testing::xorshift(&mut seed);
            let len = (seed % 45) as usize;
            let text: String = (0..len).map(|i| alphabet[((seed >> (i % 60)) % 13) as usize]).collect();
            let event = format!(r#"{{"body":"\\{text}","path":"{text}"}}"#);
            let theirs: serde_json::Value = serde_json::from_str(&event).unwrap();
            let u = read(&event).unwrap();
            assert_eq!(u.body.as_deref(), theirs["body"].as_str(), "{event}");
            assert_eq!(u.path.as_deref(), theirs["path"].as_str(), "{event}");
        }
    }

    #[test]
    fn the_run_of_plain_bytes_ends_at_the_first_quote_backslash_or_control_character() {
        for len in 0..40 {
            for end in [b'"', b'\\', 0x00, 0x1f] {
                for filler in [b'a', 0x7f, 0x80, 0xff, b' ', b'!', b'#', b'[', b']'] {
                    let mut bytes = vec![filler; len];
                    bytes.push(end);
                    bytes.extend_from_slice(b"\"\\\x01");
                    // The reader is handed text; the bytes here need not be UTF-8 for the scan itself.
                    let r = Reader { text: "", bytes: &bytes, at: 0 };
                    assert_eq!(r.plain(0), len, "{len} {end} {filler}");
                }
            }
            let plain = vec![b'a'; len];
            assert_eq!(Reader { text: "", bytes: &plain, at: 0 }.plain(0), len);
        }
    }

    #[test]
    fn anything_doubtful_is_left_to_the_json_value() {
        for event in [
            r#"{"httpMethod":"POST","n":1e3}"#,
            r#"{"httpMethod":"POST","n":01}"#,
            r#"{"httpMethod":"POST","s":"\ud83d"}"#,
            r#"{"httpMethod":"POST","s":"\ude00"}"#,
            r#"{"httpMethod":"POST","s":"\u12"}"#,
            r#"{"httpMethod":"POST","s":"\x"}"#,
            r#"{"httpMethod":"POST","httpMethod":"GET"}"#,
            r#"{"httpMethod":5}"#,
            r#"{"Type":"Timer","httpMethod":"POST"}"#,
            r#"{"httpMethod":"POST",}"#,
            r#"{"httpMethod":"POST"} x"#,
            r#"["httpMethod"]"#,
        ] {
            assert!(read(event).is_none(), "{event}");
        }
        let deep = format!(r#"{{"n":{}{}}}"#, "[".repeat(MOST_DEPTH + 1), "]".repeat(MOST_DEPTH + 1));
        assert!(read(&deep).is_none());
        let fine =
            format!(r#"{{"n":{}{},"m":-0.5,"t":[true,false,null,{{}}]}}"#, "[".repeat(9), "]".repeat(9));
        assert!(read(&fine).is_some());
    }
}
