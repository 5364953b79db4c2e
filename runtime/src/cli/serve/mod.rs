//! `runtime serve`: the HTTP API under `/v1`, `/metrics`, `/healthz` and
//! `/readyz` on one port.
//!
//! Built on axum (routing, extractors, graceful shutdown) over hyper 1,
//! which the binary already carries for handlers' outbound HTTP: a few
//! small crates more, and no hand-written HTTP parsing facing the network.
//!
//! With a queue server configured it is a front door that any number of
//! workers share; with none it runs the embedded in-memory queue and
//! workers in this process, a whole deployment in one command.

mod api;
mod auth;
mod dashboard;
mod openapi;
mod problem;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use runtime::config::Config;
use runtime::metrics::Metrics;
use runtime::queue::Backend;
use runtime::worker::WorkerConfig;
use runtime::{Runtime, TenantName};
use tokio::sync::watch;

use self::auth::{Auth, Caller};
use self::problem::Problem;
use super::metrics_http::{self, Sources};
use super::worker::{flag_duration, log_event, shutdown_signal, size_pool};
use super::{Cli, CliResult, Exit};

/// Where `runtime serve` listens unless told.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Serve the HTTP API. With --backend, a front door for the workers that
/// share that queue server; without, the in-memory queue and its workers
/// run in this process.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Listen on HOST:PORT (`:0` picks a free port; the log says which).
    /// Default: the config's `serve.listen`, else 127.0.0.1:8080. A
    /// non-loopback address needs an admin token (RUNTIME_ADMIN_TOKEN or
    /// `serve.admin_token_sha256`).
    #[arg(long, env = "RUNTIME_LISTEN", value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Without --backend: jobs run at once by the in-process workers.
    #[arg(long, short = 'c', default_value_t = 16)]
    concurrency: usize,
    /// On SIGINT/SIGTERM, how long requests and in-flight jobs may finish.
    #[arg(long, value_parser = flag_duration, default_value = "10s")]
    grace: Duration,
}

/// What every request handler reads.
pub struct AppState {
    pub backend: Backend,
    pub config: Config,
    pub auth: Auth,
    pub limiter: Option<Limiter>,
    pub sources: Sources,
    /// The request bodies being read, server-wide.
    pub bodies: api::BodyBudget,
    /// What the dashboard's CSRF tokens are made with: the admin token's
    /// hash (the same on every server of one deployment), else random.
    pub csrf_secret: [u8; 32],
}

impl AppState {
    /// Takes one request from `caller`'s tenant's request rate, if it has
    /// one: every API call and dashboard page of a tenant counts.
    pub fn admit(&self, caller: &Caller) -> Result<(), Problem> {
        match (caller, &self.limiter) {
            (Caller::Tenant(tenant), Some(limiter)) => limiter.take(tenant),
            _ => Ok(()),
        }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("backend", &self.backend)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// The caller of a request, authenticated and within its request rate.
#[derive(Debug)]
pub struct Who(pub Caller);

impl FromRequestParts<Arc<AppState>> for Who {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Problem> {
        let caller = state
            .auth
            .caller(
                &*state.backend.tenants,
                &parts.headers,
                dashboard::cookie_allowed(&parts.method),
            )
            .await?;
        state.admit(&caller)?;
        Ok(Who(caller))
    }
}

/// Each tenant's requests to this server, as token buckets.
#[derive(Debug)]
pub struct Limiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<TenantName, (f64, Instant)>>,
}

/// Tenants' buckets kept at most; past this they start over full.
const BUCKETS: usize = 100_000;

impl Limiter {
    fn new(per_second: f64) -> Self {
        Limiter {
            per_second,
            burst: (2.0 * per_second).max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `tenant`'s bucket, or says when one is
    /// there again.
    fn take(&self, tenant: &TenantName) -> Result<(), Problem> {
        let now = Instant::now();
        let mut buckets = runtime::sync::lock(&self.buckets);
        if buckets.len() >= BUCKETS && !buckets.contains_key(tenant) {
            buckets.clear();
        }
        let (tokens, at) = buckets.entry(tenant.clone()).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - *tokens) / self.per_second;
        Err(Problem::too_many(
            format!(
                "tenant {tenant} is over its request rate on this server ({} requests/s, serve.tenant_request_rate): try again in {}",
                self.per_second,
                runtime::time::format_wait(Duration::from_secs_f64(wait))
            ),
            wait.ceil() as u64,
        ))
    }
}

pub async fn run(cli: &Cli, args: &Args) -> CliResult {
    if args.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    let mut config = cli.config()?;
    let listen = args
        .listen
        .clone()
        .or_else(|| config.serve.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let admin = admin_token(&config)?;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(listen.as_str())
        .await
        .with_context(|| format!("cannot listen on {listen}: give HOST:PORT, e.g. 127.0.0.1:8080"))?
        .collect();
    if admin.is_none()
        && let Some(public) = addrs.iter().find(|a| !a.ip().is_loopback())
    {
        anyhow::bail!(
            "refusing to listen on {public} without tokens: anyone who reaches it could run and delete jobs. Set an admin token (RUNTIME_ADMIN_TOKEN, or serve.admin_token_sha256 in the config), or listen on loopback (--listen 127.0.0.1:8080)"
        );
    }
    let listener = tokio::net::TcpListener::bind(addrs.as_slice())
        .await
        .with_context(|| format!("cannot listen on {listen}; give a free HOST:PORT"))?;
    let local = listener.local_addr().context("the listener's address")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics = Arc::new(Metrics::default());
    let tenant = cli.tenant().cloned();
    let (backend, sandbox, worker) = match cli.backend(&config).await? {
        Some(backend) => (backend, None, None),
        None => {
            size_pool(&mut config, args.concurrency)?;
            config.missing_env()?;
            let backend = Backend::memory().with_quotas(config.quotas());
            let handlers = Cli::handlers_dir(&config);
            let rt = Runtime::new(backend.clone(), handlers, config.clone())
                .context("starting the sandbox")?;
            let sandbox = rt.registry().sandbox().clone();
            sandbox.echo_guest_logs(true);
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let worker = rt
                .worker(WorkerConfig {
                    queues: Vec::new(),
                    tenant: tenant.clone(),
                    concurrency: args.concurrency,
                    batch: args.concurrency.clamp(1, 64),
                    grace: args.grace,
                    heartbeat: Some(Duration::from_secs(5)),
                    ..WorkerConfig::default()
                })
                .with_events(tx)
                .with_metrics(metrics.clone());
            tokio::spawn(async move {
                while let Some(event) = rx.recv().await {
                    log_event(&event);
                }
            });
            let mut stop = stop_rx.clone();
            let task = tokio::spawn(async move {
                worker
                    .run(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await
            });
            (backend, Some(sandbox), Some(task))
        }
    };
    let limiter = config.serve.tenant_request_rate.map(Limiter::new);
    let state = Arc::new(AppState {
        sources: Sources {
            metrics,
            backend: backend.jobs.clone(),
            sandbox,
            queues: Vec::new(),
            tenant,
        },
        backend,
        config,
        auth: Auth::new(admin),
        limiter,
        bodies: api::BodyBudget::default(),
        csrf_secret: match admin {
            Some(hash) => hash,
            None => random_secret()?,
        },
    });
    let app = router(state.clone());
    let in_process = if worker.is_some() {
        format!(
            "the in-memory queue, with {} jobs at once run here",
            args.concurrency
        )
    } else {
        "the queue server; workers run elsewhere (`runtime worker --all`)".to_string()
    };
    tracing::info!(
        pid = std::process::id(),
        "serving http://{local} over {in_process}"
    );
    if state.auth.required() {
        tracing::info!("requests need a token: the admin's, or a tenant's");
    } else {
        tracing::warn!(
            "no admin token: listening on loopback only, and every request acts as the admin"
        );
    }

    let mut stop = stop_rx.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    let grace = args.grace;
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let mut stopping = stop_rx.clone();
    let served = async {
        // Requests still open when the grace period ends are cut.
        tokio::select! {
            r = server => r.context("the server stopped"),
            () = async {
                let _ = stopping.wait_for(|s| *s).await;
                tokio::time::sleep(grace).await;
            } => Ok(()),
        }
    };
    served.await?;
    if let Some(task) = worker {
        let stats = task
            .await
            .context("the in-process worker panicked")?
            .context("the in-process worker stopped")?;
        tracing::info!(
            done = stats.done,
            failed = stats.failed,
            released = stats.released,
            "in-process worker stopped"
        );
    }
    tracing::info!("stopped");
    Ok(Exit::Ok)
}

/// The admin token's hash: RUNTIME_ADMIN_TOKEN (hashed at once), else the
/// config's `serve.admin_token_sha256`.
fn admin_token(config: &Config) -> anyhow::Result<Option<[u8; 32]>> {
    if let Ok(token) = std::env::var("RUNTIME_ADMIN_TOKEN") {
        if token.trim().len() < 16 {
            anyhow::bail!(
                "RUNTIME_ADMIN_TOKEN is too short to be a secret: give at least 16 characters, e.g. from `openssl rand -hex 32`"
            );
        }
        return Ok(Some(auth::hash(token.trim())));
    }
    match &config.serve.admin_token_sha256 {
        Some(hex) => Ok(Some(
            auth::from_hex(hex).context("serve.admin_token_sha256 is not a SHA-256 in hex")?,
        )),
        None => Ok(None),
    }
}

/// 32 bytes from the operating system's random source.
pub(super) fn random_secret() -> anyhow::Result<[u8; 32]> {
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret)
        .map_err(|e| anyhow::anyhow!("no random bytes for the dashboard's CSRF tokens: {e}"))?;
    Ok(secret)
}

fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/queues", get(api::queues))
        .route("/queues/{queue}", get(api::queue))
        .route(
            "/queues/{queue}/jobs",
            post(api::dispatch).get(api::list_jobs),
        )
        .route("/queues/{queue}/batch", post(api::batch))
        .route("/queues/{queue}/retry-failed", post(api::retry_failed))
        .route("/queues/{queue}/purge", post(api::purge))
        .route("/queues/{queue}/pause", post(api::pause))
        .route("/queues/{queue}/resume", post(api::resume))
        .route("/jobs/{id}", get(api::get_job).delete(api::delete_job))
        .route("/jobs/{id}/retry", post(api::retry_job))
        .route("/workers", get(api::workers))
        .route("/tenants", get(api::tenants).post(api::create_tenant))
        .route("/tenants/{tenant}", get(api::tenant))
        .route("/openapi.json", get(openapi::document));
    Router::new()
        .nest("/v1", v1)
        .route("/", get(dashboard::overview))
        .route("/login", get(dashboard::login_form).post(dashboard::login))
        .route("/logout", post(dashboard::logout))
        .route("/queues/{queue}", get(dashboard::queue))
        .route("/queues/{queue}/{action}", post(dashboard::queue_action))
        .route("/jobs", get(dashboard::find))
        .route("/jobs/{id}", get(dashboard::job))
        .route("/jobs/{id}/{action}", post(dashboard::job_action))
        .route("/workers", get(dashboard::workers))
        .route("/tenants", get(dashboard::tenants))
        .route("/assets/{name}", get(dashboard::asset))
        .route("/ui/throughput.svg", get(dashboard::throughput_chart))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            same_site,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Refuses what a browser sends on another site's behalf. A change (any
/// method but GET and HEAD) marked cross-site by the browser, or from an
/// `Origin` that is not this server's host, is refused. Without tokens,
/// only requests naming a loopback host are taken at all: a web page whose
/// name was pointed at 127.0.0.1 (DNS rebinding) names its own host.
async fn same_site(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !state.auth.required() && !loopback_host(host) {
        return Problem::forbidden(format!(
            "this server takes requests without tokens, so only under a loopback name (localhost, 127.0.0.1, [::1]), not {host:?}: set an admin token to serve other names"
        ))
        .into_response();
    }
    let safe = matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if !safe {
        let cross = headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"cross-site");
        let foreign = headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            // `null`: a browser that would not say (a sandboxed frame,
            // some privacy settings); Sec-Fetch-Site decides then.
            .is_some_and(|origin| {
                let named = origin.split_once("://").map_or(origin, |(_, rest)| rest);
                origin != "null" && !named.eq_ignore_ascii_case(host)
            });
        if cross || foreign {
            return Problem::forbidden(
                "a change sent from another site is refused: send it from this server's own pages, or without an Origin header (curl, an API client)",
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// Whether a `Host` header names a loopback address (`localhost`,
/// `127.0.0.1`, `[::1]`, any port).
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Headers on every answer: the dashboard's Content-Security-Policy (no
/// script but this server's own files), no sniffing, no framing, no
/// referrer to other sites (this server's own requests keep their
/// `Origin`, which `same_site` checks).
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(dashboard::CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

async fn not_found() -> Problem {
    Problem::not_found("no such path: the API is under /v1 (its description at /v1/openapi.json)")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this path does not take that method: see /v1/openapi.json",
    )
}

/// The process is up.
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// The queue server answers.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let answer = tokio::time::timeout(Duration::from_secs(2), state.backend.jobs.queues()).await;
    match answer {
        Ok(Ok(_)) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        // Anyone may ask: the answer names no address; the log has it.
        Ok(Err(e)) => {
            tracing::warn!("not ready: {e}");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the queue server is unreachable (the server's log says why)",
            )
            .into_response()
        }
        Err(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the queue server did not answer within 2 s",
        )
        .into_response(),
    }
}

/// Prometheus metrics: the in-process workers' and every queue's depth
/// (admin only).
async fn metrics(State(state): State<Arc<AppState>>, Who(caller): Who) -> Response {
    if let Caller::Tenant(t) = caller {
        return Problem::forbidden(format!(
            "/metrics covers every tenant: it needs the admin token, not tenant {t}'s"
        ))
        .into_response();
    }
    let readings = metrics_http::readings(&state.sources).await;
    let body = state.sources.metrics.render(&readings);
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_are_loopback_hosts() {
        for host in [
            "localhost:8080",
            "127.0.0.1:8080",
            "127.0.0.2",
            "[::1]:80",
            "LOCALHOST",
        ] {
            assert!(loopback_host(host), "{host}");
        }
        for host in [
            "evil.example:8080",
            "10.0.0.1:80",
            "",
            "[::2]:80",
            "localhost.evil.example",
        ] {
            assert!(!loopback_host(host), "{host}");
        }
    }
}
