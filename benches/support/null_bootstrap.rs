//! The null bootstrap: the least an SCF custom runtime can do — `init/ready`, then `next` → a fixed response,
//! forever — over one keep-alive connection, standard library only. `benches/runtime.rs` compiles it with `rustc -O`
//! and runs it through the same emulator as `wafer-scf runtime`, so the two round trips are measured side by side.
//! Not part of the crate (no `mod` names it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

const REPLY: &[u8] = br#"{"version":1,"componentName":"MA","returnCode":0,"returnMessage":"NULL","returnData":{}}"#;

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    host: String,
}

impl Conn {
    fn open(host: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(host)?;
        stream.set_nodelay(true)?;
        Ok(Self { reader: BufReader::new(stream.try_clone()?), writer: stream, host: host.to_owned() })
    }

    /// One request; the reply's body (its length from `content-length`).
    fn call(&mut self, method: &str, path: &str, body: &[u8]) -> std::io::Result<Vec<u8>> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let mut out = Vec::with_capacity(head.len() + body.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(body);
        self.writer.write_all(&out)?;
        let mut len = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    len = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body)?;
        Ok(body)
    }
}

fn main() -> std::io::Result<()> {
    let host = std::env::var("SCF_RUNTIME_API").unwrap_or_default();
    let host = match std::env::var("SCF_RUNTIME_API_PORT") {
        Ok(port) if !port.is_empty() => format!("{host}:{port}"),
        _ => host,
    };
    let host = host.trim_start_matches("http://").to_owned();
    let mut conn = Conn::open(&host)?;
    conn.call("POST", "/runtime/init/ready", b" ")?;
    loop {
        let _event = conn.call("GET", "/runtime/invocation/next", b"")?;
        conn.call("POST", "/runtime/invocation/response", REPLY)?;
    }
}
