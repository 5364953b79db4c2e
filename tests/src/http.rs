//! A real HTTP/1.1 server on loopback (127.0.0.1, a port of its own), for
//! the outbound tests: handlers call it through the host.
//!
//! It records every request (method, target, headers, body) and counts the
//! TCP connections it accepts, so a test can assert that a refused request
//! never reached it. Replies are scripted per path ([`Reply`]): a status
//! with headers and body, a stall (the request is read, then nothing is
//! sent until the server is dropped), a huge body, a redirect. Paths
//! without a script get 404. Waiting helpers block until requests or
//! connections arrive, with a generous bound and a message saying what
//! came. Dropping the server stops it: every connection is shut down and
//! every thread joined.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the waiting helpers wait before they panic: generous, for a
/// loaded 2-core machine compiling guests beside the test.
pub const WAIT: Duration = Duration::from_secs(60);

/// The largest request head (request line and headers) read; a longer one
/// gets 431 and the connection is closed.
const MAX_HEAD: usize = 64 * 1024;

/// The largest request body read (64 MiB); a longer one gets 413.
const MAX_BODY: usize = 64 << 20;

/// What the server answers on a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A response with these headers (beside `content-length`) and body.
    Respond {
        /// The status code.
        status: u16,
        /// Extra headers, in order.
        headers: Vec<(String, String)>,
        /// The body.
        body: Vec<u8>,
    },
    /// Read the request, then send nothing until the server is dropped.
    Stall,
    /// 200 with a body of `bytes` bytes (`x`), announced in
    /// `content-length`, written in chunks as the client reads.
    Huge {
        /// The body's size.
        bytes: usize,
    },
    /// 302 with this `location`.
    Redirect {
        /// Where to.
        location: String,
    },
}

impl Reply {
    /// `status` with an empty body.
    pub fn status(status: u16) -> Self {
        Reply::Respond {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// 200 with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Reply::status(200).body(body)
    }

    /// The same response with `body` (no effect on the other replies).
    pub fn body(mut self, new: impl Into<Vec<u8>>) -> Self {
        if let Reply::Respond { body, .. } = &mut self {
            *body = new.into();
        }
        self
    }

    /// The same response with one more header (no effect on the other
    /// replies).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let Reply::Respond { headers, .. } = &mut self {
            headers.push((name.to_string(), value.to_string()));
        }
        self
    }

    /// See [`Reply::Stall`].
    pub fn stall() -> Self {
        Reply::Stall
    }

    /// See [`Reply::Huge`].
    pub fn huge(bytes: usize) -> Self {
        Reply::Huge { bytes }
    }

    /// See [`Reply::Redirect`].
    pub fn redirect(location: &str) -> Self {
        Reply::Redirect {
            location: location.to_string(),
        }
    }
}

/// One request as the server read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// `GET`, `POST`...
    pub method: String,
    /// The request target as sent: path and query.
    pub path: String,
    /// Every header in order, names in lowercase, values as text (lossy).
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The server; dropped, it stops.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    routes: HashMap<String, Reply>,
    requests: Vec<Recorded>,
    connections: usize,
    stopped: bool,
    /// A handle on each accepted connection, to shut it down on drop.
    streams: Vec<TcpStream>,
    threads: Vec<JoinHandle<()>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        runtime::sync::lock(&self.state)
    }

    /// Waits for a change, at most `bound`.
    fn wait<'a>(&self, state: MutexGuard<'a, State>, bound: Duration) -> MutexGuard<'a, State> {
        match self.changed.wait_timeout(state, bound) {
            Ok((state, _)) => state,
            // Every critical section leaves the state whole; see `runtime::sync::lock`.
            Err(poisoned) => poisoned.into_inner().0,
        }
    }
}

impl TestServer {
    /// Listens on 127.0.0.1, on a free port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("test-http-{}", addr.port()))
                .spawn(move || accept_loop(listener, shared))
                .expect("spawn the acceptor")
        };
        TestServer {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Answers requests for `path` (the target without its query) with
    /// `reply` from now on.
    pub fn route(&self, path: &str, reply: Reply) {
        self.shared.lock().routes.insert(path.to_string(), reply);
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The requests read so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// The TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.lock().connections
    }

    /// Blocks until at least `n` requests have been read (at most
    /// [`WAIT`]); returns them all.
    pub fn wait_for_requests(&self, n: usize) -> Vec<Recorded> {
        self.wait_for_requests_within(n, WAIT)
    }

    /// [`wait_for_requests`](Self::wait_for_requests) with its own bound;
    /// panics, listing what came, when it passes.
    pub fn wait_for_requests_within(&self, n: usize, bound: Duration) -> Vec<Recorded> {
        let state = self.wait(bound, |s| s.requests.len() >= n);
        if state.requests.len() < n {
            let seen: Vec<String> = state
                .requests
                .iter()
                .map(|r| format!("{} {}", r.method, r.path))
                .collect();
            panic!(
                "test HTTP server {}: expected {n} requests within {bound:?}, got {} {seen:?} \
                 over {} connections",
                self.addr,
                state.requests.len(),
                state.connections
            );
        }
        state.requests.clone()
    }

    /// Blocks until at least `n` connections have been accepted (at most
    /// [`WAIT`]); returns how many were.
    pub fn wait_for_connections(&self, n: usize) -> usize {
        let state = self.wait(WAIT, |s| s.connections >= n);
        assert!(
            state.connections >= n,
            "test HTTP server {}: expected {n} connections within {WAIT:?}, got {}",
            self.addr,
            state.connections
        );
        state.connections
    }

    fn wait(&self, bound: Duration, done: impl Fn(&State) -> bool) -> MutexGuard<'_, State> {
        let deadline = Instant::now() + bound;
        let mut state = self.shared.lock();
        while !done(&state) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self.shared.wait(state, left);
        }
        state
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let streams = {
            let mut state = self.shared.lock();
            state.stopped = true;
            std::mem::take(&mut state.streams)
        };
        self.shared.changed.notify_all();
        // Wakes connection threads blocked reading or writing.
        for stream in &streams {
            let _ = stream.shutdown(Shutdown::Both);
        }
        // Wakes the acceptor, which sees `stopped` and ends; if even
        // that cannot connect, it is left behind rather than waited for.
        if TcpStream::connect(self.addr).is_ok()
            && let Some(acceptor) = self.acceptor.take()
        {
            let _ = acceptor.join();
        }
        let threads = std::mem::take(&mut self.shared.lock().threads);
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let mut state = shared.lock();
        if state.stopped {
            return;
        }
        state.connections += 1;
        if let Ok(handle) = stream.try_clone() {
            state.streams.push(handle);
        }
        let conn_shared = shared.clone();
        match std::thread::Builder::new()
            .name("test-http-conn".into())
            .spawn(move || serve(stream, &conn_shared))
        {
            Ok(thread) => state.threads.push(thread),
            Err(e) => eprintln!("test HTTP server: no thread for a connection: {e}"),
        }
        drop(state);
        shared.changed.notify_all();
    }
}

/// Serves requests on one connection until the client closes it, asks to,
/// or the server stops; then closes it (a shutdown, since the server keeps
/// a handle on it until it is dropped).
fn serve(stream: TcpStream, shared: &Shared) {
    let Ok(mut writer) = stream.try_clone() else {
        let _ = stream.shutdown(Shutdown::Both);
        return;
    };
    serve_requests(BufReader::new(stream), &mut writer, shared);
    let _ = writer.shutdown(Shutdown::Both);
}

fn serve_requests(mut reader: BufReader<TcpStream>, writer: &mut TcpStream, shared: &Shared) {
    loop {
        let request = match read_request(&mut reader) {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(status) => {
                // Answered, then the rest of what the client sends is read
                // and dropped until it closes: closing with unread data
                // would reset the connection before it reads the answer.
                let _ = write_response(writer, status, &[], b"", false);
                let _ = writer.shutdown(Shutdown::Write);
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
                return;
            }
        };
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let head_only = request.method == "HEAD";
        let route = request
            .path
            .split('?')
            .next()
            .unwrap_or_default()
            .to_string();
        let reply = {
            let mut state = shared.lock();
            state.requests.push(request);
            state.routes.get(&route).cloned()
        };
        shared.changed.notify_all();
        let written = match reply {
            None => write_response(
                writer,
                404,
                &[],
                format!("no route for {route}").as_bytes(),
                head_only,
            ),
            Some(Reply::Respond {
                status,
                headers,
                body,
            }) => write_response(writer, status, &headers, &body, head_only),
            Some(Reply::Redirect { location }) => write_response(
                writer,
                302,
                &[("location".into(), location)],
                b"",
                head_only,
            ),
            Some(Reply::Huge { bytes }) => write_huge(writer, bytes, head_only),
            Some(Reply::Stall) => {
                let mut state = shared.lock();
                while !state.stopped {
                    state = shared.wait(state, WAIT);
                }
                return;
            }
        };
        if written.is_err() || close {
            return;
        }
    }
}

/// The next request on the connection: `Ok(None)` when the client closed
/// it between requests, `Err(status)` for one that cannot be read.
fn read_request(reader: &mut BufReader<TcpStream>) -> Result<Option<Recorded>, u16> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = reader
            .by_ref()
            .take((MAX_HEAD + 1 - head.len().min(MAX_HEAD)) as u64)
            .read_until(b'\n', &mut line)
            .map_err(|_| 400u16)?;
        if n == 0 {
            return if head.is_empty() { Ok(None) } else { Err(400) };
        }
        head.extend_from_slice(&line);
        if head.len() > MAX_HEAD {
            return Err(431);
        }
        if line == b"\r\n" || line == b"\n" {
            if head.len() == line.len() {
                // Blank lines before a request are allowed (RFC 9112 2.2).
                head.clear();
                continue;
            }
            break;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() {
        return Err(400);
    }
    let mut headers = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(400);
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut request = Recorded {
        method: method.to_string(),
        path: path.to_string(),
        headers,
        body: Vec::new(),
    };
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        request.body = read_chunked(reader)?;
    } else if let Some(length) = request.header("content-length") {
        let length: usize = length.parse().map_err(|_| 400u16)?;
        if length > MAX_BODY {
            return Err(413);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).map_err(|_| 400u16)?;
        request.body = body;
    }
    Ok(Some(request))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> Result<Vec<u8>, u16> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader
            .by_ref()
            .take(1024)
            .read_line(&mut size_line)
            .map_err(|_| 400u16)?;
        let size = size_line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size, 16).map_err(|_| 400u16)?;
        if size == 0 {
            // Trailers, if any, up to the blank line that ends the body.
            loop {
                let mut line = String::new();
                let n = reader
                    .by_ref()
                    .take(MAX_HEAD as u64)
                    .read_line(&mut line)
                    .map_err(|_| 400u16)?;
                if n == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(413);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).map_err(|_| 400u16)?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf).map_err(|_| 400u16)?;
    }
}

fn write_response(
    writer: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body);
    }
    writer.write_all(&bytes)?;
    writer.flush()
}

fn write_huge(writer: &mut TcpStream, bytes: usize, head_only: bool) -> std::io::Result<()> {
    writer.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {bytes}\r\n\r\n").as_bytes())?;
    if head_only {
        return writer.flush();
    }
    let chunk = vec![b'x'; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        writer.write_all(&chunk[..n])?;
        left -= n;
    }
    writer.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `raw` on a fresh connection, half-closes it, reads the whole
    /// answer.
    fn exchange(server: &TestServer, raw: &[u8]) -> String {
        let mut client = TcpStream::connect(server.addr()).expect("connect");
        client.write_all(raw).expect("send");
        client.shutdown(Shutdown::Write).expect("half-close");
        let mut answer = String::new();
        client.read_to_string(&mut answer).expect("read");
        answer
    }

    #[test]
    fn a_plain_get_is_answered_and_recorded() {
        let server = TestServer::start();
        server.route(
            "/hello",
            Reply::ok("hi there").header("x-served-by", "test"),
        );
        let answer = exchange(
            &server,
            b"GET /hello?x=1 HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("x-served-by: test\r\n"), "{answer}");
        assert!(answer.contains("content-length: 8\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nhi there"), "{answer}");
        let requests = server.wait_for_requests(1);
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].method, "GET");
        assert_eq!(requests[0].path, "/hello?x=1");
        assert_eq!(requests[0].header("HOST"), Some("example.test"));
        assert!(requests[0].body.is_empty());
        assert_eq!(server.connections(), 1);
    }

    #[test]
    fn a_post_body_is_recorded_whole_with_a_length_or_chunked() {
        let server = TestServer::start();
        server.route("/send", Reply::status(202).body("{\"id\":\"m-1\"}"));
        let answer = exchange(
            &server,
            b"POST /send HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\
              Connection: close\r\n\r\n{\"to\":\"a\"}\n",
        );
        assert!(answer.starts_with("HTTP/1.1 202 Accepted\r\n"), "{answer}");
        assert!(answer.ends_with("{\"id\":\"m-1\"}"), "{answer}");
        let answer = exchange(
            &server,
            b"POST /send HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
              4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nx-trailer: 1\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
        let requests = server.wait_for_requests(2);
        assert_eq!(requests[0].body_text(), "{\"to\":\"a\"}\n");
        assert_eq!(requests[0].header("content-type"), Some("application/json"));
        assert_eq!(requests[1].body_text(), "wikipedia");
        assert_eq!(server.connections(), 2);
    }

    #[test]
    fn one_connection_serves_requests_until_closed() {
        let server = TestServer::start();
        let answer = exchange(
            &server,
            b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(
            answer.matches("HTTP/1.1 404 Not Found").count(),
            2,
            "{answer}"
        );
        assert!(
            answer.contains("no route for /a") && answer.ends_with("no route for /b"),
            "{answer}"
        );
        let paths: Vec<String> = server
            .wait_for_requests(2)
            .into_iter()
            .map(|r| r.path)
            .collect();
        assert_eq!(paths, ["/a", "/b"]);
        assert_eq!(server.connections(), 1);
    }

    #[test]
    fn redirects_huge_bodies_and_stalls_are_scripted() {
        let server = TestServer::start();
        server.route("/old", Reply::redirect("/new"));
        server.route("/big", Reply::huge(200_000));
        server.route("/stall", Reply::stall());

        let answer = exchange(&server, b"GET /old HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 302 Found\r\n"), "{answer}");
        assert!(answer.contains("location: /new\r\n"), "{answer}");

        let answer = exchange(&server, b"GET /big HTTP/1.1\r\nConnection: close\r\n\r\n");
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
        assert!(head.contains("content-length: 200000"), "{head}");
        assert_eq!(body.len(), 200_000);

        let mut stalled = TcpStream::connect(server.addr()).expect("connect");
        stalled
            .write_all(b"GET /stall HTTP/1.1\r\n\r\n")
            .expect("send");
        server.wait_for_requests(3);
        let reader = std::thread::spawn(move || {
            let mut answer = Vec::new();
            let read = stalled.read_to_end(&mut answer);
            (read.is_ok(), answer)
        });
        // Nothing comes until the server goes away; then the connection ends.
        drop(server);
        let (_, answer) = reader.join().expect("reader");
        assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    }

    #[test]
    fn connections_are_counted_even_without_a_request() {
        let server = TestServer::start();
        assert_eq!(server.connections(), 0);
        let _idle = TcpStream::connect(server.addr()).expect("connect");
        assert_eq!(server.wait_for_connections(1), 1);
        assert!(server.requests().is_empty());
    }

    #[test]
    #[should_panic(expected = "expected 1 requests within 10ms, got 0 [] over 0 connections")]
    fn waiting_for_requests_that_never_come_panics_saying_so() {
        let server = TestServer::start();
        server.wait_for_requests_within(1, Duration::from_millis(10));
    }

    #[test]
    fn garbage_gets_400_and_an_oversized_head_431() {
        let server = TestServer::start();
        let answer = exchange(&server, b"NONSENSE\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 400 Bad Request"), "{answer}");
        let mut huge = b"GET / HTTP/1.1\r\nx-pad: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        huge.extend_from_slice(b"\r\n\r\n");
        let answer = exchange(&server, &huge);
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        assert!(server.requests().is_empty());
    }
}
