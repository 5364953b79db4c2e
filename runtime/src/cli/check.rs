//! `runtime check FILE.wasm`: does a file implement the handler world, and
//! what does it import?

use std::path::PathBuf;

use anyhow::Context;
use runtime::sandbox::{Limits, Sandbox};

use super::{Cli, CliResult, Exit};

/// Check that a module implements the handler world and list its imports.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The module (a wasm32-wasip2 component).
    file: PathBuf,
}

pub fn run(cli: &Cli, args: &Args) -> CliResult {
    let config = cli.config()?;
    let sandbox = Sandbox::new(&config.sandbox()).context("starting the sandbox")?;
    let report = sandbox.inspect(&args.file)?;
    let fits = sandbox.load(&args.file, Limits::default());
    outln!("{}", args.file.display());
    outln!("imports:");
    for name in &report.imports {
        outln!("  {name}");
    }
    outln!("exports:");
    for name in &report.exports {
        outln!("  {name}");
    }
    match fits {
        Ok(_) => {
            outln!("ok: implements runtime:job/handler@0.1.0");
            Ok(Exit::Ok)
        }
        Err(e) => Err(e.into()),
    }
}
