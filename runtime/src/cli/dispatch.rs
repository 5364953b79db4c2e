//! `runtime dispatch QUEUE JSON`: with a queue server configured, enqueues
//! the job (or, with `--file`, one job per line) and prints its id. With no
//! backend configured (the seeds' default), the job runs here and now,
//! in-process, before the command returns: each attempt straight after the
//! last (no backoff sleeps), then any follow-up jobs it dispatched, until
//! nothing is runnable or [`SYNC_MAX_ATTEMPTS`] attempts ran. Jobs put off
//! (delayed follow-ups, retries a handler delayed) are reported, not waited
//! for: the in-memory queue ends with the command.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use runtime::job::{DispatchOptions, JobId, NewJob, Payload, QueueName, RunAt};
use runtime::queue::Ack;
use runtime::sandbox::RunOutcome;
use runtime::worker::{JobEvent, WorkerConfig};
use runtime::{JobState, QueueBackend, Runtime};
use serde::Serialize;

use super::{Cli, CliResult, Exit};

/// Dispatch a job: enqueue it on the queue server, or, on the in-memory
/// default, run it now, in-process (at most 1000 attempts, its own and its
/// follow-ups'; delayed jobs are reported and not run).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Queue name: 1 to 64 of a-z, 0-9, '-', '_'.
    queue: String,
    /// Payload: one JSON document, at most 1 MiB; `-` reads it from stdin.
    #[arg(required_unless_present = "file")]
    payload: Option<String>,
    /// Enqueue one job per line of FILE (`-`: stdin), each line one JSON
    /// payload; blank lines are skipped. All lines are checked before any
    /// job is enqueued. Needs a queue server.
    #[arg(long, value_name = "FILE", conflicts_with = "payload")]
    file: Option<PathBuf>,
    /// Higher runs first.
    #[arg(long, default_value_t = runtime::job::DEFAULT_PRIORITY, allow_negative_numbers = true)]
    priority: i32,
    /// Attempts in all.
    #[arg(long, default_value_t = runtime::job::DEFAULT_MAX_ATTEMPTS)]
    max_attempts: u32,
    /// Run no sooner than this from now: `30s`, `5m`, `1h 30m`.
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "run_at")]
    delay: Option<Duration>,
    /// Run no sooner than this time: RFC 3339, e.g. `2026-12-01T09:00:00Z`.
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    run_at: Option<SystemTime>,
    /// While a job with this key is pending, scheduled or running, dispatch
    /// returns it instead of adding another.
    #[arg(long)]
    unique_key: Option<String>,
    /// Print one JSON object instead of the human report.
    #[arg(long)]
    json: bool,
}

/// One attempt in the JSON report.
#[derive(Debug, Serialize)]
struct AttemptJson {
    attempt: u32,
    outcome: String,
    elapsed_ms: f64,
    log: String,
}

/// The JSON report of one job.
#[derive(Debug, Serialize)]
struct JobJson {
    id: String,
    queue: String,
    state: &'static str,
    attempts: u32,
    error: Option<String>,
    runs: Vec<AttemptJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    followups: Vec<JobJson>,
    /// Sync mode: jobs left unrun when the command ended.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    left: Vec<LeftJson>,
    /// Sync mode: why it stopped with runnable jobs left.
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped: Option<String>,
}

/// A job left unrun by a sync dispatch.
#[derive(Debug, Serialize)]
struct LeftJson {
    id: String,
    state: &'static str,
    /// When it is due (Unix ms).
    run_at: u64,
}

impl JobJson {
    /// A job not yet run.
    fn new(id: &JobId) -> Self {
        JobJson {
            id: id.to_string(),
            queue: id.queue().to_string(),
            state: "pending",
            attempts: 0,
            error: None,
            runs: Vec::new(),
            followups: Vec::new(),
            left: Vec::new(),
            stopped: None,
        }
    }
}

pub async fn run(cli: &Cli, args: &Args) -> CliResult {
    let queue = QueueName::new(args.queue.as_str())?;
    let options = options(args)?;
    let config = cli.config()?;
    if let Some(backend) = cli.backend(&config).await? {
        return match &args.file {
            Some(file) => enqueue_file(&*backend, queue, options, file, args.json).await,
            None => enqueue(&*backend, queue, options, read_payload(args)?, args.json).await,
        };
    }
    if args.file.is_some() {
        anyhow::bail!(
            "--file needs a queue server: pass --backend redis://host:port (on the in-memory default, dispatch runs one job per command)"
        );
    }
    let payload = read_payload(args)?;
    run_here(config, queue, payload, options, args.json).await
}

/// The payload argument, or stdin for `-`.
fn read_payload(args: &Args) -> anyhow::Result<Payload> {
    let arg = args.payload.as_deref().unwrap_or("-");
    if arg == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading the payload from stdin")?;
        Ok(Payload::new(text)?)
    } else {
        Ok(Payload::new(arg)?)
    }
}

/// Enqueues one job; prints its id, or with `json` its record.
async fn enqueue(
    backend: &dyn QueueBackend,
    queue: QueueName,
    options: DispatchOptions,
    payload: Payload,
    json: bool,
) -> CliResult {
    let id = backend
        .dispatch(NewJob {
            queue,
            payload,
            options,
        })
        .await?;
    if json {
        let record = backend.get(&id).await?;
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        println!("{id}");
    }
    Ok(Exit::Ok)
}

/// Jobs per `dispatch_many` call: each is one script on the server, kept
/// short so other clients are not held up.
const BULK_CHUNK: usize = 1_000;

/// Enqueues one job per line of `file`, after checking every line.
async fn enqueue_file(
    backend: &dyn QueueBackend,
    queue: QueueName,
    options: DispatchOptions,
    file: &Path,
    json: bool,
) -> CliResult {
    let text = if file == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading jobs from stdin")?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let mut jobs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let payload = Payload::new(line)
            .with_context(|| format!("{} line {}: nothing was enqueued", file.display(), n + 1))?;
        jobs.push(NewJob {
            queue: queue.clone(),
            payload,
            options: options.clone(),
        });
    }
    let count = jobs.len();
    let mut first = None;
    let mut last = None;
    let mut pending = jobs.into_iter().peekable();
    while pending.peek().is_some() {
        let chunk: Vec<NewJob> = pending.by_ref().take(BULK_CHUNK).collect();
        let ids = backend.dispatch_many(chunk).await?;
        if first.is_none() {
            first = ids.first().cloned();
        }
        last = ids.last().cloned().or(last);
    }
    let show = |id: &Option<JobId>| id.as_ref().map(ToString::to_string);
    if json {
        let summary = serde_json::json!({
            "queue": queue.as_str(),
            "count": count,
            "first": show(&first),
            "last": show(&last),
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        match (show(&first), show(&last)) {
            (Some(a), Some(b)) => println!("dispatched {count} jobs to {queue}: {a} .. {b}"),
            _ => println!(
                "dispatched no jobs: {} has no payload lines",
                file.display()
            ),
        }
    }
    Ok(Exit::Ok)
}

/// The dispatch options from the flags.
fn options(args: &Args) -> anyhow::Result<DispatchOptions> {
    if args.max_attempts == 0 {
        anyhow::bail!("--max-attempts must be at least 1");
    }
    let run_at = match (args.delay, args.run_at) {
        (Some(d), _) => RunAt::After(d),
        (None, Some(t)) => RunAt::At(
            t.duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
        ),
        (None, None) => RunAt::Now,
    };
    Ok(DispatchOptions {
        priority: args.priority,
        run_at,
        max_attempts: args.max_attempts,
        unique_key: args.unique_key.clone(),
    })
}

/// The most attempts one `runtime dispatch` on the in-memory default runs,
/// the job's and its follow-ups' together (and so the most jobs). A handler
/// that dispatches copies of itself, or keeps failing with many attempts
/// left, stops here rather than keeping the command running; what is left
/// is reported.
const SYNC_MAX_ATTEMPTS: u64 = 1000;

/// Left jobs listed one per line in the human report; the rest are counted.
const LEFT_SHOWN: usize = 10;

/// The sync mode: runs the job and its follow-ups in-process.
async fn run_here(
    config: runtime::config::Config,
    queue: QueueName,
    payload: Payload,
    options: DispatchOptions,
    json: bool,
) -> CliResult {
    if options.run_at != RunAt::Now {
        anyhow::bail!(
            "--delay and --run-at need a queue server: on the in-memory default nothing runs after this command exits, so a delayed job would never run. Pass --backend redis://HOST:PORT (or set RUNTIME_BACKEND), or leave the flag out to run the job now"
        );
    }
    let handlers = Cli::handlers_dir(&config);
    let rt = Runtime::in_memory(handlers, config).context("starting the sandbox")?;
    // A missing or broken module is a usage error, found before anything runs.
    rt.registry().handler(&queue)?;

    let job = NewJob {
        queue,
        payload,
        options,
    };
    let root = rt.dispatch(job).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = rt
        .worker(WorkerConfig {
            concurrency: 1,
            drain: true,
            leave_scheduled: true,
            retry_at_once: true,
            max_jobs: Some(SYNC_MAX_ATTEMPTS),
            ..WorkerConfig::default()
        })
        .with_events(tx);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let work = tokio::spawn(worker.run(shutdown));

    let mut reports: HashMap<JobId, JobJson> = HashMap::new();
    let mut order = Vec::new();
    while let Some(event) = rx.recv().await {
        if !json {
            print_event(&event);
        }
        let entry = reports.entry(event.job.id.clone()).or_insert_with(|| {
            order.push(event.job.id.clone());
            JobJson::new(&event.job.id)
        });
        update(entry, &event);
    }
    let stats = work
        .await
        .context("the worker stopped unexpectedly")?
        .context("running the job")?;
    let left = left_jobs(&**rt.backend()).await?;
    // A failed job's stored error is the word on it: the worker may have
    // refused what the handler asked (a retry delay past the limit).
    for (id, entry) in &mut reports {
        if entry.state == "failed"
            && let Some(record) = rt.backend().get(id).await?
        {
            entry.error = record.error;
        }
    }

    let mut root_json = reports.remove(&root).unwrap_or_else(|| JobJson {
        error: Some("interrupted before it ran".into()),
        ..JobJson::new(&root)
    });
    root_json.followups = order
        .iter()
        .filter(|id| **id != root)
        .filter_map(|id| reports.remove(id))
        .collect();
    if stats.claimed >= SYNC_MAX_ATTEMPTS && left.iter().any(|j| j.state == "pending") {
        root_json.stopped = Some(format!(
            "stopped after {SYNC_MAX_ATTEMPTS} attempts, the most one dispatch runs on the in-memory default"
        ));
    }
    root_json.left = left;
    let exit = if root_json.state == "done" {
        Exit::Ok
    } else {
        Exit::JobFailed
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&root_json)?);
    } else {
        print_summary(&root_json);
        for f in &root_json.followups {
            print_summary(f);
        }
        print_left(&root_json);
    }
    Ok(exit)
}

/// Every job still pending or scheduled, in the order they would run.
async fn left_jobs(backend: &dyn QueueBackend) -> anyhow::Result<Vec<LeftJson>> {
    let mut left = Vec::new();
    for queue in backend.queues().await? {
        for state in [JobState::Pending, JobState::Scheduled] {
            let all = runtime::queue::Page {
                offset: 0,
                limit: usize::try_from(u32::MAX).unwrap_or(usize::MAX),
            };
            for job in backend.list(&queue, state, all).await? {
                left.push(LeftJson {
                    id: job.id.to_string(),
                    state: state.as_str(),
                    run_at: job.run_at,
                });
            }
        }
    }
    Ok(left)
}

/// What a sync dispatch left unrun, and why it will not run.
fn print_left(root: &JobJson) {
    if let Some(stopped) = &root.stopped {
        println!("{stopped}");
    }
    if root.left.is_empty() {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let n = root.left.len();
    let (it, them) = if n == 1 {
        ("job", "it")
    } else {
        ("jobs", "them")
    };
    println!("{n} {it} left, not run: the in-memory queue ends with this command");
    for job in root.left.iter().take(LEFT_SHOWN) {
        if job.state == "scheduled" {
            let wait = Duration::from_secs(job.run_at.saturating_sub(now).div_ceil(1000));
            println!(
                "  {}: scheduled, due in {}",
                job.id,
                humantime::format_duration(wait)
            );
        } else {
            println!("  {}: {}", job.id, job.state);
        }
    }
    if n > LEFT_SHOWN {
        println!("  ... and {} more", n - LEFT_SHOWN);
    }
    println!("to see {them} through, dispatch to a queue server (--backend redis://HOST:PORT)");
}

fn state_name(ack: Ack) -> &'static str {
    match ack {
        Ack::Applied(None) => "done",
        Ack::Applied(Some(state)) => state.as_str(),
        Ack::Stale => "stale",
    }
}

fn outcome_text(outcome: &RunOutcome) -> String {
    match outcome {
        RunOutcome::Done => "done".into(),
        RunOutcome::Retry { reason, .. } => format!("retry: {reason}"),
        RunOutcome::Fail { reason } => format!("fail: {reason}"),
        RunOutcome::Crashed { reason, .. } => reason.clone(),
    }
}

fn update(entry: &mut JobJson, event: &JobEvent) {
    entry.state = state_name(event.ack);
    entry.attempts = event.job.attempts;
    if let Some(report) = &event.report {
        entry.error = match &report.outcome {
            RunOutcome::Done => None,
            RunOutcome::Retry { reason, .. }
            | RunOutcome::Fail { reason }
            | RunOutcome::Crashed { reason, .. } => Some(reason.clone()),
        };
        entry.runs.push(AttemptJson {
            attempt: event.job.attempts,
            outcome: outcome_text(&report.outcome),
            elapsed_ms: report.elapsed.as_secs_f64() * 1000.0,
            log: report.log.clone(),
        });
    }
}

fn print_event(event: &JobEvent) {
    let job = &event.job;
    let Some(report) = &event.report else {
        println!("{} attempt {}: handed back", job.id, job.attempts);
        return;
    };
    let next = match event.ack {
        Ack::Applied(Some(JobState::Pending | JobState::Scheduled)) => ", will retry",
        _ => "",
    };
    println!(
        "{} attempt {}/{}: {} ({:.1} ms{next})",
        job.id,
        job.attempts,
        job.max_attempts,
        outcome_text(&report.outcome),
        report.elapsed.as_secs_f64() * 1000.0,
    );
    for line in report.log.lines() {
        println!("  | {line}");
    }
}

fn print_summary(job: &JobJson) {
    let plural = if job.attempts == 1 { "" } else { "s" };
    match &job.error {
        Some(error) if job.state != "done" => println!(
            "{}: {} after {} attempt{plural}: {error}",
            job.id, job.state, job.attempts
        ),
        _ => println!(
            "{}: {} after {} attempt{plural}",
            job.id, job.state, job.attempts
        ),
    }
}
