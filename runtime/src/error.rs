//! Errors callers match on. The binary adds context (queue, job id, file)
//! with `anyhow`; the library says precisely what went wrong.

use std::path::PathBuf;

use std::time::Duration;

use crate::job::{JobId, MAX_QUEUE_NAME_LEN, QueueName, Span};

/// Bad input from a user or a guest: rejected before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// A queue name outside the allowed alphabet or length.
    #[error(
        "invalid queue name {0:?}: use 1 to {MAX_QUEUE_NAME_LEN} characters of a-z, 0-9, '-' and '_', starting with a letter or digit"
    )]
    QueueName(String),
    /// A tenant name outside the allowed alphabet or length.
    #[error(
        "invalid tenant name {0:?}: use 1 to {MAX_QUEUE_NAME_LEN} characters of a-z, 0-9, '-' and '_', starting with a letter or digit"
    )]
    TenantName(String),
    /// A queue named with a tenant where only the caller's own tenant's
    /// queues may be named.
    #[error(
        "queue {0:?} names a tenant: here queues are named within your own tenant, without one (`hello`, not `acme/hello`)"
    )]
    OtherTenant(String),
    /// A queue of another tenant named by a command scoped to one.
    #[error(
        "queue {name:?} is outside tenant {tenant} (--tenant): name its queues `hello` or `{tenant}/hello`"
    )]
    OutsideTenant {
        /// The name as written.
        name: String,
        /// The command's tenant.
        tenant: String,
    },
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
    /// `max_attempts` given as text that is not a whole number.
    #[error("max attempts {0:?} is not a whole number; give 1 to {limit}", limit = crate::job::MAX_ATTEMPTS)]
    AttemptsNotANumber(String),
    /// `max_attempts` over [`crate::job::MAX_ATTEMPTS`].
    #[error(
        "max attempts {attempts} is over the limit of {limit}; give at most {limit} (a job that must keep trying longer can dispatch a fresh job)"
    )]
    TooManyAttempts {
        /// What was asked.
        attempts: u32,
        /// The limit.
        limit: u32,
    },
    /// A delay over [`crate::job::MAX_DELAY`].
    #[error(
        "delay of {} is over the limit of {}; dispatch the job when it is nearer due (from a scheduler, or a job that waits in steps)",
        Span(*.delay),
        Span(*.limit)
    )]
    DelayTooLong {
        /// What was asked.
        delay: Duration,
        /// The limit.
        limit: Duration,
    },
    /// A run-at time further than [`crate::job::MAX_DELAY`] from now.
    #[error(
        "run-at time is {} from now, over the limit of {}; dispatch the job when it is nearer due (from a scheduler, or a job that waits in steps)",
        Span(*.ahead),
        Span(*.limit)
    )]
    RunAtTooFar {
        /// How far ahead it is.
        ahead: Duration,
        /// The limit.
        limit: Duration,
    },
    /// A handler asked to be retried after more than
    /// [`crate::job::MAX_DELAY`]; the job fails instead.
    #[error(
        "retry refused: the handler asked to run again in {}, over the limit of {}; it said: {reason}",
        Span(*.delay),
        Span(*.limit)
    )]
    RetryDelayTooLong {
        /// What was asked.
        delay: Duration,
        /// The limit.
        limit: Duration,
        /// The handler's reason for the retry.
        reason: String,
    },
    /// A unique key over [`crate::job::MAX_UNIQUE_KEY_BYTES`].
    #[error(
        "unique key is {size} bytes, over the limit of {limit} bytes; use a short identifier (a hash of a long value, say)"
    )]
    UniqueKeyTooLong {
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A unique key that is empty, holds a control character, or starts
    /// with the prefix reserved for handlers' keys.
    #[error("invalid unique key {key:?}: {problem}; choose another key")]
    UniqueKey {
        /// The key.
        key: String,
        /// What is wrong with it.
        problem: &'static str,
    },
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
    /// A follow-up that would be deeper in its job tree than the
    /// dispatching job's queue allows.
    #[error(
        "follow-up refused: it would be at depth {depth} of the job tree of {root}, and queue {queue} allows {limit} (max_tree_depth); nothing was dispatched"
    )]
    TreeTooDeep {
        /// The tree's root.
        root: JobId,
        /// The queue of the dispatching job.
        queue: QueueName,
        /// The follow-up's depth.
        depth: u32,
        /// The queue's limit.
        limit: u32,
    },
    /// A follow-up beyond the number of jobs its tree may hold.
    #[error(
        "follow-up refused: the job tree of {root} already holds {jobs} jobs, and queue {queue} allows {limit} (max_tree_jobs); nothing was dispatched"
    )]
    TreeFull {
        /// The tree's root.
        root: JobId,
        /// The queue of the dispatching job.
        queue: QueueName,
        /// Jobs the tree holds, done ones included.
        jobs: u32,
        /// The queue's limit.
        limit: u32,
    },
    /// A follow-up of a tree whose count is no longer kept (see
    /// [`crate::queue::JobQueue::dispatch_follow_up`]).
    #[error(
        "follow-up refused: the job tree of {root} is closed (its count expired long after its last follow-up); dispatch the job from outside to start a new tree"
    )]
    TreeClosed {
        /// The tree's root.
        root: JobId,
    },
    /// A dispatch over its tenant's dispatch rate.
    #[error(
        "dispatch refused: tenant {tenant} is over its dispatch rate ({per_second} jobs/s, bursts of {burst}): try again in {}; nothing was dispatched",
        crate::time::format_wait(*.retry_after)
    )]
    RateLimited {
        /// The tenant.
        tenant: crate::job::TenantName,
        /// Its rate.
        per_second: f64,
        /// Its burst.
        burst: u32,
        /// When the dispatch would be admitted.
        retry_after: Duration,
    },
    /// More jobs in one dispatch than its tenant's burst: never admitted.
    #[error(
        "dispatch refused: {jobs} jobs at once is more than tenant {tenant}'s dispatch_burst ({burst}): dispatch fewer at a time; nothing was dispatched"
    )]
    OverBurst {
        /// The tenant.
        tenant: crate::job::TenantName,
        /// Jobs in the dispatch.
        jobs: u64,
        /// Its burst.
        burst: u32,
    },
    /// A dispatch that would take its tenant's backlog over its cap.
    #[error(
        "dispatch refused: tenant {tenant} has {waiting} jobs waiting and may have {max} (max_backlog): let its workers catch up or delete jobs, then dispatch again; nothing was dispatched"
    )]
    BacklogFull {
        /// The tenant.
        tenant: crate::job::TenantName,
        /// Jobs waiting (pending and scheduled) when counted.
        waiting: u64,
        /// Its cap.
        max: u64,
    },
    /// A module that would take its tenant's published modules over its
    /// quota.
    #[error(
        "deploy refused: tenant {tenant}'s published modules take {} and may take {} (module_storage_mib); this module ({}) would pass it: withdraw modules it no longer needs (`runtime deploy QUEUE --withdraw`) or raise the quota; nothing was published",
        size(*.used), size(*.max), size(*.adding)
    )]
    ModuleStorageFull {
        /// The tenant.
        tenant: crate::job::TenantName,
        /// Bytes its other published modules take.
        used: u64,
        /// Bytes of the module refused.
        adding: u64,
        /// Its quota, bytes.
        max: u64,
    },
    /// Removing a queue while some of its jobs run.
    #[error("queue {queue} has jobs running; they are left, with the queue")]
    QueueBusy {
        /// The queue.
        queue: QueueName,
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
        "no handler for queue {queue}: looked for {}, which does not exist (build crate `{}-job` for wasm32-wasip2 and copy its {} there, point --handlers at the directory that holds {}, or map the queue to a module in config)",
        .path.display(),
        .queue.name(),
        .queue.handler_file_name(),
        .queue.handler_path(std::path::Path::new("")).display()
    )]
    NotFound {
        /// The queue.
        queue: QueueName,
        /// Where it looked.
        path: PathBuf,
    },
    /// The handlers directory does not exist.
    #[error(
        "no handler for queue {queue}: the handlers directory {} does not exist (point --handlers, RUNTIME_HANDLERS or `handlers` in the config at the directory that holds {})",
        .path.display(),
        .queue.handler_path(std::path::Path::new("")).display()
    )]
    NoHandlersDir {
        /// The queue.
        queue: QueueName,
        /// The directory.
        path: PathBuf,
    },
    /// The handlers directory is something else (a file, say).
    #[error(
        "no handler for queue {queue}: the handlers directory {} is {kind}, not a directory (point --handlers, RUNTIME_HANDLERS or `handlers` in the config at the directory that holds {})",
        .path.display(),
        .queue.handler_path(std::path::Path::new("")).display()
    )]
    HandlersNotADir {
        /// The queue.
        queue: QueueName,
        /// What was given as the directory.
        path: PathBuf,
        /// What it is instead: `a file`, `a named pipe`...
        kind: &'static str,
    },
    /// Where the module should be there is something else (a directory, say).
    #[error(
        "no handler for queue {queue}: {} is {kind}, not a module file",
        .path.display()
    )]
    NotAFile {
        /// The queue.
        queue: String,
        /// Where the module should be.
        path: PathBuf,
        /// What it is instead: `a directory`, `a named pipe`...
        kind: &'static str,
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

/// A size for people: bytes up to a KiB, then KiB or MiB with one decimal
/// where it matters.
pub fn size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    let scaled = |unit: u64, name: &str| {
        if bytes.is_multiple_of(unit) {
            format!("{} {name}", bytes / unit)
        } else {
            format!("{:.1} {name}", bytes as f64 / unit as f64)
        }
    };
    match bytes {
        b if b < KIB => format!("{b} B"),
        b if b < MIB => scaled(KIB, "KiB"),
        _ => scaled(MIB, "MiB"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_in_their_unit() {
        assert_eq!(super::size(0), "0 B");
        assert_eq!(super::size(1023), "1023 B");
        assert_eq!(super::size(1024), "1 KiB");
        assert_eq!(super::size(1536), "1.5 KiB");
        assert_eq!(super::size(10 * 1024 * 1024), "10 MiB");
        assert_eq!(super::size(u64::MAX), "17592186044416.0 MiB");
    }
}
