//! `runtime dispatch QUEUE JSON`: with a queue server configured, enqueues
//! the job (or, with `--file`, one job per line) and prints its id. With no
//! backend configured (the default), the job runs here and now,
//! in-process, before the command returns: each attempt straight after the
//! last (no backoff sleeps), then any follow-up jobs it dispatched, until
//! nothing is runnable or [`SYNC_MAX_ATTEMPTS`] attempts ran. Jobs put off
//! (delayed follow-ups, retries a handler delayed) are reported, not waited
//! for: the in-memory queue ends with the command.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use runtime::job::{
    DispatchOptions, FailureKind, JobId, MaxAttempts, NewJob, Payload, QueueName, RunAt,
};
use runtime::queue::{Ack, AttemptEnd, Clock, SystemClock};
use runtime::sandbox::RunOutcome;
use runtime::text;
use runtime::worker::{JobEvent, WorkerConfig};
use runtime::{JobQueue, JobState, Runtime};
use serde::Serialize;

use super::bulk::{self, Bulk};
use super::{Cli, CliResult, Exit, QueueArg};

/// Dispatch a job: enqueue it on the queue server, or, on the in-memory
/// default, run it now, in-process (at most 1000 attempts, its own and its
/// follow-ups'; delayed jobs are reported and not run).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Queue name: 1 to 64 of a-z, 0-9, '-', '_'; a tenant's queue is
    /// `tenant/queue` (or the bare name with --tenant).
    queue: QueueArg,
    /// Payload: one JSON document, at most 1 MiB; `-` reads it from stdin.
    #[arg(required_unless_present = "file")]
    payload: Option<String>,
    /// Enqueue one job per line of FILE (`-`: stdin), each line one JSON
    /// payload; blank lines are skipped. Needs a queue server. Lines are
    /// read, checked and enqueued in chunks of 1,000 as they come, so any
    /// size takes little memory. A bad line stops the command before its
    /// chunk; so do a failure of the server and Ctrl-C (between chunks).
    /// Chunks before stay enqueued, and the command says how many jobs
    /// went in and the `--skip N` that resumes after them.
    #[arg(long, value_name = "FILE", conflicts_with = "payload")]
    file: Option<PathBuf>,
    /// With --file: pass over the first N lines (to resume a run that
    /// stopped).
    #[arg(long, value_name = "N", requires = "file", default_value_t = 0)]
    skip: u64,
    /// Higher runs first.
    #[arg(long, default_value_t = runtime::job::DEFAULT_PRIORITY, allow_negative_numbers = true)]
    priority: i32,
    /// Attempts in all, 1 to 100.
    #[arg(long, default_value_t = MaxAttempts::DEFAULT)]
    max_attempts: MaxAttempts,
    /// Run no sooner than this from now: `30s`, `5m`, `1h 30m`, `2days`;
    /// at most 365 days.
    #[arg(long, value_parser = runtime::time::parse_delay, conflicts_with = "run_at")]
    delay: Option<Duration>,
    /// Run no sooner than this time: RFC 3339 with a zone,
    /// `2026-12-01T09:00:00Z` (UTC) or `2026-12-01T09:00:00+02:00`; at
    /// most 365 days from now.
    #[arg(long, value_name = "TIME")]
    run_at: Option<String>,
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
    /// `done`, `retry` or `fail` (the handler's word), or `crashed`.
    outcome: &'static str,
    /// Why it did not finish, as a fixed kind (`handler` for the handler's
    /// own retry or fail); `null` when done.
    kind: Option<FailureKind>,
    /// The reason in words; `null` when done.
    error: Option<String>,
    elapsed_ms: f64,
    log: String,
}

/// What became of a job, as the report says: a state it is in, done
/// (removed), or stale (its lease was lost, so it moved on without this
/// attempt). Compared as itself; written as a word only in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    In(JobState),
    Done,
    Stale,
}

impl Fate {
    fn as_str(self) -> &'static str {
        match self {
            Fate::In(state) => state.as_str(),
            Fate::Done => "done",
            Fate::Stale => "stale",
        }
    }
}

impl fmt::Display for Fate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Fate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The JSON report of one job.
#[derive(Debug, Serialize)]
struct JobJson {
    id: String,
    queue: String,
    state: Fate,
    attempts: u32,
    /// The kind of `error`: what tells a limit of the host from the
    /// handler's own words.
    error_kind: Option<FailureKind>,
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
    state: JobState,
    /// When it is due (Unix ms).
    run_at: u64,
}

impl JobJson {
    /// A job not yet run.
    fn new(id: &JobId) -> Self {
        JobJson {
            id: id.to_string(),
            queue: id.queue().to_string(),
            state: Fate::In(JobState::Pending),
            attempts: 0,
            error_kind: None,
            error: None,
            runs: Vec::new(),
            followups: Vec::new(),
            left: Vec::new(),
            stopped: None,
        }
    }
}

pub async fn run(cli: &Cli, args: &Args) -> CliResult {
    let queue = cli.queue(&args.queue)?;
    let options = options(args)?;
    let config = cli.config()?;
    if let Some(backend) = cli.backend(&config).await? {
        return match &args.file {
            Some(file) => {
                let bulk = Bulk {
                    queue,
                    options,
                    file,
                    skip: args.skip,
                    json: args.json,
                };
                bulk::enqueue(&*backend.jobs, bulk).await
            }
            None => {
                enqueue(
                    &*backend.jobs,
                    queue,
                    options,
                    read_payload(args)?,
                    args.json,
                )
                .await
            }
        };
    }
    if args.file.is_some() {
        anyhow::bail!(
            "--file needs a queue server: pass --backend redis://host:port (on the in-memory default, dispatch runs one job per command)"
        );
    }
    let payload = read_payload(args)?;
    super::check_module_path(&config, &queue)?;
    run_here(config, queue, payload, options, args.json).await
}

/// The payload argument, or stdin for `-`.
fn read_payload(args: &Args) -> anyhow::Result<Payload> {
    match args.payload.as_deref().unwrap_or("-") {
        "-" => bulk::read_stdin_payload(),
        arg => Ok(Payload::new(arg)?),
    }
}

/// Enqueues one job; prints its id, or with `json` its record.
async fn enqueue(
    backend: &dyn JobQueue,
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
        outln!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        outln!("{id}");
    }
    Ok(Exit::Ok)
}

/// The dispatch options from the flags.
fn options(args: &Args) -> anyhow::Result<DispatchOptions> {
    let run_at = match (args.delay, &args.run_at) {
        (Some(d), _) => RunAt::After(d),
        (None, Some(t)) => RunAt::At(
            runtime::time::parse_run_at(t, SystemClock.now())
                .context("invalid value for --run-at")?,
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
    config.missing_env()?;
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
    let left = left_jobs(&*rt.backend().jobs).await?;
    // A failed job's stored error is the word on it: the worker may have
    // refused what the handler asked (a retry delay past the limit).
    for (id, entry) in &mut reports {
        if entry.state == Fate::In(JobState::Failed)
            && let Some(record) = rt.backend().jobs.get(id).await?
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
    if stats.claimed >= SYNC_MAX_ATTEMPTS && left.iter().any(|j| j.state == JobState::Pending) {
        root_json.stopped = Some(format!(
            "stopped after {SYNC_MAX_ATTEMPTS} attempts, the most one dispatch runs on the in-memory default"
        ));
    }
    root_json.left = left;
    let exit = if root_json.state == Fate::Done {
        Exit::Ok
    } else {
        Exit::JobFailed
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&root_json)?);
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
async fn left_jobs(backend: &dyn JobQueue) -> anyhow::Result<Vec<LeftJson>> {
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
                    state,
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
        outln!("{stopped}");
    }
    if root.left.is_empty() {
        return;
    }
    let now = SystemClock.now();
    let n = root.left.len();
    let (it, them) = if n == 1 {
        ("job", "it")
    } else {
        ("jobs", "them")
    };
    outln!("{n} {it} left, not run: the in-memory queue ends with this command");
    for job in root.left.iter().take(LEFT_SHOWN) {
        if job.state == JobState::Scheduled {
            let wait = Duration::from_secs(job.run_at.saturating_sub(now).div_ceil(1000));
            outln!(
                "  {}: scheduled, due in {}",
                job.id,
                humantime::format_duration(wait)
            );
        } else {
            outln!("  {}: {}", job.id, job.state);
        }
    }
    if n > LEFT_SHOWN {
        outln!("  ... and {} more", n - LEFT_SHOWN);
    }
    outln!("to see {them} through, dispatch to a queue server (--backend redis://HOST:PORT)");
}

fn state_name(ack: Ack) -> Fate {
    match ack {
        Ack::Applied(None) => Fate::Done,
        Ack::Applied(Some(state)) => Fate::In(state),
        Ack::Stale => Fate::Stale,
    }
}

/// How an attempt ended, in one word.
fn outcome_word(outcome: &RunOutcome) -> &'static str {
    match outcome {
        RunOutcome::Done => "done",
        RunOutcome::Retry { .. } => "retry",
        RunOutcome::Fail { .. } => "fail",
        RunOutcome::Crashed { .. } => "crashed",
    }
}

/// How an attempt ended, for a person: `retry [handler]: <reason>`,
/// `crashed [memory]: memory limit 64 MiB exceeded`. The kind comes first,
/// in brackets, before any text the guest controls, and that text is
/// escaped, so a handler's words cannot pass for a host limit or start a
/// line of their own.
fn outcome_text(outcome: &RunOutcome) -> String {
    let word = outcome_word(outcome);
    match outcome.failure() {
        None => word.to_string(),
        Some((kind, reason)) => format!("{word} [{kind}]: {}", text::escape(reason)),
    }
}

fn update(entry: &mut JobJson, event: &JobEvent) {
    entry.state = state_name(event.ack);
    entry.attempts = event.job.attempts;
    if let Some(report) = &event.report {
        let failure = report.outcome.failure();
        entry.error_kind = failure.map(|(kind, _)| kind);
        entry.error = failure.map(|(_, reason)| reason.to_string());
        entry.runs.push(AttemptJson {
            attempt: event.job.attempts,
            outcome: outcome_word(&report.outcome),
            kind: entry.error_kind,
            error: entry.error.clone(),
            elapsed_ms: report.elapsed.as_secs_f64() * 1000.0,
            log: report.log.clone(),
        });
    }
}

fn print_event(event: &JobEvent) {
    let job = &event.job;
    let Some(report) = &event.report else {
        outln!("{} attempt {}: handed back", job.id, job.attempts);
        return;
    };
    let next = match event.end() {
        AttemptEnd::Retried => ", will retry",
        _ => "",
    };
    outln!(
        "{} attempt {}/{}: {} ({:.1} ms{next})",
        job.id,
        job.attempts,
        job.max_attempts,
        outcome_text(&report.outcome),
        report.elapsed.as_secs_f64() * 1000.0,
    );
    // Split on newlines only, each line escaped: a guest line cannot start
    // a line of the report that lacks the `  | ` of the log.
    for line in text::lines(&report.log) {
        outln!("  | {line}");
    }
}

/// `hello:1: failed [memory] after 2 attempts: memory limit 64 MiB exceeded`:
/// the kind beside the state, the (escaped) reason after it.
fn print_summary(job: &JobJson) {
    let plural = if job.attempts == 1 { "" } else { "s" };
    let kind = job
        .error_kind
        .map(|kind| format!(" [{kind}]"))
        .unwrap_or_default();
    match &job.error {
        Some(error) if job.state != Fate::Done => outln!(
            "{}: {}{kind} after {} attempt{plural}: {}",
            job.id,
            job.state,
            job.attempts,
            text::escape(error)
        ),
        _ => outln!(
            "{}: {} after {} attempt{plural}",
            job.id,
            job.state,
            job.attempts
        ),
    }
}
