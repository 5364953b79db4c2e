//! `runtime worker QUEUE...`: run jobs from the queue server until stopped.
//!
//! SIGINT or SIGTERM: stop claiming, let in-flight jobs finish within the
//! grace period, hand the rest back without counting an attempt, exit 0.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use runtime::metrics::Metrics;
use runtime::queue::AttemptEnd;
use runtime::worker::{JobEvent, WorkerConfig};
use runtime::{QueueName, Runtime};

use super::metrics_http::{self, Sources};
use super::{Cli, CliResult, Exit, QueueArg};

/// Run jobs from the queue server (needs --backend).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Queues to serve; when several have work they share the worker by
    /// their tenants' `weight`, then their own (config), each under its
    /// `concurrency` cap.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    queues: Vec<QueueArg>,
    /// Serve every queue that has work, of every tenant (with --tenant,
    /// of that tenant), shared fairly between tenants; new queues and
    /// tenants are served as their first jobs arrive.
    #[arg(long)]
    all: bool,
    /// Jobs run at once.
    #[arg(long, short = 'c', default_value_t = 16)]
    concurrency: usize,
    /// Run this many jobs, then exit (cron mode).
    #[arg(long, value_name = "N")]
    max_jobs: Option<u64>,
    /// Exit once the queues have nothing pending, scheduled or in flight.
    #[arg(long)]
    drain: bool,
    /// On SIGINT/SIGTERM, how long in-flight jobs may finish before they
    /// are handed back: `10s`, `1m`.
    #[arg(long, value_parser = flag_duration, default_value = "10s")]
    grace: Duration,
    /// How long a claimed job is held without renewal; renewed every third
    /// of it. A killed worker's jobs run again after this long.
    #[arg(long, value_parser = flag_duration, default_value = "30s")]
    lease: Duration,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g.
    /// `127.0.0.1:9090` (`:0` picks a free port; the log says which).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
    /// How often the worker announces itself to `runtime workers`; it drops
    /// out of the list after three missed beats (killed, or cut off).
    #[arg(long, value_parser = flag_duration, default_value = "5s")]
    heartbeat: Duration,
}

/// Longest `--grace`, `--lease` or `--heartbeat`: a day is far past any
/// sensible value, and bounding them keeps every deadline computed from
/// them (and lease expiries stored on the server) far from overflow.
const MAX_FLAG_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// A duration flag: `30s`, `5m`, at most [`MAX_FLAG_DURATION`].
pub(super) fn flag_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d > MAX_FLAG_DURATION {
        return Err("longer than the most allowed, 24h".to_string());
    }
    Ok(d)
}

pub async fn run(cli: &Cli, args: &Args) -> CliResult {
    let queues = cli.queues(&args.queues)?;
    if args.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    if args.heartbeat < Duration::from_millis(100) {
        anyhow::bail!("--heartbeat must be at least 100ms");
    }
    if args.lease < Duration::from_millis(300) {
        anyhow::bail!("--lease must be at least 300ms (it is renewed every third of it)");
    }
    let mut config = cli.config()?;
    size_pool(&mut config, args.concurrency)?;
    let backend = cli.require_backend(&config, "runtime worker").await?;
    let tenant = cli.tenant().cloned();
    let handlers = Cli::handlers_dir(&config);
    config.missing_env()?;
    let rt = Runtime::new(backend, handlers, config.clone()).context("starting the sandbox")?;
    for warning in rt.backend().jobs.settings_warnings().await {
        tracing::warn!("{warning}");
    }
    // Load the handlers up front: a missing module is reported at start
    // (the worker still runs: the file may be deployed later). Queues with
    // a published module get it when the worker starts instead.
    let published = rt
        .backend()
        .modules
        .module_versions(&queues)
        .await
        .unwrap_or_default();
    for (i, queue) in queues.iter().enumerate() {
        if published.get(i).is_some_and(Option::is_some) {
            continue;
        }
        let loaded = super::check_module_path(&config, queue)
            .and_then(|()| rt.registry().handler(queue).map(drop));
        if let Err(e) = loaded {
            tracing::warn!("{e}");
        }
    }
    let sandbox = rt.registry().sandbox().clone();
    sandbox.echo_guest_logs(true);
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = &args.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr.as_str())
            .await
            .with_context(|| {
                format!(
                    "cannot listen on --metrics-addr {addr}; give a free host:port, e.g. 127.0.0.1:9464"
                )
            })?;
        let local = listener.local_addr().context("metrics listener address")?;
        tracing::info!("metrics at http://{local}/metrics");
        let sources = Sources {
            metrics: metrics.clone(),
            backend: rt.backend().jobs.clone(),
            sandbox: Some(sandbox),
            queues: queues.clone(),
            tenant: tenant.clone(),
        };
        tokio::spawn(metrics_http::serve(listener, Arc::new(sources)));
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = rt
        .worker(WorkerConfig {
            queues: queues.clone(),
            tenant: tenant.clone(),
            concurrency: args.concurrency,
            batch: args.concurrency.clamp(1, 64),
            lease: args.lease,
            max_jobs: args.max_jobs,
            drain: args.drain,
            grace: args.grace,
            heartbeat: Some(args.heartbeat),
            ..WorkerConfig::default()
        })
        .with_events(tx)
        .with_metrics(metrics);
    let log = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            log_event(&event);
        }
    });
    let names: Vec<&str> = queues.iter().map(QueueName::as_str).collect();
    let served = match (&tenant, args.all) {
        (Some(t), true) => format!("every queue of tenant {t}"),
        (None, true) => "every queue of every tenant".to_string(),
        (_, false) => names.join(","),
    };
    tracing::info!(
        queues = %served,
        concurrency = args.concurrency,
        pid = std::process::id(),
        "worker started"
    );
    let stats = worker
        .run(shutdown_signal())
        .await
        .context("the worker stopped")?;
    let _ = log.await;
    tracing::info!(
        claimed = stats.claimed,
        done = stats.done,
        retried = stats.retried,
        failed = stats.failed,
        released = stats.released,
        stale = stats.stale,
        "worker stopped"
    );
    Ok(Exit::Ok)
}

/// Sizes the sandbox's pool for `concurrency` jobs at once. The pool holds
/// one place per job in flight, each with room for the largest shape any
/// queue allows: sized from `concurrency` unless the config fixes it, and
/// then it must fit.
pub(super) fn size_pool(
    config: &mut runtime::config::Config,
    concurrency: usize,
) -> anyhow::Result<()> {
    match config.sandbox.max_instances {
        Some(max) if usize::try_from(max).unwrap_or(usize::MAX) < concurrency => {
            anyhow::bail!(
                "--concurrency {concurrency} is more than sandbox.max_instances {max}: raise max_instances in the config, or remove it to size the pool from --concurrency"
            );
        }
        Some(_) => {}
        None => {
            config.sandbox.max_instances = Some(
                u32::try_from(concurrency)
                    .map_err(|_| anyhow::anyhow!("--concurrency {concurrency} is too large"))?,
            );
        }
    }
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM.
pub(super) async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("stopping: no new jobs; in-flight jobs finish within the grace period");
}

/// One line per attempt, with the job's id, tenant, queue, attempt, duration and
/// outcome as fields (top-level keys in `--log-format json`); a failure adds
/// its `kind` and its `error` text. The text may be a guest's: it is a
/// field's value, escaped by either log format, never part of the message.
pub(super) fn log_event(event: &JobEvent) {
    let job = &event.job;
    let (id, queue, attempt) = (&job.id, job.id.queue().as_str(), job.attempts);
    let tenant = job.id.queue().tenant();
    let tenant = tenant.as_str();
    let Some(report) = &event.report else {
        tracing::info!(job = %id, tenant, queue, attempt, outcome = "handed back", "job handed back");
        return;
    };
    let duration_ms = (report.elapsed.as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
    // The outcome field, and how the message words it.
    let end = event.end();
    let ended = match end {
        AttemptEnd::Stale => "ended after its lease was lost",
        AttemptEnd::Done => "done",
        AttemptEnd::Failed => "failed",
        AttemptEnd::Retried => "will retry",
        AttemptEnd::HandedBack => "handed back",
    };
    let outcome = end.as_str();
    match report.outcome.failure() {
        None if end == AttemptEnd::Done => {
            tracing::info!(job = %id, tenant, queue, attempt, duration_ms, outcome, "job done");
        }
        None => tracing::warn!(
            job = %id,
            tenant,
            queue,
            attempt,
            duration_ms,
            outcome,
            "job finished but its lease was lost: it will run again"
        ),
        Some((kind, error)) => tracing::warn!(
            job = %id,
            tenant,
            queue,
            attempt,
            duration_ms,
            outcome,
            kind = kind.as_str(),
            error,
            "job {ended}"
        ),
    }
}
