//! The embedded in-memory backend: the default for development, tests and
//! single-process use. One mutex over plain ordered sets; every trait method
//! is one critical section, which is what makes each step atomic. Nothing is
//! persisted: jobs live as long as the process.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::clock::millis;
use super::{
    Ack, Claim, Clock, Completion, DueQueue, JobQueue, Lease, ModuleStore, Page, Rate, StateCounts,
    SystemClock, THROUGHPUT_MINUTES, Taken, TenantStore, Throughput, WorkerInfo, WorkerRegistry,
    module_version, oldest_kept_minute, throughput_window,
};
use crate::error::QueueError;
use crate::job::{
    AttemptRecord, FailureKind, JobId, JobRecord, JobState, Lineage, NewJob, QueueName, TenantName,
    TreeBudget, UnixMillis,
};
use crate::tenant::TenantRecord;

/// The in-memory queue backend.
#[derive(Debug)]
pub struct MemoryBackend {
    inner: Mutex<Inner>,
    clock: Arc<dyn Clock>,
    /// Woken on every change that can make work runnable.
    work: Notify,
    /// Worker records and when each expires.
    workers: Mutex<BTreeMap<String, (WorkerInfo, UnixMillis)>>,
    /// Published modules: version and bytes, by queue.
    modules: Mutex<Modules>,
    /// Registered tenants.
    tenants: Mutex<BTreeMap<TenantName, TenantRecord>>,
    /// Dispatch buckets: tokens held, and when last filled.
    buckets: Mutex<HashMap<TenantName, (f64, UnixMillis)>>,
    /// Tenants' jobs in flight: by tenant, by holder, how many and until
    /// when.
    flights: Mutex<HashMap<TenantName, Holders>>,
    /// Tenants' attempt run time: the period it is counted in (its start),
    /// and ms.
    run_times: Mutex<HashMap<TenantName, (UnixMillis, u64)>>,
    /// Attempts that ran to an outcome, by minute: the fleet's (`None`)
    /// and each tenant's, at most [`THROUGHPUT_MINUTES`] minutes each.
    throughput: Mutex<HashMap<Option<TenantName>, BTreeMap<u64, Throughput>>>,
}

/// One tenant's holders of jobs in flight: how many each holds, and until
/// when.
type Holders = HashMap<String, (u64, UnixMillis)>;

/// Published modules: version and bytes, by queue.
type Modules = HashMap<QueueName, (String, Arc<Vec<u8>>)>;

#[derive(Debug, Default)]
struct Inner {
    queues: BTreeMap<QueueName, Queue>,
    /// The counts of job trees with follow-ups not yet done, by root.
    trees: HashMap<JobId, Tree>,
    /// The last job number of each removed queue: a queue dispatched to
    /// again goes on from it, so no job id is ever given twice.
    removed: HashMap<QueueName, u64>,
    /// Queues paused: none of their jobs are claimed.
    paused: HashSet<QueueName>,
}

/// A job tree's count.
#[derive(Debug, Clone, Copy)]
struct Tree {
    /// Jobs it ever held, root and done ones included.
    jobs: u32,
    /// Follow-ups not yet done; at none the count is dropped, and the
    /// root's record keeps it (see [`Entry::tree_jobs`]).
    live: u32,
}

/// One queue: jobs by number, and one ordered index per state.
#[derive(Debug, Default)]
struct Queue {
    last_seq: u64,
    jobs: HashMap<u64, Entry>,
    /// Highest priority first, then dispatch order.
    pending: BTreeSet<(Reverse<i32>, u64)>,
    /// By due time.
    scheduled: BTreeSet<(UnixMillis, u64)>,
    /// By lease expiry.
    running: BTreeSet<(UnixMillis, u64)>,
    /// By the time they failed.
    failed: BTreeSet<(UnixMillis, u64)>,
    /// Unique key -> job holding it (pending, scheduled or running).
    unique: HashMap<String, u64>,
    done: u64,
}

#[derive(Debug)]
struct Entry {
    record: JobRecord,
    /// Fencing token of the current (or last) claim.
    token: u64,
    /// Lease expiry while running.
    lease_expires: UnixMillis,
    /// When it failed, while failed.
    failed_at: UnixMillis,
    /// A root's copy of its tree's job count (0: no follow-ups yet), so the
    /// count comes back if the root dispatches again after it was dropped.
    tree_jobs: u32,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend::new(Arc::new(SystemClock))
    }
}

impl MemoryBackend {
    /// An empty backend reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        MemoryBackend {
            inner: Mutex::new(Inner::default()),
            clock,
            work: Notify::new(),
            workers: Mutex::new(BTreeMap::new()),
            modules: Mutex::new(HashMap::new()),
            tenants: Mutex::new(BTreeMap::new()),
            buckets: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
            run_times: Mutex::new(HashMap::new()),
            throughput: Mutex::new(HashMap::new()),
        }
    }

    fn tenants_lock(&self) -> MutexGuard<'_, BTreeMap<TenantName, TenantRecord>> {
        crate::sync::lock(&self.tenants)
    }

    fn modules_lock(&self) -> MutexGuard<'_, Modules> {
        crate::sync::lock(&self.modules)
    }

    fn workers_lock(&self) -> MutexGuard<'_, BTreeMap<String, (WorkerInfo, UnixMillis)>> {
        crate::sync::lock(&self.workers)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-moved job: every
        // method validates before it mutates. Keep serving.
        crate::sync::lock(&self.inner)
    }
}

impl Queue {
    fn index_key(&self, seq: u64) -> Option<(JobState, IndexKey)> {
        let e = self.jobs.get(&seq)?;
        Some((e.record.state, e.index_key()))
    }

    /// Removes `seq` from the index of its state.
    fn unindex(&mut self, seq: u64) {
        if let Some((state, key)) = self.index_key(seq) {
            match (state, key) {
                (JobState::Pending, IndexKey::Priority(p)) => self.pending.remove(&(p, seq)),
                (JobState::Scheduled, IndexKey::Time(t)) => self.scheduled.remove(&(t, seq)),
                (JobState::Running, IndexKey::Time(t)) => self.running.remove(&(t, seq)),
                (JobState::Failed, IndexKey::Time(t)) => self.failed.remove(&(t, seq)),
                _ => false,
            };
        }
    }

    /// Adds `seq` to the index of its (already updated) state.
    fn index(&mut self, seq: u64) {
        if let Some((state, key)) = self.index_key(seq) {
            match (state, key) {
                (JobState::Pending, IndexKey::Priority(p)) => self.pending.insert((p, seq)),
                (JobState::Scheduled, IndexKey::Time(t)) => self.scheduled.insert((t, seq)),
                (JobState::Running, IndexKey::Time(t)) => self.running.insert((t, seq)),
                (JobState::Failed, IndexKey::Time(t)) => self.failed.insert((t, seq)),
                _ => false,
            };
        }
    }

    fn release_unique(&mut self, seq: u64) {
        if let Some(key) = self
            .jobs
            .get(&seq)
            .and_then(|e| e.record.unique_key.clone())
            && self.unique.get(&key) == Some(&seq)
        {
            self.unique.remove(&key);
        }
    }

    /// Moves due scheduled jobs to pending and takes back expired leases.
    fn promote(&mut self, now: UnixMillis) {
        while let Some(&(due, seq)) = self.scheduled.first() {
            if due > now {
                break;
            }
            self.unindex(seq);
            if let Some(e) = self.jobs.get_mut(&seq) {
                e.record.state = JobState::Pending;
            }
            self.index(seq);
        }
        while let Some(&(expires, seq)) = self.running.first() {
            if expires > now {
                break;
            }
            self.unindex(seq);
            let Some(e) = self.jobs.get_mut(&seq) else {
                continue;
            };
            let attempt = e.record.attempts;
            let reason = format!("worker lost: lease expired during attempt {attempt}");
            fail_attempt(&mut e.record, now, FailureKind::WorkerLost, reason);
            if e.record.attempts >= e.record.max_attempts {
                e.record.state = JobState::Failed;
                e.failed_at = now;
                self.release_unique(seq);
            } else {
                e.record.state = JobState::Pending;
            }
            self.index(seq);
        }
    }

    fn next_wake(&self) -> Option<UnixMillis> {
        let due = self.scheduled.first().map(|&(t, _)| t);
        let expiry = self.running.first().map(|&(t, _)| t);
        due.into_iter().chain(expiry).min()
    }
}

#[derive(Debug, Clone, Copy)]
enum IndexKey {
    Priority(Reverse<i32>),
    Time(UnixMillis),
}

impl Entry {
    fn index_key(&self) -> IndexKey {
        match self.record.state {
            JobState::Pending => IndexKey::Priority(Reverse(self.record.priority)),
            JobState::Scheduled => IndexKey::Time(self.record.run_at),
            JobState::Running => IndexKey::Time(self.lease_expires),
            JobState::Failed => IndexKey::Time(self.failed_at),
        }
    }
}

/// Ends the open attempt with `kind` and `error`, and makes them the job's.
fn fail_attempt(record: &mut JobRecord, now: UnixMillis, kind: FailureKind, error: String) {
    if let Some(last) = record.history.last_mut()
        && last.ended_at.is_none()
    {
        last.ended_at = Some(now);
        last.kind = Some(kind);
        last.outcome = Some(error.clone());
    }
    record.error_kind = Some(kind);
    record.error = Some(error);
}

impl Inner {
    /// Applies how an attempt ended if `lease` is still current; also
    /// whether the job is runnable again (waiting workers should look).
    fn complete(
        &mut self,
        lease: &Lease,
        completion: &Completion,
        log: &str,
        now: UnixMillis,
    ) -> (Ack, bool) {
        let seq = lease.id.seq();
        let Some(q) = self.queue_of(&lease.id) else {
            return (Ack::Stale, false);
        };
        match q.jobs.get(&seq) {
            Some(e) if e.record.state == JobState::Running && e.token == lease.token => {}
            _ => return (Ack::Stale, false),
        }
        q.unindex(seq);
        if let Completion::Done = completion {
            q.release_unique(seq);
            q.jobs.remove(&seq);
            q.done += 1;
            return (Ack::Applied(None), false);
        }
        let Some(e) = q.jobs.get_mut(&seq) else {
            return (Ack::Stale, false);
        };
        match completion {
            Completion::Done => {}
            Completion::Release => {
                e.record.attempts = e.record.attempts.saturating_sub(1);
                e.record.history.pop();
                e.record.state = JobState::Pending;
            }
            Completion::Retry { kind, error, delay } => {
                fail_attempt(&mut e.record, now, *kind, error.clone());
                e.record.log = log.to_owned();
                if e.record.attempts >= e.record.max_attempts {
                    e.record.state = JobState::Failed;
                    e.failed_at = now;
                } else if delay.is_zero() {
                    e.record.state = JobState::Pending;
                    e.record.run_at = now;
                } else {
                    e.record.state = JobState::Scheduled;
                    e.record.run_at = now.saturating_add(millis(*delay));
                }
            }
            Completion::Fail { kind, error } => {
                fail_attempt(&mut e.record, now, *kind, error.clone());
                e.record.log = log.to_owned();
                e.record.state = JobState::Failed;
                e.failed_at = now;
            }
        }
        let state = e.record.state;
        if state == JobState::Failed {
            q.release_unique(seq);
        }
        q.index(seq);
        (Ack::Applied(Some(state)), state != JobState::Failed)
    }

    fn queue_of(&mut self, id: &JobId) -> Option<&mut Queue> {
        self.queues.get_mut(id.queue())
    }

    fn entry_mut(&mut self, id: &JobId) -> Option<&mut Entry> {
        self.queue_of(id).and_then(|q| q.jobs.get_mut(&id.seq()))
    }

    /// Enqueues a checked job, or returns the live job holding its unique
    /// key.
    fn dispatch(&mut self, job: NewJob, now: UnixMillis, lineage: Option<Lineage>) -> JobId {
        let q = self
            .queues
            .entry(job.queue.clone())
            .or_insert_with(|| Queue {
                last_seq: self.removed.remove(&job.queue).unwrap_or(0),
                ..Queue::default()
            });
        if let Some(key) = &job.options.unique_key
            && let Some(&seq) = q.unique.get(key)
        {
            return JobId::new(job.queue, seq);
        }
        q.last_seq += 1;
        let seq = q.last_seq;
        let run_at = job.options.run_at.due(now);
        let state = if run_at > now {
            JobState::Scheduled
        } else {
            JobState::Pending
        };
        let id = JobId::new(job.queue, seq);
        if let Some(key) = &job.options.unique_key {
            q.unique.insert(key.clone(), seq);
        }
        let record = JobRecord {
            id: id.clone(),
            payload: job.payload,
            state,
            priority: job.options.priority,
            attempts: 0,
            max_attempts: job.options.max_attempts.get(),
            unique_key: job.options.unique_key,
            lineage,
            created_at: now,
            run_at,
            error_kind: None,
            error: None,
            history: Vec::new(),
            log: String::new(),
        };
        q.jobs.insert(
            seq,
            Entry {
                record,
                token: 0,
                lease_expires: 0,
                failed_at: 0,
                tree_jobs: 0,
            },
        );
        q.index(seq);
        id
    }

    /// See [`JobQueue::dispatch_follow_up`]: one critical section, so
    /// the key lookup, the budget and the enqueue are one step.
    fn dispatch_follow_up(
        &mut self,
        mut job: NewJob,
        lineage: Lineage,
        budget: TreeBudget,
        now: UnixMillis,
    ) -> Result<JobId, QueueError> {
        job.check(now)?;
        if let Some(key) = job.options.unique_key.take() {
            let key = lineage.scoped_key(&key);
            if let Some(&seq) = self.queues.get(&job.queue).and_then(|q| q.unique.get(&key)) {
                return Ok(JobId::new(job.queue, seq));
            }
            job.options.unique_key = Some(key);
        }
        let root = lineage.root.clone();
        if lineage.depth > budget.max_depth {
            return Err(QueueError::TreeTooDeep {
                root,
                queue: lineage.parent.queue().clone(),
                depth: lineage.depth,
                limit: budget.max_depth,
            });
        }
        let jobs = match self.trees.get(&root) {
            Some(tree) => tree.jobs,
            // No count yet, or dropped when its follow-ups were all done:
            // the root is dispatching, and its record has the count.
            None if lineage.depth == 1 => self.entry_mut(&root).map_or(1, |e| e.tree_jobs.max(1)),
            None => return Err(QueueError::TreeClosed { root }),
        };
        if jobs >= budget.max_jobs {
            return Err(QueueError::TreeFull {
                root,
                queue: lineage.parent.queue().clone(),
                jobs,
                limit: budget.max_jobs,
            });
        }
        let id = self.dispatch(job, now, Some(lineage));
        let tree = self
            .trees
            .entry(root.clone())
            .or_insert(Tree { jobs, live: 0 });
        tree.jobs = jobs + 1;
        tree.live += 1;
        if let Some(e) = self.entry_mut(&root) {
            e.tree_jobs = jobs + 1;
        }
        Ok(id)
    }

    /// A follow-up of `root`'s tree is gone; the last one drops the count.
    fn leave_tree(&mut self, root: &JobId) {
        if let Some(tree) = self.trees.get_mut(root) {
            tree.live = tree.live.saturating_sub(1);
            if tree.live == 0 {
                self.trees.remove(root);
            }
        }
    }
}

#[async_trait]
impl JobQueue for MemoryBackend {
    async fn dispatch(&self, job: NewJob) -> Result<JobId, QueueError> {
        let now = self.clock.now();
        job.check(now)?;
        let id = self.lock().dispatch(job, now, None);
        self.work.notify_waiters();
        Ok(id)
    }

    async fn dispatch_many(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>, QueueError> {
        let now = self.clock.now();
        // All checked before any is enqueued: one bad job enqueues nothing.
        for job in &jobs {
            job.check(now)?;
        }
        let ids = {
            let mut inner = self.lock();
            jobs.into_iter()
                .map(|job| inner.dispatch(job, now, None))
                .collect()
        };
        self.work.notify_waiters();
        Ok(ids)
    }

    async fn dispatch_follow_up(
        &self,
        job: NewJob,
        lineage: Lineage,
        budget: TreeBudget,
    ) -> Result<JobId, QueueError> {
        let now = self.clock.now();
        let id = self.lock().dispatch_follow_up(job, lineage, budget, now)?;
        self.work.notify_waiters();
        Ok(id)
    }

    async fn leave_tree(&self, lineage: &Lineage) -> Result<(), QueueError> {
        self.lock().leave_tree(&lineage.root);
        Ok(())
    }

    async fn claim(
        &self,
        queues: &[QueueName],
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Claim>, QueueError> {
        let now = self.clock.now();
        let expires_at = now.saturating_add(millis(lease));
        let mut claims = Vec::new();
        let mut inner = self.lock();
        for name in queues {
            let paused = inner.paused.contains(name);
            let Some(q) = inner.queues.get_mut(name) else {
                continue;
            };
            q.promote(now);
            if paused {
                continue;
            }
            while claims.len() < max {
                let Some((_, seq)) = q.pending.pop_first() else {
                    break;
                };
                let Some(e) = q.jobs.get_mut(&seq) else {
                    continue;
                };
                e.record.state = JobState::Running;
                e.record.attempts += 1;
                e.record.history.push(AttemptRecord {
                    number: e.record.attempts,
                    started_at: now,
                    ended_at: None,
                    kind: None,
                    outcome: None,
                });
                e.token += 1;
                e.lease_expires = expires_at;
                let lease = Lease {
                    id: e.record.id.clone(),
                    token: e.token,
                    expires_at,
                };
                claims.push(Claim {
                    job: e.record.clone(),
                    lease,
                });
                q.running.insert((expires_at, seq));
            }
        }
        Ok(claims)
    }

    async fn wait_for_work(
        &self,
        queues: &[QueueName],
        timeout: Duration,
    ) -> Result<(), QueueError> {
        let notified = self.work.notified();
        tokio::pin!(notified);
        // Registered before looking, so a dispatch after the look still wakes us.
        notified.as_mut().enable();
        let now = self.clock.now();
        let mut wait = timeout;
        {
            let inner = self.lock();
            let unpaused = queues.iter().filter(|name| !inner.paused.contains(*name));
            for q in unpaused.filter_map(|name| inner.queues.get(name)) {
                if !q.pending.is_empty() {
                    return Ok(());
                }
                if let Some(at) = q.next_wake() {
                    wait = wait.min(Duration::from_millis(at.saturating_sub(now)));
                }
            }
        }
        if wait.is_zero() {
            return Ok(());
        }
        let _ = tokio::time::timeout(wait, notified).await;
        Ok(())
    }

    async fn due(&self) -> Result<Vec<DueQueue>, QueueError> {
        let now = self.clock.now();
        let inner = self.lock();
        Ok(inner
            .queues
            .iter()
            .filter(|(name, _)| !inner.paused.contains(*name))
            .filter(|(_, q)| !q.pending.is_empty() || q.next_wake().is_some_and(|at| at <= now))
            .map(|(name, _)| DueQueue {
                queue: name.clone(),
                marks: 0,
            })
            .collect())
    }

    async fn renew(&self, lease: &Lease, extend: Duration) -> Result<Option<Lease>, QueueError> {
        let now = self.clock.now();
        let mut inner = self.lock();
        let Some(q) = inner.queue_of(&lease.id) else {
            return Ok(None);
        };
        let seq = lease.id.seq();
        match q.jobs.get(&seq) {
            Some(e) if e.record.state == JobState::Running && e.token == lease.token => {}
            _ => return Ok(None),
        }
        q.unindex(seq);
        let expires_at = now.saturating_add(millis(extend));
        if let Some(e) = q.jobs.get_mut(&seq) {
            e.lease_expires = expires_at;
        }
        q.index(seq);
        Ok(Some(Lease {
            expires_at,
            ..lease.clone()
        }))
    }

    async fn complete(
        &self,
        lease: &Lease,
        completion: Completion,
        log: String,
    ) -> Result<Ack, QueueError> {
        let now = self.clock.now();
        let (ack, wake) = self.lock().complete(lease, &completion, &log, now);
        if wake {
            self.work.notify_waiters();
        }
        Ok(ack)
    }

    /// One lock for the whole batch, and one wake-up.
    async fn complete_many(
        &self,
        items: &[(Lease, Completion, String)],
    ) -> Result<Vec<Ack>, QueueError> {
        let now = self.clock.now();
        let mut wake = false;
        let acks = {
            let mut inner = self.lock();
            items
                .iter()
                .map(|(lease, completion, log)| {
                    let (ack, woke) = inner.complete(lease, completion, log, now);
                    wake |= woke;
                    ack
                })
                .collect()
        };
        if wake {
            self.work.notify_waiters();
        }
        Ok(acks)
    }

    async fn get(&self, id: &JobId) -> Result<Option<JobRecord>, QueueError> {
        let mut inner = self.lock();
        Ok(inner
            .queue_of(id)
            .and_then(|q| q.jobs.get(&id.seq()))
            .map(|e| e.record.clone()))
    }

    async fn list(
        &self,
        queue: &QueueName,
        state: JobState,
        page: Page,
    ) -> Result<Vec<JobRecord>, QueueError> {
        let inner = self.lock();
        let Some(q) = inner.queues.get(queue) else {
            return Ok(Vec::new());
        };
        let seqs: Box<dyn Iterator<Item = u64>> = match state {
            JobState::Pending => Box::new(q.pending.iter().map(|&(_, s)| s)),
            JobState::Scheduled => Box::new(q.scheduled.iter().map(|&(_, s)| s)),
            JobState::Running => Box::new(q.running.iter().map(|&(_, s)| s)),
            JobState::Failed => Box::new(q.failed.iter().map(|&(_, s)| s)),
        };
        Ok(seqs
            .skip(page.offset)
            .take(page.limit)
            .filter_map(|s| q.jobs.get(&s).map(|e| e.record.clone()))
            .collect())
    }

    async fn counts(&self, queue: &QueueName) -> Result<StateCounts, QueueError> {
        let inner = self.lock();
        Ok(inner
            .queues
            .get(queue)
            .map_or_else(StateCounts::default, |q| StateCounts {
                pending: q.pending.len() as u64,
                scheduled: q.scheduled.len() as u64,
                running: q.running.len() as u64,
                failed: q.failed.len() as u64,
                done: q.done,
            }))
    }

    async fn queues(&self) -> Result<Vec<QueueName>, QueueError> {
        Ok(self.lock().queues.keys().cloned().collect())
    }

    async fn retry(&self, id: &JobId) -> Result<(), QueueError> {
        let now = self.clock.now();
        let mut inner = self.lock();
        let q = inner
            .queue_of(id)
            .ok_or_else(|| QueueError::NoSuchJob(id.clone()))?;
        let seq = id.seq();
        let e = q
            .jobs
            .get(&seq)
            .ok_or_else(|| QueueError::NoSuchJob(id.clone()))?;
        if e.record.state != JobState::Failed {
            return Err(QueueError::WrongState {
                id: id.clone(),
                state: e.record.state,
                action: "retry",
                expected: "failed",
            });
        }
        q.unindex(seq);
        let key = {
            let Some(e) = q.jobs.get_mut(&seq) else {
                return Err(QueueError::NoSuchJob(id.clone()));
            };
            e.record.state = JobState::Pending;
            e.record.attempts = 0;
            e.record.run_at = now;
            e.record.unique_key.clone()
        };
        if let Some(key) = key {
            q.unique.entry(key).or_insert(seq);
        }
        q.index(seq);
        drop(inner);
        self.work.notify_waiters();
        Ok(())
    }

    async fn delete(&self, id: &JobId) -> Result<bool, QueueError> {
        let mut inner = self.lock();
        let Some(q) = inner.queue_of(id) else {
            return Ok(false);
        };
        let seq = id.seq();
        match q.jobs.get(&seq).map(|e| e.record.state) {
            None => Ok(false),
            Some(JobState::Running) => Err(QueueError::WrongState {
                id: id.clone(),
                state: JobState::Running,
                action: "delete",
                expected: "pending, scheduled or failed",
            }),
            Some(_) => {
                q.unindex(seq);
                q.release_unique(seq);
                let gone = q.jobs.remove(&seq);
                if let Some(lineage) = gone.and_then(|e| e.record.lineage) {
                    inner.leave_tree(&lineage.root);
                }
                Ok(true)
            }
        }
    }

    async fn set_paused(&self, queue: &QueueName, paused: bool) -> Result<bool, QueueError> {
        let changed = {
            let mut inner = self.lock();
            if paused {
                inner.paused.insert(queue.clone())
            } else {
                inner.paused.remove(queue)
            }
        };
        if changed && !paused {
            self.work.notify_waiters();
        }
        Ok(changed)
    }

    async fn paused(&self, queues: &[QueueName]) -> Result<Vec<bool>, QueueError> {
        let inner = self.lock();
        Ok(queues.iter().map(|q| inner.paused.contains(q)).collect())
    }

    async fn purge(&self, queue: &QueueName) -> Result<u64, QueueError> {
        let mut inner = self.lock();
        let Some(q) = inner.queues.get_mut(queue) else {
            return Ok(0);
        };
        let doomed: Vec<u64> = q
            .jobs
            .iter()
            .filter(|(_, e)| e.record.state != JobState::Running)
            .map(|(&s, _)| s)
            .collect();
        let mut left = Vec::new();
        for &seq in &doomed {
            q.unindex(seq);
            q.release_unique(seq);
            if let Some(lineage) = q.jobs.remove(&seq).and_then(|e| e.record.lineage) {
                left.push(lineage.root);
            }
        }
        for root in &left {
            inner.leave_tree(root);
        }
        Ok(doomed.len() as u64)
    }

    async fn remove_queue(&self, queue: &QueueName) -> Result<u64, QueueError> {
        let mut inner = self.lock();
        let Some(q) = inner.queues.get(queue) else {
            return Ok(0);
        };
        if !q.running.is_empty() {
            return Err(QueueError::QueueBusy {
                queue: queue.clone(),
            });
        }
        let Some(q) = inner.queues.remove(queue) else {
            return Ok(0);
        };
        // Trees rooted here go with their roots; a follow-up here leaves
        // its tree, wherever the root is.
        inner.trees.retain(|root, _| root.queue() != queue);
        inner.removed.insert(queue.clone(), q.last_seq);
        inner.paused.remove(queue);
        for lineage in q.jobs.values().filter_map(|e| e.record.lineage.as_ref()) {
            inner.leave_tree(&lineage.root);
        }
        Ok(q.jobs.len() as u64)
    }
}

impl MemoryBackend {
    /// `f` on `tenant`'s holders of jobs in flight, those whose time
    /// passed dropped first.
    fn with_flights<T>(&self, tenant: &TenantName, f: impl FnOnce(&mut Holders) -> T) -> T {
        let now = self.clock.now();
        let mut all = crate::sync::lock(&self.flights);
        let holders = all.entry(tenant.clone()).or_default();
        holders.retain(|_, (n, until)| *n > 0 && *until > now);
        let out = f(holders);
        if holders.is_empty() {
            all.remove(tenant);
        }
        out
    }
}

#[async_trait]
impl TenantStore for MemoryBackend {
    async fn write_tenant(
        &self,
        record: &TenantRecord,
        replacing: Option<&TenantRecord>,
    ) -> Result<bool, QueueError> {
        let mut tenants = self.tenants_lock();
        let stored = tenants.get(&record.name).map(TenantRecord::token_hash);
        if stored != replacing.map(TenantRecord::token_hash) {
            return Ok(false);
        }
        tenants.insert(record.name.clone(), record.clone());
        Ok(true)
    }

    async fn tenant_record(&self, tenant: &TenantName) -> Result<Option<TenantRecord>, QueueError> {
        Ok(self.tenants_lock().get(tenant).cloned())
    }

    async fn tenant_records(&self) -> Result<Vec<TenantRecord>, QueueError> {
        Ok(self.tenants_lock().values().cloned().collect())
    }

    async fn remove_tenant(&self, tenant: &TenantName) -> Result<bool, QueueError> {
        crate::sync::lock(&self.buckets).remove(tenant);
        crate::sync::lock(&self.flights).remove(tenant);
        crate::sync::lock(&self.run_times).remove(tenant);
        crate::sync::lock(&self.throughput).remove(&Some(tenant.clone()));
        Ok(self.tenants_lock().remove(tenant).is_some())
    }

    async fn take_dispatch(
        &self,
        tenant: &TenantName,
        jobs: u64,
        rate: Rate,
    ) -> Result<Taken, QueueError> {
        let now = self.clock.now();
        let mut buckets = crate::sync::lock(&self.buckets);
        let burst = f64::from(rate.burst);
        let (tokens, at) = buckets.entry(tenant.clone()).or_insert((burst, now));
        let (taken, left) = super::quota::take(*tokens, *at, now, jobs, rate);
        *tokens = left;
        *at = (*at).max(now);
        Ok(taken)
    }

    async fn dispatch_tokens(&self, tenant: &TenantName, rate: Rate) -> Result<f64, QueueError> {
        let now = self.clock.now();
        let buckets = crate::sync::lock(&self.buckets);
        let burst = f64::from(rate.burst);
        let (tokens, at) = buckets.get(tenant).copied().unwrap_or((burst, now));
        Ok(super::quota::take(tokens, at, now, 0, rate).1)
    }

    async fn take_flight(
        &self,
        tenant: &TenantName,
        holder: &str,
        want: u64,
        max: u64,
        until: UnixMillis,
    ) -> Result<u64, QueueError> {
        Ok(self.with_flights(tenant, |holders| {
            let total: u64 = holders.values().map(|(n, _)| n).sum();
            let granted = want.min(max.saturating_sub(total));
            if granted > 0 {
                let mine = holders.entry(holder.to_string()).or_insert((0, until));
                *mine = (mine.0 + granted, mine.1.max(until));
            }
            granted
        }))
    }

    async fn give_flight(
        &self,
        tenant: &TenantName,
        holder: &str,
        n: u64,
    ) -> Result<(), QueueError> {
        self.with_flights(tenant, |holders| {
            if let Some(mine) = holders.get_mut(holder) {
                mine.0 = mine.0.saturating_sub(n);
                if mine.0 == 0 {
                    holders.remove(holder);
                }
            }
        });
        Ok(())
    }

    async fn hold_flight(
        &self,
        tenant: &TenantName,
        holder: &str,
        until: UnixMillis,
    ) -> Result<(), QueueError> {
        self.with_flights(tenant, |holders| {
            if let Some(mine) = holders.get_mut(holder) {
                mine.1 = mine.1.max(until);
            }
        });
        Ok(())
    }

    async fn in_flight(&self, tenant: &TenantName) -> Result<u64, QueueError> {
        Ok(self.with_flights(tenant, |holders| holders.values().map(|(n, _)| n).sum()))
    }

    async fn refund_dispatch(
        &self,
        tenant: &TenantName,
        jobs: u64,
        rate: Rate,
    ) -> Result<(), QueueError> {
        if let Some((tokens, _)) = crate::sync::lock(&self.buckets).get_mut(tenant) {
            *tokens = (*tokens + jobs as f64).min(f64::from(rate.burst));
        }
        Ok(())
    }

    async fn charge_run_time(
        &self,
        tenant: &TenantName,
        period: UnixMillis,
        _period_ms: u64,
        ms: u64,
    ) -> Result<u64, QueueError> {
        let mut all = crate::sync::lock(&self.run_times);
        let (held, used) = all.get(tenant).copied().unwrap_or((0, 0));
        let used = if period > held { 0 } else { used };
        if ms > 0 {
            all.insert(tenant.clone(), (period.max(held), used.saturating_add(ms)));
        }
        Ok(used.saturating_add(ms))
    }

    async fn add_throughput(
        &self,
        minute: u64,
        counts: &[(TenantName, Throughput)],
    ) -> Result<(), QueueError> {
        let oldest = oldest_kept_minute(self.clock.now());
        let mut all = crate::sync::lock(&self.throughput);
        let mut add = |scope: Option<TenantName>, n: Throughput| {
            let minutes = all.entry(scope).or_default();
            *minutes.entry(minute).or_default() += n;
            // Minutes no longer kept go, and so does the oldest of more
            // than are kept (added by a clock ahead of this one).
            while minutes.len() > THROUGHPUT_MINUTES
                || minutes.first_key_value().is_some_and(|(&m, _)| m < oldest)
            {
                minutes.pop_first();
            }
        };
        let mut fleet = Throughput::default();
        for (tenant, n) in counts {
            fleet += *n;
            add(Some(tenant.clone()), *n);
        }
        if !counts.is_empty() {
            add(None, fleet);
        }
        Ok(())
    }

    async fn throughput(
        &self,
        tenant: Option<&TenantName>,
        from_minute: u64,
        minutes: usize,
    ) -> Result<Vec<Throughput>, QueueError> {
        let window = throughput_window(from_minute, minutes, self.clock.now());
        let all = crate::sync::lock(&self.throughput);
        let held = all.get(&tenant.cloned());
        Ok(window
            .map(|minute| {
                minute
                    .and_then(|m| held.and_then(|h| h.get(&m)).copied())
                    .unwrap_or_default()
            })
            .collect())
    }
}

#[async_trait]
impl WorkerRegistry for MemoryBackend {
    async fn heartbeat(&self, worker: &WorkerInfo, ttl: Duration) -> Result<(), QueueError> {
        let expires = self.clock.now().saturating_add(millis(ttl));
        self.workers_lock()
            .insert(worker.id.clone(), (worker.clone(), expires));
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, QueueError> {
        let now = self.clock.now();
        let mut workers = self.workers_lock();
        workers.retain(|_, (_, expires)| *expires > now);
        Ok(workers.values().map(|(w, _)| w.clone()).collect())
    }

    async fn unregister(&self, id: &str) -> Result<(), QueueError> {
        self.workers_lock().remove(id);
        Ok(())
    }
}

#[async_trait]
impl ModuleStore for MemoryBackend {
    async fn publish_module(&self, queue: &QueueName, bytes: &[u8]) -> Result<String, QueueError> {
        let version = module_version(bytes);
        self.modules_lock()
            .insert(queue.clone(), (version.clone(), Arc::new(bytes.to_vec())));
        Ok(version)
    }

    async fn module_versions(
        &self,
        queues: &[QueueName],
    ) -> Result<Vec<Option<String>>, QueueError> {
        let modules = self.modules_lock();
        Ok(queues
            .iter()
            .map(|q| modules.get(q).map(|(v, _)| v.clone()))
            .collect())
    }

    async fn module(&self, queue: &QueueName) -> Result<Option<(String, Vec<u8>)>, QueueError> {
        Ok(self
            .modules_lock()
            .get(queue)
            .map(|(v, bytes)| (v.clone(), bytes.to_vec())))
    }

    async fn withdraw_module(&self, queue: &QueueName) -> Result<bool, QueueError> {
        Ok(self.modules_lock().remove(queue).is_some())
    }

    async fn module_sizes(&self, queues: &[QueueName]) -> Result<Vec<Option<u64>>, QueueError> {
        let modules = self.modules_lock();
        Ok(queues
            .iter()
            .map(|q| modules.get(q).map(|(_, bytes)| bytes.len() as u64))
            .collect())
    }

    async fn published(&self) -> Result<Vec<QueueName>, QueueError> {
        let mut queues: Vec<QueueName> = self.modules_lock().keys().cloned().collect();
        queues.sort();
        Ok(queues)
    }
}
