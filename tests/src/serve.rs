//! `runtime serve` as a process of the tests, and a small blocking HTTP/1.1
//! client to call it.
//!
//! [`ServeProcess`] starts the real binary on a free loopback port (`--listen
//! 127.0.0.1:0`), learns the port from its log, records every exchange made
//! through it (for the OpenAPI check, [`crate::openapi`]) and kills the
//! process when dropped. [`request`] speaks HTTP/1.1 over a plain
//! [`TcpStream`], one request a connection (`Connection: close`), and reads
//! bodies framed by `Content-Length`, by chunks, or by the end of the
//! connection.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::runtime_command;
use crate::workers::{Env, RuntimeProcess, log_path};

/// How long a start, a request or an exit may take: generous, for a loaded
/// 2-core machine.
pub const WAIT: Duration = Duration::from_secs(60);

/// An HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, unchunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The media type of `content-type`, lowercase and without parameters
    /// (`application/json`); empty if there is none.
    pub fn media_type(&self) -> String {
        self.header("content-type")
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics, showing the response, if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}):\n{self}"))
    }

    /// Panics, showing the response, unless the status is `status`.
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "unexpected status:\n{self}");
        self
    }

    /// Panics unless this is an `application/problem+json` error of
    /// `status`, with its status, title and detail; the detail.
    pub fn problem(&self, status: u16) -> String {
        self.expect(status);
        assert_eq!(self.media_type(), "application/problem+json", "{self}");
        let body = self.json();
        assert_eq!(body["status"], status, "{self}");
        assert!(
            body["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{self}"
        );
        let detail = body["detail"].as_str().unwrap_or_default().to_string();
        assert!(!detail.is_empty(), "{self}");
        detail
    }
}

impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "HTTP {}", self.status)?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {value}")?;
        }
        let text = self.text();
        let shown: String = text.chars().take(4000).collect();
        write!(f, "\n{shown}")?;
        if shown.len() < text.len() {
            write!(f, "... ({} bytes in all)", self.body.len())?;
        }
        Ok(())
    }
}

/// Sends one request to `addr` and reads the whole response. `headers` come
/// after `Host` (unless they give their own) and `Connection: close`;
/// `Content-Length` is added.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let length = body.len().to_string();
    let mut all = headers.to_vec();
    all.push(("Content-Length", &length));
    exchange(addr, method, path, &all, body.to_vec())
}

/// Sends one request whose body goes as `Transfer-Encoding: chunked`, one
/// chunk per item of `chunks`.
pub fn request_chunked(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    chunks: &[&[u8]],
) -> Response {
    let mut body = Vec::new();
    for chunk in chunks.iter().filter(|c| !c.is_empty()) {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let mut all = headers.to_vec();
    all.push(("Transfer-Encoding", "chunked"));
    exchange(addr, method, path, &all, body)
}

fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Response {
    let what = format!("{method} {path}");
    let mut stream = TcpStream::connect_timeout(&addr, WAIT)
        .unwrap_or_else(|e| panic!("{what}: cannot connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(WAIT))
        .and_then(|()| stream.set_write_timeout(Some(WAIT)))
        .expect("set socket timeouts");
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    head.push_str("Connection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut writer = stream.try_clone().expect("clone the socket");
    // The body is written beside the read: a server may answer (413, 401)
    // before it has read a big body, and close.
    let sender = std::thread::spawn(move || {
        let _ = writer
            .write_all(head.as_bytes())
            .and_then(|()| writer.write_all(&body));
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A reset after the whole answer (the server closed with
            // some of a big body unread) ends it like a close.
            Err(e) if !raw.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("{what}: reading the response from {addr}: {e}"),
        }
    }
    let _ = sender.join();
    parse_response(&raw).unwrap_or_else(|e| {
        panic!(
            "{what}: {e}; the response:\n{}",
            String::from_utf8_lossy(&raw)
        )
    })
}

/// A whole HTTP/1.1 response, as read to the end of its connection.
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of the head")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|e| format!("head not UTF-8: {e}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &raw[end + 4..];
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    response.body = if chunked {
        unchunk(rest)?
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| format!("bad content-length {length:?}"))?;
        rest.get(..length)
            .ok_or_else(|| format!("the body has {} of {length} bytes", rest.len()))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(response)
}

/// The body of a chunked transfer.
fn unchunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk size line has no end")?;
        let line = std::str::from_utf8(&rest[..line_end]).map_err(|e| e.to_string())?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size {line:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest
            .get(..size)
            .ok_or_else(|| format!("a chunk of {size} bytes is cut short"))?;
        body.extend_from_slice(chunk);
        rest = rest
            .get(size..)
            .and_then(|r| r.strip_prefix(b"\r\n"))
            .ok_or("a chunk does not end in CRLF")?;
    }
}

/// One request made through a [`ServeProcess`] and its response.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The method.
    pub method: String,
    /// The request target, query included.
    pub path: String,
    /// What came back.
    pub response: Response,
}

/// A `runtime serve` process (killed if still running when dropped), and
/// every request made through it.
#[derive(Debug)]
pub struct ServeProcess {
    process: RuntimeProcess,
    addr: Option<SocketAddr>,
    exchanges: Mutex<Vec<Exchange>>,
}

impl ServeProcess {
    /// Starts `runtime ARGS` (which should include `serve`) with `cache` as
    /// its cache dir, `env` set, and none of the settings this process's
    /// environment might pass down; does not wait for it to listen.
    pub fn spawn(cache: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd: Command = runtime_command(cache);
        cmd.args(args)
            .current_dir(cache)
            .env_remove("RUNTIME_ADMIN_TOKEN")
            .env_remove("RUNTIME_LISTEN")
            .env_remove("RUNTIME_TENANT")
            .env_remove("RUNTIME_LOG")
            .env_remove("RUNTIME_LOG_FORMAT");
        for (name, value) in env {
            cmd.env(name, value);
        }
        ServeProcess {
            process: RuntimeProcess::spawn(cmd, log_path(cache, "serve")),
            addr: None,
            exchanges: Mutex::new(Vec::new()),
        }
    }

    /// Starts `runtime ARGS` and waits until it says where it serves.
    pub fn start(cache: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut server = Self::spawn(cache, args, env);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(addr) = serving_addr(&server.log()) {
                server.addr = Some(addr);
                return server;
            }
            if let Some(status) = server.process.exited() {
                panic!(
                    "runtime {} exited ({status}) before serving; its log:\n{}",
                    args.join(" "),
                    server.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "runtime {} did not say where it serves within {WAIT:?}; its log:\n{}",
                args.join(" "),
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where it serves.
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("the server was started with `start`")
    }

    /// `http://HOST:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Waits until its log contains `text`.
    pub fn wait_for_log(&self, text: &str) {
        self.process.wait_for_log(text, WAIT);
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends one request (see [`request`]) and records it.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let response = request(self.addr(), method, path, headers, body);
        self.record(method, path, &response);
        response
    }

    /// Sends one request with a chunked body (see [`request_chunked`]) and
    /// records it.
    pub fn request_chunked(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        chunks: &[&[u8]],
    ) -> Response {
        let response = request_chunked(self.addr(), method, path, headers, chunks);
        self.record(method, path, &response);
        response
    }

    fn record(&self, method: &str, path: &str, response: &Response) {
        runtime::sync::lock(&self.exchanges).push(Exchange {
            method: method.to_string(),
            path: path.to_string(),
            response: response.clone(),
        });
    }

    /// Every request made through [`ServeProcess::request`] so far.
    pub fn exchanges(&self) -> Vec<Exchange> {
        runtime::sync::lock(&self.exchanges).clone()
    }

    /// Sends it a signal: `TERM`, `INT`...
    pub fn signal(&self, name: &str) {
        self.process.signal(name);
    }

    /// Waits for the process to exit; its status code (-1 if a signal
    /// ended it).
    pub fn wait(&mut self, limit: Duration) -> i32 {
        self.process.wait(limit)
    }

    /// SIGTERM, then waits for the exit; its status code.
    pub fn terminate(&mut self, limit: Duration) -> i32 {
        self.signal("TERM");
        self.wait(limit)
    }
}

/// The address in a `serving http://HOST:PORT` log line; an unspecified
/// host (`0.0.0.0`) is reached on loopback.
fn serving_addr(log: &str) -> Option<SocketAddr> {
    let rest = log.split("serving http://").nth(1)?;
    let written = rest.split_whitespace().next()?;
    let mut addr: SocketAddr = written.parse().ok()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    Some(addr)
}

impl Env {
    /// `runtime --backend <redis> --handlers <handlers> serve --listen
    /// 127.0.0.1:0 EXTRA...` with `env`, started.
    pub fn serve(&self, extra: &[&str], env: &[(&str, &str)]) -> ServeProcess {
        let url = self.url();
        let mut args = vec![
            "--backend",
            &url,
            "--handlers",
            &self.handlers,
            "serve",
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        ServeProcess::start(self.cache.path(), &args, env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_read_by_length_by_chunks_and_to_the_end() {
        let sized = parse_response(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}extra")
            .expect("a response");
        assert_eq!((sized.status, sized.body.as_slice()), (201, &b"{}"[..]));
        let chunked = parse_response(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\na\r\n0123456789\r\n0\r\n\r\n",
        )
        .expect("a chunked response");
        assert_eq!(chunked.body, b"abc0123456789");
        let closed =
            parse_response(b"HTTP/1.0 404 Not Found\r\nX: y\r\n\r\nbye").expect("a response");
        assert_eq!((closed.status, closed.text().as_str()), (404, "bye"));
        assert_eq!(closed.header("x"), Some("y"));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
                .is_err()
        );
    }

    #[test]
    fn the_port_is_read_from_the_serving_line() {
        let log = "2026-01-01T00:00:00Z  INFO runtime::cli::serve: serving http://127.0.0.1:4567 over the queue server pid=1\n";
        assert_eq!(
            serving_addr(log),
            Some(SocketAddr::from(([127, 0, 0, 1], 4567)))
        );
        assert_eq!(
            serving_addr("serving http://0.0.0.0:80 over"),
            Some(SocketAddr::from(([127, 0, 0, 1], 80)))
        );
        assert_eq!(serving_addr("starting"), None);
    }
}
