//! `runtime queues`: jobs per state per queue, and whether each is paused;
//! `runtime queues purge|pause|resume Q`.

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
    /// Pause a queue: no worker claims its jobs, which stay pending (or
    /// scheduled) until it is resumed; running ones finish. A queue can be
    /// paused before its first job.
    Pause {
        /// The queue.
        queue: QueueArg,
    },
    /// Resume a paused queue: workers claim its jobs again.
    Resume {
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
    if let Some(Action::Pause { queue } | Action::Resume { queue }) = &args.action {
        let queue = &cli.queue(queue)?;
        let pause = matches!(args.action, Some(Action::Pause { .. }));
        let changed = backend.set_paused(queue, pause).await?;
        if args.json {
            outln!(
                "{}",
                serde_json::json!({ "queue": queue.as_str(), "paused": pause, "changed": changed })
            );
        } else {
            let said = match (pause, changed) {
                (true, true) => {
                    "paused: workers take none of its jobs until `runtime queues resume`"
                }
                (true, false) => "was paused already",
                (false, true) => "resumed: workers take its jobs again",
                (false, false) => "was not paused",
            };
            outln!("{queue} {said}");
        }
        return Ok(Exit::Ok);
    }
    let rows = runtime::queue::counts_of(&*backend, |q| cli.lists(q)).await?;
    let names: Vec<QueueName> = rows.iter().map(|(q, _)| q.clone()).collect();
    let paused = backend.paused(&names).await?;
    if args.json {
        let mut all = by_queue_value(&rows);
        for ((q, _), &p) in rows.iter().zip(&paused) {
            if let Some(entry) = all.get_mut(q.as_str()).and_then(|e| e.as_object_mut()) {
                entry.insert("paused".into(), p.into());
            }
        }
        outln!("{}", serde_json::to_string_pretty(&all)?);
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
    for ((q, c), &p) in rows.iter().zip(&paused) {
        let line = format!(
            "{:<width$}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}",
            q.as_str(),
            c.pending,
            c.scheduled,
            c.running,
            c.failed,
            c.done
        );
        if p {
            outln!("{line}  paused");
        } else {
            outln!("{line}");
        }
    }
    if rows.is_empty() {
        outln!("(no queues yet)");
    }
    Ok(Exit::Ok)
}

/// Queue name → counts, as JSON.
pub(super) fn by_queue_value(rows: &[(QueueName, StateCounts)]) -> serde_json::Value {
    rows.iter()
        .map(|(q, c)| (q.to_string(), serde_json::json!(c)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}
