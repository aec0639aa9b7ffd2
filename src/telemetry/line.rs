//! The one line per request, written by hand: its fields go straight into bytes — the same text or JSON the
//! subscriber writes for any other event, byte for byte — instead of through tracing's field visitors and
//! `core::fmt` (which cost the request more than anything else it does on a cached path). The caller checks the
//! filter first (`tracing::enabled!`), and falls back to a tracing event when no output was installed by
//! [`super::init`] (a library user's own subscriber).

use super::LogFormat;
use std::cell::RefCell;
use std::io::Write;
use std::sync::OnceLock;
use tracing::Level;

/// One field's value.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    /// Written as it is in text (a `%field`), as a JSON string in JSON.
    Shown(&'a str),
    /// A plain string field: quoted and escaped in text (`{:?}`), a JSON string in JSON.
    Quoted(&'a str),
    Int(i64),
}

/// Where hand-written lines go, set by [`super::init`] along with the subscriber.
pub(super) enum Sink {
    Batch(super::batch::BatchWriter),
    Stderr,
}

pub(super) static OUTPUT: OnceLock<(Sink, LogFormat)> = OnceLock::new();

/// Write one line with `message` and `fields` at `level` to the installed output; `false` when [`super::init`]
/// installed none (write it through tracing then). The caller has checked that the level is enabled.
pub fn write(level: Level, message: &str, fields: &[(&str, Value<'_>)]) -> bool {
    let Some((sink, format)) = OUTPUT.get() else {
        return false;
    };
    thread_local!(static BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512)));
    BUF.with(|buf| {
        let Ok(mut buf) = buf.try_borrow_mut() else {
            return false;
        };
        buf.clear();
        format_line(&mut buf, *format, now(), level, message, fields);
        match sink {
            Sink::Batch(w) => w.push(&buf),
            Sink::Stderr => {
                let _ = std::io::stderr().lock().write_all(&buf);
            }
        }
        true
    })
}

fn now() -> std::time::Duration {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
}

/// The line as the subscriber configured by [`super::init`] writes it (`at`: time since the epoch).
pub fn format_line(
    out: &mut Vec<u8>,
    format: LogFormat,
    at: std::time::Duration,
    level: Level,
    message: &str,
    fields: &[(&str, Value<'_>)],
) {
    let level_name = level.as_str();
    match format {
        LogFormat::Text => {
            stamp(out, at);
            // The level right-aligned in five columns, as the text formatter pads it.
            out.extend(std::iter::repeat_n(b' ', 1 + 5usize.saturating_sub(level_name.len())));
            out.extend_from_slice(level_name.as_bytes());
            out.push(b' ');
            // Messages are written with their ANSI escapes defused; every message given here is a fixed name.
            out.extend_from_slice(message.as_bytes());
            for (name, value) in fields {
                out.push(b' ');
                out.extend_from_slice(name.as_bytes());
                out.push(b'=');
                match value {
                    Value::Shown(s) => out.extend_from_slice(s.as_bytes()),
                    Value::Quoted(s) => quoted(out, s),
                    Value::Int(n) => int(out, *n),
                }
            }
        }
        LogFormat::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            stamp(out, at);
            out.extend_from_slice(b"\",\"level\":\"");
            out.extend_from_slice(level_name.as_bytes());
            out.extend_from_slice(b"\",\"message\":");
            json_string(out, message);
            for (name, value) in fields {
                out.push(b',');
                json_string(out, name);
                out.push(b':');
                match value {
                    Value::Shown(s) | Value::Quoted(s) => json_string(out, s),
                    Value::Int(n) => int(out, *n),
                }
            }
            out.push(b'}');
        }
    }
    out.push(b'\n');
}

/// `2026-11-25T20:16:00.123456Z`; the part up to the second is formatted once per second per thread.
pub(super) fn stamp(out: &mut Vec<u8>, at: std::time::Duration) {
    thread_local!(static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) });
    let secs = i64::try_from(at.as_secs()).unwrap_or(i64::MAX);
    SECOND.with(|cell| {
        let mut second = cell.borrow_mut();
        if second.0 != secs {
            let mut text = crate::clock::format_utc(secs);
            text.pop(); // the `Z`: it goes after the fraction
            *second = (secs, text);
        }
        out.extend_from_slice(second.1.as_bytes());
    });
    out.push(b'.');
    let micros = at.subsec_micros();
    let mut digits = [b'0'; 6];
    let mut rest = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&digits);
    out.push(b'Z');
}

/// `n` in decimal, appended without the formatter (itoa: two digits a step, from a table).
pub fn int(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `n` in decimal, appended without the formatter.
pub fn unsigned(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `{:?}` of a string: plain printable ASCII without quotes or backslashes is copied; anything else goes through
/// the standard formatter, so the escaping is exactly the standard one.
fn quoted(out: &mut Vec<u8>, s: &str) {
    if !quote_plain(out, s) {
        let _ = write!(out, "{s:?}");
    }
}

/// `s` as a JSON string, escaped exactly as serde_json escapes it (the log line's JSON format, the envelope). The
/// usual string — nothing to escape — is found so a word at a time and copied whole.
pub fn json_string(out: &mut Vec<u8>, s: &str) {
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
pub fn needs_escape(bytes: &[u8]) -> bool {
    plain_len(bytes) < bytes.len()
}

/// A word (eight bytes, little-endian) with the high bit set in each byte that ends a run of plain string bytes (a
/// quote, a backslash or a control character below 0x20), or 0 when none does. Each test flags its first matching
/// byte exactly (later flags may be false), so the lowest flag is the first such byte.
pub fn ends_run(w: u64) -> u64 {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    let has = |b: u8| {
        let x = w ^ (ONES * u64::from(b));
        x.wrapping_sub(ONES) & !x
    };
    (has(b'"') | has(b'\\') | (w.wrapping_sub(ONES * 0x20) & !w)) & HIGH
}

/// How many bytes from the start of `bytes` a JSON string holds as they are: up to the first quote, backslash or
/// control character (below 0x20), or all of them; eight bytes a step. All three are ASCII, so the run ends on a
/// character boundary. (The log line's and the envelope's strings are checked with it, and the event reader's
/// strings scanned.)
pub fn plain_len(bytes: &[u8]) -> usize {
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let found = ends_run(u64::from_le_bytes(word));
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    let tail = chunks.remainder();
    at + tail.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20).unwrap_or(tail.len())
}

/// Quote `s` as it is when it is printable ASCII without quotes or backslashes (the same in `{:?}` and JSON);
/// `false`, writing nothing, otherwise.
fn quote_plain(out: &mut Vec<u8>, s: &str) -> bool {
    if !s.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\') {
        return false;
    }
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
    true
}

/// For tests of lines written by hand: the line tracing's subscriber writes beside the one written here.
#[cfg(test)]
pub(crate) mod testing {
    use super::{format_line, Value};
    use crate::telemetry::{batch::tests::Sink, dispatch, LogFormat};

    /// The line the subscriber [`crate::telemetry::init`] installs writes for the event `emit` sends, and the line
    /// [`format_line`] writes for `message` and `fields` at info level, in `format`: (ours, theirs).
    pub(crate) fn both_lines(
        format: LogFormat,
        emit: impl FnOnce(),
        message: &str,
        fields: &[(&str, Value<'_>)],
    ) -> (String, String) {
        let capture = Sink::default();
        let sink = capture.clone();
        let dispatch = dispatch(
            tracing_subscriber::EnvFilter::new("info"),
            format,
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(move || sink.clone()),
        );
        tracing::dispatcher::with_default(&dispatch, emit);
        let theirs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let mut ours = Vec::new();
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        format_line(&mut ours, format, at, tracing::Level::INFO, message, fields);
        (String::from_utf8(ours).unwrap(), theirs)
    }

    /// One step of a xorshift generator: the tests' random strings, the same on every run.
    pub(crate) fn xorshift(seed: &mut u64) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
    }

    /// Where a line's timestamp is: the two lines differ there by the time between them.
    pub(crate) fn stamp(format: LogFormat) -> std::ops::Range<usize> {
        let skip = if format == LogFormat::Json { r#"{"timestamp":""#.len() } else { 0 };
        skip..skip + "2026-11-25T20:16:00.123456Z".len()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_controls_quotes_and_backslashes_need_escaping() {
        for b in 0u8..=255 {
            let expected = b < 0x20 || b == b'"' || b == b'\\';
            assert_eq!(super::needs_escape(&[b'x', b, b'y']), expected, "{b:#x}");
            // In a word and in the rest after the words, at every place, beside every other byte.
            for at in 0..20 {
                for other in [b'a', 0x7f, 0x80, 0xff, 0x1f, b'"'] {
                    let mut s = vec![other; 20];
                    s[at] = b;
                    let expected = expected || other == 0x1f || other == b'"';
                    assert_eq!(super::needs_escape(&s), expected, "{b:#x} at {at} beside {other:#x}");
                }
            }
        }
        assert!(!super::needs_escape(&[]));
        // Random strings of bytes around the edges, against the plain test.
        let alphabet = [0u8, 0x1f, 0x20, 0x21, b'"', b'#', b'[', b'\\', b']', 0x7f, 0x80, 0xa2, 0xdc, 0xff];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            super::testing::xorshift(&mut seed);
            let len = (seed % 33) as usize;
            let s: Vec<u8> = (0..len).map(|i| alphabet[((seed >> (i % 60)) % 14) as usize]).collect();
            let plain = s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
            assert_eq!(super::needs_escape(&s), plain, "{s:?}");
        }
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let check = |s: &str| {
            let mut ours = b"x".to_vec();
            super::json_string(&mut ours, s);
            assert_eq!(ours[1..], serde_json::to_vec(s).unwrap()[..], "{s:?}");
        };
        // Every character below 0x80 alone, and at every place of a string long enough for words and a tail.
        for c in (0u8..0x80).map(char::from).chain(['\u{a2}', '\u{7ff}', '\u{ffff}', '\u{1f600}']) {
            check(&c.to_string());
            for at in 0..20 {
                let mut s: Vec<char> = "{\"appid\":\"wx1\",\"n\":2}".chars().collect();
                s.insert(at, c);
                check(&s.into_iter().collect::<String>());
            }
        }
        // Random strings of characters around the edges.
        let alphabet =
            ['\0', '\u{1f}', ' ', '"', '\\', '\n', '\u{7f}', 'a', '\u{a2}', '\u{20ac}', '\u{1f600}', '/'];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            super::testing::xorshift(&mut seed);
            let len = (seed % 41) as usize;
            check(&(0..len).map(|i| alphabet[((seed >> (i % 60)) % 12) as usize]).collect::<String>());
        }
    }

    #[test]
    fn numbers_are_written_as_the_formatter_writes_them() {
        for n in [0i64, 1, 9, 10, 99, 100, 1234567890, i64::MAX, -1, -10, i64::MIN] {
            let mut out = Vec::new();
            super::int(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
        let mut out = Vec::new();
        super::unsigned(&mut out, u64::MAX);
        assert_eq!(String::from_utf8(out).unwrap(), u64::MAX.to_string());
    }
}
