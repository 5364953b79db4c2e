//! `runtime check FILE.wasm`: does a file implement the handler world, and
//! what does it import?

use std::path::PathBuf;

use anyhow::Context;
use runtime::sandbox::Sandbox;

use super::{Cli, CliResult, Exit, QueueArg};

/// Check that a module implements the handler world and list its imports.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The module (a wasm32-wasip2 component).
    file: PathBuf,
    /// Check it against this queue's limits (its `[queues.<name>]` section
    /// over `[defaults]`). Default: `[defaults]`.
    #[arg(long, value_name = "QUEUE")]
    queue: Option<QueueArg>,
}

pub fn run(cli: &Cli, args: &Args) -> CliResult {
    let config = cli.config()?;
    let queue = args.queue.as_ref().map(|q| cli.queue(q)).transpose()?;
    let queue = queue.as_ref();
    let limits = match &queue {
        Some(queue) => config.queue(queue).limits,
        None => config.default_queue().limits,
    };
    let sandbox = Sandbox::new(&config.sandbox()).context("starting the sandbox")?;
    let report = sandbox.inspect(&args.file)?;
    let fits = sandbox.load(&args.file, limits);
    outln!("{}", args.file.display());
    outln!("imports:");
    for name in &report.imports {
        outln!("  {name}");
    }
    outln!("exports:");
    for name in &report.exports {
        outln!("  {name}");
    }
    let shape = &report.shape;
    outln!(
        "needs: core instances {}, memories {}, tables {} (nested components counted as often as they are instantiated)",
        shape.core_instances,
        shape.memories,
        shape.tables
    );
    match (fits, &queue) {
        (Ok(_), _) => {
            outln!("ok: implements runtime:job/handler@0.1.0");
            Ok(Exit::Ok)
        }
        (Err(e), Some(queue)) => Err(e.for_queue(queue.as_str()).into()),
        (Err(e), None) => Err(e.into()),
    }
}
