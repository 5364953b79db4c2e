//! Calling HTTP APIs from a handler, through `wasi:http`.
//!
//! ```no_run
//! use guest_sdk::http::Request;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Email { to: String, subject: String }
//!
//! #[derive(Deserialize)]
//! struct Reply { id: String }
//!
//! fn handle(job: guest_sdk::Job<Email>) -> guest_sdk::Result {
//!     let url = guest_sdk::setting("MAILER_URL")?;
//!     let key = guest_sdk::setting("MAILER_KEY")?;
//!     let reply: Reply = Request::post(&url)
//!         .header("authorization", format!("Bearer {key}"))
//!         .json(&job.payload)?
//!         .send()?
//!         .error_for_status()?
//!         .json()?;
//!     guest_sdk::info!("sent as {}", reply.id);
//!     Ok(())
//! }
//! # guest_sdk::export_handler!(handle);
//! ```
//!
//! # Nothing is reachable until the operator allows it
//!
//! A queue's handler may call only the origins its config lists
//! (`allowed_outbound_hosts` under `[queues.<queue>]` in `runtime.toml`),
//! and never an address on a loopback, private or link-local network
//! unless `[sandbox] allow_private_networks` names it. The host checks
//! every request before it resolves or connects, and refuses the rest with
//! an error (below). It also bounds each attempt's requests
//! (`http_max_requests`), each response's size (`http_max_response_kib`)
//! and each request's time (`http_timeout_ms`, never past the job's own
//! deadline).
//!
//! # What a request does
//!
//! [`Request::send`] blocks until the whole response is in, and returns any
//! status as `Ok`: a 404 is a response. [`Response::error_for_status`] is
//! where a status becomes an error. Redirects are not followed: a 3xx comes
//! back as it is, its target in [`Response::header`]`("location")`. A body
//! given with [`Request::body`] or [`Request::json`] is sent with its
//! `content-length`. Timeouts are the host's unless the request sets a
//! shorter one with [`Request::timeout`].
//!
//! # What a failure does to the job
//!
//! `?` turns an [`HttpError`] into a [`crate::Error`]:
//!
//! | failure | the job | because |
//! | --- | --- | --- |
//! | the host refused the request: `HTTP-request-denied` (an origin the queue's `allowed_outbound_hosts` does not list, or more requests than `http_max_requests`) | fails now, the message naming both settings | retrying cannot help until the operator changes the config |
//! | the host refused the address: `destination-IP-prohibited` (the name resolves to a loopback, private, link-local, unique-local or multicast address) | fails now, the message naming `[sandbox] allow_private_networks` | as above |
//! | the response is larger than the queue's `http_max_response_kib` (`HTTP-response-body-size`) | fails now, naming the setting | the same response would be as large next time |
//! | DNS errors, connection refused or reset, timeouts (connect, first byte, between bytes), TLS errors, a response cut short, other errors of the host | retried with the queue's backoff | the network or the server may be back |
//! | a request the host finds malformed (`HTTP-request-URI-invalid`, headers too large, ...), `configuration-error` | fails now | the same request fails the same way |
//! | a bad URL or header, a body that does not serialize (found before anything is sent) | fails now | a bug in the handler or its settings |
//! | status 5xx, 408 | retried with backoff | the server's trouble |
//! | status 429 or 503 with `Retry-After` in seconds | retried after that delay, at most [`MAX_RETRY_AFTER`] (an hour); an HTTP-date is ignored for the backoff | the server said when |
//! | status 4xx other than 408 and 429 | fails now | a request the server refuses will be refused again |
//! | a body that is not UTF-8 or not the JSON asked for ([`Response::text`], [`Response::json`]) | retried with backoff | like any error |
//!
//! Handlers that decide for themselves look at [`HttpError::code`] (the
//! `wasi:http` [`ErrorCode`]) and [`HttpError::status_code`] before using
//! `?`. Error texts name the method and the origin (`POST
//! https://api.example.com`), never the path, query or headers, which may
//! carry secrets; a refused status adds the first 200 characters of the
//! response body.

mod error;
mod transport;
mod url;

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use error::{HttpError, MAX_RETRY_AFTER};

/// The `wasi:http` error codes, as the host gives them: see
/// [`HttpError::code`].
pub use crate::__http_bindings::wasi::http::types::{
    DnsErrorPayload, ErrorCode, FieldSizePayload, TlsAlertReceivedPayload,
};

/// An HTTP request being built; [`send`](Self::send) sends it.
///
/// ```no_run
/// use guest_sdk::http::Request;
/// fn handle(_job: guest_sdk::Job) -> guest_sdk::Result {
///     let page = Request::get("https://example.com/feed.xml")
///         .header("accept", "application/xml")
///         .send()?
///         .error_for_status()?;
///     guest_sdk::info!("{} bytes", page.body.len());
///     Ok(())
/// }
/// # guest_sdk::export_handler!(handle);
/// ```
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Option<Vec<u8>>,
    timeout: Option<Duration>,
}

impl Request {
    /// A request with any method (`"GET"`, `"PROPFIND"`...) to `url`, which
    /// is checked when the request is sent.
    ///
    /// ```
    /// let request = guest_sdk::http::Request::new("OPTIONS", "https://api.example.com/");
    /// # let _ = request;
    /// ```
    pub fn new(method: &str, url: &str) -> Self {
        Request {
            method: method.to_string(),
            url: url.to_string(),
            headers: Vec::new(),
            body: None,
            timeout: None,
        }
    }

    /// A `GET` request.
    ///
    /// ```
    /// let request = guest_sdk::http::Request::get("https://api.example.com/users/7");
    /// # let _ = request;
    /// ```
    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request.
    ///
    /// ```
    /// let request = guest_sdk::http::Request::post("https://api.example.com/users");
    /// # let _ = request;
    /// ```
    pub fn post(url: &str) -> Self {
        Self::new("POST", url)
    }

    /// A `PUT` request.
    ///
    /// ```
    /// let request = guest_sdk::http::Request::put("https://api.example.com/users/7");
    /// # let _ = request;
    /// ```
    pub fn put(url: &str) -> Self {
        Self::new("PUT", url)
    }

    /// A `PATCH` request.
    ///
    /// ```
    /// let request = guest_sdk::http::Request::patch("https://api.example.com/users/7");
    /// # let _ = request;
    /// ```
    pub fn patch(url: &str) -> Self {
        Self::new("PATCH", url)
    }

    /// A `DELETE` request.
    ///
    /// ```
    /// let request = guest_sdk::http::Request::delete("https://api.example.com/users/7");
    /// # let _ = request;
    /// ```
    pub fn delete(url: &str) -> Self {
        Self::new("DELETE", url)
    }

    /// Adds a header (a name may be given more than once). The host
    /// refuses a few it sets itself, such as `host` and `connection`: the
    /// request then fails, naming the header. Error messages never show a
    /// header's value.
    ///
    /// ```
    /// let request = guest_sdk::http::Request::get("https://api.example.com/me")
    ///     .header("authorization", "Bearer t0ken")
    ///     .header("accept", "application/json");
    /// # let _ = request;
    /// ```
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }

    /// The body to send, as it is.
    ///
    /// ```
    /// let request = guest_sdk::http::Request::post("https://api.example.com/upload")
    ///     .header("content-type", "text/csv")
    ///     .body("id,name\n7,Ada\n");
    /// # let _ = request;
    /// ```
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// `value` as a JSON body, with `content-type: application/json`
    /// unless a content type was set. A value that does not serialize (a
    /// map with non-string keys) is an error that fails the job.
    ///
    /// ```
    /// # fn main() -> Result<(), guest_sdk::Error> {
    /// let request = guest_sdk::http::Request::post("https://api.example.com/users")
    ///     .json(&serde_json::json!({ "name": "Ada" }))?;
    /// # let _ = request;
    /// # Ok(())
    /// # }
    /// ```
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Self, HttpError> {
        let body = serde_json::to_vec(value).map_err(|e| {
            HttpError::invalid(format!(
                "{} {}: the JSON body does not serialize: {e}",
                self.method,
                self.origin()
            ))
        })?;
        if !self.has_header("content-type") {
            self = self.header("content-type", "application/json");
        }
        self.body = Some(body);
        Ok(self)
    }

    /// Gives up on connecting, on the first byte of the response, and
    /// between bytes, after `timeout` each. The host keeps its own limits
    /// (`http_timeout_ms` and the job's deadline) when they are shorter.
    ///
    /// ```
    /// let quick = guest_sdk::http::Request::get("https://api.example.com/health")
    ///     .timeout(std::time::Duration::from_secs(2));
    /// # let _ = quick;
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the request and reads the whole response. Any status is `Ok`;
    /// see [`Response::error_for_status`]. The errors and what they do to
    /// the job are in the [module docs](self).
    ///
    /// ```no_run
    /// fn handle(_job: guest_sdk::Job) -> guest_sdk::Result {
    ///     let response = guest_sdk::http::Request::delete("https://api.example.com/sessions/7").send()?;
    ///     if response.status == 404 {
    ///         guest_sdk::info!("already gone");
    ///     }
    ///     Ok(())
    /// }
    /// # guest_sdk::export_handler!(handle);
    /// ```
    pub fn send(self) -> Result<Response, HttpError> {
        let target = url::parse(&self.url)
            .map_err(|e| HttpError::invalid(format!("{}: {e}", self.method)))?;
        if self.method.is_empty()
            || !self
                .method
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(HttpError::invalid(format!(
                "{:?} is not an HTTP method",
                self.method
            )));
        }
        let mut headers = self.headers;
        if let Some(body) = &self.body
            && !headers.iter().any(|(name, _)| name == "content-length")
        {
            headers.push(("content-length".into(), body.len().to_string().into_bytes()));
        }
        transport::send(transport::Outgoing {
            method: &self.method,
            target: &target,
            headers: &headers,
            body: self.body.as_deref(),
            timeout: self.timeout,
        })
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| n == name)
    }

    /// The URL's origin for messages, or nothing if the URL is bad (its
    /// own error comes when the request is sent).
    fn origin(&self) -> String {
        url::parse(&self.url).map_or_else(|_| "(bad URL)".into(), |t| t.origin())
    }
}

/// `GET url`; see [`Request::send`].
///
/// ```no_run
/// fn handle(_job: guest_sdk::Job) -> guest_sdk::Result {
///     let body = guest_sdk::http::get("https://example.com/")?.error_for_status()?;
///     guest_sdk::info!("{}", body.text()?);
///     Ok(())
/// }
/// # guest_sdk::export_handler!(handle);
/// ```
pub fn get(url: &str) -> Result<Response, HttpError> {
    Request::get(url).send()
}

/// A whole HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// Every header in the order received, names in lowercase; values are
    /// bytes, as HTTP allows. [`header`](Self::header) finds one as text.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole body.
    pub body: Vec<u8>,
    /// `METHOD https://origin`, for messages.
    what: String,
}

impl Response {
    /// The first value of header `name` (any case), if it is there and is
    /// text.
    ///
    /// ```no_run
    /// # fn f(response: guest_sdk::http::Response) {
    /// if let Some(next) = response.header("location") {
    ///     guest_sdk::info!("moved to {next}");
    /// }
    /// # }
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    }

    /// Whether the status is 2xx.
    ///
    /// ```no_run
    /// # fn f(response: guest_sdk::http::Response) {
    /// if !response.is_success() {
    ///     guest_sdk::warn!("status {}", response.status);
    /// }
    /// # }
    /// ```
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The response if its status is below 400, else the status as an
    /// [`HttpError`], which fails or retries the job as the
    /// [module docs](self) say (5xx, 408, 429: retry; `Retry-After` on 429
    /// or 503: retry after it; other 4xx: fail).
    ///
    /// ```no_run
    /// fn handle(_job: guest_sdk::Job) -> guest_sdk::Result {
    ///     guest_sdk::http::get("https://api.example.com/ping")?.error_for_status()?;
    ///     Ok(())
    /// }
    /// # guest_sdk::export_handler!(handle);
    /// ```
    pub fn error_for_status(self) -> Result<Self, HttpError> {
        if self.status < 400 {
            return Ok(self);
        }
        Err(HttpError::from_status(
            &self.what,
            self.status,
            self.header("retry-after"),
            &self.body,
        ))
    }

    /// The body as text; an error if it is not UTF-8.
    ///
    /// ```no_run
    /// # fn f(response: guest_sdk::http::Response) -> guest_sdk::Result {
    /// guest_sdk::info!("{}", response.text()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn text(&self) -> Result<&str, HttpError> {
        std::str::from_utf8(&self.body).map_err(|e| {
            HttpError::decode(format!(
                "{}: the response body is not UTF-8 text: {e}",
                self.what
            ))
        })
    }

    /// The body parsed as JSON into `T`.
    ///
    /// ```no_run
    /// # fn f(response: guest_sdk::http::Response) -> guest_sdk::Result {
    /// let reply: serde_json::Value = response.json()?;
    /// guest_sdk::info!("id {}", reply["id"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            HttpError::decode(format!(
                "{}: the response body is not the JSON expected: {e}",
                self.what
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: body.as_bytes().to_vec(),
            what: "GET https://api.example".into(),
        }
    }

    #[test]
    fn json_sets_the_body_and_a_content_type_once() {
        let r = Request::post("https://api.example/x")
            .json(&serde_json::json!({"a": 1}))
            .expect("serializes");
        assert_eq!(r.body.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(
            r.headers,
            vec![("content-type".to_string(), b"application/json".to_vec())]
        );

        let r = Request::post("https://api.example/x")
            .header("Content-Type", "application/vnd.api+json")
            .json(&[1, 2])
            .expect("serializes");
        assert_eq!(
            r.headers,
            vec![(
                "content-type".to_string(),
                b"application/vnd.api+json".to_vec()
            )]
        );
    }

    #[test]
    fn a_body_that_does_not_serialize_fails_the_job() {
        let mut map = std::collections::HashMap::new();
        map.insert(vec![1u8], 1);
        let e = Request::post("https://api.example/secret-path?token=s3cret")
            .json(&map)
            .expect_err("non-string keys");
        let e: crate::Error = e.into();
        assert_eq!(e.kind, ErrorKind::Fail);
        assert!(
            e.message()
                .starts_with("POST https://api.example: the JSON body does not serialize"),
            "{e}"
        );
        assert!(!e.message().contains("s3cret"), "{e}");
    }

    #[test]
    fn a_bad_url_or_method_fails_before_anything_is_sent() {
        let e: crate::Error = Request::get("ftp://example.com/")
            .send()
            .expect_err("bad scheme")
            .into();
        assert_eq!(e.kind, ErrorKind::Fail);
        assert!(
            e.message().starts_with("GET: the URL's scheme \"ftp\""),
            "{e}"
        );

        let e: crate::Error = Request::new("GET /x HTTP/1.1\r\n", "https://h/")
            .send()
            .expect_err("bad method")
            .into();
        assert_eq!(e.kind, ErrorKind::Fail);
        assert!(e.message().contains("is not an HTTP method"), "{e}");
    }

    #[test]
    fn headers_are_found_in_any_case_and_only_as_text() {
        let r = response(302, &[("location", "/next"), ("x-bin", "\u{fffd}")], "");
        assert_eq!(r.header("Location"), Some("/next"));
        assert_eq!(r.header("missing"), None);
        let mut r = r;
        r.headers.push(("x-raw".into(), vec![0xff]));
        assert_eq!(r.header("x-raw"), None);
    }

    #[test]
    fn error_for_status_passes_below_400() {
        for status in [200, 204, 302, 399] {
            assert!(response(status, &[], "").error_for_status().is_ok());
        }
        let e = response(503, &[("retry-after", "30")], "busy")
            .error_for_status()
            .expect_err("503");
        assert_eq!(e.status_code(), Some(503));
        assert_eq!(e.to_string(), "GET https://api.example answered 503: busy");
        let e: crate::Error = e.into();
        assert_eq!(e.kind, ErrorKind::Retry(Some(Duration::from_secs(30))));
        let e: crate::Error = response(404, &[], "")
            .error_for_status()
            .expect_err("404")
            .into();
        assert_eq!(e.kind, ErrorKind::Fail);
    }

    #[test]
    fn text_and_json_decode_the_body() {
        let r = response(200, &[], "{\"id\": \"m-1\"}");
        assert_eq!(r.text().ok(), Some("{\"id\": \"m-1\"}"));
        let v: serde_json::Value = r.json().expect("JSON");
        assert_eq!(v["id"], "m-1");

        let r = response(200, &[], "<html>");
        let e = r.json::<serde_json::Value>().expect_err("not JSON");
        assert!(
            e.to_string()
                .starts_with("GET https://api.example: the response body is not the JSON expected"),
            "{e}"
        );
        let mut r = r;
        r.body = vec![0xc3];
        assert!(r.text().is_err());
    }
}
