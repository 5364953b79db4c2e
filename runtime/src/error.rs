//! Errors callers match on. The binary adds context (queue, job id, file)
//! with `anyhow`; the library says precisely what went wrong.

use std::path::PathBuf;

use crate::job::{JobId, MAX_QUEUE_NAME_LEN};

/// Bad input from a user or a guest: rejected before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// A queue name outside the allowed alphabet or length.
    #[error(
        "invalid queue name {0:?}: use 1 to {MAX_QUEUE_NAME_LEN} characters of a-z, 0-9, '-' and '_', starting with a letter or digit"
    )]
    QueueName(String),
    /// A job id that is not `queue:number`.
    #[error("invalid job id {0:?}: a job id looks like `queue:number`, for example `hello:17`")]
    JobId(String),
    /// A state name that is not one of the four.
    #[error("invalid state {0:?}: use pending, scheduled, running or failed")]
    JobState(String),
    /// A payload that is not valid JSON.
    #[error("payload is not valid JSON: {0}")]
    PayloadJson(String),
    /// A payload over the size limit.
    #[error(
        "payload is {size} bytes, over the limit of {limit} bytes; put large data elsewhere and pass its location"
    )]
    PayloadTooLarge {
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A failure kind that is not one of [`crate::job::FailureKind::ALL`].
    #[error("invalid failure kind {0:?}")]
    FailureKind(String),
    /// `max_attempts` of zero.
    #[error("max attempts must be at least 1")]
    ZeroAttempts,
}

/// A queue backend could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The input was invalid.
    #[error(transparent)]
    Input(#[from] InputError),
    /// No job has this id (it may be done and removed).
    #[error("no job {0} (done jobs are removed; check the id)")]
    NoSuchJob(JobId),
    /// The operation does not apply to the job in its current state.
    #[error("job {id} is {state}; {action} applies only to {expected} jobs")]
    WrongState {
        /// The job.
        id: JobId,
        /// Its state now.
        state: crate::job::JobState,
        /// What was asked.
        action: &'static str,
        /// Where it applies.
        expected: &'static str,
    },
    /// The backend itself failed (connection lost, server error).
    #[error("queue backend {backend}: {message}")]
    Backend {
        /// Which backend, e.g. its URL without credentials.
        backend: String,
        /// What happened.
        message: String,
    },
}

/// A handler module could not be found, read, compiled or linked.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// No module for the queue where the naming rule or config points.
    #[error(
        "no handler for queue {queue}: looked for {} (build crate `{queue}-job` for wasm32-wasip2 and copy its {file} there, point --handlers at its directory, or map the queue to a module in config)",
        .path.display()
    )]
    NotFound {
        /// The queue.
        queue: String,
        /// The file name the naming rule gives.
        file: String,
        /// Where it looked.
        path: PathBuf,
    },
    /// The file exists but could not be read.
    #[error("cannot read handler module {}: {message}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The bytes are not a WebAssembly component this engine can compile.
    #[error("{} is not a valid WebAssembly component: {message}", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The compiler's reason.
        message: String,
    },
    /// Over a loading limit: refused before it was compiled, or its
    /// compile took more time or memory than allowed.
    #[error("{} {refusal}", .path.display())]
    Refused {
        /// The file.
        path: PathBuf,
        /// The limit, and what the module needs.
        refusal: crate::sandbox::Refusal,
    },
    /// The host could not compile it: the compiler process could not be
    /// started, or was killed from outside. Trying again may work.
    #[error("cannot compile {}: {message}", .path.display())]
    Compiler {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A valid component that does not fit the handler world.
    #[error("{} does not implement the handler world runtime:job/handler@0.1.0: {message}", .path.display())]
    WrongShape {
        /// The file.
        path: PathBuf,
        /// What does not fit.
        message: String,
    },
}
