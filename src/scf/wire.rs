//! The runtime API's HTTP/1.1, by hand: one keep-alive TCP connection to the local runtime API, a request written
//! in one piece, a reply read by `content-length`, `chunked` or to the end. The runtime API is plain HTTP on the
//! instance's own host and speaks a handful of fixed requests; a general client (pool, TLS, redirects, a task per
//! connection) cost more than the runtime API itself on every invocation. A connection waits for replies in the
//! async runtime or, for an instance's own thread, in the kernel ([`Wait`]).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;

/// Why a call to the runtime API failed. Holds no request or reply body.
#[derive(Debug)]
pub enum WireError {
    /// Connecting, writing or reading failed.
    Io(std::io::Error),
    /// Connecting took longer than the connect timeout.
    ConnectTimeout,
    /// The reply was not HTTP/1.x as expected.
    Malformed(&'static str),
    /// The runtime API answered with a non-2xx status.
    Status(u16),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "runtime API connection failed: {e}"),
            Self::ConnectTimeout => f.write_str("runtime API connection timed out"),
            Self::Malformed(what) => write!(f, "runtime API reply malformed: {what}"),
            Self::Status(s) => write!(f, "runtime API answered HTTP {s}"),
        }
    }
}

impl std::error::Error for WireError {}

impl From<std::io::Error> for WireError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// The reply headers kept (the ones the runtime loop reads); others are skipped unread.
pub const KEPT_HEADERS: [&str; 3] = ["request_id", "time_limit_in_ms", "memory_limit_in_mb"];

/// A reply: its status, the [`KEPT_HEADERS`] it had, its body.
#[derive(Debug, Default)]
pub struct Reply {
    pub status: u16,
    /// The first value of each of [`KEPT_HEADERS`], in that order.
    pub kept: [Option<String>; KEPT_HEADERS.len()],
    pub body: Vec<u8>,
}

impl Reply {
    /// The first value of a kept header (its name as in [`KEPT_HEADERS`], matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        let i = KEPT_HEADERS.iter().position(|k| k.eq_ignore_ascii_case(name))?;
        self.kept[i].as_deref()
    }
}

/// A reply's head may not exceed this (the runtime API's are a few hundred bytes).
const HEAD_LIMIT: usize = 64 * 1024;
/// A reply's body may not exceed this (SCF events are at most 6 MB).
const BODY_LIMIT: usize = 64 * 1024 * 1024;
/// Bodies up to this size go out in the same write as the head.
const INLINE_BODY: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How a connection waits for the runtime API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// In the async runtime, which runs other tasks meanwhile: for a runtime API served by the same process (tests).
    Async,
    /// In the kernel: the thread sleeps in `read` until the reply is there, and no readiness poll comes before each
    /// read (an invocation makes two `epoll_wait` calls fewer, and no task switch). For an SCF instance, whose one
    /// thread has nothing else to do until the next invocation, and which SCF freezes in the meantime anyway: a
    /// task spawned during an invocation (a pool returning a connection) goes on during the next one's waits, as it
    /// would after a thaw.
    Blocking,
}

/// One keep-alive connection, opened on first use and again after the runtime API closes it.
#[derive(Debug)]
pub struct Connection {
    /// `host:port`.
    addr: String,
    wait: Wait,
    stream: Option<BufReader<Stream>>,
    head: Vec<u8>,
}

impl Connection {
    pub fn new(addr: &str, wait: Wait) -> Self {
        Self { addr: addr.to_owned(), wait, stream: None, head: Vec::with_capacity(256) }
    }

    /// Send one request and read its reply. A kept-alive connection the runtime API had closed before the request
    /// reached it is reopened and the request sent once more (every runtime API call may be repeated: a second
    /// `next` returns the same event, a second result is ignored).
    pub async fn call(&mut self, method: &str, path: &str, body: &[u8]) -> Result<Reply, WireError> {
        let reused = self.stream.is_some();
        match self.attempt(method, path, body).await {
            Err(Attempt::BeforeReply(_)) if reused => {
                self.stream = None;
                self.attempt(method, path, body).await.map_err(Attempt::into_error)
            }
            r => r.map_err(Attempt::into_error),
        }
    }

    async fn attempt(&mut self, method: &str, path: &str, body: &[u8]) -> Result<Reply, Attempt> {
        self.head.clear();
        request_head(&mut self.head, method, path, &self.addr, body.len());
        let inline = body.len() <= INLINE_BODY;
        if inline {
            self.head.extend_from_slice(body);
        }
        let stream = match &mut self.stream {
            Some(s) => s,
            None => {
                let s = Stream::connect(&self.addr, self.wait).await.map_err(Attempt::Failed)?;
                self.stream.insert(BufReader::with_capacity(16 * 1024, s))
            }
        };
        let sent = async {
            stream.get_mut().write_all(&self.head).await?;
            if !inline {
                stream.get_mut().write_all(body).await?;
            }
            Ok::<_, std::io::Error>(())
        }
        .await;
        if let Err(e) = sent {
            self.stream = None;
            return Err(Attempt::BeforeReply(e.into()));
        }
        let read = read_reply(stream).await;
        match read {
            Ok((reply, keep)) => {
                if !keep {
                    self.stream = None;
                }
                Ok(reply)
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }
}

/// A connection's socket, waited on as its [`Wait`] says.
#[derive(Debug)]
enum Stream {
    Async(TcpStream),
    Blocking(std::net::TcpStream),
}

impl Stream {
    async fn connect(addr: &str, wait: Wait) -> Result<Self, WireError> {
        let stream = match wait {
            Wait::Async => match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(s) => Self::Async(s?),
                Err(_) => return Err(WireError::ConnectTimeout),
            },
            Wait::Blocking => Self::Blocking(connect_blocking(addr)?),
        };
        match &stream {
            Self::Async(s) => s.set_nodelay(true)?,
            Self::Blocking(s) => s.set_nodelay(true)?,
        }
        Ok(stream)
    }
}

/// Connect to the first of `addr`'s addresses that answers, each within the connect timeout.
fn connect_blocking(addr: &str) -> Result<std::net::TcpStream, WireError> {
    use std::net::ToSocketAddrs;
    // What the async connect (and std's) gives for a name with no address: both ways of waiting fail alike.
    let mut last =
        WireError::Io(io::Error::new(io::ErrorKind::InvalidInput, "could not resolve to any addresses"));
    for a in addr.to_socket_addrs()? {
        match std::net::TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => last = WireError::ConnectTimeout,
            Err(e) => last = WireError::Io(e),
        }
    }
    Err(last)
}

/// A blocking call, repeated when a signal interrupted it.
fn retrying<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Async(s) => Pin::new(s).poll_read(cx, buf),
            Self::Blocking(s) => {
                use std::io::Read;
                let n = retrying(|| s.read(buf.initialize_unfilled()))?;
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Async(s) => Pin::new(s).poll_write(cx, buf),
            Self::Blocking(s) => {
                use std::io::Write;
                Poll::Ready(retrying(|| s.write(buf)))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Async(s) => Pin::new(s).poll_flush(cx),
            Self::Blocking(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Async(s) => Pin::new(s).poll_shutdown(cx),
            Self::Blocking(s) => Poll::Ready(s.shutdown(std::net::Shutdown::Write)),
        }
    }
}

/// How an attempt failed: before any byte of the reply (the request may be sent again on a new connection), or
/// after.
enum Attempt {
    BeforeReply(WireError),
    Failed(WireError),
}

impl Attempt {
    fn into_error(self) -> WireError {
        match self {
            Self::BeforeReply(e) | Self::Failed(e) => e,
        }
    }
}

/// `{method} {path} HTTP/1.1`, `host` and `content-length`, put together by hand (`write!` cost 3–4 % of an
/// instance's own instructions on a warm invocation).
fn request_head(out: &mut Vec<u8>, method: &str, path: &str, host: &str, len: usize) {
    for part in [method, " ", path, " HTTP/1.1\r\nhost: ", host, "\r\ncontent-length: "] {
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// Read one reply; whether the connection may carry another.
async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<(Reply, bool), Attempt> {
    let mut line = Vec::with_capacity(128);
    let n = r.read_until(b'\n', &mut line).await.map_err(|e| Attempt::BeforeReply(e.into()))?;
    if n == 0 {
        return Err(Attempt::BeforeReply(WireError::Io(std::io::ErrorKind::UnexpectedEof.into())));
    }
    let failed = Attempt::Failed;
    let status = parse_status(&line).ok_or(failed(WireError::Malformed("status line")))?;
    let mut reply = Reply { status, ..Reply::default() };
    let (mut length, mut chunked, mut keep) = (None, false, true);
    let mut head = line.len();
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line).await.map_err(|e| failed(e.into()))?;
        head += n;
        if n == 0 || head > HEAD_LIMIT {
            return Err(failed(WireError::Malformed("header section")));
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.is_empty() {
            break;
        }
        let colon =
            text.iter().position(|&b| b == b':').ok_or(failed(WireError::Malformed("header line")))?;
        let (name, value) = (text[..colon].trim_ascii(), text[colon + 1..].trim_ascii());
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        let value_str =
            || std::str::from_utf8(value).map_err(|_| failed(WireError::Malformed("header value")));
        if is("content-length") {
            let n =
                value_str()?.parse::<usize>().map_err(|_| failed(WireError::Malformed("content-length")))?;
            length = Some(n);
        } else if is("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case(b"chunked");
        } else if is("connection") {
            keep = !value.eq_ignore_ascii_case(b"close");
        } else if let Some(i) = KEPT_HEADERS.iter().position(|k| is(k)) {
            if reply.kept[i].is_none() {
                reply.kept[i] = Some(value_str()?.to_owned());
            }
        }
    }
    if status == 204 || status == 304 || (100..200).contains(&status) {
        length = Some(0);
        chunked = false;
    }
    reply.body = if chunked {
        read_chunked(r).await.map_err(failed)?
    } else if let Some(len) = length {
        if len > BODY_LIMIT {
            return Err(failed(WireError::Malformed("body over 64 MB")));
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).await.map_err(|e| failed(e.into()))?;
        body
    } else {
        // Neither: the body runs to the end of the connection.
        keep = false;
        let mut body = Vec::new();
        r.take(BODY_LIMIT as u64 + 1).read_to_end(&mut body).await.map_err(|e| failed(e.into()))?;
        if body.len() > BODY_LIMIT {
            return Err(failed(WireError::Malformed("body over 64 MB")));
        }
        body
    };
    if !(200..300).contains(&status) {
        return Err(failed(WireError::Status(status)));
    }
    Ok((reply, keep))
}

fn parse_status(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

async fn read_chunked<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<Vec<u8>, WireError> {
    let mut body = Vec::new();
    let mut line = Vec::with_capacity(32);
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).await? == 0 || line.len() > 1024 {
            return Err(WireError::Malformed("chunk size"));
        }
        let text = std::str::from_utf8(&line).map_err(|_| WireError::Malformed("chunk size"))?;
        let hex = text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(hex, 16).map_err(|_| WireError::Malformed("chunk size"))?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                line.clear();
                let n = r.read_until(b'\n', &mut line).await?;
                if n == 0 || line.len() > 8 * 1024 {
                    return Err(WireError::Malformed("chunk trailer"));
                }
                if line == b"\r\n" || line == b"\n" {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > BODY_LIMIT {
            return Err(WireError::Malformed("body over 64 MB"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..]).await?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf).await?;
        if &crlf != b"\r\n" {
            return Err(WireError::Malformed("chunk end"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(raw: &[u8]) -> Result<(Reply, bool), WireError> {
        let mut r = BufReader::new(raw);
        read_reply(&mut r).await.map_err(Attempt::into_error)
    }

    #[tokio::test]
    async fn replies_are_read_by_length_by_chunks_and_to_the_end() {
        let (r, keep) =
            read(b"HTTP/1.1 200 OK\r\nRequest_Id: abc\r\nContent-Length: 5\r\n\r\nhelloEXTRA").await.unwrap();
        assert_eq!((r.status, r.body.as_slice(), keep), (200, &b"hello"[..], true));
        assert_eq!(
            r.header("request_id"),
            Some("abc"),
            "names matched whatever their case, underscores kept"
        );
        assert_eq!(r.header("time_limit_in_ms"), None);

        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4;x=y\r\nwiki\r\n5\r\npedia\r\n0\r\nT: 1\r\n\r\n";
        let (r, keep) = read(raw).await.unwrap();
        assert_eq!((r.body.as_slice(), keep), (&b"wikipedia"[..], true));

        let (r, keep) = read(b"HTTP/1.0 200 OK\r\n\r\nto the end").await.unwrap();
        assert_eq!((r.body.as_slice(), keep), (&b"to the end"[..], false));

        let (_, keep) =
            read(b"HTTP/1.1 202 Accepted\r\nConnection: close\r\ncontent-length: 0\r\n\r\n").await.unwrap();
        assert!(!keep);
    }

    #[tokio::test]
    async fn bad_replies_are_errors_not_panics() {
        for raw in [
            &b""[..],
            b"SMTP ready\r\n",
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcXX",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999\r\n\r\n",
        ] {
            assert!(read(raw).await.is_err(), "{:?}", String::from_utf8_lossy(raw));
        }
        assert!(matches!(
            read(b"HTTP/1.1 500 Oops\r\ncontent-length: 2\r\n\r\nno").await,
            Err(WireError::Status(500))
        ));
    }

    /// A server on a thread of its own that answers each connection's first request, then closes it: the client
    /// reconnects and sends again. Both ways of waiting (a blocking client would stall a server on its own thread).
    #[tokio::test]
    async fn a_connection_the_server_closed_is_reopened_and_the_request_sent_again() {
        for wait in [Wait::Async, Wait::Blocking] {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let server = std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut seen = Vec::new();
                for i in 0..3 {
                    let (mut s, _) = listener.accept().unwrap();
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).unwrap();
                    seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    let body = format!("reply {i}");
                    let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                    s.write_all(reply.as_bytes()).unwrap();
                    // Not `connection: close`: the client learns of the close only on its next request.
                }
                seen
            });
            let mut c = Connection::new(&addr, wait);
            for i in 0..3 {
                let r = c.call("POST", "/runtime/invocation/response", b"{\"a\":1}").await.unwrap();
                assert_eq!(r.body, format!("reply {i}").into_bytes(), "{wait:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let seen = server.join().unwrap();
            assert_eq!(seen.len(), 3);
            let head = format!("POST /runtime/invocation/response HTTP/1.1\r\nhost: {addr}\r\n");
            assert!(seen[2].starts_with(&head), "{}", seen[2]);
            assert!(
                seen[2].contains("content-length: 7\r\n") && seen[2].ends_with("\r\n\r\n{\"a\":1}"),
                "{}",
                seen[2]
            );
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_error() {
        for wait in [Wait::Async, Wait::Blocking] {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            drop(listener);
            let e =
                Connection::new(&addr, wait).call("GET", "/runtime/invocation/next", b"").await.unwrap_err();
            assert!(matches!(e, WireError::Io(_)), "{wait:?}: {e}");
        }
    }
}
