//! `runtime queues`: jobs per state per queue; `runtime queues purge Q`.

use runtime::QueueName;
use runtime::queue::StateCounts;

use super::{Cli, CliResult, Exit, QueueArg};

/// Show every queue's jobs per state (needs --backend).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Remove every job of a queue that is not running.
    Purge {
        /// The queue.
        queue: QueueArg,
    },
}

pub async fn run(cli: &Cli, args: &Args) -> CliResult {
    let config = cli.config()?;
    let backend = cli.require_backend(&config, "runtime queues").await?.jobs;
    if let Some(Action::Purge { queue }) = &args.action {
        let queue = &cli.queue(queue)?;
        let removed = backend.purge(queue).await?;
        if args.json {
            outln!(
                "{}",
                serde_json::json!({ "queue": queue.as_str(), "removed": removed })
            );
        } else {
            outln!("purged {queue}: {removed} jobs removed (running jobs are left to finish)");
        }
        return Ok(Exit::Ok);
    }
    let rows = runtime::queue::counts_of(&*backend, |q| cli.lists(q)).await?;
    if args.json {
        outln!("{}", by_queue_json(&rows)?);
        return Ok(Exit::Ok);
    }
    let width = rows
        .iter()
        .map(|(q, _)| q.as_str().len())
        .max()
        .unwrap_or(0)
        .max(5);
    outln!(
        "{:<width$}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}",
        "QUEUE",
        "PENDING",
        "SCHEDULED",
        "RUNNING",
        "FAILED",
        "DONE"
    );
    for (q, c) in &rows {
        outln!(
            "{:<width$}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}",
            q.as_str(),
            c.pending,
            c.scheduled,
            c.running,
            c.failed,
            c.done
        );
    }
    if rows.is_empty() {
        outln!("(no queues yet)");
    }
    Ok(Exit::Ok)
}

/// Counts per queue as a JSON object keyed by the queue's name.
pub(super) fn by_queue_json(rows: &[(QueueName, StateCounts)]) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&by_queue_value(rows))
}

/// Queue name → counts, as JSON.
pub(super) fn by_queue_value(rows: &[(QueueName, StateCounts)]) -> serde_json::Value {
    rows.iter()
        .map(|(q, c)| (q.to_string(), serde_json::json!(c)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}
