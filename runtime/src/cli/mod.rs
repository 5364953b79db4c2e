//! The subcommands, one file each, thin over the library.

mod check;
mod dispatch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use runtime::config::{Config, DEFAULT_HANDLERS_DIR};

/// A WebAssembly-sandboxed job executor.
#[derive(Debug, Parser)]
#[command(name = "runtime", version, about, long_about = None)]
pub struct Cli {
    /// Directory of handler modules: queue `my-queue` runs `my_queue_job.wasm`
    /// from here. Default: the config's `handlers`, else ./handlers.
    #[arg(long, global = true, env = "RUNTIME_HANDLERS", value_name = "DIR")]
    handlers: Option<PathBuf>,
    /// Config file (TOML). Default: ./runtime.toml if it exists.
    #[arg(long, global = true, env = "RUNTIME_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where compiled modules are cached. Default: the config's `cache_dir`,
    /// else $XDG_CACHE_HOME/runtime or ~/.cache/runtime.
    #[arg(long, global = true, env = "RUNTIME_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Dispatch(dispatch::Args),
    Check(check::Args),
}

/// Exit statuses with fixed meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// The job failed.
    JobFailed = 1,
    /// Usage, config or module error: nothing ran.
    Usage = 2,
}

/// An error that ends the command with [`Exit::Usage`].
pub type CliResult = Result<Exit, anyhow::Error>;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Usage as u8);
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Dispatch(args) => dispatch::run(&cli, args).await,
            Command::Check(args) => check::run(&cli, args),
        }
    });
    match result {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(Exit::Usage as u8)
        }
    }
}

impl Cli {
    /// The config: `--config`, else ./runtime.toml if present, else defaults;
    /// flags and environment override what it says.
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None if std::path::Path::new("runtime.toml").is_file() => {
                Config::load("runtime.toml".as_ref())?
            }
            None => Config::default(),
        };
        if let Some(dir) = &self.handlers {
            config.handlers = Some(dir.clone());
        }
        if let Some(dir) = &self.cache_dir {
            config.cache_dir = Some(dir.clone());
        }
        if config.cache_dir.is_none() {
            config.cache_dir = default_cache_dir();
        }
        Ok(config)
    }

    fn handlers_dir(config: &Config) -> PathBuf {
        config
            .handlers
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_HANDLERS_DIR))
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("runtime"))
}
