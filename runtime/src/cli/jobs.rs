//! `runtime jobs list|show|retry|delete`: inspect and repair jobs.

use runtime::job::{FailureKind, UnixMillis};
use runtime::queue::Page;
use runtime::text;
use runtime::{JobRecord, JobState};

use super::{Cli, CliResult, Exit, JobArg, QueueArg};

/// Most records `jobs list` shows at once.
const MAX_LIMIT: u64 = 1000;

/// Largest `--offset`: far beyond any queue, and exact in the server's
/// script numbers (doubles).
const MAX_OFFSET: u64 = 1 << 50;

/// Inspect and repair jobs (needs --backend).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Jobs of a queue in one state, in the order they will be taken.
    List {
        /// The queue.
        queue: QueueArg,
        /// pending, scheduled, running or failed.
        #[arg(long, default_value = "pending")]
        state: JobState,
        /// At most this many, 1 to 1000 (each record holds its payload
        /// and log: a bigger page is a lot to hold and print).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT))]
        limit: u64,
        /// Skip this many first.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=MAX_OFFSET))]
        offset: u64,
        /// Print JSON records.
        #[arg(long)]
        json: bool,
    },
    /// One job: payload, state, attempts with their times, error and log.
    Show {
        /// The job id, `queue:number`.
        id: JobArg,
        /// Print the JSON record.
        #[arg(long)]
        json: bool,
    },
    /// Run a failed job again with a fresh set of attempts.
    Retry {
        /// The job id; or `--all-failed QUEUE`.
        #[arg(required_unless_present = "all_failed")]
        id: Option<JobArg>,
        /// Retry every failed job of this queue.
        #[arg(long, value_name = "QUEUE", conflicts_with = "id")]
        all_failed: Option<QueueArg>,
    },
    /// Remove a job that is not running.
    Delete {
        /// The job id.
        id: JobArg,
    },
}

pub async fn run(cli: &Cli, args: &Args) -> CliResult {
    let config = cli.config()?;
    let backend = cli.require_backend(&config, "runtime jobs").await?.jobs;
    match &args.action {
        Action::List {
            queue,
            state,
            limit,
            offset,
            json,
        } => {
            let queue = &cli.queue(queue)?;
            // Both fit: the parser bounds them.
            let page = Page {
                offset: usize::try_from(*offset).unwrap_or(usize::MAX),
                limit: usize::try_from(*limit).unwrap_or(MAX_LIMIT as usize),
            };
            let jobs = backend.list(queue, *state, page).await?;
            if *json {
                print_json(&jobs)?;
            } else {
                for job in &jobs {
                    outln!("{}", one_line(job));
                }
                if jobs.is_empty() {
                    outln!("(no {state} jobs in {queue})");
                }
            }
            Ok(Exit::Ok)
        }
        Action::Show { id, json } => {
            let id = &cli.job(id)?;
            let Some(job) = backend.get(id).await? else {
                anyhow::bail!("no job {id}: it may be done (done jobs are removed) or deleted");
            };
            if *json {
                print_json(&job)?;
            } else {
                print_job(&job);
            }
            Ok(Exit::Ok)
        }
        Action::Retry { id, all_failed } => {
            if let Some(queue) = all_failed {
                let queue = &cli.queue(queue)?;
                let retried = runtime::queue::retry_all_failed(&*backend, queue).await?;
                outln!("retried {retried} failed jobs of {queue}");
            } else if let Some(id) = id {
                let id = &cli.job(id)?;
                backend.retry(id).await?;
                outln!("{id}: pending again with a fresh set of attempts");
            }
            Ok(Exit::Ok)
        }
        Action::Delete { id } => {
            let id = &cli.job(id)?;
            if !backend.delete(id).await? {
                anyhow::bail!("no job {id}: it may be done (done jobs are removed) or deleted");
            }
            outln!("{id}: deleted");
            Ok(Exit::Ok)
        }
    }
}

/// Records as JSON, with what serde leaves raw in a guest's text (C1
/// controls, bidi and invisible characters) escaped too: the same JSON,
/// safe in a terminal.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    outln!("{}", text::json_safe(&serde_json::to_string_pretty(value)?));
    Ok(())
}

/// A stored time: any value prints (see [`runtime::time::format_millis`]).
pub(super) fn time(ms: UnixMillis) -> String {
    runtime::time::format_millis(ms)
}

/// A failure for a person: `[memory] memory limit 64 MiB exceeded`. The
/// kind (`[unknown]` on records from before kinds were kept) comes before
/// the text, which a guest may have written and which is escaped, so it can
/// neither pass for a host limit nor start a line of its own.
fn failure(kind: Option<FailureKind>, text: &str) -> String {
    let kind = kind.map_or("unknown", FailureKind::as_str);
    format!("[{kind}] {}", text::escape(text))
}

fn one_line(job: &JobRecord) -> String {
    let mut line = format!(
        "{}  {}  attempts {}/{}  priority {}  run at {}",
        job.id,
        job.state,
        job.attempts,
        job.max_attempts,
        job.priority,
        time(job.run_at)
    );
    if let Some(e) = &job.error {
        line.push_str(&format!("  error: {}", failure(job.error_kind, e)));
    }
    line
}

fn print_job(job: &JobRecord) {
    outln!("id:        {}", job.id);
    outln!("state:     {}", job.state);
    outln!("attempts:  {}/{}", job.attempts, job.max_attempts);
    outln!("priority:  {}", job.priority);
    outln!("created:   {}", time(job.created_at));
    outln!("run at:    {}", time(job.run_at));
    // A follow-up's unique key and payload come from a guest too.
    if let Some(key) = &job.unique_key {
        outln!("unique:    {}", text::escape(key));
    }
    outln!("payload:   {}", text::escape(job.payload.as_str()));
    if let Some(e) = &job.error {
        outln!("error:     {}", failure(job.error_kind, e));
    }
    for a in &job.history {
        match (a.ended_at, &a.outcome) {
            (Some(end), Some(outcome)) => outln!(
                "attempt {}: {} .. {} ({} ms): {}",
                a.number,
                time(a.started_at),
                time(end),
                end.saturating_sub(a.started_at),
                failure(a.kind, outcome)
            ),
            _ => outln!(
                "attempt {}: started {}, running",
                a.number,
                time(a.started_at)
            ),
        }
    }
    if !job.log.is_empty() {
        outln!("log of the last attempt:");
        for line in text::lines(&job.log) {
            outln!("  | {line}");
        }
    }
}
