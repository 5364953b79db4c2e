//! The subcommands, one file each, thin over the library.

mod check;
pub mod compile;
mod deploy;
mod dispatch;
mod jobs;
mod metrics_http;
mod queues;
mod worker;
mod workers;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use runtime::QueueBackend;
use runtime::config::{Config, DEFAULT_HANDLERS_DIR};
use runtime::queue::SystemClock;
use runtime::queue::redis::{DEFAULT_PREFIX, RedisBackend};

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
    /// The queue server: redis://host:port, rediss://host:port (TLS) or
    /// redis+unix:///path/to.sock; a cluster node's URL finds the cluster.
    /// Default: the config's `backend`, else the embedded in-memory queue
    /// (jobs run in-process, in `dispatch`).
    #[arg(long, global = true, env = "RUNTIME_BACKEND", value_name = "URL")]
    backend: Option<String>,
    /// Prefix of every Redis key, so several systems can share one Redis.
    /// Default: the config's `prefix`, else `runtime:`.
    #[arg(long, global = true, env = "RUNTIME_PREFIX", value_name = "PREFIX")]
    prefix: Option<String>,
    /// Log lines as `human` text or `json` objects (one per line, on
    /// stderr); `RUNTIME_LOG` sets the level, e.g. `RUNTIME_LOG=debug`.
    #[arg(
        long,
        global = true,
        env = "RUNTIME_LOG_FORMAT",
        value_enum,
        default_value = "human"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per event, fields at the top level.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    Dispatch(dispatch::Args),
    Worker(worker::Args),
    Workers(workers::Args),
    Deploy(deploy::Args),
    Queues(queues::Args),
    Jobs(jobs::Args),
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
    init_logging(cli.log_format);
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
            Command::Worker(args) => worker::run(&cli, args).await,
            Command::Workers(args) => workers::run(&cli, args).await,
            Command::Deploy(args) => deploy::run(&cli, args).await,
            Command::Queues(args) => queues::run(&cli, args).await,
            Command::Jobs(args) => jobs::run(&cli, args).await,
            Command::Check(args) => check::run(&cli, args),
        }
    });
    match result {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(e) => {
            fatal(cli.log_format, &e);
            ExitCode::from(Exit::Usage as u8)
        }
    }
}

/// Reports the error that ends the command: as a log record when logs are
/// JSON (so a log pipeline gets one more record, not a stray text line),
/// else as plain text. Never filtered away.
fn fatal(format: LogFormat, e: &anyhow::Error) {
    match format {
        LogFormat::Json if tracing::enabled!(target: "runtime", tracing::Level::ERROR) => {
            tracing::error!(target: "runtime", error = %format!("{e:#}"), "command failed");
        }
        _ => eprintln!("error: {e:#}"),
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
        // Every module this binary loads is compiled by a child process of
        // this very executable, under the compile time and memory limits.
        config.sandbox.compiler = Some(PathBuf::from("/proc/self/exe"));
        Ok(config)
    }

    /// The configured queue server, connected; `None` for the in-memory
    /// default.
    async fn backend(&self, config: &Config) -> anyhow::Result<Option<Arc<dyn QueueBackend>>> {
        let Some(url) = self.backend.as_ref().or(config.backend.as_ref()) else {
            return Ok(None);
        };
        let prefix = self
            .prefix
            .as_deref()
            .or(config.prefix.as_deref())
            .unwrap_or(DEFAULT_PREFIX);
        let backend = RedisBackend::connect(url, prefix, Arc::new(SystemClock)).await?;
        Ok(Some(Arc::new(backend)))
    }

    /// The queue server, for commands that make no sense without one.
    async fn require_backend(
        &self,
        config: &Config,
        what: &str,
    ) -> anyhow::Result<Arc<dyn QueueBackend>> {
        self.backend(config).await?.ok_or_else(|| {
            anyhow::anyhow!(
                "{what} needs a queue server: pass --backend redis://host:port, set RUNTIME_BACKEND, or set `backend` in the config (the in-memory default lives only inside one `runtime dispatch`)"
            )
        })
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

/// Logs to stderr; `RUNTIME_LOG` filters (default `info`), e.g.
/// `RUNTIME_LOG=warn,guest=info`: guests' own lines have target `guest`.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUNTIME_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}
