//! [`HttpError`] and how each failure becomes a job outcome (the table in
//! the module docs of [`crate::http`]).

use std::fmt;
use std::time::Duration;

use super::ErrorCode;

/// The longest `Retry-After` a server can make a job wait: one hour. A
/// longer one is cut to this, so a misbehaving server cannot park a job
/// for days; the queue's attempts still bound how often it comes back.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Why a request did not give a usable response.
///
/// `?` in a handler turns it into a [`crate::Error`] that retries, retries
/// after a delay, or fails the job, as the table in [`crate::http`] says.
/// [`code`](Self::code) and [`status_code`](Self::status_code) tell the cases apart
/// for handlers that decide for themselves. Its text names the method and
/// the URL's origin (`https://host:port`), never the path, query or
/// headers, which may carry secrets.
///
/// It deliberately does not implement `std::error::Error`: if it did, `?`
/// would take the blanket conversion, which always retries.
pub struct HttpError {
    message: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// The request was malformed before it left the guest: a bad URL, a
    /// header the host refuses, a body that does not serialize.
    Invalid,
    /// The host answered with a `wasi:http` error code.
    Code(ErrorCode),
    /// A stream failed without an error code, or the host broke its
    /// protocol (a response taken twice).
    Transport,
    /// The server answered; [`super::Response::error_for_status`] refused
    /// the status.
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// The body is not the UTF-8 or JSON the caller asked for.
    Decode,
}

/// What a failure means for the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Fail,
    Retry,
}

impl HttpError {
    pub(crate) fn invalid(message: String) -> Self {
        HttpError {
            message,
            kind: Kind::Invalid,
        }
    }

    pub(crate) fn transport(message: String) -> Self {
        HttpError {
            message,
            kind: Kind::Transport,
        }
    }

    pub(crate) fn decode(message: String) -> Self {
        HttpError {
            message,
            kind: Kind::Decode,
        }
    }

    /// The host's `code` for a request `what` (`GET https://host`) to
    /// `origin`, in words that say what to do about it.
    pub(crate) fn from_code(what: &str, origin: &str, code: ErrorCode) -> Self {
        let name = code_name(&code);
        let message = match &code {
            ErrorCode::HttpRequestDenied => format!(
                "{what} refused by the host ({name}): either queue {queue}'s \
                 allowed_outbound_hosts does not list {origin}, or this attempt already made \
                 the requests its http_max_requests allows (the job's log says which); \
                 retrying cannot help until the config changes",
                queue = crate::queue_name(),
            ),
            ErrorCode::DestinationIpProhibited => format!(
                "{what} refused by the host ({name}): the host name resolves to a loopback, \
                 private, link-local or otherwise internal address; the operator can allow \
                 that network with [sandbox] allow_private_networks"
            ),
            ErrorCode::HttpResponseBodySize(size) => {
                let got = size.map_or(String::new(), |n| format!(" (at least {n} bytes)"));
                format!(
                    "{what}: the response body is larger than queue {queue}'s \
                     http_max_response_kib allows{got} ({name})",
                    queue = crate::queue_name(),
                )
            }
            _ => format!("{what}: {} ({name})", describe(&code)),
        };
        HttpError {
            message,
            kind: Kind::Code(code),
        }
    }

    /// The response `status` refused by `error_for_status`, with the
    /// `Retry-After` header's value if any and the start of the body.
    pub(crate) fn from_status(
        what: &str,
        status: u16,
        retry_after: Option<&str>,
        body: &[u8],
    ) -> Self {
        let retry_after = match status {
            429 | 503 => retry_after.and_then(parse_retry_after),
            _ => None,
        };
        let mut message = format!("{what} answered {status}");
        let excerpt = excerpt(body);
        if !excerpt.is_empty() {
            message.push_str(": ");
            message.push_str(&excerpt);
        }
        HttpError {
            message,
            kind: Kind::Status {
                status,
                retry_after,
            },
        }
    }

    /// The `wasi:http` error code the host gave, if that is what failed:
    /// `ErrorCode::HttpRequestDenied`, `ErrorCode::ConnectionRefused`...
    ///
    /// ```no_run
    /// use guest_sdk::http::{self, ErrorCode};
    /// fn handle(_job: guest_sdk::Job) -> guest_sdk::Result {
    ///     match http::get("https://status.example.com/") {
    ///         Err(e) if matches!(e.code(), Some(ErrorCode::DnsError(_))) => {
    ///             guest_sdk::warn!("status page unknown; carrying on");
    ///             Ok(())
    ///         }
    ///         other => other.map(drop).map_err(Into::into),
    ///     }
    /// }
    /// # guest_sdk::export_handler!(handle);
    /// ```
    pub fn code(&self) -> Option<&ErrorCode> {
        match &self.kind {
            Kind::Code(code) => Some(code),
            _ => None,
        }
    }

    /// The response status, if the error is a status that
    /// [`error_for_status`](super::Response::error_for_status) refused.
    pub fn status_code(&self) -> Option<u16> {
        match self.kind {
            Kind::Status { status, .. } => Some(status),
            _ => None,
        }
    }

    /// What the job does with this error (the table in [`crate::http`]),
    /// and the delay a `Retry-After` asked for.
    fn action(&self) -> (Action, Option<Duration>) {
        match &self.kind {
            Kind::Invalid => (Action::Fail, None),
            Kind::Transport | Kind::Decode => (Action::Retry, None),
            Kind::Code(code) => (code_action(code), None),
            Kind::Status {
                status,
                retry_after,
            } => match status {
                408 | 429 => (Action::Retry, *retry_after),
                400..=499 => (Action::Fail, None),
                _ => (Action::Retry, *retry_after),
            },
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpError")
            .field("message", &self.message)
            .field("kind", &self.kind)
            .finish()
    }
}

impl From<HttpError> for crate::Error {
    fn from(error: HttpError) -> Self {
        match error.action() {
            (Action::Fail, _) => crate::fail(error.message),
            (Action::Retry, Some(delay)) => crate::retry_after(error.message, delay),
            (Action::Retry, None) => crate::Error::retry(error.message),
        }
    }
}

/// `Retry-After` in seconds, at most [`MAX_RETRY_AFTER`]. The HTTP-date
/// form is not read (the job's backoff applies instead): it would compare
/// the server's clock with the worker's.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // All digits: only a number too large for u64 fails to parse.
    let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// The longest part of a refused response's body an error repeats.
const EXCERPT_CHARS: usize = 200;

/// The start of a body as one line of text: what the server said about a
/// refusal, at most [`EXCERPT_CHARS`] characters.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .split_whitespace()
        .flat_map(|word| [" ", word])
        .skip(1)
        .flat_map(str::chars)
        .take(EXCERPT_CHARS + 1)
        .collect();
    if out.chars().count() > EXCERPT_CHARS {
        out = out.chars().take(EXCERPT_CHARS).collect();
        out.push_str("...");
    }
    out
}

/// Whether retrying can help with a host's error code.
fn code_action(code: &ErrorCode) -> Action {
    use ErrorCode::*;
    match code {
        // The operator's grants, or a request the same code will make
        // the same way next time.
        HttpRequestDenied
        | DestinationIpProhibited
        | HttpResponseBodySize(_)
        | HttpRequestLengthRequired
        | HttpRequestBodySize(_)
        | HttpRequestMethodInvalid
        | HttpRequestUriInvalid
        | HttpRequestUriTooLong
        | HttpRequestHeaderSectionSize(_)
        | HttpRequestHeaderSize(_)
        | HttpRequestTrailerSectionSize(_)
        | HttpRequestTrailerSize(_)
        | ConfigurationError => Action::Fail,
        // The network, the server or the host having a bad moment.
        DnsTimeout
        | DnsError(_)
        | DestinationNotFound
        | DestinationUnavailable
        | DestinationIpUnroutable
        | ConnectionRefused
        | ConnectionTerminated
        | ConnectionTimeout
        | ConnectionReadTimeout
        | ConnectionWriteTimeout
        | ConnectionLimitReached
        | TlsProtocolError
        | TlsCertificateError
        | TlsAlertReceived(_)
        | HttpResponseIncomplete
        | HttpResponseHeaderSectionSize(_)
        | HttpResponseHeaderSize(_)
        | HttpResponseTrailerSectionSize(_)
        | HttpResponseTrailerSize(_)
        | HttpResponseTransferCoding(_)
        | HttpResponseContentCoding(_)
        | HttpResponseTimeout
        | HttpUpgradeFailed
        | HttpProtocolError
        | LoopDetected
        | InternalError(_) => Action::Retry,
    }
}

/// The code's name as the `wasi:http` WIT spells it.
pub(crate) fn code_name(code: &ErrorCode) -> &'static str {
    use ErrorCode::*;
    match code {
        DnsTimeout => "DNS-timeout",
        DnsError(_) => "DNS-error",
        DestinationNotFound => "destination-not-found",
        DestinationUnavailable => "destination-unavailable",
        DestinationIpProhibited => "destination-IP-prohibited",
        DestinationIpUnroutable => "destination-IP-unroutable",
        ConnectionRefused => "connection-refused",
        ConnectionTerminated => "connection-terminated",
        ConnectionTimeout => "connection-timeout",
        ConnectionReadTimeout => "connection-read-timeout",
        ConnectionWriteTimeout => "connection-write-timeout",
        ConnectionLimitReached => "connection-limit-reached",
        TlsProtocolError => "TLS-protocol-error",
        TlsCertificateError => "TLS-certificate-error",
        TlsAlertReceived(_) => "TLS-alert-received",
        HttpRequestDenied => "HTTP-request-denied",
        HttpRequestLengthRequired => "HTTP-request-length-required",
        HttpRequestBodySize(_) => "HTTP-request-body-size",
        HttpRequestMethodInvalid => "HTTP-request-method-invalid",
        HttpRequestUriInvalid => "HTTP-request-URI-invalid",
        HttpRequestUriTooLong => "HTTP-request-URI-too-long",
        HttpRequestHeaderSectionSize(_) => "HTTP-request-header-section-size",
        HttpRequestHeaderSize(_) => "HTTP-request-header-size",
        HttpRequestTrailerSectionSize(_) => "HTTP-request-trailer-section-size",
        HttpRequestTrailerSize(_) => "HTTP-request-trailer-size",
        HttpResponseIncomplete => "HTTP-response-incomplete",
        HttpResponseHeaderSectionSize(_) => "HTTP-response-header-section-size",
        HttpResponseHeaderSize(_) => "HTTP-response-header-size",
        HttpResponseBodySize(_) => "HTTP-response-body-size",
        HttpResponseTrailerSectionSize(_) => "HTTP-response-trailer-section-size",
        HttpResponseTrailerSize(_) => "HTTP-response-trailer-size",
        HttpResponseTransferCoding(_) => "HTTP-response-transfer-coding",
        HttpResponseContentCoding(_) => "HTTP-response-content-coding",
        HttpResponseTimeout => "HTTP-response-timeout",
        HttpUpgradeFailed => "HTTP-upgrade-failed",
        HttpProtocolError => "HTTP-protocol-error",
        LoopDetected => "loop-detected",
        ConfigurationError => "configuration-error",
        InternalError(_) => "internal-error",
    }
}

/// The code in a few words (its name follows in brackets).
fn describe(code: &ErrorCode) -> String {
    use ErrorCode::*;
    match code {
        DnsTimeout => "DNS lookup timed out".into(),
        DnsError(p) => match &p.rcode {
            Some(rcode) => format!("DNS lookup failed: {rcode}"),
            None => "DNS lookup failed".into(),
        },
        DestinationNotFound => "no such host".into(),
        DestinationUnavailable => "the host is unavailable".into(),
        DestinationIpUnroutable => "no route to the host".into(),
        ConnectionRefused => "connection refused".into(),
        ConnectionTerminated => "connection closed by the server".into(),
        ConnectionTimeout => "connecting timed out".into(),
        ConnectionReadTimeout => "timed out waiting for the server".into(),
        ConnectionWriteTimeout => "timed out sending to the server".into(),
        ConnectionLimitReached => "too many connections".into(),
        TlsProtocolError => "TLS failed".into(),
        TlsCertificateError => "the server's TLS certificate is not valid for it".into(),
        TlsAlertReceived(p) => match &p.alert_message {
            Some(m) => format!("the server ended TLS: {m}"),
            None => "the server ended TLS".into(),
        },
        HttpRequestLengthRequired => "the server wants a content-length".into(),
        HttpRequestBodySize(_) => "the request body does not match its content-length".into(),
        HttpRequestMethodInvalid => "invalid method".into(),
        HttpRequestUriInvalid => "invalid URL".into(),
        HttpRequestUriTooLong => "the URL is too long".into(),
        HttpRequestHeaderSectionSize(_) | HttpRequestHeaderSize(_) => {
            "the request headers are too large".into()
        }
        HttpRequestTrailerSectionSize(_) | HttpRequestTrailerSize(_) => {
            "the request trailers are too large".into()
        }
        HttpResponseIncomplete => "the response ended early".into(),
        HttpResponseHeaderSectionSize(_) | HttpResponseHeaderSize(_) => {
            "the response headers are too large".into()
        }
        HttpResponseTrailerSectionSize(_) | HttpResponseTrailerSize(_) => {
            "the response trailers are too large".into()
        }
        HttpResponseTransferCoding(_) => "unsupported transfer coding in the response".into(),
        HttpResponseContentCoding(_) => "unsupported content coding in the response".into(),
        HttpResponseTimeout => "timed out waiting for the response".into(),
        HttpUpgradeFailed => "protocol upgrade failed".into(),
        HttpProtocolError => "HTTP protocol error".into(),
        LoopDetected => "request loop detected".into(),
        ConfigurationError => "the host's HTTP configuration is broken".into(),
        InternalError(Some(m)) => format!("host error: {m}"),
        InternalError(None) => "host error".into(),
        // Worded by the caller, which names the setting.
        HttpRequestDenied | DestinationIpProhibited | HttpResponseBodySize(_) => {
            code_name(code).into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn job_error(e: HttpError) -> crate::Error {
        e.into()
    }

    fn code(c: ErrorCode) -> crate::Error {
        job_error(HttpError::from_code(
            "GET https://api.example",
            "https://api.example",
            c,
        ))
    }

    fn status(s: u16, retry_after: Option<&str>) -> crate::Error {
        job_error(HttpError::from_status(
            "POST https://api.example",
            s,
            retry_after,
            b"",
        ))
    }

    #[test]
    fn refusals_of_the_host_fail_and_name_the_setting() {
        let e = code(ErrorCode::HttpRequestDenied);
        assert_eq!(e.kind, ErrorKind::Fail);
        assert!(
            e.message()
                .starts_with("GET https://api.example refused by the host (HTTP-request-denied)"),
            "{e}"
        );
        assert!(
            e.message()
                .contains("allowed_outbound_hosts does not list https://api.example"),
            "{e}"
        );
        assert!(e.message().contains("http_max_requests"), "{e}");

        let e = code(ErrorCode::DestinationIpProhibited);
        assert_eq!(e.kind, ErrorKind::Fail);
        assert!(e.message().contains("(destination-IP-prohibited)"), "{e}");
        assert!(
            e.message().contains("[sandbox] allow_private_networks"),
            "{e}"
        );

        let e = code(ErrorCode::HttpResponseBodySize(Some(2_000_000)));
        assert_eq!(e.kind, ErrorKind::Fail);
        assert!(
            e.message().contains(
                "http_max_response_kib allows (at least 2000000 bytes) (HTTP-response-body-size)"
            ),
            "{e}"
        );

        assert_eq!(code(ErrorCode::ConfigurationError).kind, ErrorKind::Fail);
        assert_eq!(code(ErrorCode::HttpRequestUriInvalid).kind, ErrorKind::Fail);
    }

    #[test]
    fn network_trouble_retries_with_backoff() {
        for c in [
            ErrorCode::DnsTimeout,
            ErrorCode::DnsError(crate::http::DnsErrorPayload {
                rcode: Some("NXDOMAIN".into()),
                info_code: None,
            }),
            ErrorCode::ConnectionRefused,
            ErrorCode::ConnectionTimeout,
            ErrorCode::ConnectionReadTimeout,
            ErrorCode::TlsCertificateError,
            ErrorCode::TlsProtocolError,
            ErrorCode::HttpResponseTimeout,
            ErrorCode::HttpResponseIncomplete,
            ErrorCode::InternalError(None),
        ] {
            let name = code_name(&c);
            let e = code(c);
            assert_eq!(e.kind, ErrorKind::Retry(None), "{e}");
            assert!(e.message().starts_with("GET https://api.example: "), "{e}");
            assert!(e.message().ends_with(&format!("({name})")), "{e}");
        }
        assert_eq!(
            code(ErrorCode::ConnectionRefused).message(),
            "GET https://api.example: connection refused (connection-refused)"
        );
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(status(500, None).kind, ErrorKind::Retry(None));
        assert_eq!(status(502, Some("5")).kind, ErrorKind::Retry(None));
        assert_eq!(status(503, None).kind, ErrorKind::Retry(None));
        assert_eq!(
            status(503, Some("7")).kind,
            ErrorKind::Retry(Some(Duration::from_secs(7)))
        );
        assert_eq!(
            status(429, Some(" 120 ")).kind,
            ErrorKind::Retry(Some(Duration::from_secs(120)))
        );
        assert_eq!(status(429, None).kind, ErrorKind::Retry(None));
        assert_eq!(status(408, None).kind, ErrorKind::Retry(None));
        assert_eq!(status(400, None).kind, ErrorKind::Fail);
        assert_eq!(status(401, Some("5")).kind, ErrorKind::Fail);
        assert_eq!(status(404, None).kind, ErrorKind::Fail);
        assert_eq!(status(422, None).kind, ErrorKind::Fail);
    }

    #[test]
    fn retry_after_is_seconds_and_bounded() {
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("3600"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("99999999999999999999999"),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("1.5"), None);
        assert_eq!(parse_retry_after(""), None);
    }

    #[test]
    fn status_errors_quote_the_start_of_the_body_on_one_line() {
        let e = HttpError::from_status(
            "POST https://api.example",
            422,
            None,
            b"{\"error\":\n  \"bad address\"}",
        );
        assert_eq!(
            e.to_string(),
            "POST https://api.example answered 422: {\"error\": \"bad address\"}"
        );
        assert_eq!(e.status_code(), Some(422));
        assert!(e.code().is_none());

        let long = "x".repeat(10_000);
        let e = HttpError::from_status("GET https://h", 500, None, long.as_bytes());
        assert_eq!(
            e.to_string(),
            format!("GET https://h answered 500: {}...", "x".repeat(200))
        );

        let e = HttpError::from_status("GET https://h", 404, None, b"\xff\xfe");
        assert_eq!(
            e.to_string(),
            "GET https://h answered 404: \u{fffd}\u{fffd}"
        );
        let e = HttpError::from_status("GET https://h", 404, None, b"  \n ");
        assert_eq!(e.to_string(), "GET https://h answered 404");
    }

    #[test]
    fn malformed_requests_fail_and_decoding_retries() {
        assert_eq!(
            job_error(HttpError::invalid("bad URL".into())).kind,
            ErrorKind::Fail
        );
        assert_eq!(
            job_error(HttpError::decode("not JSON".into())).kind,
            ErrorKind::Retry(None)
        );
        assert_eq!(
            job_error(HttpError::transport("stream".into())).kind,
            ErrorKind::Retry(None)
        );
    }
}
