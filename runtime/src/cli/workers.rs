//! `runtime workers`: the live workers, from their heartbeats.

use runtime::queue::{Clock, SystemClock};

use super::{Cli, CliResult, Exit};

/// List the live workers: host, pid, queues, jobs in flight, since when
/// (needs --backend). A worker that stops beating drops out after three
/// missed heartbeats (15 s at the default `--heartbeat 5s`).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(cli: &Cli, args: &Args) -> CliResult {
    let config = cli.config()?;
    let backend = cli.require_backend(&config, "runtime workers").await?;
    let mut workers = backend.workers.workers().await?;
    workers.sort_by(|a, b| (&a.host, a.pid).cmp(&(&b.host, b.pid)));
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&workers)?);
        return Ok(Exit::Ok);
    }
    let now = SystemClock.now();
    let ago = |t: u64| runtime::time::format_age(t, now);
    let host_width = workers
        .iter()
        .map(|w| w.host.len())
        .max()
        .unwrap_or(0)
        .max(4);
    outln!(
        "{:<host_width$}  {:>8}  {:>9}  {:>12}  {:>10}  QUEUES",
        "HOST",
        "PID",
        "IN FLIGHT",
        "UP",
        "LAST BEAT"
    );
    for w in &workers {
        outln!(
            "{:<host_width$}  {:>8}  {:>9}  {:>12}  {:>10}  {}",
            w.host,
            w.pid,
            format!("{}/{}", w.in_flight, w.concurrency),
            ago(w.started_at),
            format!("{} ago", ago(w.beat_at)),
            w.queues.join(",")
        );
    }
    if workers.is_empty() {
        outln!("(no live workers)");
    }
    Ok(Exit::Ok)
}
