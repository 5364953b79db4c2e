//! Sending one allowed request: resolve, keep the permitted addresses,
//! connect to one of them, TLS for `https`, HTTP/1.1, and a response body
//! held to the size and gap limits.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

use super::HttpGrant;
use super::addr;
use super::allow::RequestHost;

/// The stage timeouts of one request: the grant's, lowered by the guest's
/// request options if it asks for less, and never past the job's deadline.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    connect: Duration,
    first_byte: Duration,
    between_bytes: Duration,
}

impl Timeouts {
    pub fn new(grant: Duration, asked: Option<RequestOptions>, left: Duration) -> Self {
        let pick = |asked: Option<Duration>| asked.map_or(grant, |a| a.min(grant)).min(left);
        let asked = asked.unwrap_or_default();
        Timeouts {
            connect: pick(asked.connect_timeout),
            first_byte: pick(asked.first_byte_timeout),
            // A zero gap would fail every body at once; a millisecond is
            // the least that means anything.
            between_bytes: pick(asked.between_bytes_timeout).max(Duration::from_millis(1)),
        }
    }
}

/// Guest-given text (a host, a method) as it is written in the job's log:
/// at most `max` characters (253 for a host, the longest DNS name), so a
/// guest cannot fill the log, or push the line past it, with one.
pub(super) fn shown(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

type Io = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// Why a request failed: the error the guest gets and, for the job's log,
/// what the error alone does not say (the prohibited addresses).
pub(super) struct Failed {
    pub error: Error,
    pub detail: Option<String>,
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Failed {
            error,
            detail: None,
        }
    }
}

impl From<hyper::Error> for Failed {
    fn from(e: hyper::Error) -> Self {
        Error::Hyper(e).into()
    }
}

/// Sends `request` (already allowed) under `grant`.
pub(super) async fn send(
    mut request: http::Request<WasiBody>,
    grant: &HttpGrant,
    timeouts: Timeouts,
) -> Result<(http::Response<WasiBody>, Io), Failed> {
    let uri = request.uri().clone();
    let https = uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("https"));
    let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?;
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare = host.trim_start_matches('[').trim_end_matches(']');

    let addresses = resolve(grant, bare, port, timeouts.connect).await?;
    let mut permitted = Vec::new();
    let mut prohibited = Vec::new();
    for ip in addresses {
        match addr::permitted(ip, &grant.private) {
            Ok(()) => permitted.push(ip),
            Err(why) => prohibited.push(format!("{ip} ({why})")),
        }
    }
    if permitted.is_empty() {
        if !prohibited.is_empty() {
            return Err(Failed {
                error: Error::DestinationIpProhibited,
                detail: Some(format!(
                    "it resolves to {}; list the network in [sandbox] allow_private_networks to allow it",
                    prohibited.join(", ")
                )),
            });
        }
        return Err(Error::DestinationNotFound.into());
    }

    let stream = connect(&permitted, port, timeouts.connect).await?;
    let stream: Box<dyn Stream> = if https {
        let name = server_name(bare)?;
        let tls = tokio_rustls::TlsConnector::from(tls_config());
        let stream = tokio::time::timeout(timeouts.connect, tls.connect(name, stream))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(tls_error)?;
        Box::new(stream)
    } else {
        Box::new(stream)
    };
    let (mut sender, conn) = tokio::time::timeout(
        timeouts.connect,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;
    // The connection is driven by its own task, stopped when the guest's
    // response is dropped (or the attempt ends).
    let conn = wasmtime_wasi::runtime::spawn(conn);

    // The request line carries the path only; the Host header is the URL's
    // host, whatever the guest's request said.
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    *request.uri_mut() = http::Uri::from_parts(parts).map_err(|_| Error::HttpRequestUriInvalid)?;
    let authority = match uri.port_u16() {
        Some(p) if p != if https { 443 } else { 80 } => format!("{host}:{p}"),
        _ => host.to_string(),
    };
    let host_header =
        http::HeaderValue::from_str(&authority).map_err(|_| Error::HttpRequestUriInvalid)?;
    request
        .headers_mut()
        .insert(http::header::HOST, host_header);

    let response = tokio::time::timeout(timeouts.first_byte, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)??;
    let limit = grant.max_response;
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::HttpResponseBodySize(declared).into());
    }
    let response = response.map(|body| {
        Capped {
            inner: body,
            left: limit,
            limit,
            gap: timeouts.between_bytes,
            timer: None,
        }
        .boxed_unsync()
    });
    let io: Io = Box::new(async move {
        match conn.await {
            Ok(()) => Ok(()),
            Err(e) => Err(Error::Hyper(e)),
        }
    });
    Ok((response, io))
}

trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> Stream for T {}

/// The addresses of `host`: the address itself for a literal, the
/// operator's `[sandbox.resolve]` entry, else the system's resolver.
async fn resolve(
    grant: &HttpGrant,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<IpAddr>, Error> {
    // Read as the allowlist read it (it let the host through).
    let name = match RequestHost::parse(host) {
        Some(RequestHost::Ip(ip)) => return Ok(vec![ip]),
        Some(RequestHost::Name(name)) => name,
        None => return Err(Error::HttpRequestUriInvalid),
    };
    if let Some(fixed) = grant.resolve.get(&name) {
        return Ok(fixed.clone());
    }
    // The system resolver blocks a thread until it answers, whatever
    // timeout the caller gives up after: each lookup holds a place until
    // then, so guests asking for names that never resolve take at most
    // these threads, never the runtime's whole blocking pool.
    let lookup = async {
        let place = lookups()
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::DnsTimeout)?;
        let target = (name.clone(), port);
        tokio::task::spawn_blocking(move || {
            let _place = place;
            std::net::ToSocketAddrs::to_socket_addrs(&target)
                .map(|found| found.map(|a| a.ip()).collect::<Vec<_>>())
        })
        .await
        .map_err(|_| Error::DnsTimeout)?
        .map_err(|e| Error::DnsError {
            rcode: Some(e.to_string()),
            info_code: None,
        })
    };
    tokio::time::timeout(timeout, lookup)
        .await
        .map_err(|_| Error::DnsTimeout)?
}

/// Most system DNS lookups in flight at once, the process over (see
/// [`resolve`]).
const MAX_LOOKUPS: usize = 32;

fn lookups() -> &'static Arc<tokio::sync::Semaphore> {
    static LOOKUPS: OnceLock<Arc<tokio::sync::Semaphore>> = OnceLock::new();
    LOOKUPS.get_or_init(|| Arc::new(tokio::sync::Semaphore::new(MAX_LOOKUPS)))
}

/// A connection to the first of `addresses` that answers.
async fn connect(addresses: &[IpAddr], port: u16, timeout: Duration) -> Result<TcpStream, Error> {
    let until = Instant::now() + timeout;
    let mut last = Error::ConnectionRefused;
    for ip in addresses {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, TcpStream::connect(SocketAddr::new(*ip, port))).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Error::ConnectionRefused;
            }
            Ok(Err(e)) => last = Error::Connect(e),
            Err(_) => return Err(Error::ConnectionTimeout),
        }
    }
    Err(last)
}

fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, Error> {
    use rustls::pki_types::ServerName;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_string()).map_err(|_| Error::HttpRequestUriInvalid)
}

fn tls_error(e: std::io::Error) -> Error {
    let certificate = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
    if certificate {
        Error::TlsCertificateError
    } else {
        Error::TlsProtocolError
    }
}

/// One TLS client configuration for the process: the webpki roots, ring.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(roots).with_no_client_auth());
            // ring supports the default versions; were it not so, no
            // request could use TLS, and each would fail its handshake.
            Arc::new(config.unwrap_or_else(|_| {
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            }))
        })
        .clone()
}

/// A response body held to `limit` bytes in all, and to `gap` between
/// frames once the guest reads it (a guest that reads the body late is
/// not timed out for it).
struct Capped {
    inner: hyper::body::Incoming,
    left: u64,
    limit: u64,
    gap: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Body for Capped {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::Hyper(e)))),
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                if n > self.left {
                    self.left = 0;
                    return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(self.limit)))));
                }
                self.left -= n;
                self.timer = None;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                let gap = self.gap;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(gap)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
