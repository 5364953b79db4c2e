//! The queue contract: [`JobQueue`] (jobs), [`WorkerRegistry`] (live
//! workers), [`ModuleStore`] (published handler modules) and
//! [`TenantStore`] (registered tenants), each an async trait, put together
//! as a [`Backend`]; implemented in memory ([`memory`])
//! and on Redis ([`redis`]). What [`JobQueue`] promises is exactly what
//! the conformance suite of the `runtime-tests` crate checks, against every
//! backend.

pub mod clock;
pub mod memory;
pub mod quota;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::QueueError;
use crate::job::{
    FailureKind, JobId, JobRecord, JobState, Lineage, NewJob, QueueName, TenantName, TreeBudget,
    UnixMillis,
};
use crate::tenant::TenantRecord;
pub use quota::{Admitting, DispatchQuota, Quotas, Rate, RunTimeBudget, Taken};

pub use clock::{Clock, ManualClock, SystemClock};
pub use memory::MemoryBackend;
pub use redis::RedisBackend;

/// A worker's hold on a running job. Only the holder of the current lease
/// can complete the job: every claim gets a new `token` (a fencing token),
/// so a worker whose lease expired and whose job was claimed again cannot
/// overwrite the newer state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The job held.
    pub id: JobId,
    /// Increases with every claim of this job.
    pub token: u64,
    /// When the lease runs out unless renewed.
    pub expires_at: UnixMillis,
}

/// A job handed to a worker: its record (state `running`, `attempts`
/// counting this attempt) and the lease it runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The job as claimed.
    pub job: JobRecord,
    /// The worker's hold on it.
    pub lease: Lease,
}

/// How an attempt ended, as a worker reports it. A failure carries its
/// kind beside its words, and backends store both as they are: the kind is
/// never read back out of the text, so a handler's own reason cannot pass
/// for a limit of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// Finished: remove the job and count it.
    Done,
    /// Did not finish: run again after `delay` if attempts remain, else
    /// fail with `error`.
    Retry {
        /// What stopped it; recorded on the job and the attempt.
        kind: FailureKind,
        /// Why, in words; recorded on the job and the attempt.
        error: String,
        /// How long to wait before the next attempt.
        delay: Duration,
    },
    /// Failed for good, whatever attempts remain.
    Fail {
        /// What stopped it; recorded on the job and the attempt.
        kind: FailureKind,
        /// Why, in words; recorded on the job and the attempt.
        error: String,
    },
    /// Not run to the end through no fault of the job (the worker is
    /// stopping): back to pending, and this attempt is not counted.
    Release,
}

/// What completing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// The job's new state; `None` means done and removed.
    Applied(Option<JobState>),
    /// The lease had expired and the job was claimed again or moved on:
    /// nothing was changed.
    Stale,
}

/// How one attempt ended for its job, in the five words the worker's
/// stats, its metrics and both commands use: derived from the [`Ack`] and
/// whether the attempt was handed back. A stale ack wins over a hand-back:
/// either way the job is someone else's now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    /// Finished: the job is done and removed.
    Done,
    /// Will run again (pending or scheduled).
    Retried,
    /// Failed for good.
    Failed,
    /// Handed back at shutdown, the attempt not counted.
    HandedBack,
    /// Not recorded: the lease had moved on.
    Stale,
}

impl AttemptEnd {
    /// The end of an attempt whose completion got `ack`; `handed_back`
    /// if it was a hand-back rather than a run to an outcome.
    pub fn of(ack: Ack, handed_back: bool) -> Self {
        match ack {
            Ack::Stale => AttemptEnd::Stale,
            _ if handed_back => AttemptEnd::HandedBack,
            Ack::Applied(None) => AttemptEnd::Done,
            Ack::Applied(Some(JobState::Failed)) => AttemptEnd::Failed,
            Ack::Applied(Some(_)) => AttemptEnd::Retried,
        }
    }

    /// In one word (a log field, a label).
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptEnd::Done => "done",
            AttemptEnd::Retried => "retry",
            AttemptEnd::Failed => "failed",
            AttemptEnd::HandedBack => "handed back",
            AttemptEnd::Stale => "stale",
        }
    }
}

/// Jobs per state in one queue, and how many are done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StateCounts {
    /// Ready to run.
    pub pending: u64,
    /// Delayed or waiting to retry.
    pub scheduled: u64,
    /// Held by workers.
    pub running: u64,
    /// Failed and kept.
    pub failed: u64,
    /// Finished and removed since the backend started (memory) or ever (Redis).
    pub done: u64,
}

impl std::ops::AddAssign for StateCounts {
    fn add_assign(&mut self, other: StateCounts) {
        self.pending += other.pending;
        self.scheduled += other.scheduled;
        self.running += other.running;
        self.failed += other.failed;
        self.done += other.done;
    }
}

impl StateCounts {
    /// The count of one state.
    pub fn get(&self, state: JobState) -> u64 {
        match state {
            JobState::Pending => self.pending,
            JobState::Scheduled => self.scheduled,
            JobState::Running => self.running,
            JobState::Failed => self.failed,
        }
    }
}

/// How many minutes of throughput a backend keeps, the current one
/// included ([`TenantStore::add_throughput`]), and the most one read
/// returns: two hours.
pub const THROUGHPUT_MINUTES: usize = 120;

/// Attempts that ran to an outcome in one minute, fleet-wide or of one
/// tenant ([`TenantStore::throughput`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Throughput {
    /// Attempts that ended done, retried or failed (not handed back, not
    /// stale).
    pub processed: u64,
    /// Those of them that did not end done: retried or failed.
    pub failed: u64,
}

impl Throughput {
    /// What one attempt that ended as `end` counts: nothing if it was
    /// handed back or stale.
    pub fn of(end: AttemptEnd) -> Self {
        let (processed, failed) = match end {
            AttemptEnd::Done => (1, 0),
            AttemptEnd::Retried | AttemptEnd::Failed => (1, 1),
            AttemptEnd::HandedBack | AttemptEnd::Stale => (0, 0),
        };
        Throughput { processed, failed }
    }
}

impl std::ops::AddAssign for Throughput {
    fn add_assign(&mut self, other: Throughput) {
        self.processed = self.processed.saturating_add(other.processed);
        self.failed = self.failed.saturating_add(other.failed);
    }
}

/// The minute (Unix milliseconds / 60,000) holding `at`, as
/// [`TenantStore::add_throughput`] counts minutes.
pub fn minute_of(at: UnixMillis) -> u64 {
    at / 60_000
}

/// The oldest minute whose throughput is kept at `now` (ms): the
/// current minute and the [`THROUGHPUT_MINUTES`] - 1 before it are.
pub(crate) fn oldest_kept_minute(now: UnixMillis) -> u64 {
    minute_of(now).saturating_sub(THROUGHPUT_MINUTES as u64 - 1)
}

/// The minutes a read of `minutes` from `from_minute` covers, oldest
/// first and at most [`THROUGHPUT_MINUTES`]: each minute still kept at
/// `now` (ms), or `None` for one that reads zero whatever was added (older
/// than the minutes kept, or past the last minute there is).
pub(crate) fn throughput_window(
    from_minute: u64,
    minutes: usize,
    now: UnixMillis,
) -> impl Iterator<Item = Option<u64>> {
    let oldest = oldest_kept_minute(now);
    (0..minutes.min(THROUGHPUT_MINUTES) as u64).map(move |i| {
        from_minute
            .checked_add(i)
            .filter(|&minute| minute >= oldest)
    })
}

/// A worker process as its heartbeats describe it (`runtime workers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerInfo {
    /// Unique per process: `host:pid:random`.
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// Queues it serves.
    pub queues: Vec<String>,
    /// Jobs it runs at once, at most.
    pub concurrency: usize,
    /// Jobs it was running at its last heartbeat.
    pub in_flight: u64,
    /// When it started.
    pub started_at: UnixMillis,
    /// Its last heartbeat.
    pub beat_at: UnixMillis,
}

/// Puts every failed job of `queue` back to pending with a fresh set of
/// attempts, a page at a time; returns how many.
pub async fn retry_all_failed(jobs: &dyn JobQueue, queue: &QueueName) -> Result<u64, QueueError> {
    let mut retried = 0u64;
    loop {
        let page = Page {
            offset: 0,
            limit: 500,
        };
        let failed = jobs.list(queue, JobState::Failed, page).await?;
        if failed.is_empty() {
            return Ok(retried);
        }
        for job in failed {
            match jobs.retry(&job.id).await {
                // Retried or deleted by someone else meanwhile.
                Ok(()) => retried += 1,
                Err(QueueError::NoSuchJob(_) | QueueError::WrongState { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Every queue of `jobs` that `keep` keeps, with its counts, in the
/// backend's order; the counts asked for all at once.
pub async fn counts_of(
    jobs: &dyn JobQueue,
    keep: impl Fn(&QueueName) -> bool,
) -> Result<Vec<(QueueName, StateCounts)>, QueueError> {
    let queues: Vec<QueueName> = jobs
        .queues()
        .await?
        .into_iter()
        .filter(|q| keep(q))
        .collect();
    let counts = futures_util::future::try_join_all(queues.iter().map(|q| jobs.counts(q))).await?;
    Ok(queues.into_iter().zip(counts).collect())
}

/// The version of a published module: the SHA-256 of its bytes, in hex.
pub fn module_version(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A queue that may have work now, as the backend's index of due queues
/// has it (see [`JobQueue::due`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueQueue {
    /// The queue.
    pub queue: QueueName,
    /// How often it had been marked due when it was listed, for
    /// [`JobQueue::settle`].
    pub marks: u64,
}

/// A window into a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// How many to skip.
    pub offset: usize,
    /// How many at most.
    pub limit: usize,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            offset: 0,
            limit: 50,
        }
    }
}

/// A queue server. Every method is one atomic step: no other caller sees a
/// job half-moved.
///
/// Ordering: within a queue, higher priority first, then dispatch order.
/// A job is at least once: a claim holds it under a [`Lease`]; if the lease
/// expires the job goes back to pending (its attempt counted) or, out of
/// attempts, to failed with the reason `worker lost` (kind
/// [`FailureKind::WorkerLost`]).
#[async_trait]
pub trait JobQueue: Send + Sync + std::fmt::Debug + 'static {
    /// Server settings that put jobs at risk, each as a sentence saying
    /// what to change (a worker logs them at start). None by default.
    async fn settings_warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// Enqueue one job. With a unique key held by a job of the same queue
    /// that is pending, scheduled or running, returns that job's id and
    /// enqueues nothing.
    async fn dispatch(&self, job: NewJob) -> Result<JobId, QueueError>;

    /// Enqueue many jobs in one step; ids in the same order.
    async fn dispatch_many(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>, QueueError>;

    /// Enqueue a follow-up: a job the handler of a running job dispatched.
    /// `lineage` places it in that job's tree ([`Lineage::child_of`]);
    /// `budget` is what the dispatching job's queue allows the tree.
    ///
    /// Its unique key is the handler's as given, checked like any other,
    /// then scoped to the dispatching job's queue ([`Lineage::scoped_key`]).
    /// A follow-up whose scoped key is held returns the holder's id and
    /// counts nothing, over budget or not, so an attempt that is retried
    /// and dispatches its keyed follow-ups again spends no more of the
    /// budget. Otherwise it is refused ([`QueueError::TreeTooDeep`],
    /// [`QueueError::TreeFull`]) when it would be deeper than
    /// `budget.max_depth` or the tree already holds `budget.max_jobs`
    /// jobs, done ones included.
    ///
    /// The tree's count is kept with its root (on Redis, in the root
    /// queue's slot, apart from the follow-up's own queue), and outlives
    /// the root while follow-ups remain. Follow-ups leave it as they are
    /// done ([`leave_tree`](JobQueue::leave_tree)); the count is then
    /// dropped, and comes back from the root's record if the root dispatches
    /// again. A count not dropped that way (follow-ups failed and deleted)
    /// expires two years ([`TREE_KEEP`](crate::job::TREE_KEEP)) after the tree's last follow-up;
    /// a job of the tree dispatching after that is refused
    /// ([`QueueError::TreeClosed`]).
    async fn dispatch_follow_up(
        &self,
        job: NewJob,
        lineage: Lineage,
        budget: TreeBudget,
    ) -> Result<JobId, QueueError>;

    /// A follow-up of `lineage`'s tree is done and removed: it no longer
    /// keeps the tree's count (a worker calls this after the done ack of a
    /// job with a lineage). Failed follow-ups still do, as they may be
    /// retried.
    async fn leave_tree(&self, lineage: &Lineage) -> Result<(), QueueError>;

    /// Take up to `max` runnable jobs from `queues` (earlier queues first),
    /// each under a lease of `lease` from now. First makes due scheduled
    /// jobs pending and takes back jobs whose lease expired.
    async fn claim(
        &self,
        queues: &[QueueName],
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Claim>, QueueError>;

    /// Wait until `queues` may have runnable work (a dispatch, a scheduled
    /// job coming due, a lease expiring) or `timeout` passes. May return
    /// early; callers claim and wait again.
    async fn wait_for_work(
        &self,
        queues: &[QueueName],
        timeout: Duration,
    ) -> Result<(), QueueError>;

    /// Queues, of every tenant, that may have runnable work now (pending
    /// jobs, scheduled ones come due, leases expired): what a worker
    /// serving every queue claims from, instead of asking each queue. A
    /// hint: it may list a queue with nothing to claim (a claim finds out,
    /// and [`settle`](Self::settle)s it), and a backend that keeps it apart
    /// from the queues repairs it from them now and then. By default,
    /// every queue.
    async fn due(&self) -> Result<Vec<DueQueue>, QueueError> {
        Ok(self
            .queues()
            .await?
            .into_iter()
            .map(|queue| DueQueue { queue, marks: 0 })
            .collect())
    }

    /// A claim from `due` got less than it asked for: unless the queue was
    /// marked due again since it was listed, the index moves it to when it
    /// next may have work, or drops it.
    async fn settle(&self, due: &DueQueue) -> Result<(), QueueError> {
        let _ = due;
        Ok(())
    }

    /// Wait until some queue (of `tenant`, or of any tenant), other than
    /// those `passing` over, may have runnable work, or `timeout` passes.
    /// May return early.
    async fn wait_for_due(
        &self,
        passing: &[QueueName],
        tenant: Option<&TenantName>,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        let passing: std::collections::HashSet<&QueueName> = passing.iter().collect();
        let mut queues = self.queues().await?;
        queues.retain(|q| !passing.contains(q) && tenant.is_none_or(|t| q.is_in(t)));
        self.wait_for_work(&queues, timeout).await
    }

    /// Extend a lease to `lease` from now. `None` if it is no longer the
    /// current lease of a running job.
    async fn renew(&self, lease: &Lease, extend: Duration) -> Result<Option<Lease>, QueueError>;

    /// Record how an attempt ended, with the log captured from it. Ignored
    /// ([`Ack::Stale`]) unless `lease` is still the job's current lease.
    async fn complete(
        &self,
        lease: &Lease,
        completion: Completion,
        log: String,
    ) -> Result<Ack, QueueError>;

    /// [`complete`](JobQueue::complete) for many attempts at once (a
    /// worker batches its acks); acks in the same order. Each is applied
    /// or refused on its own. On an error some may have been applied:
    /// sending the same batch again is safe (those are then stale).
    async fn complete_many(
        &self,
        items: &[(Lease, Completion, String)],
    ) -> Result<Vec<Ack>, QueueError> {
        let mut acks = Vec::with_capacity(items.len());
        for (lease, completion, log) in items {
            acks.push(
                self.complete(lease, completion.clone(), log.clone())
                    .await?,
            );
        }
        Ok(acks)
    }

    /// One job, if it exists (done jobs do not).
    async fn get(&self, id: &JobId) -> Result<Option<JobRecord>, QueueError>;

    /// Jobs of one state in one queue, in the order they will be taken
    /// (pending: priority then age; scheduled: due time; running: lease
    /// expiry; failed: when they failed).
    async fn list(
        &self,
        queue: &QueueName,
        state: JobState,
        page: Page,
    ) -> Result<Vec<JobRecord>, QueueError>;

    /// Counts per state of one queue.
    async fn counts(&self, queue: &QueueName) -> Result<StateCounts, QueueError>;

    /// Every queue that has or had jobs.
    async fn queues(&self) -> Result<Vec<QueueName>, QueueError>;

    /// Put a failed job back to pending with a fresh set of attempts.
    async fn retry(&self, id: &JobId) -> Result<(), QueueError>;

    /// Remove a job in any state but running. `false` if there was none.
    async fn delete(&self, id: &JobId) -> Result<bool, QueueError>;

    /// Remove every job of a queue that is not running; returns how many.
    async fn purge(&self, queue: &QueueName) -> Result<u64, QueueError>;

    /// Pauses `queue` (no worker claims its jobs, which stay where they
    /// are: pending, scheduled, running) or resumes it. A queue can be
    /// paused before it has jobs; removing it forgets the pause. Whether
    /// that changed it.
    async fn set_paused(&self, queue: &QueueName, paused: bool) -> Result<bool, QueueError>;

    /// Whether each of `queues` is paused.
    async fn paused(&self, queues: &[QueueName]) -> Result<Vec<bool>, QueueError>;

    /// Remove a queue with every job it holds and its counts, in bounded
    /// chunks; returns how many jobs went. A queue with running jobs is
    /// refused with [`QueueError::QueueBusy`] (jobs removed before one
    /// started stay removed). Only its last job number stays: dispatching
    /// to it again lists it again and numbers on from there, so no id is
    /// given twice.
    async fn remove_queue(&self, queue: &QueueName) -> Result<u64, QueueError>;
}

/// The workers registry: live worker processes as their heartbeats
/// describe them (`runtime workers`).
#[async_trait]
pub trait WorkerRegistry: Send + Sync + std::fmt::Debug + 'static {
    /// Records a worker's heartbeat; the record vanishes `ttl` later
    /// unless renewed, so a dead worker drops out of [`workers`].
    ///
    /// [`workers`]: WorkerRegistry::workers
    async fn heartbeat(&self, worker: &WorkerInfo, ttl: Duration) -> Result<(), QueueError>;

    /// The live workers, by id.
    async fn workers(&self) -> Result<Vec<WorkerInfo>, QueueError>;

    /// Removes a worker's record at once (a clean stop).
    async fn unregister(&self, id: &str) -> Result<(), QueueError>;
}

/// The module store: handler modules published through the backend
/// (`runtime deploy`), which workers load instead of module files.
#[async_trait]
pub trait ModuleStore: Send + Sync + std::fmt::Debug + 'static {
    /// Publishes a handler module for `queue` (`runtime deploy`): every
    /// worker serving the queue loads it instead of its module file.
    /// Returns its version (the SHA-256 of the bytes, hex).
    async fn publish_module(&self, queue: &QueueName, bytes: &[u8]) -> Result<String, QueueError>;

    /// The published module version of each of `queues` (`None`: none).
    async fn module_versions(
        &self,
        queues: &[QueueName],
    ) -> Result<Vec<Option<String>>, QueueError>;

    /// The published module of `queue`: its version and bytes.
    async fn module(&self, queue: &QueueName) -> Result<Option<(String, Vec<u8>)>, QueueError>;

    /// Withdraws the published module of `queue`, so workers go back to
    /// its module file; whether there was one.
    async fn withdraw_module(&self, queue: &QueueName) -> Result<bool, QueueError>;

    /// The queues with a published module, sorted.
    async fn published(&self) -> Result<Vec<QueueName>, QueueError>;

    /// The size in bytes of the published module of each of `queues`
    /// (`None`: none).
    async fn module_sizes(&self, queues: &[QueueName]) -> Result<Vec<Option<u64>>, QueueError>;
}

/// The tenant registry: the records of tenants let in from outside, each
/// with its token's hash ([`crate::tenant`] makes and checks them).
#[async_trait]
pub trait TenantStore: Send + Sync + std::fmt::Debug + 'static {
    /// Writes `record`: if `replacing` is `None`, only if the tenant has
    /// no record; otherwise only if its record has `replacing`'s token (no
    /// rotation or removal came between). Whether it was written.
    async fn write_tenant(
        &self,
        record: &TenantRecord,
        replacing: Option<&TenantRecord>,
    ) -> Result<bool, QueueError>;

    /// One tenant's record.
    async fn tenant_record(&self, tenant: &TenantName) -> Result<Option<TenantRecord>, QueueError>;

    /// Every record, by name.
    async fn tenant_records(&self) -> Result<Vec<TenantRecord>, QueueError>;

    /// Removes a tenant's record and its own keys (its dispatch bucket);
    /// whether there was a record.
    async fn remove_tenant(&self, tenant: &TenantName) -> Result<bool, QueueError>;

    /// Takes `jobs` tokens from `tenant`'s dispatch bucket, which holds
    /// `rate.burst` at most and gains `rate.per_second`; or, if it holds
    /// fewer, takes none and says how long until it would hold enough.
    /// One bucket per tenant for every process sharing the server; a
    /// bucket unused long enough to be full may be forgotten.
    async fn take_dispatch(
        &self,
        tenant: &TenantName,
        jobs: u64,
        rate: Rate,
    ) -> Result<Taken, QueueError>;

    /// The tokens `tenant`'s dispatch bucket holds now (`rate.burst` if it
    /// was never used or was forgotten).
    async fn dispatch_tokens(&self, tenant: &TenantName, rate: Rate) -> Result<f64, QueueError>;

    /// Lets `holder` (one worker) have up to `want` more of `tenant`'s jobs
    /// in flight, keeping the tenant's total over every holder within
    /// `max`; the holder keeps them until `until` unless it holds them
    /// again ([`TenantStore::hold_flight`]). Returns how many it may have.
    async fn take_flight(
        &self,
        tenant: &TenantName,
        holder: &str,
        want: u64,
        max: u64,
        until: UnixMillis,
    ) -> Result<u64, QueueError>;

    /// `holder` has `n` fewer of `tenant`'s jobs in flight.
    async fn give_flight(
        &self,
        tenant: &TenantName,
        holder: &str,
        n: u64,
    ) -> Result<(), QueueError>;

    /// `holder` keeps what it has of `tenant`'s jobs in flight until
    /// `until`.
    async fn hold_flight(
        &self,
        tenant: &TenantName,
        holder: &str,
        until: UnixMillis,
    ) -> Result<(), QueueError>;

    /// `tenant`'s jobs in flight over every live holder.
    async fn in_flight(&self, tenant: &TenantName) -> Result<u64, QueueError>;

    /// Gives back `jobs` tokens taken from `tenant`'s bucket for a dispatch
    /// that then did not happen (never above `rate.burst`).
    async fn refund_dispatch(
        &self,
        tenant: &TenantName,
        jobs: u64,
        rate: Rate,
    ) -> Result<(), QueueError>;

    /// Adds `ms` to `tenant`'s attempt run time in the period of
    /// `period_ms` that began at `period`, and returns its run time in
    /// that period over every worker (`ms` 0 only reads it). A later
    /// period starts from nothing; a caller whose clock is behind adds to
    /// the latest period. Kept a period at most once it is over.
    async fn charge_run_time(
        &self,
        tenant: &TenantName,
        period: UnixMillis,
        period_ms: u64,
        ms: u64,
    ) -> Result<u64, QueueError>;

    /// Adds `counts`, the attempts of each tenant that ran to an outcome
    /// in `minute` (Unix milliseconds / 60,000, see [`minute_of`]), to the
    /// tenant's count of that minute and, all together, to the fleet's.
    /// A worker makes one call per batch of acks recorded (or one for
    /// several, while a call is slow). Kept for [`THROUGHPUT_MINUTES`]
    /// minutes by the backend's clock, so the counts take a bounded room
    /// whatever is added: at most [`THROUGHPUT_MINUTES`] minutes per
    /// tenant and for the fleet (on Redis one hash each, of a field per
    /// minute modulo [`THROUGHPUT_MINUTES`], gone [`THROUGHPUT_MINUTES`]
    /// minutes and one after its last write). A tenant's counts go with
    /// it ([`remove_tenant`](TenantStore::remove_tenant)); the fleet's
    /// keep what it added.
    async fn add_throughput(
        &self,
        minute: u64,
        counts: &[(TenantName, Throughput)],
    ) -> Result<(), QueueError>;

    /// The counts of `minutes` consecutive minutes from `from_minute`,
    /// oldest first: of `tenant`, or with `None` of the fleet. A minute
    /// nothing was added to, or older than the last
    /// [`THROUGHPUT_MINUTES`] (the current one included, by the backend's
    /// clock), counts zero. At most [`THROUGHPUT_MINUTES`] minutes are
    /// returned, however many are asked for.
    async fn throughput(
        &self,
        tenant: Option<&TenantName>,
        from_minute: u64,
        minutes: usize,
    ) -> Result<Vec<Throughput>, QueueError>;
}

/// A queue server's four seams, each shared: the job queue, the workers
/// registry, the module store and the tenant registry. A worker's claim
/// loop sees only the job queue; heartbeats and hot swap see only theirs.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Jobs: dispatch, claim, complete, inspect.
    pub jobs: Arc<dyn JobQueue>,
    /// Live workers.
    pub workers: Arc<dyn WorkerRegistry>,
    /// Published handler modules.
    pub modules: Arc<dyn ModuleStore>,
    /// Registered tenants.
    pub tenants: Arc<dyn TenantStore>,
    /// With quotas applied, `jobs` as it was before them.
    before_quotas: Option<Arc<dyn JobQueue>>,
}

impl Backend {
    /// The three seams of one server.
    pub fn new<B: JobQueue + WorkerRegistry + ModuleStore + TenantStore>(server: B) -> Self {
        let server = Arc::new(server);
        Backend {
            jobs: server.clone(),
            workers: server.clone(),
            modules: server.clone(),
            tenants: server,
            before_quotas: None,
        }
    }

    /// This server with every dispatch (the library's, and handlers'
    /// follow-ups through it) admitted within its tenant's `quotas`
    /// ([`Admitting`] around `jobs`, whatever wraps it). Quotas applied
    /// before are replaced, not added to: a backend passed through two
    /// layers that each apply the configuration's quotas takes each
    /// dispatch's tokens once.
    pub fn with_quotas(mut self, quotas: Quotas) -> Self {
        let under = self.before_quotas.take().unwrap_or(self.jobs);
        if quotas.is_unlimited() {
            self.jobs = under;
        } else {
            self.jobs = Arc::new(Admitting::new(under.clone(), self.tenants.clone(), quotas));
            self.before_quotas = Some(under);
        }
        self
    }

    /// A fresh embedded in-memory server.
    pub fn memory() -> Self {
        Self::new(MemoryBackend::default())
    }
}
