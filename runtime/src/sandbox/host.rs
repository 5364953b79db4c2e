//! The host side of the handler world: the per-attempt state kept in each
//! `Store`, and the imports (`log`, `dispatch`) handlers call.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::SandboxStats;
use super::limits::{Bytes, Limits};
use super::output::JobOutput;
use crate::error::QueueError;
use crate::job::{
    DispatchOptions, JobRecord, Lineage, NewJob, Payload, QueueName, RunAt, TreeBudget,
};
use crate::queue::{Clock, QueueBackend, SystemClock};

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit",
    world: "handler",
    imports: {
        "runtime:job/dispatch.dispatch": async | trappable,
        default: trappable,
    },
    exports: { default: async },
});

pub(crate) use self::runtime::job::types::{Job as WitJob, Outcome as WitOutcome};

/// Longest panic message or reason kept from a guest, in bytes.
pub(crate) const MAX_REASON_BYTES: usize = 2048;

/// Everything one attempt's `Store` holds. Dropped with the store at the
/// end of the attempt: nothing here outlives one job.
pub(crate) struct HostState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub output: JobOutput,
    pub limiter: MemoryLimiter,
    /// The message of a panic the guest reported before trapping.
    pub panic: Option<String>,
    /// Where follow-up jobs go; `None` where dispatch is unavailable.
    pub dispatcher: Option<Arc<dyn QueueBackend>>,
    pub dispatch_limit: u32,
    pub dispatch_calls: u32,
    pub dispatch_exceeded: bool,
    /// Where this attempt's follow-ups go in their job tree.
    pub follow_ups: FollowUps,
    /// When the attempt's wall-clock time runs out.
    pub deadline: Instant,
    pub timed_out: bool,
    /// The job, when its log lines also go to the process's log.
    pub echo: Option<EchoContext>,
}

/// Where an attempt's follow-ups go: the job tree of the job it runs, as
/// far as the job's queue lets it grow.
pub(crate) struct FollowUps {
    lineage: Lineage,
    budget: TreeBudget,
}

impl FollowUps {
    /// For an attempt of `job` under its queue's `limits`.
    pub fn new(job: &JobRecord, limits: &Limits) -> Self {
        FollowUps {
            lineage: Lineage::child_of(job),
            budget: TreeBudget {
                max_depth: limits.tree_depth,
                max_jobs: limits.tree_jobs,
            },
        }
    }
}

/// Bytes charged to the echo budget for each echoed line beyond its
/// message, job id and queue name: the timestamp, level, target, field
/// names, attempt number and punctuation of the longer of the two log
/// formats (JSON: 131 bytes at most; human, with a terminal's colour codes:
/// about 115), with room to spare. An upper bound, so the budget bounds
/// what is really written.
const ECHO_LINE_OVERHEAD: usize = 160;

/// Who a guest's log line is from, in the process's log, and how much of
/// the process's log the attempt may still fill.
///
/// The job's own log is bounded by the output limit, but each echoed line
/// carries the job's context, so a guest writing its whole output budget as
/// one-byte lines would fill the process's log ten to twenty times over
/// (0.7 MB of human log, 1.3 MB of JSON, per attempt of a 64 KiB limit). Every echoed line is
/// therefore charged what it can take in the log, context included, against
/// the same output limit; past it the attempt's lines stop reaching the
/// process's log, with one line saying so (they stay in the job's log).
/// An attempt so fills at most its output limit plus that one line.
pub(crate) struct EchoContext {
    job: String,
    queue: String,
    attempt: u32,
    /// Bytes the attempt may still write to the process's log.
    budget: usize,
    /// Whether the budget ran out (and the line saying so was written).
    stopped: bool,
}

impl EchoContext {
    /// The context of `job`'s current attempt, allowed `output_limit` bytes
    /// of the process's log.
    pub fn new(job: &JobRecord, output_limit: usize) -> Self {
        EchoContext {
            job: job.id.to_string(),
            queue: job.id.queue().to_string(),
            attempt: job.attempts,
            budget: output_limit,
            stopped: false,
        }
    }

    /// What `message` can take in the process's log, at most: escaped for
    /// the human format or for JSON, whichever is longer, plus the context.
    fn cost(&self, message: &str) -> usize {
        let human = crate::text::escape(message).len();
        let json = serde_json::to_string(message)
            .map_or(usize::MAX, |json| crate::text::json_safe(&json).len());
        human
            .max(json)
            .saturating_add(self.job.len() + self.queue.len() + ECHO_LINE_OVERHEAD)
    }

    fn emit(&mut self, level: &str, message: &str) {
        if self.stopped {
            return;
        }
        let message = message.trim_end_matches('\n');
        let cost = self.cost(message);
        if cost > self.budget {
            self.stopped = true;
            tracing::warn!(
                target: "guest",
                job = %self.job,
                queue = %self.queue,
                attempt = self.attempt,
                "this attempt's log lines filled its share of this log (its output limit); the rest are only in the job's log"
            );
            return;
        }
        self.budget -= cost;
        let (job, queue, attempt) = (&self.job, &self.queue, self.attempt);
        match level {
            "ERROR" => {
                tracing::error!(target: "guest", job = %job, queue = %queue, attempt, "{message}")
            }
            "WARN" => {
                tracing::warn!(target: "guest", job = %job, queue = %queue, attempt, "{message}")
            }
            "INFO" => {
                tracing::info!(target: "guest", job = %job, queue = %queue, attempt, "{message}")
            }
            "DEBUG" => {
                tracing::debug!(target: "guest", job = %job, queue = %queue, attempt, "{message}")
            }
            _ => tracing::trace!(target: "guest", job = %job, queue = %queue, attempt, "{message}"),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The job's memory budget: all of its linear memories and all of its
/// tables together (a table element costs [`TABLE_ELEMENT_BYTES`]), from
/// their initial sizes at instantiation to every later growth. Whatever
/// the shape of the component (one memory or several, nested instances),
/// the sum stays within the queue's `memory` limit; the attempt that asks
/// for more ends with `memory limit N exceeded`. Also caps how many
/// instances, memories and tables the store may create (the per-job
/// ceilings, checked again here for any shape a load-time check missed),
/// and keeps the sandbox's counts of live instances and their memory, from
/// creation to drop (with the store, however the attempt ends).
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    max_bytes: usize,
    /// Bytes of memories and tables granted so far.
    used: usize,
    /// The last growth granted, taken back if wasmtime then fails it.
    last_grant: usize,
    pub exceeded: bool,
    ceilings: Ceilings,
    stats: Arc<SandboxStats>,
}

/// How many instances, memories and tables one store may create.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ceilings {
    pub instances: usize,
    pub memories: usize,
    pub tables: usize,
}

/// What one table element costs against the job's memory budget: a
/// pointer, as wasmtime stores function references.
pub(crate) const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

impl MemoryLimiter {
    pub fn new(max_bytes: usize, ceilings: Ceilings, stats: Arc<SandboxStats>) -> Self {
        stats.instances.fetch_add(1, Ordering::Relaxed);
        stats.live.fetch_add(1, Ordering::Relaxed);
        MemoryLimiter {
            max_bytes,
            used: 0,
            last_grant: 0,
            exceeded: false,
            ceilings,
            stats,
        }
    }

    /// Grants `more` bytes if the job's budget has room for them.
    fn grant(&mut self, more: usize) -> wasmtime::Result<bool> {
        let total = self.used.saturating_add(more);
        if total > self.max_bytes {
            self.exceeded = true;
            return Err(wasmtime::format_err!(
                "memory limit {} exceeded",
                Bytes(self.max_bytes as u64)
            ));
        }
        self.used = total;
        self.last_grant = more;
        self.stats.memory.fetch_add(more as u64, Ordering::Relaxed);
        Ok(true)
    }

    /// Takes back the last grant: wasmtime could not carry it out.
    fn revoke_last(&mut self) {
        let back = std::mem::take(&mut self.last_grant);
        self.used -= back;
        self.stats.memory.fetch_sub(back as u64, Ordering::Relaxed);
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.stats.live.fetch_sub(1, Ordering::Relaxed);
        self.stats
            .memory
            .fetch_sub(self.used as u64, Ordering::Relaxed);
    }
}

/// Elements one table may grow to (its slot in the pool is this big);
/// the elements of all of a job's tables also count toward its memory
/// limit.
pub(crate) const MAX_TABLE_ELEMENTS: usize = 100_000;

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grant(desired.saturating_sub(current))
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.revoke_last();
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        let more = desired.saturating_sub(current);
        self.grant(more.saturating_mul(TABLE_ELEMENT_BYTES))
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.revoke_last();
        Ok(())
    }

    fn instances(&self) -> usize {
        self.ceilings.instances
    }

    fn memories(&self) -> usize {
        self.ceilings.memories
    }

    fn tables(&self) -> usize {
        self.ceilings.tables
    }
}

impl self::runtime::job::types::Host for HostState {}

impl self::runtime::job::log::Host for HostState {
    fn log(
        &mut self,
        level: self::runtime::job::log::Level,
        message: String,
    ) -> wasmtime::Result<()> {
        use self::runtime::job::log::Level;
        let level = match level {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        };
        self.output
            .line(level, &message)
            .map_err(wasmtime::Error::new)?;
        // Only lines that fit the job's output bound reach the process's
        // log, and only while the attempt's echo budget lasts, so a chatty
        // guest cannot flood it either.
        if let Some(echo) = &mut self.echo {
            echo.emit(level, &message);
        }
        Ok(())
    }

    fn report_panic(&mut self, message: String) -> wasmtime::Result<()> {
        self.panic = Some(truncate(message, MAX_REASON_BYTES));
        Ok(())
    }
}

impl self::runtime::job::dispatch::Host for HostState {
    async fn dispatch(
        &mut self,
        queue: String,
        payload: String,
        options: self::runtime::job::dispatch::DispatchOptions,
    ) -> wasmtime::Result<Result<String, String>> {
        self.dispatch_calls += 1;
        if self.dispatch_calls > self.dispatch_limit {
            self.dispatch_exceeded = true;
            return Err(wasmtime::format_err!(
                "dispatch limit {} per job exceeded",
                self.dispatch_limit
            ));
        }
        let Some(backend) = self.dispatcher.clone() else {
            return Ok(Err("dispatch is not available in this context".into()));
        };
        let job = match follow_up(queue, payload, options) {
            Ok(job) => job,
            Err(e) => return Ok(Err(e)),
        };
        let FollowUps { lineage, budget } = &self.follow_ups;
        // Refusals (over the tree's budget, bad options) are the guest's to
        // handle: the attempt carries on. Only the per-attempt limit above
        // ends it.
        Ok(
            match backend
                .dispatch_follow_up(job, lineage.clone(), *budget)
                .await
            {
                Ok(id) => Ok(id.to_string()),
                Err(e @ QueueError::Backend { .. }) => {
                    tracing::warn!(error = %e, parent = %lineage.parent, "a handler's follow-up could not be dispatched");
                    // The server's name and its words are the operator's,
                    // not the guest's.
                    Err("dispatch failed: the queue server did not take the follow-up; try again later".into())
                }
                Err(e) => Err(e.to_string()),
            },
        )
    }
}

/// Validates a guest's dispatch into a job (its unique key as the guest
/// gave it; the backend scopes it), or a readable error for it.
fn follow_up(
    queue: String,
    payload: String,
    options: self::runtime::job::dispatch::DispatchOptions,
) -> Result<NewJob, String> {
    let queue = QueueName::new(queue).map_err(|e| e.to_string())?;
    let payload = Payload::new(payload).map_err(|e| e.to_string())?;
    let defaults = DispatchOptions::default();
    let options = DispatchOptions {
        priority: options.priority.unwrap_or(defaults.priority),
        run_at: options
            .delay_ms
            .map_or(RunAt::Now, |ms| RunAt::After(Duration::from_millis(ms))),
        max_attempts: options.max_attempts.unwrap_or(defaults.max_attempts),
        unique_key: options.unique_key,
    };
    options
        .check(SystemClock.now())
        .map_err(|e| e.to_string())?;
    Ok(NewJob {
        queue,
        payload,
        options,
    })
}

/// Cuts `s` to at most `max` bytes on a character boundary, saying so.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let total = s.len();
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push_str(&format!("... ({} more bytes)", total - cut));
    s
}
