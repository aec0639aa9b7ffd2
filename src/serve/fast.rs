//! HTTP mode's own answer to the request nearly every caller sends: an HTTP/1.1 `POST` of an envelope, its head and
//! its body (framed by one `Content-Length`) all in the bytes at hand. It is read, answered and written here, on the
//! connection's task, without hyper's dispatcher, header map and body channel. Anything else — another method, route
//! or version, a body still arriving, `Transfer-Encoding`, `Expect`, `Upgrade`, a `Connection` other than
//! `keep-alive`, a head that does not parse — is left to hyper, with the connection and every byte read so far
//! ([`Prefixed`]): hyper serves it from that request on, exactly as if it had read those bytes itself.

use super::lanes::{Close, IdleWatch};
use super::Wanted;
use crate::request::HttpReply;
use crate::service::{Route, Service};

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// How much is read at a time, and the most a head may take before it is left to hyper (whose own bound is far
/// larger: it answers an oversized head with 431).
const READ_SIZE: usize = 4096;
const HEAD_LIMIT: usize = 16 * 1024;
/// The most headers read here; a request with more is left to hyper.
const MAX_HEADERS: usize = 32;

/// How a connection goes on once the requests answered here are done.
pub(super) enum Next {
    /// Closed: by the client, by its idle timeout, by the server stopping, or after a reply that closes it.
    Close,
    /// Handed to hyper with the bytes read and not yet answered.
    Hyper(Vec<u8>),
}

/// Answer the connection's requests for as long as they are ones answered here.
pub(super) async fn serve(
    stream: &mut TcpStream,
    svc: &Service,
    peer: &Arc<str>,
    watch: &Arc<IdleWatch>,
    close: &mut oneshot::Receiver<Close>,
) -> Next {
    let ours = |path: &str, query: Option<&str>| svc.route("POST", path, query) == Route::Envelope;
    let body_limit = svc.options().body_limit;
    let mut buf: Vec<u8> = Vec::with_capacity(READ_SIZE);
    let mut out: Vec<u8> = Vec::new();
    loop {
        let mut start = 0;
        loop {
            let request = match parse(&buf[start..], &ours, body_limit) {
                Parsed::Ours(r) => r,
                Parsed::Partial => break,
                Parsed::Hyper => {
                    buf.drain(..start);
                    return Next::Hyper(buf);
                }
            };
            let busy = watch.busy();
            let meta = request.wanted.meta(svc, peer, request.query);
            let reply = svc.envelope_reply(request.body, &meta).await;
            // Answered: a client that does not read its reply is closed after the header timeout, as one that
            // sends nothing is.
            drop(busy);
            start += request.len;
            let Some(closes) = render(&mut out, reply) else { return Next::Close };
            let written = tokio::select! {
                biased;
                w = stream.write_all(&out) => w.is_ok(),
                _ = &mut *close => false,
            };
            // A reply is written at once unless the client has stopped reading, which the idle timeout (or a stop)
            // ends. A stop asked for while the request was in hand: the reply is out, the connection is closed.
            if !written || closes || close.try_recv().is_ok() {
                return Next::Close;
            }
        }
        buf.drain(..start);
        if buf.len() >= HEAD_LIMIT {
            return Next::Hyper(buf);
        }
        if buf.capacity() - buf.len() < READ_SIZE / 4 {
            buf.reserve(READ_SIZE);
        }
        // Idle, or a head still arriving: the connection's watcher closes it after the header timeout.
        let read = tokio::select! {
            biased;
            r = stream.read_buf(&mut buf) => r,
            _ = &mut *close => return Next::Close,
        };
        if !matches!(read, Ok(n) if n > 0) {
            return Next::Close;
        }
    }
}

/// A request answered here: its length in the buffer, where it goes, its headers' values that matter, its body.
struct Request<'b> {
    len: usize,
    query: Option<&'b str>,
    wanted: Wanted<'b>,
    body: &'b [u8],
}

enum Parsed<'b> {
    Ours(Request<'b>),
    /// The head is not all here yet.
    Partial,
    /// hyper's to answer.
    Hyper,
}

/// The request at the start of `buf`, if it is one answered here: a `POST` to a path that is `ours`, with a body of
/// at most `body_limit` bytes.
fn parse<'b>(buf: &'b [u8], ours: &impl Fn(&str, Option<&str>) -> bool, body_limit: usize) -> Parsed<'b> {
    // Nothing left after the last request answered (nearly always): no header array to set up.
    if buf.is_empty() {
        return Parsed::Partial;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Hyper,
    };
    let (Some("POST"), Some(1), Some(target)) = (req.method, req.version, req.path) else {
        return Parsed::Hyper;
    };
    if !target.starts_with('/') || !target.bytes().all(plain_target_byte) {
        return Parsed::Hyper;
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    if !ours(path, query) {
        return Parsed::Hyper;
    }
    let mut length = None;
    for h in req.headers.iter() {
        let is = |n: &str| h.name.eq_ignore_ascii_case(n);
        if is("content-length") {
            match (length, digits(h.value)) {
                (None, Some(n)) => length = Some(n),
                _ => return Parsed::Hyper, // twice, or not a plain number
            }
        } else if is("transfer-encoding")
            || is("expect")
            || is("upgrade")
            || (is("connection") && !h.value.eq_ignore_ascii_case(b"keep-alive"))
        {
            return Parsed::Hyper;
        }
    }
    let length = length.unwrap_or(0);
    // Too large (hyper refuses it), or still arriving (hyper reads it within the body timeout).
    let Some(end) = usize::try_from(length).ok().and_then(|n| head_len.checked_add(n)) else {
        return Parsed::Hyper;
    };
    if length > body_limit as u64 || end > buf.len() {
        return Parsed::Hyper;
    }
    let wanted = Wanted::among(req.headers.iter().map(|h| (h.name, h.value)));
    Parsed::Ours(Request { len: end, query, wanted, body: &buf[head_len..end] })
}

/// The bytes of a request target answered here: those of a path and query that need no second look (any other is
/// left to hyper, which decides what to make of it).
fn plain_target_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@%?".contains(&b)
}

/// A `Content-Length` value: decimal digits only.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Write `reply` into `out` as hyper would: the status line, the content type, the reply's own headers, the length
/// and the date. `Some(true)` when the reply closes the connection; `None` for a streamed body (an envelope's never
/// is).
fn render(out: &mut Vec<u8>, reply: HttpReply) -> Option<bool> {
    let body = reply.body.into_full().ok()?;
    let status =
        axum::http::StatusCode::from_u16(reply.status).unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    out.clear();
    out.reserve(160 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    if super::visible(reply.content_type.as_bytes()).is_some() {
        out.extend_from_slice(b"\r\ncontent-type: ");
        out.extend_from_slice(reply.content_type.as_bytes());
    }
    let mut closes = false;
    for (name, value) in reply.headers {
        closes |= name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close");
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(b"\r\ncontent-length: ");
    crate::telemetry::line::unsigned(out, body.len() as u64);
    out.extend_from_slice(b"\r\ndate: ");
    date(out);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&body);
    Some(closes)
}

/// The `Date` header's value for now, formatted once a second per thread.
fn date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(at, text)| {
        if *at != secs {
            *at = secs;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// A connection handed to hyper: the bytes already read come first, then the socket.
pub(super) struct Prefixed {
    prefix: Vec<u8>,
    at: usize,
    stream: TcpStream,
}

impl Prefixed {
    pub(super) fn new(prefix: Vec<u8>, stream: TcpStream) -> Self {
        Self { prefix, at: 0, stream }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.at);
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(extra: &str, body: &str) -> String {
        format!(
            "POST /mina_auth?x=1 HTTP/1.1\r\nHost: a\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn parsed(buf: &str) -> Parsed<'_> {
        parse(buf.as_bytes(), &|path, _| path != "/other", 64)
    }

    #[test]
    fn an_envelope_post_with_its_body_at_hand_is_answered_here() {
        let one = post("X-Wafer-Key: k\r\nConnection: Keep-Alive\r\n", "{\"a\":1}");
        let two = format!("{one}{}", post("", "{}"));
        for buf in [&one, &two] {
            let Parsed::Ours(r) = parsed(buf) else { panic!("{buf:?}") };
            assert_eq!(
                (r.len, r.query, r.body),
                (one.len(), Some("x=1"), &b"{\"a\":1}"[..]),
                "only the first"
            );
            assert_eq!(r.wanted.header("x-wafer-key"), Some("k"));
        }
        let Parsed::Ours(r) = parsed("POST / HTTP/1.1\r\nHost: a\r\n\r\n") else { panic!() };
        assert_eq!((r.query, r.body), (None, &b""[..]), "no length: no body");
        for partial in ["", "POST / HTTP/1.1\r\nHost: a\r\nContent-Le", &one[..one.len() - 9]] {
            assert!(matches!(parsed(partial), Parsed::Partial), "{partial:?}");
        }
    }

    #[test]
    fn anything_else_is_left_to_hyper() {
        let many: String = (0..MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let cases = [
            post("", "{\"a\":1}")[..post("", "{\"a\":1}").len() - 1].to_owned(), // the body still arriving
            post("", &"x".repeat(65)),                                           // over the body limit
            post("Transfer-Encoding: chunked\r\n", "{}"),
            post("Expect: 100-continue\r\n", "{}"),
            post("Upgrade: h2c\r\n", "{}"),
            post("Connection: close\r\n", "{}"),
            post("Connection: keep-alive, Upgrade\r\n", "{}"),
            post("Content-Length: 2\r\n", "{}"),
            post(&many, "{}"),
            post("", "{}").replace("Content-Length: 2", "Content-Length: +2"),
            post("", "{}").replace("HTTP/1.1", "HTTP/1.0"),
            post("", "{}").replace("POST", "PUT"),
            post("", "{}").replace("/mina_auth?x=1", "/other"),
            post("", "{}").replace("/mina_auth?x=1", "http://a/mina_auth"),
            post("", "{}").replace("/mina_auth?x=1", "/a\"b"),
            post("Bad Header: 1\r\n", "{}"),
        ];
        for case in &cases {
            assert!(matches!(parsed(case), Parsed::Hyper), "{case:?}");
        }
    }

    /// 100,000 mutations of requests (bytes inserted, removed, changed; lines doubled): the head parser never panics,
    /// and whatever it answers here is framed as its head says — one plain `Content-Length` giving the body's
    /// length (or none and no body), no `Transfer-Encoding`, an HTTP/1.1 `POST` — so that the next request starts
    /// where hyper would start it.
    #[test]
    fn mutated_requests_never_panic_and_what_is_answered_here_is_framed_by_its_head() {
        use crate::telemetry::line::testing::xorshift;
        let seeds = [
            post("", "{\"interface\":{}}"),
            post("X-Wafer-Key: k\r\nConnection: keep-alive\r\n", "{}"),
            format!("{}{}", post("", "{}"), post("Transfer-Encoding: chunked\r\n", "2\r\n{}\r\n0\r\n\r\n")),
            "POST / HTTP/1.1\nHost: a\nContent-Length: 3\n\nabc".to_owned(),
        ];
        let pieces: [&[u8]; 12] = [
            b"\r",
            b"\n",
            b" ",
            b":",
            b",",
            b"0",
            b"9",
            b"\0",
            b"\xff",
            b"Transfer-Encoding: x\r\n",
            b"Content-Length: 1\r\n",
            b"\r\n",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut ours = 0;
        for i in 0..100_000 {
            let mut buf = seeds[i % seeds.len()].clone().into_bytes();
            for _ in 0..1 + i % 3 {
                xorshift(&mut seed);
                let at = (seed >> 8) as usize % (buf.len() + 1);
                match seed % 4 {
                    0 => _ = buf.splice(at..at, pieces[(seed >> 40) as usize % pieces.len()].iter().copied()),
                    1 if at < buf.len() => _ = buf.remove(at),
                    2 if at < buf.len() => buf[at] = (seed >> 32) as u8,
                    _ => {
                        let line_end =
                            buf[at..].iter().position(|&b| b == b'\n').map_or(buf.len(), |p| at + p + 1);
                        let line_start = buf[..at].iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
                        let line = buf[line_start..line_end].to_vec();
                        buf.splice(line_end..line_end, line);
                    }
                }
            }
            let Parsed::Ours(r) = parse(&buf, &|_, _| true, 1024) else { continue };
            ours += 1;
            assert!(r.len <= buf.len() && buf[..r.len].ends_with(r.body), "{buf:?}");
            let head = String::from_utf8_lossy(&buf[..r.len - r.body.len()]).into_owned();
            // Empty lines before the request line are skipped, as RFC 9112 has it (and hyper does).
            let mut lines =
                head.trim_start_matches(['\r', '\n']).split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
            let first = lines.next().unwrap();
            assert!(first.starts_with("POST /") && first.ends_with(" HTTP/1.1"), "{head:?}");
            let mut lengths = Vec::new();
            for line in lines {
                let (name, value) = line.split_once(':').unwrap_or((line, ""));
                assert!(!name.trim().eq_ignore_ascii_case("transfer-encoding"), "{head:?}");
                if name.trim().eq_ignore_ascii_case("content-length") {
                    lengths.push(value.trim().parse::<usize>().unwrap());
                }
            }
            assert!(lengths == [r.body.len()] || (lengths.is_empty() && r.body.is_empty()), "{head:?}");
        }
        assert!(ours > 10_000, "the mutations leave many requests answered here: {ours}");
    }

    #[test]
    fn content_lengths_are_plain_decimal_numbers() {
        assert_eq!(digits(b"0"), Some(0));
        assert_eq!(digits(b"1234"), Some(1234));
        for bad in [&b""[..], b"+5", b"-1", b"1 2", b"0x10", b"12345678901234567890", b"\xff"] {
            assert_eq!(digits(bad), None, "{bad:?}");
        }
    }
}
