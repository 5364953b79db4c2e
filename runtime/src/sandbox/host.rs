//! The host side of the handler world: the per-attempt state kept in each
//! `Store`, and the imports (`log`, `dispatch`) handlers call.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::SandboxStats;
use super::capabilities::Capabilities;
use super::limits::{Bytes, Limits};
use super::outbound::Outbound;
use super::output::JobOutput;
use crate::error::QueueError;
use crate::job::{
    DispatchOptions, JobRecord, Lineage, MaxAttempts, NewJob, Payload, QueueName, RunAt, TreeBudget,
};
use crate::queue::{Clock, SystemClock};

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit",
    world: "handler",
    imports: {
        "runtime:job/dispatch.dispatch": async | trappable,
        default: trappable,
    },
    exports: { default: async },
});

pub(crate) use self::runtime::job::log::Level;
pub(crate) use self::runtime::job::types::{Job as WitJob, Outcome as WitOutcome};

impl Level {
    /// How the level is written in the job's log: `INFO message`. Made
    /// only there; the process's log takes the level itself.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

/// Longest panic message or reason kept from a guest, in bytes.
pub(crate) const MAX_REASON_BYTES: usize = 2048;

/// Everything one attempt's `Store` holds. Dropped with the store at the
/// end of the attempt: nothing here outlives one job.
pub(crate) struct HostState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub http: WasiHttpCtx,
    /// The queue's outbound HTTP grant, and this attempt's requests.
    pub outbound: Outbound,
    pub output: JobOutput,
    pub limiter: MemoryLimiter,
    /// The message of a panic the guest reported before trapping.
    pub panic: Option<String>,
    /// What the guest may reach outside its instance.
    pub caps: Capabilities,
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
/// message, job id, tenant and queue name: the timestamp, level, target,
/// field names, attempt number and punctuation of the longer of the two log
/// formats (JSON: 143 bytes at most; human, with a terminal's colour codes:
/// about 125), with room to spare. An upper bound, so the budget bounds
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
    tenant: String,
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
            tenant: job.id.queue().tenant().to_string(),
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
        human.max(json).saturating_add(
            self.job.len() + self.tenant.len() + self.queue.len() + ECHO_LINE_OVERHEAD,
        )
    }

    fn emit(&mut self, level: Level, message: &str) {
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
                tenant = %self.tenant,
                queue = %self.queue,
                attempt = self.attempt,
                "this attempt's log lines filled its share of this log (its output limit); the rest are only in the job's log"
            );
            return;
        }
        self.budget -= cost;
        let (job, tenant, queue, attempt) = (&self.job, &self.tenant, &self.queue, self.attempt);
        match level {
            Level::Error => {
                tracing::error!(target: "guest", job = %job, tenant = %tenant, queue = %queue, attempt, "{message}")
            }
            Level::Warn => {
                tracing::warn!(target: "guest", job = %job, tenant = %tenant, queue = %queue, attempt, "{message}")
            }
            Level::Info => {
                tracing::info!(target: "guest", job = %job, tenant = %tenant, queue = %queue, attempt, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "guest", job = %job, tenant = %tenant, queue = %queue, attempt, "{message}")
            }
            Level::Trace => {
                tracing::trace!(target: "guest", job = %job, tenant = %tenant, queue = %queue, attempt, "{message}")
            }
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
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
    /// Bytes of memories and tables granted so far. A growth wasmtime
    /// then fails stays counted: wasmtime also reports failures it never
    /// asked `*_growing` about (a 64-bit table grown by 2^64 - 1, whose
    /// size overflows; a memory of 1-byte pages grown past 4 GiB), so "the
    /// last grant" may be one
    /// that took effect, and taking it back would let a job that alternates
    /// real growths and such failures hold several times its limit. What
    /// stays counted only costs the job that asked for a growth its own
    /// memory could not take.
    used: usize,
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
            exceeded: false,
            ceilings,
            stats,
        }
    }

    /// Grants `more` bytes if the job's budget has room for them.
    fn grant(&mut self, more: usize) -> wasmtime::Result<bool> {
        // Checked, not saturating: with a budget of `usize::MAX` a sum
        // that saturated would be granted while counting less than it
        // granted, and the sandbox's memory gauge would never come back
        // to zero.
        let Some(total) = self.used.checked_add(more).filter(|&t| t <= self.max_bytes) else {
            self.exceeded = true;
            return Err(wasmtime::format_err!(
                "memory limit {} exceeded",
                Bytes(self.max_bytes as u64)
            ));
        };
        self.used = total;
        self.stats.memory.fetch_add(more as u64, Ordering::Relaxed);
        Ok(true)
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

    /// Keeps the growth counted (see [`MemoryLimiter::used`]).
    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
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

    /// Keeps the growth counted (see [`MemoryLimiter::used`]).
    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
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
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
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
        let Some(dispatcher) = self.caps.dispatch.clone() else {
            return Ok(Err("dispatch is not available in this context".into()));
        };
        let own = &self.follow_ups.lineage.parent;
        let job = match follow_up(own.queue(), &queue, payload, options) {
            Ok(job) => job,
            Err(e) => return Ok(Err(e)),
        };
        let FollowUps { lineage, budget } = &self.follow_ups;
        // Refusals (over the tree's budget, bad options) are the guest's to
        // handle: the attempt carries on. Only the per-attempt limit above
        // ends it.
        Ok(
            match dispatcher.dispatch(job, lineage.clone(), *budget).await {
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
/// gave it; the backend scopes it), or a readable error for it. The queue
/// is named within `own`'s tenant: no name a guest writes reaches another.
fn follow_up(
    own: &QueueName,
    queue: &str,
    payload: String,
    options: self::runtime::job::dispatch::DispatchOptions,
) -> Result<NewJob, String> {
    let queue = own.sibling(queue).map_err(|e| e.to_string())?;
    let payload = Payload::new(payload).map_err(|e| e.to_string())?;
    let defaults = DispatchOptions::default();
    let options = DispatchOptions {
        priority: options.priority.unwrap_or(defaults.priority),
        run_at: options
            .delay_ms
            .map_or(RunAt::Now, |ms| RunAt::After(Duration::from_millis(ms))),
        max_attempts: match options.max_attempts {
            Some(attempts) => MaxAttempts::new(attempts).map_err(|e| e.to_string())?,
            None => defaults.max_attempts,
        },
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

/// Property test of the memory budget: the limiter driven the way wasmtime
/// drives it, for several memories and tables, under arbitrary sequences
/// of growths, failed growths and failures reported without a growth
/// before them. Part of the `fuzz_` run (see the crate's `fuzz_tests`
/// module).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;
    use wasmtime::ResourceLimiter;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Grow memory `index` (a new one when past the end) by `delta`
        /// bytes; wasmtime then fails the growth when `fails`.
        Memory {
            index: usize,
            delta: usize,
            fails: bool,
        },
        /// The same for table `index`, in elements.
        Table {
            index: usize,
            delta: usize,
            fails: bool,
        },
        /// A failure wasmtime reports without asking first.
        MemoryFailed,
        TableFailed,
    }

    fn op() -> impl Strategy<Value = Op> {
        let delta = prop_oneof![0..(4usize << 20), 0..70_000usize, Just(usize::MAX / 2)];
        prop_oneof![
            (0..4usize, delta.clone(), any::<bool>()).prop_map(|(index, delta, fails)| {
                Op::Memory {
                    index,
                    delta,
                    fails,
                }
            }),
            (
                0..4usize,
                prop_oneof![0..60_000usize, Just(MAX_TABLE_ELEMENTS)],
                any::<bool>()
            )
                .prop_map(|(index, delta, fails)| Op::Table {
                    index,
                    delta,
                    fails
                }),
            Just(Op::MemoryFailed),
            Just(Op::TableFailed),
        ]
    }

    fn ceilings() -> Ceilings {
        Ceilings {
            instances: 4,
            memories: 4,
            tables: 4,
        }
    }

    proptest! {
        #[test]
        fn fuzz_memory_limiter_never_grants_past_its_budget(
            max_bytes in prop_oneof![0..(16usize << 20), Just(usize::MAX)],
            ops in prop::collection::vec(op(), 0..40),
        ) {
            let stats = Arc::new(SandboxStats::default());
            let mut limiter = MemoryLimiter::new(max_bytes, ceilings(), stats.clone());
            // What wasmtime would hold: bytes per memory, elements per table.
            let (mut memories, mut tables) = (Vec::<usize>::new(), Vec::<usize>::new());
            for op in ops {
                let before = limiter.used;
                match op {
                    Op::Memory { index, delta, fails } | Op::Table { index, delta, fails } => {
                        let is_memory = matches!(op, Op::Memory { .. });
                        let sizes = if is_memory { &mut memories } else { &mut tables };
                        if index >= sizes.len() {
                            sizes.push(0);
                        }
                        let index = index.min(sizes.len() - 1);
                        let current = sizes[index];
                        let desired = current.saturating_add(delta);
                        let more = desired - current;
                        let (answer, cost) = if is_memory {
                            (limiter.memory_growing(current, desired, None), more)
                        } else {
                            (
                                limiter.table_growing(current, desired, None),
                                more.saturating_mul(TABLE_ELEMENT_BYTES),
                            )
                        };
                        let fits = before.checked_add(cost).is_some_and(|t| t <= max_bytes);
                        match answer {
                            Ok(true) => {
                                prop_assert!(fits);
                                prop_assert!(is_memory || desired <= MAX_TABLE_ELEMENTS);
                                prop_assert_eq!(limiter.used, before + cost);
                                if fails {
                                    let failed = if is_memory {
                                        limiter.memory_grow_failed(wasmtime::format_err!("failed"))
                                    } else {
                                        limiter.table_grow_failed(wasmtime::format_err!("failed"))
                                    };
                                    prop_assert!(failed.is_ok());
                                } else {
                                    sizes[index] = desired;
                                }
                            }
                            Ok(false) => {
                                prop_assert!(!is_memory && desired > MAX_TABLE_ELEMENTS);
                                prop_assert_eq!(limiter.used, before);
                            }
                            Err(e) => {
                                prop_assert!(!fits);
                                prop_assert!(limiter.exceeded);
                                prop_assert!(e.to_string().starts_with("memory limit"), "{}", e);
                                prop_assert_eq!(limiter.used, before);
                            }
                        }
                    }
                    Op::MemoryFailed => {
                        prop_assert!(limiter.memory_grow_failed(wasmtime::format_err!("type")).is_ok());
                    }
                    Op::TableFailed => {
                        prop_assert!(limiter.table_grow_failed(wasmtime::format_err!("overflow")).is_ok());
                    }
                }
                // What wasmtime holds is all counted, and the count is
                // within the budget and is what the sandbox reports.
                let bytes = memories.iter().fold(0usize, |sum, n| sum.saturating_add(*n));
                let elements = tables.iter().fold(0usize, |sum, n| sum.saturating_add(*n));
                let held = bytes.saturating_add(elements.saturating_mul(TABLE_ELEMENT_BYTES));
                prop_assert!(held <= limiter.used, "holds {} of {} counted", held, limiter.used);
                prop_assert!(limiter.used <= max_bytes);
                prop_assert_eq!(stats.memory.load(Ordering::Relaxed), limiter.used as u64);
                prop_assert_eq!(stats.live.load(Ordering::Relaxed), 1);
            }
            drop(limiter);
            prop_assert_eq!(stats.memory.load(Ordering::Relaxed), 0);
            prop_assert_eq!(stats.live.load(Ordering::Relaxed), 0);
            prop_assert_eq!(stats.instances.load(Ordering::Relaxed), 1);
        }
    }
}
