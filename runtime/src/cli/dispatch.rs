//! `runtime dispatch QUEUE JSON`: with no backend configured (the seeds'
//! default), the job runs here and now, in-process, before the command
//! returns: each attempt straight after the last (no backoff sleeps), then
//! any follow-up jobs it dispatched, until nothing is left.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use runtime::job::{DispatchOptions, JobId, NewJob, Payload, QueueName, RunAt};
use runtime::queue::Ack;
use runtime::sandbox::RunOutcome;
use runtime::worker::{JobEvent, WorkerConfig};
use runtime::{JobState, Runtime};
use serde::Serialize;

use super::{Cli, CliResult, Exit};

/// Dispatch a job (runs it now, in-process, on the in-memory default).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Queue name: 1 to 64 of a-z, 0-9, '-', '_'.
    queue: String,
    /// Payload: one JSON document, at most 1 MiB; `-` reads it from stdin.
    payload: String,
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
        }
    }
}

pub async fn run(cli: &Cli, args: &Args) -> CliResult {
    let queue = QueueName::new(args.queue.as_str())?;
    let payload = if args.payload == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading the payload from stdin")?;
        Payload::new(text)?
    } else {
        Payload::new(args.payload.as_str())?
    };
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
    let config = cli.config()?;
    let handlers = Cli::handlers_dir(&config);
    let rt = Runtime::in_memory(handlers, config).context("starting the sandbox")?;
    // A missing or broken module is a usage error, found before anything runs.
    rt.registry().handler(&queue)?;

    let job = NewJob {
        queue,
        payload,
        options: DispatchOptions {
            priority: args.priority,
            run_at,
            max_attempts: args.max_attempts,
            unique_key: args.unique_key.clone(),
        },
    };
    let root = rt.dispatch(job).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = rt
        .worker(WorkerConfig {
            concurrency: 1,
            drain: true,
            retry_at_once: true,
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
        if !args.json {
            print_event(&event);
        }
        let entry = reports.entry(event.job.id.clone()).or_insert_with(|| {
            order.push(event.job.id.clone());
            JobJson::new(&event.job.id)
        });
        update(entry, &event);
    }
    work.await
        .context("the worker stopped unexpectedly")?
        .context("running the job")?;

    let mut root_json = reports.remove(&root).unwrap_or_else(|| JobJson {
        error: Some("interrupted before it ran".into()),
        ..JobJson::new(&root)
    });
    root_json.followups = order
        .iter()
        .filter(|id| **id != root)
        .filter_map(|id| reports.remove(id))
        .collect();
    let exit = if root_json.state == "done" {
        Exit::Ok
    } else {
        Exit::JobFailed
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&root_json)?);
    } else {
        print_summary(&root_json);
        for f in &root_json.followups {
            print_summary(f);
        }
    }
    Ok(exit)
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
        RunOutcome::Crashed { reason } => reason.clone(),
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
            | RunOutcome::Crashed { reason } => Some(reason.clone()),
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
