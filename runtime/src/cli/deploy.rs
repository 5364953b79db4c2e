//! `runtime deploy QUEUE FILE`: publish a handler module through the queue
//! server, so every worker serving the queue, on every machine, loads it
//! within a second; `--withdraw` goes back to the workers' module files.

use std::path::PathBuf;

use anyhow::Context;
use runtime::sandbox::Sandbox;

use super::{Cli, CliResult, Exit, QueueArg};

/// Publish a handler module to every worker of a queue (needs --backend).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The queue.
    queue: QueueArg,
    /// The module (a wasm32-wasip2 component). It is checked here first:
    /// a module that does not load is never published.
    #[arg(required_unless_present = "withdraw", conflicts_with = "withdraw")]
    file: Option<PathBuf>,
    /// Withdraw the published module: workers go back to the queue's
    /// module file.
    #[arg(long)]
    withdraw: bool,
}

pub async fn run(cli: &Cli, args: &Args) -> CliResult {
    let queue = &cli.queue(&args.queue)?;
    let config = cli.config()?;
    let backend = cli.require_backend(&config, "runtime deploy").await?;
    let Some(file) = &args.file else {
        if backend.modules.withdraw_module(queue).await? {
            outln!("withdrew the published module of {queue}: workers go back to its module file");
        } else {
            outln!("{queue} had no published module");
        }
        return Ok(Exit::Ok);
    };
    let sandbox = Sandbox::new(&config.sandbox()).context("starting the sandbox")?;
    // Read under the size cap: an oversized file is refused unread.
    let bytes = sandbox.read_module(file)?;
    sandbox
        .load_bytes(file, &bytes, config.queue(queue).limits)
        .map_err(|e| e.for_queue(queue.as_str()))?;
    let quota = config.tenant(&queue.tenant()).module_storage_bytes;
    let version = runtime::tenant::publish(&backend, queue, &bytes, quota).await?;
    outln!(
        "deployed {} to {queue}: version {}; workers serving {queue} load it within a second",
        file.display(),
        version.get(..12).unwrap_or(&version)
    );
    Ok(Exit::Ok)
}
