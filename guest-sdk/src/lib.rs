//! Write job handlers for `runtime`, the WebAssembly-sandboxed job executor.
//!
//! A handler is a plain function from a [`Job`] with a typed payload to a
//! [`Result`], exported with [`export_handler!`] and compiled to
//! `wasm32-wasip2`:
//!
//! ```
//! use guest_sdk::{Job, info};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Greeting {
//!     name: String,
//! }
//!
//! fn handle(job: Job<Greeting>) -> guest_sdk::Result {
//!     info!("hello, {}!", job.payload.name);
//!     Ok(())
//! }
//!
//! guest_sdk::export_handler!(handle);
//! ```
//!
//! # What the return value means
//!
//! | handler returns | the job |
//! | --- | --- |
//! | `Ok(())` | is done: removed from the queue and counted |
//! | `Err(e)` for any error `e` (so `?` works) | is retried with exponential backoff while attempts remain, then fails with `e` as its error |
//! | `Err(`[`retry_after`]`(..))` | is retried after the given delay instead of the backoff |
//! | `Err(`[`fail`]`(..))` | fails now, whatever attempts remain |
//! | a panic | fails this attempt with `panic: <message>` and is retried like an error |
//!
//! A payload that does not deserialize into the handler's payload type fails
//! the job at once (`invalid payload: ...`): retrying would not fix it.
//!
//! # Delivery is at least once
//!
//! A job can run more than once: after an error, and also when the worker
//! running it dies before it could record the result. Write handlers so that
//! running twice does no harm (idempotent), or dispatch with a
//! [`DispatchOptions::unique_key`].
//!
//! # The sandbox
//!
//! Every attempt runs in a fresh WebAssembly instance: globals, statics and
//! the heap start anew each time. By default a handler has no files, no
//! environment variables and no network; `println!` and `eprintln!` go to
//! the job's log. Time, memory, output and dispatches are limited per queue;
//! exceeding a limit ends the attempt with a reason naming the limit.
//!
//! What the operator grants a queue in `runtime.toml` opens doors one by
//! one: settings ([`setting`]), read-only directories (`std::fs` under the
//! paths `[queues.<queue>.files]` maps), and HTTP to the origins it lists
//! ([`http`]).
//!
//! # Settings and secrets
//!
//! A queue's `[queues.<queue>.env]` table reaches its handler as
//! environment variables: [`setting`] reads one, and fails the job with
//! instructions when it is missing; `std::env::var` works as well. Values
//! may be secrets (API keys the operator takes from the worker's own
//! environment with `{ from_env = "NAME" }`): never log them, put them in an
//! error, or dispatch them in a payload. Job logs, errors and payloads are
//! stored with the job and shown by `runtime jobs show`.

// Lets the generated bindings name this crate by the path users see.
extern crate self as guest_sdk;

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

#[doc(hidden)]
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "handler",
        pub_export_macro: true,
        export_macro_name: "__export_handler_world",
        default_bindings_module: "::guest_sdk::__bindings",
        runtime_path: "::guest_sdk::__bindings::wit_bindgen_rt::rt",
    });
    #[doc(hidden)]
    pub use wit_bindgen as wit_bindgen_rt;
}

/// `wasi:http/outgoing-handler` and the interfaces it uses, from the WASI
/// 0.2.12 WIT in `wit/deps/` (copied unchanged from the `wasmtime-wasi-http`
/// crate the host links, so the versions match what it serves). A world
/// of its own, so that a handler imports `wasi:http` only when it calls
/// [`http`]: the component keeps only the imports its code uses.
#[doc(hidden)]
#[allow(missing_docs, missing_debug_implementations, unsafe_code, clippy::all)]
pub mod __http_bindings {
    wit_bindgen::generate!({
        path: "wit",
        inline: "
            package runtime:sdk-http;
            world client {
                import wasi:http/outgoing-handler@0.2.12;
            }
        ",
        world: "runtime:sdk-http/client",
        generate_all,
        runtime_path: "::guest_sdk::__bindings::wit_bindgen_rt::rt",
    });
}

pub mod http;

use __bindings::runtime::job::{dispatch as wit_dispatch, log as wit_log, types as wit};

/// The result a handler returns: `Ok(())` means done; see [`Error`].
pub type Result<T = (), E = Error> = std::result::Result<T, E>;

/// One attempt of one job, with its payload deserialized into `P`.
///
/// Use `Job<serde_json::Value>` (the default) to take any JSON.
///
/// ```
/// use guest_sdk::Job;
///
/// fn handle(job: Job) -> guest_sdk::Result {
///     if job.is_last_attempt() {
///         guest_sdk::warn!("last try for job {}", job.id);
///     }
///     let _name = job.payload["name"].as_str();
///     Ok(())
/// }
/// # guest_sdk::export_handler!(handle);
/// ```
#[derive(Debug, Clone)]
pub struct Job<P = serde_json::Value> {
    /// The job's id, stable across attempts.
    pub id: String,
    /// The queue the job was dispatched to, by its own name (without its
    /// tenant): the name [`dispatch`] takes for it.
    pub queue: String,
    /// Which attempt this is, starting at 1.
    pub attempt: u32,
    /// How many attempts the job gets in all, 1 to 100.
    pub max_attempts: u32,
    /// The payload, deserialized from the dispatched JSON.
    pub payload: P,
}

impl<P> Job<P> {
    /// Whether a failure now would be final (no attempts left).
    ///
    /// ```
    /// # use guest_sdk::Job;
    /// let job = Job { id: "1".into(), queue: "q".into(), attempt: 4, max_attempts: 4, payload: () };
    /// assert!(job.is_last_attempt());
    /// ```
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }
}

/// Why a handler did not finish its job, and whether to try again.
///
/// Any error type converts into it with `?` (meaning: retry with backoff);
/// [`fail`] and [`retry_after`] build the other kinds.
///
/// ```
/// fn handle(job: guest_sdk::Job) -> guest_sdk::Result {
///     let n: u64 = job.payload["count"].to_string().parse()?; // an error: retried
///     if n == 0 {
///         return Err(guest_sdk::fail("count must be positive")); // final
///     }
///     Ok(())
/// }
/// # guest_sdk::export_handler!(handle);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
    kind: ErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    Retry(Option<Duration>),
    Fail,
}

impl Error {
    /// An error that retries with the queue's backoff while attempts remain.
    ///
    /// ```
    /// let e = guest_sdk::Error::retry("upstream busy");
    /// assert_eq!(e.to_string(), "upstream busy");
    /// ```
    pub fn retry(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            kind: ErrorKind::Retry(None),
        }
    }

    /// The message recorded on the job.
    ///
    /// ```
    /// assert_eq!(guest_sdk::fail("bad input").message(), "bad input");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(error: E) -> Self {
        Error::retry(error.to_string())
    }
}

/// An error that fails the job now, with no further attempts.
///
/// ```
/// fn handle(job: guest_sdk::Job) -> guest_sdk::Result {
///     Err(guest_sdk::fail(format!("unknown action in job {}", job.id)))
/// }
/// # guest_sdk::export_handler!(handle);
/// ```
pub fn fail(message: impl Into<String>) -> Error {
    Error {
        message: message.into(),
        kind: ErrorKind::Fail,
    }
}

/// An error that retries after `delay` (instead of the queue's backoff) while
/// attempts remain. A delay of more than a year is refused: the job fails,
/// saying so.
///
/// ```
/// use std::time::Duration;
/// fn handle(_job: guest_sdk::Job) -> guest_sdk::Result {
///     Err(guest_sdk::retry_after("rate limited", Duration::from_secs(30)))
/// }
/// # guest_sdk::export_handler!(handle);
/// ```
pub fn retry_after(message: impl Into<String>, delay: Duration) -> Error {
    Error {
        message: message.into(),
        kind: ErrorKind::Retry(Some(delay)),
    }
}

/// The queue of the job this instance runs, set by [`__run`]: messages
/// about settings and grants name the queue's config section.
static QUEUE: OnceLock<String> = OnceLock::new();

/// The running job's queue, or `<queue>` outside a job (native tests).
fn queue_name() -> &'static str {
    QUEUE.get().map_or("<queue>", String::as_str)
}

/// The setting `name` the operator gave this queue, from its
/// `[queues.<queue>.env]` table in `runtime.toml`.
///
/// A missing setting fails the job (retrying cannot help until the config
/// changes), with a message saying where it goes:
/// `setting MAILER_URL is missing: add MAILER_URL = "..." under
/// [queues.send-email.env] in runtime.toml`. The value may be a secret:
/// never log it.
///
/// `std::env::var` reads the same variables, for code that wants its own
/// handling.
///
/// ```no_run
/// fn handle(_job: guest_sdk::Job) -> guest_sdk::Result {
///     let url = guest_sdk::setting("REPORT_URL")?;
///     guest_sdk::info!("reporting to {url}");
///     Ok(())
/// }
/// # guest_sdk::export_handler!(handle);
/// ```
pub fn setting(name: &str) -> Result<String> {
    match std::env::var(name) {
        Ok(value) => Ok(value),
        Err(std::env::VarError::NotPresent) => Err(fail(format!(
            "setting {name} is missing: add {name} = \"...\" (or, for a secret, \
             {name} = {{ from_env = \"VARIABLE\" }}) under [queues.{queue}.env] in runtime.toml \
             ([queues.\"TENANT/{queue}\".env] for a tenant's queue)",
            queue = queue_name()
        ))),
        Err(std::env::VarError::NotUnicode(_)) => Err(fail(format!(
            "setting {name} is not valid UTF-8: fix it under [queues.{queue}.env] in runtime.toml \
             ([queues.\"TENANT/{queue}\".env] for a tenant's queue)",
            queue = queue_name()
        ))),
    }
}

/// Options for [`dispatch_with`]. Unset fields take the defaults: priority
/// 1, no delay, 4 attempts, no unique key.
///
/// ```
/// use std::time::Duration;
/// let options = guest_sdk::DispatchOptions::new()
///     .priority(5)
///     .delay(Duration::from_secs(60))
///     .max_attempts(10)
///     .unique_key("invoice-42");
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DispatchOptions {
    priority: Option<i32>,
    delay: Option<Duration>,
    max_attempts: Option<u32>,
    unique_key: Option<String>,
}

impl DispatchOptions {
    /// The defaults.
    ///
    /// ```
    /// assert_eq!(guest_sdk::DispatchOptions::new(), Default::default());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Higher runs first; FIFO within one priority.
    ///
    /// ```
    /// let urgent = guest_sdk::DispatchOptions::new().priority(10);
    /// # let _ = urgent;
    /// ```
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Do not run before `delay` from now (at most a year).
    ///
    /// ```
    /// let later = guest_sdk::DispatchOptions::new().delay(std::time::Duration::from_secs(5));
    /// # let _ = later;
    /// ```
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// How many attempts the job gets in all, 1 to 100.
    ///
    /// ```
    /// let once = guest_sdk::DispatchOptions::new().max_attempts(1);
    /// # let _ = once;
    /// ```
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// While a job with this key is pending, scheduled or running in the
    /// target queue, dispatching again yields the existing job instead of a
    /// new one.
    ///
    /// Keys are scoped to the queue of the job dispatching: the host stores
    /// this one as `@<your queue>:<key>`, so it deduplicates only with
    /// follow-ups that handlers of your own queue dispatch, never with jobs
    /// an application dispatches (nor can it hold theirs back). A key is 1
    /// to 256 bytes without control characters, and may not start with `@`.
    ///
    /// ```
    /// let once_per_user = guest_sdk::DispatchOptions::new().unique_key("welcome:user-7");
    /// # let _ = once_per_user;
    /// ```
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }
}

/// Dispatch a follow-up job to `queue` with default options; returns its id.
///
/// The follow-up is enqueued at once. If this attempt then fails and is
/// retried, the retry dispatches again: give follow-ups a
/// [`DispatchOptions::unique_key`] when that matters (a follow-up whose key
/// is held returns the existing job and costs nothing).
///
/// # Limits
///
/// Every follow-up joins the *job tree* of the job dispatching it: the job
/// an application dispatched, and everything dispatched from it, however
/// deep. The queue's config bounds how deep a tree may grow
/// (`max_tree_depth`, default 32) and how many jobs it may ever hold, root
/// and done jobs included (`max_tree_jobs`, default 1000); retries do not
/// renew it. Past either, and for options past their limits (a delay over
/// a year, more than 100 attempts, a bad unique key), this returns an
/// error saying which, and nothing is dispatched: the attempt carries on,
/// and `?` turns the error into a retry. Only the per-attempt limit
/// (`max_dispatches`, default 100 calls) ends the attempt.
///
/// ```
/// fn handle(job: guest_sdk::Job) -> guest_sdk::Result {
///     let id = guest_sdk::dispatch("send-email", &serde_json::json!({ "to": job.payload["to"] }))?;
///     guest_sdk::info!("queued delivery {id}");
///     Ok(())
/// }
/// # guest_sdk::export_handler!(handle);
/// ```
pub fn dispatch<T: Serialize + ?Sized>(queue: &str, payload: &T) -> Result<String> {
    dispatch_with(queue, payload, DispatchOptions::default())
}

/// Dispatch a follow-up job with [`DispatchOptions`]; returns its id.
///
/// ```
/// use guest_sdk::DispatchOptions;
/// fn handle(_job: guest_sdk::Job) -> guest_sdk::Result {
///     guest_sdk::dispatch_with("report", &[1, 2, 3], DispatchOptions::new().priority(0))?;
///     Ok(())
/// }
/// # guest_sdk::export_handler!(handle);
/// ```
pub fn dispatch_with<T: Serialize + ?Sized>(
    queue: &str,
    payload: &T,
    options: DispatchOptions,
) -> Result<String> {
    let payload = serde_json::to_string(payload)?;
    let options = wit_dispatch::DispatchOptions {
        priority: options.priority,
        delay_ms: options.delay.map(duration_ms),
        max_attempts: options.max_attempts,
        unique_key: options.unique_key,
    };
    wit_dispatch::dispatch(queue, &payload, &options).map_err(Error::retry)
}

/// Severity of a line in the job's log; see [`log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected that the handler coped with.
    Warn,
    /// Something failed.
    Error,
}

/// Append one line to the job's log. The macros [`info!`], [`warn!`] and the
/// others format and call this.
///
/// ```no_run
/// guest_sdk::log(guest_sdk::Level::Info, "starting");
/// ```
pub fn log(level: Level, message: &str) {
    let level = match level {
        Level::Trace => wit_log::Level::Trace,
        Level::Debug => wit_log::Level::Debug,
        Level::Info => wit_log::Level::Info,
        Level::Warn => wit_log::Level::Warn,
        Level::Error => wit_log::Level::Error,
    };
    wit_log::log(level, message);
}

/// Log at trace level, `format!`-style.
///
/// ```no_run
/// guest_sdk::trace!("step {} of {}", 1, 3);
/// ```
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => { $crate::log($crate::Level::Trace, &::std::format!($($arg)*)) };
}

/// Log at debug level, `format!`-style.
///
/// ```no_run
/// guest_sdk::debug!("payload has {} bytes", 42);
/// ```
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log($crate::Level::Debug, &::std::format!($($arg)*)) };
}

/// Log at info level, `format!`-style.
///
/// ```no_run
/// guest_sdk::info!("hello, {}!", "world");
/// ```
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log($crate::Level::Info, &::std::format!($($arg)*)) };
}

/// Log at warn level, `format!`-style.
///
/// ```no_run
/// guest_sdk::warn!("retrying in {}s", 30);
/// ```
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log($crate::Level::Warn, &::std::format!($($arg)*)) };
}

/// Log at error level, `format!`-style.
///
/// ```no_run
/// guest_sdk::error!("upstream answered {}", 503);
/// ```
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log($crate::Level::Error, &::std::format!($($arg)*)) };
}

/// Export `handler` as this component's job handler.
///
/// `handler` is a function `fn(Job<P>) -> guest_sdk::Result` for any payload
/// type `P: serde::de::DeserializeOwned`. Use the macro once, in the crate
/// root of a `cdylib` crate built for `wasm32-wasip2`.
///
/// ```
/// fn handle(job: guest_sdk::Job<Vec<u32>>) -> guest_sdk::Result {
///     guest_sdk::info!("sum = {}", job.payload.iter().sum::<u32>());
///     Ok(())
/// }
/// guest_sdk::export_handler!(handle);
/// ```
#[macro_export]
macro_rules! export_handler {
    ($handler:path) => {
        const _: () = {
            struct __GuestSdkHandler;
            impl $crate::__bindings::Guest for __GuestSdkHandler {
                fn handle(
                    job: $crate::__bindings::runtime::job::types::Job,
                ) -> $crate::__bindings::runtime::job::types::Outcome {
                    $crate::__run(job, $handler)
                }
            }
            $crate::__bindings::__export_handler_world!(__GuestSdkHandler);
        };
    };
}

/// Runs one attempt: installs the panic reporter, decodes the payload, calls
/// the handler and maps its result to the WIT outcome. Called by
/// [`export_handler!`]; not part of the public API.
#[doc(hidden)]
pub fn __run<P, F>(job: wit::Job, handler: F) -> wit::Outcome
where
    P: DeserializeOwned,
    F: FnOnce(Job<P>) -> Result,
{
    std::panic::set_hook(Box::new(|info| {
        let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "Box<dyn Any>".to_string()
        };
        match info.location() {
            Some(at) => wit_log::log(
                wit_log::Level::Error,
                &format!(
                    "panicked at {}:{}:{}: {message}",
                    at.file(),
                    at.line(),
                    at.column()
                ),
            ),
            None => wit_log::log(wit_log::Level::Error, &format!("panicked: {message}")),
        }
        wit_log::report_panic(&message);
    }));
    // A fresh instance runs one attempt: this is the first and only set.
    let _ = QUEUE.set(job.queue.clone());
    let payload = match serde_json::from_str::<P>(&job.payload) {
        Ok(payload) => payload,
        Err(e) => return wit::Outcome::Fail(format!("invalid payload: {e}")),
    };
    let job = Job {
        id: job.id,
        queue: job.queue,
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        payload,
    };
    match handler(job) {
        Ok(()) => wit::Outcome::Done,
        Err(Error {
            message,
            kind: ErrorKind::Fail,
        }) => wit::Outcome::Fail(message),
        Err(Error {
            message,
            kind: ErrorKind::Retry(delay),
        }) => wit::Outcome::Retry(wit::RetryRequest {
            reason: message,
            delay_ms: delay.map(duration_ms),
        }),
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_reads_the_environment() {
        // Cargo sets it for the test process as it does at build time.
        assert_eq!(
            setting("CARGO_PKG_NAME").as_deref(),
            Ok(env!("CARGO_PKG_NAME"))
        );
    }

    #[test]
    fn a_missing_setting_fails_saying_where_it_goes() {
        let e = setting("GUEST_SDK_NO_SUCH_SETTING").expect_err("unset");
        assert_eq!(e.kind, ErrorKind::Fail);
        assert_eq!(
            e.message(),
            "setting GUEST_SDK_NO_SUCH_SETTING is missing: add GUEST_SDK_NO_SUCH_SETTING = \"...\" \
             (or, for a secret, GUEST_SDK_NO_SUCH_SETTING = { from_env = \"VARIABLE\" }) \
             under [queues.<queue>.env] in runtime.toml \
             ([queues.\"TENANT/<queue>\".env] for a tenant's queue)"
        );
    }
}
