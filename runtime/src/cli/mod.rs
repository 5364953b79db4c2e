//! The subcommands, one file each, thin over the library.

/// `println!` that never panics: see [`out`].
macro_rules! outln {
    () => {
        $crate::cli::out::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::line(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics: see [`out`].
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::out::err_line(format_args!($($arg)*))
    };
}

mod bulk;
mod check;
pub mod compile;
mod deploy;
mod dispatch;
mod jobs;
mod metrics_http;
mod new;
mod out;
mod queues;
mod serve;
mod tenants;
mod worker;
mod workers;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use std::fmt;

use clap::{Parser, Subcommand};
use runtime::config::{Config, DEFAULT_HANDLERS_DIR};
use runtime::error::InputError;
use runtime::job::{JobId, TenantName};
use runtime::queue::Backend;
use runtime::queue::SystemClock;
use runtime::queue::redis::{DEFAULT_PREFIX, RedisBackend};
use runtime::text;
use runtime::{LoadError, QueueName};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

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
    /// (jobs run in-process, in `dispatch`). A password goes in the URL
    /// (`redis://:PASSWORD@host:port`, `redis+unix:///path?pass=PASSWORD`);
    /// it is never printed, `--help` included.
    #[arg(
        long,
        global = true,
        env = "RUNTIME_BACKEND",
        hide_env_values = true,
        value_name = "URL"
    )]
    backend: Option<String>,
    /// Prefix of every Redis key, so several systems can share one Redis.
    /// Default: the config's `prefix`, else `runtime:`.
    #[arg(long, global = true, env = "RUNTIME_PREFIX", value_name = "PREFIX")]
    prefix: Option<String>,
    /// Act within one tenant: queue names and job ids are read in it
    /// (`resize` is `TENANT/resize`), a name of another tenant is refused,
    /// and listings show only its queues. Default: every tenant, names
    /// written in full (`acme/resize`; bare in the default tenant).
    #[arg(long, global = true, env = "RUNTIME_TENANT", value_name = "TENANT")]
    tenant: Option<TenantName>,
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
    Tenants(tenants::Args),
    Serve(serve::Args),
    Check(check::Args),
    New(new::Args),
}

/// Exit statuses with fixed meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// The job failed.
    JobFailed = 1,
    /// Usage, config or module error: nothing ran. Also: the output could
    /// not be written.
    Usage = 2,
    /// Stopped by Ctrl-C (or SIGTERM) part way, as shells report a
    /// process ended by SIGINT (`dispatch --file`).
    Interrupted = 130,
}

/// An error that ends the command with [`Exit::Usage`].
pub type CliResult = Result<Exit, anyhow::Error>;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A worker logs what it does; a one-shot command reports on stdout and
    // logs only warnings (a compile, for one, is no news there).
    let level = match cli.command {
        Command::Worker(_) | Command::Serve(_) => LevelFilter::INFO,
        _ => LevelFilter::WARN,
    };
    init_logging(cli.log_format, level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
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
            Command::Tenants(args) => tenants::run(&cli, args).await,
            Command::Serve(args) => serve::run(&cli, args).await,
            Command::Check(args) => check::run(&cli, args),
            Command::New(args) => new::run(args),
        }
    });
    let exit = match result {
        Ok(exit) => exit,
        Err(e) => {
            fatal(cli.log_format, &e);
            Exit::Usage
        }
    };
    // A reader that went away (`| head`) is no error; a failed write
    // (a full disk) is, or a cut-off file would pass for a whole one.
    match out::finish() {
        Some(e) => {
            fatal(
                cli.log_format,
                &anyhow::Error::new(e).context("cannot write the output"),
            );
            let exit = if exit == Exit::Ok { Exit::Usage } else { exit };
            ExitCode::from(exit as u8)
        }
        None => ExitCode::from(exit as u8),
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
        _ => errln!("error: {e:#}"),
    }
}

/// A queue as written on the command line; [`Cli::queue`] reads it in
/// the command's tenant.
#[derive(Debug, Clone)]
pub struct QueueArg {
    written: String,
}

impl std::str::FromStr for QueueArg {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QueueName::parse(s)?;
        Ok(QueueArg {
            written: s.to_string(),
        })
    }
}

/// A job id as written on the command line; [`Cli::job`] reads it in the
/// command's tenant.
#[derive(Debug, Clone)]
pub struct JobArg {
    written: String,
}

impl std::str::FromStr for JobArg {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<JobId>()?;
        Ok(JobArg {
            written: s.to_string(),
        })
    }
}

impl Cli {
    /// `arg` read in the command's tenant: as written without `--tenant`;
    /// with it, a bare name is the tenant's queue, a name in full must
    /// be of that tenant, and any other is refused.
    pub fn queue(&self, arg: &QueueArg) -> Result<QueueName, InputError> {
        QueueName::read_in(self.tenant.as_ref(), &arg.written)
    }

    /// Every queue of `args`, read as [`Cli::queue`] does.
    pub fn queues(&self, args: &[QueueArg]) -> Result<Vec<QueueName>, InputError> {
        args.iter().map(|a| self.queue(a)).collect()
    }

    /// `arg` read in the command's tenant, as [`Cli::queue`] reads its
    /// queue.
    pub fn job(&self, arg: &JobArg) -> Result<JobId, InputError> {
        JobId::read_in(self.tenant.as_ref(), &arg.written)
    }

    /// The tenant the command acts within (`--tenant`), if any.
    pub fn tenant(&self) -> Option<&TenantName> {
        self.tenant.as_ref()
    }

    /// Whether `queue` is one the command may list: with `--tenant`, only
    /// that tenant's.
    pub fn lists(&self, queue: &QueueName) -> bool {
        self.tenant.as_ref().is_none_or(|t| queue.is_in(t))
    }

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
    async fn backend(&self, config: &Config) -> anyhow::Result<Option<Backend>> {
        let Some(url) = self.backend.as_ref().or(config.backend.as_ref()) else {
            return Ok(None);
        };
        let prefix = self
            .prefix
            .as_deref()
            .or(config.prefix.as_deref())
            .unwrap_or(DEFAULT_PREFIX);
        let backend = RedisBackend::connect(url, prefix, Arc::new(SystemClock)).await?;
        Ok(Some(Backend::new(backend).with_quotas(config.quotas())))
    }

    /// The queue server, for commands that make no sense without one.
    async fn require_backend(&self, config: &Config, what: &str) -> anyhow::Result<Backend> {
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

/// Says what is wrong when something other than a module file sits where
/// the module of `queue` should be, or the handlers directory is not one:
/// the registry only knows that it found no module there.
fn check_module_path(config: &Config, queue: &QueueName) -> Result<(), LoadError> {
    let path = match config.queue(queue).module {
        Some(path) => path,
        None => {
            let dir = Cli::handlers_dir(config);
            match std::fs::metadata(&dir) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(LoadError::NoHandlersDir {
                        queue: queue.clone(),
                        path: dir,
                    });
                }
                Ok(meta) if !meta.is_dir() => {
                    return Err(LoadError::HandlersNotADir {
                        queue: queue.clone(),
                        path: dir,
                        kind: kind_of(&meta),
                    });
                }
                _ => queue.handler_path(&dir),
            }
        }
    };
    match std::fs::metadata(&path) {
        Ok(meta) if !meta.is_file() => Err(LoadError::NotAFile {
            queue: queue.to_string(),
            path,
            kind: kind_of(&meta),
        }),
        // Missing or unreadable: loading says so.
        _ => Ok(()),
    }
}

/// What a file system entry is, in words.
fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a file"
    } else if t.is_fifo() {
        "a named pipe"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
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
///
/// Guest text reaches the log as its own log lines and as jobs' errors. In
/// JSON every value is a JSON string, escaped by serde (no guest text can
/// end the line or add a key), and [`JsonSafeStderr`] escapes what serde
/// leaves raw; in the human format every field goes through
/// [`EscapedFields`].
fn init_logging(format: LogFormat, level: LevelFilter) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUNTIME_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::default().add_directive(level.into()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder
            .fmt_fields(EscapedFields)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .with_writer(|| JsonSafeStderr)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// The human log's fields, each value escaped with [`text::escape`]: no
/// value can start a new log line, move the cursor or recolour the terminal.
/// The message comes first, bare; then `name=value`, with text values
/// (`&str` fields, such as a job's `error`) in quotes, so words inside one
/// cannot pass for another field.
struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            writer,
            result: Ok(()),
            first: true,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'writer> {
    writer: Writer<'writer>,
    result: fmt::Result,
    first: bool,
}

impl EscapingVisitor<'_> {
    fn write(&mut self, name: &str, value: &str, quoted: bool) {
        if self.result.is_err() {
            return;
        }
        let space = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        let value = text::escape(value);
        self.result = if name == "message" {
            write!(self.writer, "{space}{value}")
        } else if quoted {
            let value = value.replace('"', "\\\"");
            write!(self.writer, "{space}{name}=\"{value}\"")
        } else {
            write!(self.writer, "{space}{name}={value}")
        };
    }
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field.name(), value, true);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field.name(), &format!("{value:?}"), false);
    }
}

/// Stderr for the JSON log, each record passed through [`text::json_safe`]:
/// C1 controls and bidi or invisible characters in a value become `\u`
/// escapes, the same JSON, safe to tail in a terminal.
struct JsonSafeStderr;

impl std::io::Write for JsonSafeStderr {
    /// One call per record (the formatter writes each whole), so a
    /// character is never split between calls.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut stderr = std::io::stderr().lock();
        match std::str::from_utf8(buf) {
            Ok(json) => stderr.write_all(text::json_safe(json).as_bytes())?,
            Err(_) => stderr.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
