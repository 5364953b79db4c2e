//! The worker: a claim loop ([`scheduler`]) over a [`JobQueue`] and a
//! [`Runner`], feeding one task per unit of concurrency ([`slot`]), whose
//! attempts' ends are recorded in batches ([`acks`]). Beside the loop, not
//! in it: heartbeats ([`heartbeat`], the [`WorkerRegistry`]) and hot swap
//! ([`reload`], the [`ModuleStore`] and the handler registry).
//!
//! Shutdown is a future passed in (as in mini-redis): when it resolves the
//! worker stops claiming, lets in-flight jobs finish within the grace
//! period, then hands the rest back to the queue without counting the
//! attempt.

mod acks;
mod budget;
mod fair;
mod flight;
mod heartbeat;
mod inflight;
mod outage;
mod policy;
mod reload;
mod runner;
mod scheduler;
mod slot;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::error::QueueError;
use crate::handlers::HandlerRegistry;
use crate::job::{JobRecord, QueueName, TenantName};
use crate::metrics::Metrics;
use crate::queue::{
    Ack, AttemptEnd, Backend, Clock, JobQueue, SystemClock, TenantStore, WorkerRegistry,
};
use crate::sandbox::{Capabilities, RunReport};

pub use policy::QueuePolicy;
pub use runner::{HandlerRunner, Runner};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Queues to serve, sharing the worker by their tenants' `weight`, then
    /// their own, and capped by their `concurrency` settings; empty means
    /// every queue that has work, of every tenant (or of `tenant`), found
    /// through the backend's due index (the in-memory sync mode uses this).
    pub queues: Vec<QueueName>,
    /// With no queues named, serve only this tenant's queues.
    pub tenant: Option<TenantName>,
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
            tenant: None,
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

impl JobEvent {
    /// How the attempt ended, in one of five words.
    pub fn end(&self) -> AttemptEnd {
        AttemptEnd::of(self.ack, self.report.is_none())
    }
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
    fn add(&mut self, end: AttemptEnd) {
        match end {
            AttemptEnd::Done => self.done += 1,
            AttemptEnd::Retried => self.retried += 1,
            AttemptEnd::Failed => self.failed += 1,
            AttemptEnd::HandedBack => self.released += 1,
            AttemptEnd::Stale => self.stale += 1,
        }
    }
}

/// A worker: a claim loop over a job queue and a runner, with heartbeats
/// and hot swap beside it when built over a whole backend.
#[derive(Debug)]
pub struct Worker {
    jobs: Arc<dyn JobQueue>,
    runner: Arc<dyn Runner>,
    config: WorkerConfig,
    events: Option<mpsc::UnboundedSender<JobEvent>>,
    metrics: Arc<Metrics>,
    /// Where lease expiry is read when deciding to give up recording.
    clock: Arc<dyn Clock>,
    /// Hot swap: the registry to install into and where modules are
    /// published.
    reload: Option<reload::Reload>,
    /// Where heartbeats go (with `config.heartbeat`).
    registry: Option<Arc<dyn WorkerRegistry>>,
    /// Where tenants' jobs in flight are counted across the fleet (their
    /// `max_in_flight`).
    tenants: Option<Arc<dyn TenantStore>>,
}

impl Worker {
    /// A worker over `backend` running the handlers of `registry`, whose
    /// guests may dispatch follow-ups into the backend's job queue; it
    /// follows published modules and announces itself (with
    /// `config.heartbeat`). Nothing runs until [`Worker::run`].
    pub fn new(backend: Backend, registry: Arc<HandlerRegistry>, config: WorkerConfig) -> Self {
        let caps = Capabilities::dispatch_to(backend.jobs.clone());
        let runner = Arc::new(HandlerRunner::new(registry.clone(), caps));
        let mut worker = Worker::over(backend.jobs, runner, config);
        worker.reload = Some(reload::Reload {
            registry,
            backend: backend.modules,
            deployments: Arc::default(),
        });
        worker.registry = Some(backend.workers);
        worker.tenants = Some(backend.tenants);
        worker
    }

    /// The claim loop alone: jobs of `jobs` run by `runner`, with no
    /// heartbeats nor hot swap.
    pub fn over(jobs: Arc<dyn JobQueue>, runner: Arc<dyn Runner>, config: WorkerConfig) -> Self {
        Worker {
            jobs,
            runner,
            config,
            events: None,
            metrics: Arc::new(Metrics::default()),
            clock: Arc::new(SystemClock),
            reload: None,
            registry: None,
            tenants: None,
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

    /// Reads lease expiry from `clock` (the backend's) instead of the
    /// system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Runs until `shutdown` resolves (or, with `max_jobs` or `drain`, until
    /// the work is done). Returns what it did. Backend errors do not end
    /// it: it logs them and tries again with backoff until the backend is
    /// back.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<WorkerStats, QueueError> {
        let beside = self.start_beside().await;
        let concurrency = self.config.concurrency.max(1);
        let inflight = Arc::new(inflight::InFlight::default());
        let ready = Arc::new(inflight::Ready::default());
        let flight = self.tenants.as_ref().map(|store| {
            let holder = heartbeat::identity(Vec::new(), concurrency).id;
            Arc::new(flight::Flight::new(
                store.clone(),
                self.clock.clone(),
                holder,
                self.config.lease,
            ))
        });
        let renewing = flight.clone().map(|f| tokio::spawn(flight::run(f)));
        let budgets = self
            .tenants
            .as_ref()
            .map(|store| Arc::new(budget::Budgets::new(store.clone(), self.clock.clone())));
        let (acks_tx, acks_rx) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(acks::run(
            acks::Recorder {
                jobs: self.jobs.clone(),
                clock: self.clock.clone(),
                inflight: inflight.clone(),
                events: self.events.clone(),
                flight: flight.clone(),
                budgets: budgets.clone(),
                throughput: self.tenants.clone(),
            },
            acks_rx,
        ));
        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Arc::new(slot::Slots {
            jobs: self.jobs.clone(),
            runner: self.runner.clone(),
            ready: ready.clone(),
            inflight: inflight.clone(),
            acks: acks_tx,
            lease: self.config.lease,
            retry_at_once: self.config.retry_at_once,
        });
        let mut slots = JoinSet::new();
        for _ in 0..concurrency {
            slots.spawn(slot::run(shared.clone(), stop_rx.clone()));
        }
        // The slots hold the only senders now: the recorder ends after them.
        drop(shared);
        // The loop runs as a task of the runtime, beside the slots it
        // feeds, rather than on the caller's thread (often a `block_on`
        // thread outside the runtime, where every hand-over between the
        // loop and the slots would cross threads). The caller's thread
        // only waits for shutdown.
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let mut scheduling = tokio::spawn(
            scheduler::Scheduler {
                jobs: self.jobs.clone(),
                runner: self.runner.clone(),
                metrics: self.metrics.clone(),
                config: self.config.clone(),
                inflight,
                ready: ready.clone(),
                policies: policy::Policies::default(),
                deficits: std::collections::HashMap::new(),
                reload: self.reload.clone(),
                due_cache: None,
                flight: flight.clone(),
                budgets,
            }
            .run(async {
                let _ = shutdown_rx.await;
            }),
        );
        tokio::pin!(shutdown);
        let scheduled = tokio::select! {
            done = &mut scheduling => done,
            () = &mut shutdown => {
                let _ = shutdown_tx.send(());
                scheduling.await
            }
        };
        // The loop cannot panic on anything a job or a backend does; if a
        // host bug ever makes it, stop as at shutdown rather than hang.
        let (end, claimed) = scheduled.unwrap_or((scheduler::End::Shutdown, 0));
        ready.close();
        if end == scheduler::End::Shutdown {
            let grace = tokio::time::sleep(self.config.grace);
            tokio::pin!(grace);
            loop {
                tokio::select! {
                    next = slots.join_next() => if next.is_none() { break },
                    () = &mut grace => {
                        let _ = stop_tx.send(true);
                        break;
                    }
                }
            }
        }
        while slots.join_next().await.is_some() {}
        let mut stats = recorder.await.unwrap_or_default();
        stats.claimed = claimed;
        if let Some(task) = renewing {
            task.abort();
        }
        if let Some(flight) = &flight {
            flight.release_all().await;
        }
        beside.stop().await;
        Ok(stats)
    }

    /// Starts the tasks beside the loop: published modules first (so the
    /// first jobs already run them), then hot swap and heartbeats.
    async fn start_beside(&self) -> Beside {
        let mut beside = Beside::default();
        if let Some(reload) = &self.reload {
            let watched = if self.config.queues.is_empty() {
                reload::Watched::Every(self.jobs.clone(), self.config.tenant.clone())
            } else {
                reload::Watched::Named(self.config.queues.clone())
            };
            // Serving every queue, the claim loop syncs each new one.
            if let reload::Watched::Named(queues) = &watched {
                reload.sync(queues).await;
            }
            beside.reloader = Some(tokio::spawn(reload::run(reload.clone(), watched)));
        }
        if let (Some(registry), Some(every)) = (&self.registry, self.config.heartbeat) {
            let served = if self.config.queues.is_empty() {
                vec![match &self.config.tenant {
                    Some(t) => format!("{t}/*"),
                    None => "*".to_string(),
                }]
            } else {
                self.config.queues.iter().map(ToString::to_string).collect()
            };
            let info = heartbeat::identity(served, self.config.concurrency);
            let id = info.id.clone();
            let task = tokio::spawn(heartbeat::run(
                registry.clone(),
                self.metrics.clone(),
                info,
                every,
            ));
            beside.heartbeat = Some((registry.clone(), id, task));
        }
        beside
    }
}

/// The tasks running beside the claim loop.
#[derive(Default)]
struct Beside {
    reloader: Option<tokio::task::JoinHandle<()>>,
    heartbeat: Option<(Arc<dyn WorkerRegistry>, String, tokio::task::JoinHandle<()>)>,
}

impl Beside {
    /// Stops them; a clean stop takes the worker out of the registry.
    async fn stop(self) {
        if let Some(task) = self.reloader {
            task.abort();
        }
        if let Some((registry, id, task)) = self.heartbeat {
            task.abort();
            let _ = registry.unregister(&id).await;
        }
    }
}
