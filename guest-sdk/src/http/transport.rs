//! One request through `wasi:http/outgoing-handler`, blocking until the
//! whole response body is in.

use std::time::Duration;

use super::url::{Scheme, Target};
use super::{HttpError, Response};
use crate::__http_bindings::wasi::http::outgoing_handler;
use crate::__http_bindings::wasi::http::types::{
    ErrorCode, Fields, HeaderError, IncomingBody, IncomingResponse, Method, OutgoingBody,
    OutgoingRequest, RequestOptions, Scheme as WasiScheme,
};
use crate::__http_bindings::wasi::io::streams::{InputStream, OutputStream, StreamError};

/// The most a single `blocking-write-and-flush` may carry (the WASI
/// streams contract).
const WRITE_CHUNK: usize = 4096;
/// How much of the response body one read asks for.
const READ_CHUNK: u64 = 64 * 1024;

/// What `Request::send` hands over, already checked.
pub(crate) struct Outgoing<'a> {
    pub(crate) method: &'a str,
    pub(crate) target: &'a Target,
    pub(crate) headers: &'a [(String, Vec<u8>)],
    pub(crate) body: Option<&'a [u8]>,
    pub(crate) timeout: Option<Duration>,
}

pub(crate) fn send(out: Outgoing<'_>) -> Result<Response, HttpError> {
    let origin = out.target.origin();
    let what = format!("{} {origin}", out.method);
    let code = |code: ErrorCode| HttpError::from_code(&what, &origin, code);

    let headers = Fields::new();
    for (name, value) in out.headers {
        headers.append(name, value).map_err(|e| {
            // Never the value: it may be a credential.
            HttpError::invalid(match e {
                HeaderError::Forbidden => {
                    format!("{what}: the host does not let handlers set header {name:?}")
                }
                HeaderError::InvalidSyntax | HeaderError::Immutable => {
                    format!("{what}: header {name:?} is not a valid header name and value")
                }
            })
        })?;
    }
    let request = OutgoingRequest::new(headers);
    request.set_method(&method(out.method)).map_err(|()| {
        HttpError::invalid(format!("{what}: {:?} is not a valid method", out.method))
    })?;
    request
        .set_scheme(Some(&match out.target.scheme {
            Scheme::Http => WasiScheme::Http,
            Scheme::Https => WasiScheme::Https,
        }))
        .map_err(|()| HttpError::invalid(format!("{what}: the host refused the scheme")))?;
    request
        .set_authority(Some(&out.target.authority))
        .map_err(|()| {
            HttpError::invalid(format!("{what}: the host refused the URL's host and port"))
        })?;
    request
        .set_path_with_query(Some(&out.target.path_and_query))
        .map_err(|()| HttpError::invalid(format!("{what}: the host refused the URL's path")))?;
    let body = match out.body {
        Some(bytes) => Some((
            request.body().map_err(|()| {
                HttpError::transport(format!("{what}: no request body to write to"))
            })?,
            bytes,
        )),
        None => None,
    };
    let options = match out.timeout {
        Some(timeout) => Some(options(timeout).map_err(|()| {
            HttpError::invalid(format!("{what}: the host does not take request timeouts"))
        })?),
        None => None,
    };

    // Sent before the body is written: the host streams the body out as it
    // comes, through a bounded buffer, so writing first could wait forever.
    let future = outgoing_handler::handle(request, options).map_err(code)?;
    let written = body.map(|(body, bytes)| write_body(body, bytes));

    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return Err(code(e)),
        Some(Err(())) | None => {
            return Err(HttpError::transport(format!(
                "{what}: the host gave no response after saying it was ready"
            )));
        }
    };
    drop(future);
    // The response came although the body did not all go out: the server
    // answered early (a refusal, usually); the answer is what counts.
    if let Some(Err(e)) = written
        && response.status() < 300
    {
        return Err(stream_error(&what, "sending the request body", e, &code));
    }
    read_response(&what, response, &code)
}

fn method(name: &str) -> Method {
    match name {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_string()),
    }
}

/// Connect, first-byte and between-bytes timeouts all set to `timeout`;
/// the host may lower them to its own limits.
fn options(timeout: Duration) -> Result<RequestOptions, ()> {
    let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    let options = RequestOptions::new();
    options.set_connect_timeout(Some(nanos))?;
    options.set_first_byte_timeout(Some(nanos))?;
    options.set_between_bytes_timeout(Some(nanos))?;
    Ok(options)
}

/// Writes the whole body and finishes it. The stream is dropped before
/// `finish`, which the WASI contract requires.
fn write_body(body: OutgoingBody, bytes: &[u8]) -> Result<(), StreamError> {
    let written = write_all(&body, bytes);
    // A failed write already says why; finishing a broken body only adds
    // a second error about the same thing.
    let finished = OutgoingBody::finish(body, None);
    written?;
    finished.map_err(|_| StreamError::Closed)
}

fn write_all(body: &OutgoingBody, bytes: &[u8]) -> Result<(), StreamError> {
    let stream: OutputStream = body.write().map_err(|()| StreamError::Closed)?;
    for chunk in bytes.chunks(WRITE_CHUNK) {
        stream.blocking_write_and_flush(chunk)?;
    }
    Ok(())
}

fn read_response(
    what: &str,
    response: IncomingResponse,
    code: &dyn Fn(ErrorCode) -> HttpError,
) -> Result<Response, HttpError> {
    let status = response.status();
    let headers = response.headers().entries();
    let body = response
        .consume()
        .map_err(|()| HttpError::transport(format!("{what}: the response body was taken twice")))?;
    let bytes =
        read_body(&body).map_err(|e| stream_error(what, "reading the response body", e, code))?;
    // The trailers are not wanted; finishing just releases the body.
    drop(IncomingBody::finish(body));
    Ok(Response {
        status,
        headers,
        body: bytes,
        what: what.to_string(),
    })
}

fn read_body(body: &IncomingBody) -> Result<Vec<u8>, StreamError> {
    let stream: InputStream = body.stream().map_err(|()| StreamError::Closed)?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(READ_CHUNK) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(bytes),
            Err(e) => return Err(e),
        }
    }
}

/// A failed stream operation: the host's error code if it attached one
/// (a response over the size cap, a timeout between bytes), else its
/// description.
fn stream_error(
    what: &str,
    doing: &str,
    error: StreamError,
    code: &dyn Fn(ErrorCode) -> HttpError,
) -> HttpError {
    match error {
        StreamError::LastOperationFailed(e) => {
            match crate::__http_bindings::wasi::http::types::http_error_code(&e) {
                Some(c) => code(c),
                None => {
                    HttpError::transport(format!("{what}: {doing} failed: {}", e.to_debug_string()))
                }
            }
        }
        StreamError::Closed => {
            HttpError::transport(format!("{what}: {doing} failed: the connection closed"))
        }
    }
}
