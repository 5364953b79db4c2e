//! Outbound HTTP for handlers, through `wasi:http/outgoing-handler`, by
//! grant: a queue's handler reaches only the hosts its
//! `allowed_outbound_hosts` lists, and no name or address that leads back
//! into the operator's own networks.
//!
//! Every request passes [`Outbound::send_request`] (the wasi:http request
//! hook) before anything leaves the process:
//!
//! 1. the request count of the attempt (`http_max_requests`);
//! 2. the method (no `CONNECT`: no tunnels), the scheme, host and port
//!    against the allowlist ([`allow`]): a request nothing allows gets
//!    `HTTP-request-denied` and one line in the job's log naming the entry
//!    that would allow it;
//! 3. the host resolves the name itself ([`Resolver`]) and keeps only
//!    addresses outside loopback, private, link-local, unique-local,
//!    multicast and reserved ranges ([`addr`]), unless the operator lists
//!    the network in `[sandbox] allow_private_networks`; none left:
//!    `destination-IP-prohibited`;
//! 4. it connects only to those addresses (no second lookup, so no window
//!    for a DNS answer to change in between), with TLS by rustls and the
//!    webpki roots for `https` (SNI and certificate checked for the host
//!    name of the URL);
//! 5. the `Host` header is the URL's host (wasi:http forbids guests to set
//!    it); redirects are handed to the guest as they are, never followed;
//! 6. connect, first byte and every gap between bytes are bounded by
//!    `http_timeout_ms` and by the job's deadline, the response body by
//!    `http_max_response_kib`.
//!
//! Each request leaves one line in the job's log: method, host, status or
//! error, milliseconds; never headers or bodies.

pub mod addr;
pub mod allow;
pub mod meter;
mod send;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

use super::host::Level;
use super::output::JobOutput;
use crate::job::QueueName;
pub use addr::Network;
pub use allow::AllowList;
pub use meter::HttpMeter;

/// Default of `http_timeout_ms`: 10 s for the connection, the first byte of
/// the response, and each gap between its bytes. A server that stalls holds
/// the attempt no longer than this (and never past the job's deadline).
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Default of `http_max_response_kib`: 1 MiB of response body per request.
/// The body is read through the host into the guest's memory; the cap stops
/// a server (or a guest pointing at a large file) from holding the
/// attempt's time and the host's buffers on a body nobody needs.
pub const DEFAULT_HTTP_MAX_RESPONSE: u64 = 1 << 20;

/// Default of `http_max_requests`: 20 requests per attempt. Stops a handler
/// from turning one job into a flood against a granted host.
pub const DEFAULT_HTTP_MAX_REQUESTS: u32 = 20;

/// What a queue's handler may reach over HTTP. The default allows nothing.
#[derive(Clone)]
pub struct HttpGrant {
    /// Hosts a request may go to.
    pub allow: AllowList,
    /// Networks reachable although private (`[sandbox] allow_private_networks`).
    pub private: Arc<[Network]>,
    /// Names the host resolves from config instead of DNS (`[sandbox.resolve]`).
    pub resolve: Arc<BTreeMap<String, Vec<IpAddr>>>,
    /// Connect, first-byte and between-bytes timeout.
    pub timeout: Duration,
    /// Most bytes of one response body.
    pub max_response: u64,
    /// Most requests one attempt may make.
    pub max_requests: u32,
}

impl Default for HttpGrant {
    fn default() -> Self {
        HttpGrant {
            allow: AllowList::default(),
            private: Arc::from([]),
            resolve: Arc::default(),
            timeout: DEFAULT_HTTP_TIMEOUT,
            max_response: DEFAULT_HTTP_MAX_RESPONSE,
            max_requests: DEFAULT_HTTP_MAX_REQUESTS,
        }
    }
}

impl fmt::Debug for HttpGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpGrant")
            .field("allow", &self.allow)
            .field("private", &self.private)
            .field("timeout", &self.timeout)
            .field("max_response", &self.max_response)
            .field("max_requests", &self.max_requests)
            .finish_non_exhaustive()
    }
}

/// One attempt's side of wasi:http: the queue's grant, the requests made so
/// far, and where their lines go.
pub(crate) struct Outbound {
    grant: Arc<HttpGrant>,
    queue: QueueName,
    output: JobOutput,
    deadline: Instant,
    requests: u32,
    meter: Arc<HttpMeter>,
}

impl Outbound {
    /// For an attempt of a job of `queue`, under `grant`, ending at
    /// `deadline`, logging into `output`.
    pub fn new(
        grant: Arc<HttpGrant>,
        queue: QueueName,
        output: JobOutput,
        deadline: Instant,
        meter: Arc<HttpMeter>,
    ) -> Self {
        Outbound {
            grant,
            queue,
            output,
            deadline,
            requests: 0,
            meter,
        }
    }

    /// A request refused before it was sent.
    fn refuse(&self, outcome: &'static str, error: wasmtime_wasi_http::Error) -> Sent {
        self.meter.record(&self.queue, outcome, None);
        refused(error)
    }

    /// A line in the job's log. A line that does not fit the output limit
    /// is dropped: the guest's own output is what the limit is for.
    fn log(&self, level: Level, line: &str) {
        let _ = self.output.line(level, line);
    }
}

type Sent = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

fn refused(error: wasmtime_wasi_http::Error) -> Sent {
    Box::new(std::future::ready(Err(error)))
}

impl WasiHttpHooks for Outbound {
    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        super::limits::MAX_HTTP_BODY_CHUNK
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Sent {
        use wasmtime_wasi_http::Error;
        let method = send::shown(request.method().as_str(), 32);
        let uri = request.uri().clone();
        // The sender decides TLS and the default port from the same lower-
        // cased scheme the allowlist matched.
        let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
        let scheme = scheme.as_str();
        let host = uri.host().unwrap_or("");
        let shown = send::shown(host, 253);
        if self.requests >= self.grant.max_requests {
            self.log(
                Level::Warn,
                &format!(
                    "http {method} {shown} denied: this attempt made its {} requests (raise http_max_requests of queue {})",
                    self.grant.max_requests, self.queue
                ),
            );
            return self.refuse("denied", Error::HttpRequestDenied);
        }
        self.requests += 1;
        if request.method() == http::Method::CONNECT {
            self.log(
                Level::Warn,
                &format!("http CONNECT {shown} denied: tunnels are not allowed"),
            );
            return self.refuse("denied", Error::HttpRequestMethodInvalid);
        }
        let port = uri.port_u16();
        if !self.grant.allow.allows(scheme, host, port) {
            let hint = AllowList::hint(scheme, host, port);
            self.log(
                Level::Warn,
                &format!(
                    "http {method} {shown} denied: add {hint:?} to allowed_outbound_hosts of [{}] to allow it",
                    self.queue.config_section()
                ),
            );
            return self.refuse("denied", Error::HttpRequestDenied);
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        let timeouts = send::Timeouts::new(self.grant.timeout, options, left);
        let grant = self.grant.clone();
        let output = self.output.clone();
        let queue = self.queue.clone();
        let meter = self.meter.clone();
        Box::new(async move {
            let started = Instant::now();
            let result = send::send(request, &grant, timeouts).await;
            let elapsed = started.elapsed();
            let ms = elapsed.as_millis();
            let (outcome, level, line) = match &result {
                Ok((response, _)) => {
                    let status = response.status().as_u16();
                    let line = format!("http {method} {shown} {status} {ms}ms");
                    (meter::status_class(status), Level::Info, line)
                }
                Err(send::Failed {
                    error: Error::DestinationIpProhibited,
                    detail: Some(detail),
                }) => {
                    let line = format!("http {method} {shown} denied: {detail} (queue {queue})");
                    ("prohibited", Level::Warn, line)
                }
                Err(send::Failed { error, .. }) => {
                    let line = format!("http {method} {shown} failed after {ms}ms: {error}");
                    (failure_outcome(error), Level::Warn, line)
                }
            };
            meter.record(&queue, outcome, Some(elapsed));
            let _ = output.line(level, &line);
            result.map_err(|failed| failed.error)
        })
    }
}

/// The metric outcome of a request that failed with `error`.
fn failure_outcome(error: &wasmtime_wasi_http::Error) -> &'static str {
    use wasmtime_wasi_http::Error;
    match error {
        Error::DestinationIpProhibited => "prohibited",
        Error::ConnectionTimeout
        | Error::ConnectionReadTimeout
        | Error::DnsTimeout
        | Error::HttpResponseTimeout => "timeout",
        _ => "error",
    }
}
