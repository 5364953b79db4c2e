//! The worker loop: claim jobs in batches, run each in a fresh sandbox
//! instance with up to `concurrency` in flight, renew their leases while
//! they run, and record how each attempt ended.
//!
//! With several queues, each claim round shares the free room between them
//! by weight, under each queue's cap (see [`fair`]).
//!
//! Shutdown is a future passed in (as in mini-redis): when it resolves the
//! worker stops claiming, lets in-flight jobs finish within the grace
//! period, then hands the rest back to the queue without counting the
//! attempt.

mod fair;
mod reload;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::error::{InputError, QueueError};
use crate::handlers::HandlerRegistry;
use crate::job::{FailureKind, JobRecord, JobState, MAX_DELAY, QueueName, check_delay};
use crate::metrics::Metrics;
use crate::queue::clock::millis;
use crate::queue::{
    Ack, Backend, Claim, Clock, Completion, JobQueue, Lease, SystemClock, WorkerInfo,
    WorkerRegistry,
};
use crate::sandbox::{Capabilities, RunOutcome, RunReport};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Queues to serve, sharing the worker by their `weight` and capped by
    /// their `concurrency` settings; empty means every queue the backend
    /// knows (the in-memory sync mode uses this).
    pub queues: Vec<QueueName>,
    /// Jobs in flight at once. Default 16.
    pub concurrency: usize,
    /// Most jobs taken in one claim. Default 32.
    pub batch: usize,
    /// Lease per claim, renewed every third of it while the job runs.
    /// Default 30 s.
    pub lease: Duration,
    /// Stop after claiming this many jobs (for a cron entry that runs a worker for a bounded batch).
    pub max_jobs: Option<u64>,
    /// Stop when nothing is pending, scheduled or in flight.
    pub drain: bool,
    /// With `drain`, stop once nothing is pending or in flight, and leave
    /// scheduled jobs (delayed follow-ups, retries a handler put off) for
    /// later instead of waiting for them: the sync mode, which never waits
    /// on the clock.
    pub leave_scheduled: bool,
    /// How long in-flight jobs may run on after shutdown before they are
    /// handed back. Default 10 s.
    pub grace: Duration,
    /// Retry at once instead of after the backoff (the sync mode). A
    /// handler's own retry delay still holds.
    pub retry_at_once: bool,
    /// Announce the worker in the backend's registry (`runtime workers`)
    /// this often; the record expires after three missed beats.
    pub heartbeat: Option<Duration>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            queues: Vec::new(),
            concurrency: 16,
            batch: 32,
            lease: Duration::from_secs(30),
            max_jobs: None,
            drain: false,
            leave_scheduled: false,
            grace: Duration::from_secs(10),
            retry_at_once: false,
            heartbeat: None,
        }
    }
}

/// One finished attempt, as reported to an observer.
#[derive(Debug, Clone)]
pub struct JobEvent {
    /// The job as claimed (`attempts` counts this attempt).
    pub job: JobRecord,
    /// What the sandbox reported; `None` if the job was handed back.
    pub report: Option<RunReport>,
    /// What recording it did: the job's new state (`None`: done), or stale.
    pub ack: Ack,
}

/// Counts over a worker's run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Jobs claimed.
    pub claimed: u64,
    /// Attempts that finished the job.
    pub done: u64,
    /// Attempts that will run again.
    pub retried: u64,
    /// Attempts that failed their job for good.
    pub failed: u64,
    /// Jobs handed back at shutdown.
    pub released: u64,
    /// Acks refused because the lease had moved on.
    pub stale: u64,
}

impl WorkerStats {
    fn record(&mut self, done: Result<Finished, tokio::task::JoinError>) {
        match done {
            Ok(f) => self.add(f.ack, f.released),
            // A job task cannot panic on guest input; count it as stale if
            // a host bug ever makes one, rather than taking the worker down.
            Err(_) => self.stale += 1,
        }
    }

    fn add(&mut self, ack: Ack, released: bool) {
        match ack {
            Ack::Stale => self.stale += 1,
            _ if released => self.released += 1,
            Ack::Applied(None) => self.done += 1,
            Ack::Applied(Some(JobState::Failed)) => self.failed += 1,
            Ack::Applied(Some(_)) => self.retried += 1,
        }
    }
}

/// A worker over one backend and one handler registry.
#[derive(Debug)]
pub struct Worker {
    backend: Backend,
    registry: Arc<HandlerRegistry>,
    config: WorkerConfig,
    events: Option<mpsc::UnboundedSender<JobEvent>>,
    metrics: Arc<Metrics>,
    /// What every attempt's guest may reach: follow-ups into the job queue.
    caps: Capabilities,
}

/// What one job task returns.
struct Finished {
    ack: Ack,
    released: bool,
}

impl Worker {
    /// A worker; nothing runs until [`Worker::run`].
    pub fn new(backend: Backend, registry: Arc<HandlerRegistry>, config: WorkerConfig) -> Self {
        Worker {
            caps: Capabilities::dispatch_to(backend.jobs.clone()),
            backend,
            registry,
            config,
            events: None,
            metrics: Arc::new(Metrics::default()),
        }
    }

    /// Counts into `metrics` (shared with whoever serves them).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Sends a [`JobEvent`] for every finished attempt to `events`.
    pub fn with_events(mut self, events: mpsc::UnboundedSender<JobEvent>) -> Self {
        self.events = Some(events);
        self
    }

    async fn queues(&self) -> Result<Vec<QueueName>, QueueError> {
        if self.config.queues.is_empty() {
            self.backend.jobs.queues().await
        } else {
            Ok(self.config.queues.clone())
        }
    }

    /// Whether draining is over: nothing pending (nor scheduled, unless
    /// those are left for later) in `queues`.
    async fn nothing_left(&self, queues: &[QueueName]) -> Result<bool, QueueError> {
        for q in queues {
            let c = self.backend.jobs.counts(q).await?;
            let scheduled = if self.config.leave_scheduled {
                0
            } else {
                c.scheduled
            };
            if c.pending + scheduled > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Claims up to `room` jobs (within `budget`), shared between the
    /// served queues by weight and under their caps, starting the round at
    /// queue number `turn`.
    async fn claim(
        &self,
        room: usize,
        budget: u64,
        running: &HashMap<QueueName, usize>,
        turn: usize,
    ) -> Result<Round, QueueError> {
        let mut queues = self.queues().await?;
        if !queues.is_empty() {
            let first = turn % queues.len();
            queues.rotate_left(first);
        }
        let standing: Vec<fair::Standing> = queues
            .iter()
            .map(|q| {
                let settings = self.registry.settings(q);
                let busy = running.get(q).copied().unwrap_or(0);
                fair::Standing {
                    weight: settings.weight,
                    free: settings
                        .concurrency
                        .map_or(usize::MAX, |cap| cap.saturating_sub(busy)),
                }
            })
            .collect();
        let room = room
            .min(self.config.batch.max(1))
            .min(usize::try_from(budget).unwrap_or(usize::MAX));
        let wants = fair::shares(room, &standing);
        let mut claims = Vec::new();
        // Queues that took their whole share and may take more.
        let mut hungry = Vec::new();
        for ((queue, s), &want) in queues.iter().zip(&standing).zip(&wants) {
            if want == 0 {
                continue;
            }
            let got = self.claim_from(queue, want, &mut claims).await?;
            if got == want && s.free > want {
                hungry.push((queue, s.free - want));
            }
        }
        for (queue, free) in hungry {
            let left = room.saturating_sub(claims.len()).min(free);
            if left == 0 {
                break;
            }
            self.claim_from(queue, left, &mut claims).await?;
        }
        let mut took = HashMap::<&QueueName, usize>::new();
        for claim in &claims {
            *took.entry(claim.job.id.queue()).or_default() += 1;
        }
        let capped = queues
            .iter()
            .zip(&standing)
            .any(|(q, s)| s.free < usize::MAX && took.get(q).copied().unwrap_or(0) >= s.free);
        let took_all = claims.len() >= room;
        let open = queues
            .into_iter()
            .zip(&standing)
            .filter(|(_, s)| s.free > 0)
            .map(|(q, _)| q)
            .collect();
        Ok(Round {
            open,
            claims,
            took_all,
            capped,
        })
    }

    /// Claims up to `n` jobs of `queue` into `claims`; returns how many. An
    /// error after earlier claims in the round keeps those (they are ours
    /// now) and ends the round; the next round meets the error again.
    async fn claim_from(
        &self,
        queue: &QueueName,
        n: usize,
        claims: &mut Vec<Claim>,
    ) -> Result<usize, QueueError> {
        match self
            .backend
            .jobs
            .claim(std::slice::from_ref(queue), n, self.config.lease)
            .await
        {
            Ok(got) => {
                let count = got.len();
                claims.extend(got);
                Ok(count)
            }
            Err(_) if !claims.is_empty() => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Runs until `shutdown` resolves (or, with `max_jobs` or `drain`, until
    /// the work is done). Returns what it did. Backend errors do not end
    /// it: it logs them and tries again with backoff until the backend is
    /// back.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<WorkerStats, QueueError> {
        let concurrency = self.config.concurrency.max(1);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (acks, ack_rx) = mpsc::unbounded_channel();
        let batcher = tokio::spawn(ack_batcher(self.backend.jobs.clone(), ack_rx));
        // Published modules first, so the first jobs already run them.
        let mut deployments = reload::Deployments::default();
        deployments
            .sync(&self.registry, &*self.backend.modules, &self.config.queues)
            .await;
        let reloader = tokio::spawn(reload::run(
            self.registry.clone(),
            self.backend.modules.clone(),
            self.config.queues.clone(),
            deployments,
        ));
        let identity = self.config.heartbeat.map(|every| {
            let info = self.identity();
            let id = info.id.clone();
            let task = tokio::spawn(heartbeat(
                self.backend.workers.clone(),
                self.metrics.clone(),
                info,
                every,
            ));
            (id, task)
        });
        let mut inflight = InFlight::default();
        let mut stats = WorkerStats::default();
        let mut turn = 0usize;
        tokio::pin!(shutdown);
        let mut shutting_down = false;
        let mut outage = Outage::default();
        // Whether the last claim took all it could (the queues may have
        // more); if not, wait for work before claiming again.
        let mut hungry = true;
        // Whether a queue's cap held the last claim back: a finishing job
        // of that queue makes room for it.
        let mut capped = false;
        // Whether room has waited long enough for a batch.
        let mut lingered = false;
        let mut open: Vec<QueueName> = Vec::new();
        loop {
            while let Some(done) = inflight.try_join_next() {
                stats.record(done);
                hungry |= capped;
            }
            let budget = self
                .config
                .max_jobs
                .map_or(u64::MAX, |m| m.saturating_sub(stats.claimed));
            if budget == 0 {
                break;
            }
            let room = concurrency - inflight.len().min(concurrency);
            // Claim in batches: with jobs in flight, wait until a batch's
            // worth of room is free (or LINGER has passed) rather than
            // claiming one job per finished one.
            let refill = self.config.batch.min(concurrency / 2).max(1);
            let claiming =
                room > 0 && hungry && (room >= refill || inflight.is_empty() || lingered);
            let mut waited = Ok(());
            if claiming {
                lingered = false;
                turn = turn.wrapping_add(1);
                match self.claim(room, budget, &inflight.per_queue, turn).await {
                    Ok(round) => {
                        outage.recovered();
                        hungry = round.took_all;
                        capped = round.capped;
                        open = round.open;
                        let claimed = !round.claims.is_empty();
                        stats.claimed += round.claims.len() as u64;
                        for claim in round.claims {
                            let queue = claim.job.id.queue().clone();
                            let task = self.job_task(claim, stop_rx.clone(), acks.clone());
                            inflight.spawn(queue, task);
                        }
                        if claimed && hungry {
                            continue;
                        }
                    }
                    Err(e) => waited = Err(e),
                }
            }
            if self.config.drain && inflight.is_empty() && !hungry && waited.is_ok() {
                match self.nothing_left(&open).await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => waited = Err(e),
                }
            }
            // With the backend unreachable, pause (a job may finish or a
            // shutdown arrive meanwhile), then try again.
            let pause = waited.err().map(|e| outage.failed(&e));
            let lingering = room > 0 && hungry && !claiming && pause.is_none();
            let waiting = room > 0 && !hungry && !open.is_empty() && pause.is_none();
            tokio::select! {
                () = &mut shutdown => {
                    shutting_down = true;
                    break;
                }
                Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                    stats.record(done);
                    hungry |= capped;
                }
                () = tokio::time::sleep(pause.unwrap_or_default()), if pause.is_some() => {}
                () = tokio::time::sleep(LINGER), if lingering => lingered = true,
                // Only queues with room are worth waiting on; with none, a
                // finishing job makes room.
                waited = self.backend.jobs.wait_for_work(&open, Duration::from_secs(1)), if waiting => {
                    match waited {
                        Ok(()) => {
                            hungry = true;
                            lingered = true;
                        }
                        Err(e) => {
                            let pause = outage.failed(&e);
                            tokio::time::sleep(pause).await;
                            hungry = true;
                        }
                    }
                }
            }
        }
        if shutting_down {
            let grace = tokio::time::sleep(self.config.grace);
            tokio::pin!(grace);
            loop {
                tokio::select! {
                    next = inflight.join_next() => match next {
                        Some(done) => stats.record(done),
                        None => break,
                    },
                    () = &mut grace => {
                        let _ = stop_tx.send(true);
                        break;
                    }
                }
            }
        }
        while let Some(done) = inflight.join_next().await {
            stats.record(done);
        }
        reloader.abort();
        drop(acks);
        let _ = batcher.await;
        if let Some((id, task)) = identity {
            task.abort();
            let _ = self.backend.workers.unregister(&id).await;
        }
        Ok(stats)
    }

    /// How this worker appears in the registry.
    fn identity(&self) -> WorkerInfo {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let pid = std::process::id();
        let now = SystemClock.now();
        WorkerInfo {
            id: format!("{host}:{pid}:{:06x}", fastrand::u32(..0x100_0000)),
            host,
            pid,
            queues: self.config.queues.iter().map(ToString::to_string).collect(),
            concurrency: self.config.concurrency,
            in_flight: 0,
            started_at: now,
            beat_at: now,
        }
    }

    /// The task running one claimed job to its ack.
    fn job_task(
        &self,
        claim: Claim,
        mut stop: watch::Receiver<bool>,
        acks: mpsc::UnboundedSender<AckRequest>,
    ) -> impl Future<Output = Finished> + Send + 'static {
        let backend = self.backend.jobs.clone();
        let caps = self.caps.clone();
        let registry = self.registry.clone();
        let events = self.events.clone();
        let metrics = self.metrics.clone();
        let lease_len = self.config.lease;
        let retry_at_once = self.config.retry_at_once;
        async move {
            let Claim { job, lease } = claim;
            let queue = job.id.queue().clone();
            metrics.started(&queue);
            let settings = registry.settings(&queue);
            let run = async {
                match registry.handler_async(&queue).await {
                    Ok(handler) => {
                        // Waiting for a place in the pool is not the job's
                        // fault: if none frees up within a lease, the job
                        // goes back uncounted, like at shutdown.
                        let sandbox = registry.sandbox();
                        let room = tokio::time::timeout(lease_len, sandbox.room()).await.ok()?;
                        Some(sandbox.run_in(room, &handler, &job, caps).await)
                    }
                    // Retried like a crash: the module may be deployed later.
                    Err(e) => Some(RunReport {
                        outcome: RunOutcome::Crashed {
                            kind: FailureKind::Load,
                            reason: e.to_string(),
                        },
                        log: String::new(),
                        elapsed: Duration::ZERO,
                    }),
                }
            };
            let renew = async {
                let mut current = lease.clone();
                loop {
                    tokio::time::sleep(lease_len / 3).await;
                    match backend.renew(&current, lease_len).await {
                        Ok(Some(renewed)) => current = renewed,
                        // Lost: the ack will be stale; nothing more to do.
                        Ok(None) => std::future::pending::<()>().await,
                        Err(_) => continue,
                    }
                }
            };
            let handed_back = async {
                while !*stop.borrow_and_update() {
                    if stop.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            };
            let report = tokio::select! {
                report = run => report,
                () = renew => None,
                () = handed_back => None,
            };
            let (completion, log) = match &report {
                None => (Completion::Release, String::new()),
                Some(report) => {
                    // Sync mode retries at once, whatever the handler
                    // asked: it never sleeps, and never leaves a retry
                    // behind in a queue that ends with the command.
                    let backoff = |delay: Option<Duration>| match delay {
                        _ if retry_at_once => Duration::ZERO,
                        Some(delay) => delay,
                        None => settings.backoff.delay(job.attempts),
                    };
                    // The handler's own retry and fail are always of kind
                    // `Handler`; only the sandbox names a limit.
                    let completion = match &report.outcome {
                        RunOutcome::Done => Completion::Done,
                        // Put off past the longest a job may wait: refused,
                        // and the job fails saying so.
                        RunOutcome::Retry {
                            reason,
                            delay: Some(delay),
                        } if check_delay(*delay).is_err() => Completion::Fail {
                            kind: FailureKind::Handler,
                            error: InputError::RetryDelayTooLong {
                                delay: *delay,
                                limit: MAX_DELAY,
                                reason: reason.clone(),
                            }
                            .to_string(),
                        },
                        RunOutcome::Retry { reason, delay } => Completion::Retry {
                            kind: FailureKind::Handler,
                            error: reason.clone(),
                            delay: backoff(*delay),
                        },
                        RunOutcome::Fail { reason } => Completion::Fail {
                            kind: FailureKind::Handler,
                            error: reason.clone(),
                        },
                        RunOutcome::Crashed { kind, reason } => Completion::Retry {
                            kind: *kind,
                            error: reason.clone(),
                            delay: backoff(None),
                        },
                    };
                    (completion, report.log.clone())
                }
            };
            let released = report.is_none();
            let (reply, ack) = oneshot::channel();
            let request = AckRequest {
                item: (lease, completion, log),
                reply,
            };
            let ack = match acks.send(request) {
                Ok(()) => ack.await.unwrap_or(Ack::Stale),
                Err(_) => Ack::Stale,
            };
            // A follow-up done frees its place among its tree's live jobs;
            // if this fails, the tree's count only lingers (see TREE_KEEP).
            if ack == Ack::Applied(None)
                && let Some(lineage) = &job.lineage
            {
                let _ = backend.leave_tree(lineage).await;
            }
            metrics.finished(&queue, report.as_ref(), ack);
            if let Some(events) = events {
                let _ = events.send(JobEvent { job, report, ack });
            }
            Finished { ack, released }
        }
    }
}

/// Announces the worker every `every` until aborted; a beat that fails is
/// simply late (the outage is logged by the claim loop).
async fn heartbeat(
    backend: Arc<dyn WorkerRegistry>,
    metrics: Arc<Metrics>,
    mut info: WorkerInfo,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        info.in_flight = metrics.in_flight();
        info.beat_at = SystemClock.now();
        let _ = backend.heartbeat(&info, every * 3).await;
    }
}

/// What one claim round got.
struct Round {
    /// Queues that had room: the ones worth waiting on.
    open: Vec<QueueName>,
    claims: Vec<Claim>,
    /// Whether it got all the room it asked for (the queues may have more).
    took_all: bool,
    /// Whether a queue's cap held it back.
    capped: bool,
}

/// Longest a free slot waits for more room before a claim of less than a
/// batch (so slow jobs do not leave slots idle while jobs wait).
const LINGER: Duration = Duration::from_millis(5);

/// One attempt's end, waiting to be recorded.
struct AckRequest {
    item: (Lease, Completion, String),
    reply: oneshot::Sender<Ack>,
}

/// Most acks recorded in one call.
const ACK_BATCH: usize = 128;

/// Records attempts' ends in batches: whatever finished while the last
/// batch was being recorded goes in the next (one script call per queue on
/// Redis). A lone ack goes at once, so batching adds no latency.
async fn ack_batcher(
    backend: Arc<dyn JobQueue>,
    mut requests: mpsc::UnboundedReceiver<AckRequest>,
) {
    let mut batch = Vec::new();
    while requests.recv_many(&mut batch, ACK_BATCH).await > 0 {
        let (items, replies): (Vec<_>, Vec<_>) = batch.drain(..).map(|r| (r.item, r.reply)).unzip();
        let acks = ack_all(&*backend, items).await;
        for (reply, ack) in replies.into_iter().zip(acks) {
            let _ = reply.send(ack);
        }
    }
}

/// Records a batch, retrying while the backend is unreachable, for as long
/// as the leases last: past them the jobs are someone else's, and the acks
/// would be stale anyway. Sending a batch again is safe (fencing tokens).
async fn ack_all(backend: &dyn JobQueue, items: Vec<(Lease, Completion, String)>) -> Vec<Ack> {
    let mut outage = Outage::default();
    let last_expiry = items
        .iter()
        .map(|(l, _, _)| l.expires_at)
        .max()
        .unwrap_or(0);
    loop {
        match backend.complete_many(&items).await {
            Ok(acks) if acks.len() == items.len() => {
                outage.recovered();
                return acks;
            }
            Ok(_) => return vec![Ack::Stale; items.len()],
            Err(e) => {
                let pause = outage.failed(&e);
                if SystemClock.now().saturating_add(millis(pause)) >= last_expiry {
                    tracing::warn!(
                        jobs = items.len(),
                        "giving up recording attempts: their leases have run out, so the jobs will run again"
                    );
                    return vec![Ack::Stale; items.len()];
                }
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Backoff while the backend is unreachable: 100 ms doubling to 5 s, one
/// warning per outage and one line when it is over.
#[derive(Debug, Default)]
struct Outage {
    pause: Option<Duration>,
}

impl Outage {
    fn failed(&mut self, e: &QueueError) -> Duration {
        let pause = match self.pause {
            None => {
                tracing::warn!(error = %e, "queue backend unreachable; retrying with backoff");
                Duration::from_millis(100)
            }
            Some(p) => (p * 2).min(Duration::from_secs(5)),
        };
        self.pause = Some(pause);
        pause
    }

    fn recovered(&mut self) {
        if self.pause.take().is_some() {
            tracing::info!("queue backend reachable again");
        }
    }
}

/// The job tasks in flight, and how many of each queue.
#[derive(Default)]
struct InFlight {
    tasks: JoinSet<Finished>,
    queue_of: HashMap<tokio::task::Id, QueueName>,
    per_queue: HashMap<QueueName, usize>,
}

impl InFlight {
    fn spawn(&mut self, queue: QueueName, task: impl Future<Output = Finished> + Send + 'static) {
        let id = self.tasks.spawn(task).id();
        *self.per_queue.entry(queue.clone()).or_default() += 1;
        self.queue_of.insert(id, queue);
    }

    fn len(&self) -> usize {
        self.tasks.len()
    }

    fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    fn finished(&mut self, id: tokio::task::Id) {
        if let Some(queue) = self.queue_of.remove(&id)
            && let Some(n) = self.per_queue.get_mut(&queue)
        {
            *n = n.saturating_sub(1);
        }
    }

    fn try_join_next(&mut self) -> Option<Result<Finished, tokio::task::JoinError>> {
        let done = self.tasks.try_join_next_with_id()?;
        Some(self.settle(done))
    }

    async fn join_next(&mut self) -> Option<Result<Finished, tokio::task::JoinError>> {
        let done = self.tasks.join_next_with_id().await?;
        Some(self.settle(done))
    }

    fn settle(
        &mut self,
        done: Result<(tokio::task::Id, Finished), tokio::task::JoinError>,
    ) -> Result<Finished, tokio::task::JoinError> {
        match done {
            Ok((id, finished)) => {
                self.finished(id);
                Ok(finished)
            }
            Err(e) => {
                self.finished(e.id());
                Err(e)
            }
        }
    }
}
