//! Connecting: one server (reconnecting by itself) or a cluster, more
//! connections for blocking listeners, the URL without secrets for
//! messages, and what a failed connect means in words.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

/// How long connecting may take before Redis counts as unreachable.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one command may take (a purge chunk or a big claim included).
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `BLPOP` blocks before a wake-up listener looks around again.
pub(super) const BLOCK: Duration = Duration::from_secs(1);

/// A connection to a single server (reconnecting by itself) or a cluster.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Where to open more connections (one per blocked listener).
#[derive(Clone)]
pub(super) enum Target {
    Single(Box<redis::Client>),
    Cluster(Box<ClusterClient>),
}

impl Target {
    /// A connection for blocking commands: no response timeout shorter
    /// than the block itself.
    pub(super) async fn blocking_conn(&self) -> Result<Conn, RedisError> {
        match self {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(BLOCK + RESPONSE_TIMEOUT))
                    .set_number_of_retries(1);
                Ok(Conn::Single(
                    ConnectionManager::new_with_config((**client).clone(), config).await?,
                ))
            }
            Target::Cluster(client) => Ok(Conn::Cluster(client.get_async_connection().await?)),
        }
    }
}

/// Opens `url`, detecting a cluster: the shared connection and where to
/// open more. A failure is said in words (see [`connect_failure`]).
pub(super) async fn open(url: &str) -> Result<(Conn, Target), String> {
    let client = redis::Client::open(url).map_err(|e| {
        format!(
            "invalid Redis URL: {e}; use redis://host:port, rediss://host:port or redis+unix:///path/to/redis.sock"
        )
    })?;
    let connected = async {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2);
        let mut single = ConnectionManager::new_with_config(client.clone(), config).await?;
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut single)
            .await?;
        if info.contains("cluster_enabled:1") {
            let cluster = ClusterClient::builder(vec![url])
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(BLOCK + RESPONSE_TIMEOUT)
                .build()?;
            let conn = cluster.get_async_connection().await?;
            Ok((Conn::Cluster(conn), Target::Cluster(Box::new(cluster))))
        } else {
            Ok((
                Conn::Single(single),
                Target::Single(Box::new(client.clone())),
            ))
        }
    };
    match connected.await {
        Ok(connected) => Ok(connected),
        Err(e) => {
            let why = connect_failure(client.get_connection_info().addr(), &e).await;
            Err(format!("cannot connect: {why}"))
        }
    }
}

/// `url` for messages and logs, without secrets.
///
/// The URL is taken apart by the parser the redis client uses, and put
/// back together from the parts that hold no secret: scheme, host, port,
/// a database number or socket path, the `db` and `protocol` query
/// parameters and the `#insecure` fragment. A password is `***`, and so is
/// a user name given without one (`redis-cli` reads `redis://secret@host`
/// as a password), every other query value (`?pass=`, `?password=`), any
/// other fragment or path. Text that does not parse as a URL is not shown
/// at all.
pub fn redact(url: &str) -> String {
    const HIDDEN: &str = "***";
    let Ok(parsed) = url::Url::parse(url) else {
        return "(the URL is not shown: it does not parse)".to_string();
    };
    // An `@` the parser did not take as the end of the credentials means
    // the text is not what its writer meant (`redis://pa#ss@host` is host
    // `pa`): any part of it may be the password.
    if url.contains('@') && parsed.username().is_empty() && parsed.password().is_none() {
        return "(the URL is not shown: its `@` is not where a password ends)".to_string();
    }
    let scheme = parsed.scheme();
    let unix = scheme.ends_with("unix");
    if parsed.cannot_be_a_base() {
        return format!("{scheme}:{HIDDEN}");
    }
    let mut out = format!("{scheme}://");
    match (parsed.username(), parsed.password()) {
        (_, Some(_)) if !parsed.username().is_empty() => {
            out.push_str(&format!("{}:{HIDDEN}@", parsed.username()));
        }
        ("", None) => {}
        _ => out.push_str(&format!("{HIDDEN}@")),
    }
    if let Some(host) = parsed.host() {
        out.push_str(&host.to_string());
    }
    if let Some(port) = parsed.port() {
        out.push_str(&format!(":{port}"));
    }
    let path = parsed.path();
    let db = path.trim_matches('/');
    if unix || db.bytes().all(|b| b.is_ascii_digit()) {
        out.push_str(path);
    } else {
        out.push('/');
        out.push_str(HIDDEN);
    }
    if parsed.query().is_some() {
        let pairs: Vec<String> = parsed
            .query_pairs()
            .map(|(key, value)| {
                let plain_value = value.bytes().all(|b| b.is_ascii_alphanumeric());
                match &*key {
                    "db" | "protocol" if plain_value => format!("{key}={value}"),
                    "db" | "protocol" | "user" | "pass" | "username" | "password" => {
                        format!("{key}={HIDDEN}")
                    }
                    _ => HIDDEN.to_string(),
                }
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    match parsed.fragment() {
        None => {}
        Some("insecure") => out.push_str("#insecure"),
        Some(_) => out.push_str(&format!("#{HIDDEN}")),
    }
    out
}

/// Why connecting failed and what to do about it: wrong credentials, no
/// server at the address, a host name that does not resolve, TLS trouble
/// each get their own hint.
async fn connect_failure(addr: &redis::ConnectionAddr, e: &RedisError) -> String {
    use redis::{ConnectionAddr, ErrorKind, ServerErrorKind};
    let set_it = "set the URL with --backend, RUNTIME_BACKEND or `backend` in the config";
    let wrong_password =
        e.kind() == ErrorKind::AuthenticationFailed || e.code() == Some("WRONGPASS");
    let no_password = e.code() == Some("NOAUTH");
    let (tls, host, port) = match addr {
        ConnectionAddr::Tcp(host, port) => (false, host.as_str(), *port),
        ConnectionAddr::TcpTls { host, port, .. } => (true, host.as_str(), *port),
        ConnectionAddr::Unix(path) => {
            let shown = path.display();
            return if wrong_password {
                format!(
                    "authentication failed ({e}): the server refused the user or password; check `?user=` and `?pass=` in the URL"
                )
            } else if no_password {
                "the server requires a password (NOAUTH) and the URL gives none: add `?pass=PASSWORD` after the socket path".to_string()
            } else if e.is_connection_refusal() && !path.exists() {
                format!(
                    "no socket at {shown}: is redis-server running with `unixsocket {shown}`? Else {set_it}"
                )
            } else if e.is_connection_refusal() {
                format!(
                    "nothing accepts connections on {shown} (connection refused): is redis-server running? Else {set_it}"
                )
            } else {
                format!("{shown}: {e}")
            };
        }
        _ => return e.to_string(),
    };
    if wrong_password {
        return format!(
            "authentication failed ({e}): the server refused the user or password; check them in the URL (redis://USER:PASSWORD@host:port, or redis://:PASSWORD@host:port for the default user)"
        );
    }
    if no_password {
        return "the server requires a password (NOAUTH) and the URL gives none: redis://:PASSWORD@host:port (or redis://USER:PASSWORD@host:port)".to_string();
    }
    if e.kind() == ErrorKind::Server(ServerErrorKind::NoPerm) || e.code() == Some("NOPERM") {
        return format!(
            "the Redis user may not run a command the runtime needs ({e}); give it the commands and keys it needs, or use another user"
        );
    }
    if e.is_connection_refusal() {
        return format!(
            "nothing listens on {host}:{port} (connection refused): is redis-server running there, on that port? Else {set_it}"
        );
    }
    if e.is_timeout() {
        return if tls {
            format!(
                "no TLS handshake with {host}:{port} within {}s: does that port serve TLS? rediss:// needs a TLS port; a plain one takes redis://",
                CONNECT_TIMEOUT.as_secs()
            )
        } else {
            format!(
                "no answer from {host}:{port} within {}s: is the host reachable, and is it Redis on that port?",
                CONNECT_TIMEOUT.as_secs()
            )
        };
    }
    if !e.is_io_error() {
        return format!("{host}:{port}: {e}");
    }
    let resolves = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((host, port)));
    if !matches!(resolves.await, Ok(Ok(_))) {
        return format!(
            "cannot resolve host {host:?} ({e}): check the host name in the URL, or {set_it}"
        );
    }
    if tls {
        format!(
            "TLS with {host}:{port} failed ({e}): check that the port serves TLS and the server's certificate (its name must match {host}, its issuer be trusted)"
        )
    } else if e.is_connection_dropped() {
        format!(
            "{host}:{port} closed the connection ({e}): if it serves TLS, use rediss://; else it may be full (maxclients)"
        )
    } else {
        format!("{host}:{port}: {e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let cases = [
            ("redis://:s3cret@host:6379/0", "redis://***@host:6379/0"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://alice:s3cret@host", "redis://alice:***@host"),
            (
                "rediss://alice:s3cret@host:6380/#insecure",
                "rediss://alice:***@host:6380/#insecure",
            ),
            ("redis://s3cret@host", "redis://***@host"),
            ("redis://:s3%40cr%3Aet@host", "redis://***@host"),
            ("redis://:s3cret@sec@host", "redis://***@host"),
            ("redis+unix:///tmp/r.sock", "redis+unix:///tmp/r.sock"),
            (
                "redis+unix:///tmp/r.sock?db=2&pass=s3cret",
                "redis+unix:///tmp/r.sock?db=2&pass=***",
            ),
            (
                "unix:///tmp/r.sock?user=bob&pass=s3cret",
                "unix:///tmp/r.sock?user=***&pass=***",
            ),
            (
                "redis://host?password=s3cret&protocol=resp3",
                "redis://host?password=***&protocol=resp3",
            ),
            ("redis://host/?s3cret", "redis://host/?***"),
            ("redis://host/?db=s3cret%20x", "redis://host/?db=***"),
            ("redis://host/s3cret", "redis://host/***"),
            ("redis://host/#s3cret", "redis://host/#***"),
            ("redis:s3cret", "redis:***"),
            (
                "redis://:s3cret@[::1",
                "(the URL is not shown: it does not parse)",
            ),
            ("s3cret", "(the URL is not shown: it does not parse)"),
            ("redis://:s3cret@host\n:6379", "redis://***@host:6379"),
            (
                "redis://pa#ss@host",
                "(the URL is not shown: its `@` is not where a password ends)",
            ),
            (
                "redis://user:1234/5678@host",
                "(the URL is not shown: its `@` is not where a password ends)",
            ),
        ];
        for (url, shown) in cases {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    /// Whatever the text, a secret placed anywhere in it comes out only
    /// where the URL parser reads it as the host, a socket path or the
    /// user name beside a password; never from a password, query,
    /// fragment or database path.
    #[test]
    fn no_password_survives_random_urls() {
        let mut rng = fastrand::Rng::with_seed(11);
        let alphabet: Vec<char> = "ab:/@?#&=%.[]+ \t\n3".chars().collect();
        let secret = "Zq9Xw";
        for _ in 0..20_000 {
            let mut pieces: Vec<String> = Vec::new();
            for _ in 0..rng.usize(1..8) {
                let noise: String = (0..rng.usize(0..6))
                    .map(|_| alphabet[rng.usize(..alphabet.len())])
                    .collect();
                pieces.push(noise);
                if rng.bool() {
                    pieces.push(secret.to_string());
                }
            }
            let scheme = ["redis://", "rediss://", "redis+unix://", "unix://", ""][rng.usize(..5)];
            let url = format!("{scheme}{}", pieces.concat());
            let shown = redact(&url);
            let where_shown = url::Url::parse(&url).is_ok_and(|u| {
                u.host_str().is_some_and(|h| h.contains(secret))
                    || (u.scheme().ends_with("unix") && u.path().contains(secret))
                    || (u.password().is_some() && u.username().contains(secret))
            });
            assert!(
                !shown.contains(secret) || where_shown,
                "{url:?} -> {shown:?}"
            );
        }
    }
}
