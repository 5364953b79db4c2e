//! The loop itself, on paused time: a runner of our own that takes as long
//! as each job's payload says (in tokio's paused time, so nothing really
//! sleeps), over the memory backend on a manual clock, behind a job queue
//! that can be made to fail on demand.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use super::*;
use crate::config::TenantSettings;
use crate::job::{JobId, JobState, Lineage, NewJob, Payload, TreeBudget};
use crate::queue::{
    Claim, Completion, DueQueue, Lease, ManualClock, MemoryBackend, Page, StateCounts, Throughput,
    minute_of,
};
use crate::retry::Backoff;
use crate::sandbox::RunOutcome;

/// A queue by its written name: `acme/resize`, or `resize` in the
/// default tenant.
fn q(name: &str) -> QueueName {
    QueueName::parse(name).expect("queue name")
}

/// Runs each job for the milliseconds in its payload (`{"ms":N}`), or
/// until let through (`{"gate":true}`), and says done.
#[derive(Debug, Default)]
struct Fake {
    policies: HashMap<QueueName, QueuePolicy>,
    tenants: HashMap<TenantName, TenantSettings>,
    gate: Notify,
    started: Notify,
    running: Mutex<HashMap<QueueName, usize>>,
    most: Mutex<HashMap<QueueName, usize>>,
    order: Mutex<Vec<QueueName>>,
}

#[async_trait]
impl Runner for Fake {
    fn policy(&self, queue: &QueueName) -> QueuePolicy {
        self.policies.get(queue).cloned().unwrap_or(QueuePolicy {
            weight: 1,
            cap: None,
            backoff: Backoff::default(),
        })
    }

    fn tenant_policy(&self, tenant: &TenantName) -> TenantSettings {
        self.tenants.get(tenant).copied().unwrap_or_default()
    }

    async fn run(&self, job: &JobRecord, _wait: Duration) -> Option<RunReport> {
        let queue = job.id.queue().clone();
        {
            let mut running = self.running.lock().expect("lock");
            let n = running.entry(queue.clone()).or_default();
            *n += 1;
            let most = &mut *self.most.lock().expect("lock");
            let top = most.entry(queue.clone()).or_default();
            *top = (*top).max(*n);
            self.order.lock().expect("lock").push(queue.clone());
        }
        self.started.notify_one();
        let payload: serde_json::Value =
            serde_json::from_str(job.payload.as_str()).expect("json payload");
        if payload["gate"] == true {
            self.gate.notified().await;
        } else {
            let ms = payload["ms"].as_u64().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        *self
            .running
            .lock()
            .expect("lock")
            .get_mut(&queue)
            .expect("counted") -= 1;
        Some(RunReport {
            outcome: RunOutcome::Done,
            log: String::new(),
            elapsed: Duration::from_millis(payload["ms"].as_u64().unwrap_or(0)),
        })
    }
}

/// The memory backend, failing every call while `down`, holding every
/// ack back while `held`, and noting when each claim was made and how many
/// it took.
#[derive(Debug)]
struct Flaky {
    inner: Arc<MemoryBackend>,
    down: AtomicBool,
    held: watch::Sender<bool>,
    claims: Mutex<Vec<(Instant, Option<usize>)>>,
    claimed: Notify,
    renewals: AtomicUsize,
    /// Waits for any queue to come due.
    waits: AtomicUsize,
}

impl Flaky {
    fn new(inner: Arc<MemoryBackend>) -> Self {
        Flaky {
            inner,
            down: AtomicBool::new(false),
            held: watch::Sender::new(false),
            claims: Mutex::new(Vec::new()),
            claimed: Notify::new(),
            renewals: AtomicUsize::new(0),
            waits: AtomicUsize::new(0),
        }
    }

    fn check(&self) -> Result<(), QueueError> {
        if self.down.load(Ordering::SeqCst) {
            Err(QueueError::Backend {
                backend: "flaky".into(),
                message: "down on purpose".into(),
            })
        } else {
            Ok(())
        }
    }

    /// Sizes of the claims made so far (`None`: failed).
    fn sizes(&self) -> Vec<Option<usize>> {
        self.claims
            .lock()
            .expect("lock")
            .iter()
            .map(|c| c.1)
            .collect()
    }
}

#[async_trait]
impl JobQueue for Flaky {
    async fn dispatch(&self, job: NewJob) -> Result<JobId, QueueError> {
        self.inner.dispatch(job).await
    }
    async fn dispatch_many(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>, QueueError> {
        self.inner.dispatch_many(jobs).await
    }
    async fn dispatch_follow_up(
        &self,
        job: NewJob,
        lineage: Lineage,
        budget: TreeBudget,
    ) -> Result<JobId, QueueError> {
        self.inner.dispatch_follow_up(job, lineage, budget).await
    }
    async fn leave_tree(&self, lineage: &Lineage) -> Result<(), QueueError> {
        self.inner.leave_tree(lineage).await
    }
    async fn claim(
        &self,
        queues: &[QueueName],
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Claim>, QueueError> {
        let got = match self.check() {
            Ok(()) => self.inner.claim(queues, max, lease).await,
            Err(e) => Err(e),
        };
        let size = got.as_ref().ok().map(Vec::len);
        self.claims
            .lock()
            .expect("lock")
            .push((Instant::now(), size));
        self.claimed.notify_one();
        got
    }
    async fn wait_for_work(
        &self,
        queues: &[QueueName],
        timeout: Duration,
    ) -> Result<(), QueueError> {
        self.check()?;
        self.inner.wait_for_work(queues, timeout).await
    }
    async fn due(&self) -> Result<Vec<DueQueue>, QueueError> {
        self.check()?;
        self.inner.due().await
    }
    async fn settle(&self, due: &DueQueue) -> Result<(), QueueError> {
        self.check()?;
        self.inner.settle(due).await
    }
    async fn wait_for_due(
        &self,
        passing: &[QueueName],
        tenant: Option<&TenantName>,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        self.check()?;
        // A loop whose waits all end at once would hold paused time still:
        // past a thousand it is slowed, so a test fails rather than hangs.
        if self.waits.fetch_add(1, Ordering::SeqCst) > 1_000 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.inner.wait_for_due(passing, tenant, timeout).await
    }
    async fn renew(&self, lease: &Lease, extend: Duration) -> Result<Option<Lease>, QueueError> {
        self.check()?;
        self.renewals.fetch_add(1, Ordering::SeqCst);
        self.inner.renew(lease, extend).await
    }
    async fn complete(&self, lease: &Lease, c: Completion, log: String) -> Result<Ack, QueueError> {
        self.check()?;
        self.inner.complete(lease, c, log).await
    }
    async fn complete_many(
        &self,
        items: &[(Lease, Completion, String)],
    ) -> Result<Vec<Ack>, QueueError> {
        self.check()?;
        let _ = self.held.subscribe().wait_for(|held| !held).await;
        self.inner.complete_many(items).await
    }
    async fn get(&self, id: &JobId) -> Result<Option<JobRecord>, QueueError> {
        self.inner.get(id).await
    }
    async fn list(
        &self,
        queue: &QueueName,
        state: JobState,
        page: Page,
    ) -> Result<Vec<JobRecord>, QueueError> {
        self.inner.list(queue, state, page).await
    }
    async fn counts(&self, queue: &QueueName) -> Result<StateCounts, QueueError> {
        self.check()?;
        self.inner.counts(queue).await
    }
    async fn queues(&self) -> Result<Vec<QueueName>, QueueError> {
        self.check()?;
        self.inner.queues().await
    }
    async fn retry(&self, id: &JobId) -> Result<(), QueueError> {
        self.inner.retry(id).await
    }
    async fn delete(&self, id: &JobId) -> Result<bool, QueueError> {
        self.inner.delete(id).await
    }
    async fn purge(&self, queue: &QueueName) -> Result<u64, QueueError> {
        self.inner.purge(queue).await
    }
    async fn set_paused(&self, queue: &QueueName, paused: bool) -> Result<bool, QueueError> {
        self.inner.set_paused(queue, paused).await
    }
    async fn paused(&self, queues: &[QueueName]) -> Result<Vec<bool>, QueueError> {
        self.inner.paused(queues).await
    }

    async fn remove_queue(&self, queue: &QueueName) -> Result<u64, QueueError> {
        self.inner.remove_queue(queue).await
    }
}

/// A backend on a manual clock, its flaky front, and a runner.
struct Rig {
    clock: Arc<ManualClock>,
    inner: Arc<MemoryBackend>,
    jobs: Arc<Flaky>,
    runner: Arc<Fake>,
}

impl Rig {
    fn new(runner: Fake) -> Self {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let inner = Arc::new(MemoryBackend::new(clock.clone()));
        Rig {
            jobs: Arc::new(Flaky::new(inner.clone())),
            clock,
            inner,
            runner: Arc::new(runner),
        }
    }

    async fn dispatch(&self, queue: &str, payload: &str, n: usize) {
        let jobs = (0..n)
            .map(|_| NewJob::new(q(queue), Payload::new(payload).expect("payload")))
            .collect();
        self.inner.dispatch_many(jobs).await.expect("dispatch");
    }

    fn worker(&self, config: WorkerConfig) -> Worker {
        Worker::over(self.jobs.clone(), self.runner.clone(), config).with_clock(self.clock.clone())
    }
}

fn config(queues: &[&str]) -> WorkerConfig {
    WorkerConfig {
        queues: queues.iter().map(|n| q(n)).collect(),
        drain: true,
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn claims_in_batches_as_room_frees_and_lingers_for_less() {
    let rig = Rig::new(Fake::default());
    rig.dispatch("a", r#"{"ms":10}"#, 24).await;
    let stats = rig
        .worker(WorkerConfig {
            concurrency: 8,
            batch: 8,
            ..config(&["a"])
        })
        .run(std::future::pending())
        .await
        .expect("worker");
    assert_eq!(stats.done, 24, "{stats:?}");
    // Equal jobs finish together: a whole batch each time, never one by
    // one, then one empty claim that finds the queue drained.
    assert_eq!(rig.jobs.sizes(), vec![Some(8), Some(8), Some(8), Some(0)]);

    // One quick and three slow jobs fill four slots: when the quick one
    // ends, the single free slot (less than the refill of 2) waits LINGER,
    // then claims the fifth job.
    let rig = Rig::new(Fake::default());
    rig.dispatch("a", r#"{"ms":100}"#, 1).await;
    rig.dispatch("a", r#"{"ms":1000}"#, 3).await;
    rig.dispatch("a", r#"{"ms":1}"#, 1).await;
    let start = Instant::now();
    let stats = rig
        .worker(WorkerConfig {
            concurrency: 4,
            batch: 4,
            ..config(&["a"])
        })
        .run(std::future::pending())
        .await
        .expect("worker");
    assert_eq!(stats.done, 5, "{stats:?}");
    let claims = rig.jobs.claims.lock().expect("lock").clone();
    assert_eq!(claims[0].1, Some(4), "{claims:?}");
    assert_eq!(claims[1].1, Some(1), "{claims:?}");
    assert_eq!(
        claims[1].0 - start,
        Duration::from_millis(100) + scheduler::LINGER
    );
}

#[tokio::test(start_paused = true)]
async fn claims_for_ended_attempts_without_waiting_for_their_acks_up_to_a_bound() {
    let rig = Rig::new(Fake::default());
    rig.dispatch("a", r#"{"ms":1}"#, 20).await;
    rig.jobs.held.send_replace(true);
    let run = tokio::spawn(
        rig.worker(WorkerConfig {
            concurrency: 4,
            batch: 4,
            ..config(&["a"])
        })
        .run(std::future::pending()),
    );
    // In paused time: the clock moves only once every task waits.
    tokio::time::sleep(Duration::from_secs(60)).await;
    // With no ack recorded, a second batch ran in the slots the first
    // left, and no more: twice the concurrency are claimed and unrecorded.
    assert_eq!(rig.runner.order.lock().expect("lock").len(), 8);
    assert_eq!(rig.jobs.sizes(), vec![Some(4), Some(4)]);
    rig.jobs.held.send_replace(false);
    let stats = run.await.expect("task").expect("worker");
    assert_eq!(stats.done, 20, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn renews_the_lease_of_a_slow_attempt() {
    let rig = Rig::new(Fake::default());
    rig.dispatch("a", r#"{"ms":10000}"#, 1).await;
    let lease = Duration::from_secs(3);
    let worker = rig.worker(WorkerConfig {
        lease,
        ..config(&["a"])
    });
    let run = tokio::spawn(worker.run(std::future::pending()));
    rig.runner.started.notified().await;
    // The backend's clock follows, a second at a time; at every step
    // another worker finds nothing to take: the lease never ran out.
    for _ in 0..9 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rig.clock.advance(Duration::from_secs(1));
        let stolen = rig.inner.claim(&[q("a")], 1, lease).await.expect("claim");
        assert!(stolen.is_empty(), "lease ran out while the job ran");
    }
    let stats = run.await.expect("task").expect("worker");
    assert_eq!((stats.done, stats.stale), (1, 0), "{stats:?}");
    assert!(rig.jobs.renewals.load(Ordering::SeqCst) >= 9);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_whose_lease_was_lost_acks_stale() {
    let rig = Rig::new(Fake::default());
    rig.dispatch("a", r#"{"gate":true}"#, 1).await;
    let lease = Duration::from_secs(3);
    let (tx, mut events) = mpsc::unbounded_channel();
    let worker = rig
        .worker(WorkerConfig {
            lease,
            ..config(&["a"])
        })
        .with_events(tx);
    let run = tokio::spawn(worker.run(std::future::pending()));
    rig.runner.started.notified().await;
    // Before any renewal, the backend's clock jumps past the lease and
    // another worker takes the job.
    rig.clock.advance(lease * 2);
    let stolen = rig.inner.claim(&[q("a")], 1, lease).await.expect("claim");
    assert_eq!(stolen.len(), 1);
    rig.runner.gate.notify_one();
    let stats = run.await.expect("task").expect("worker");
    assert_eq!((stats.done, stats.stale), (0, 1), "{stats:?}");
    let event = events.recv().await.expect("event");
    assert_eq!((event.ack, event.end()), (Ack::Stale, AttemptEnd::Stale));
    // The newer holder's lease still stands.
    let job = rig
        .inner
        .get(&stolen[0].job.id)
        .await
        .expect("get")
        .expect("job");
    assert_eq!(job.state, JobState::Running);
}

#[tokio::test(start_paused = true)]
async fn backs_off_through_an_outage_and_goes_on_after_it() {
    let rig = Rig::new(Fake::default());
    rig.dispatch("a", r#"{"ms":1}"#, 3).await;
    rig.jobs.down.store(true, Ordering::SeqCst);
    let run = tokio::spawn(rig.worker(config(&["a"])).run(std::future::pending()));
    while rig.jobs.sizes().len() < 7 {
        rig.jobs.claimed.notified().await;
    }
    let claims = rig.jobs.claims.lock().expect("lock").clone();
    let gaps: Vec<u128> = claims
        .windows(2)
        .map(|w| (w[1].0 - w[0].0).as_millis())
        .collect();
    // 100 ms doubling, at most 5 s.
    assert_eq!(gaps, vec![100, 200, 400, 800, 1600, 3200], "{gaps:?}");
    assert!(claims.iter().all(|c| c.1.is_none()));
    rig.jobs.down.store(false, Ordering::SeqCst);
    let stats = run.await.expect("task").expect("worker");
    assert_eq!(stats.done, 3, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_gives_grace_then_hands_back() {
    let rig = Rig::new(Fake::default());
    rig.dispatch("a", r#"{"ms":1000}"#, 1).await;
    rig.dispatch("a", r#"{"ms":100000}"#, 1).await;
    let start = Instant::now();
    let shutdown = tokio::time::sleep(Duration::from_millis(500));
    let stats = rig
        .worker(WorkerConfig {
            grace: Duration::from_secs(5),
            drain: false,
            ..config(&["a"])
        })
        .run(shutdown)
        .await
        .expect("worker");
    assert_eq!((stats.done, stats.released), (1, 1), "{stats:?}");
    assert_eq!(start.elapsed(), Duration::from_millis(5500));
    // Handed back uncounted: pending again, its attempt not spent.
    let pending = rig
        .inner
        .list(&q("a"), JobState::Pending, Page::default())
        .await
        .expect("list");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].attempts, 0);
}

#[tokio::test(start_paused = true)]
async fn max_jobs_stops_after_that_many_and_drain_when_empty() {
    let rig = Rig::new(Fake::default());
    rig.dispatch("a", r#"{"ms":5}"#, 10).await;
    let stats = rig
        .worker(WorkerConfig {
            max_jobs: Some(4),
            drain: false,
            ..config(&["a"])
        })
        .run(std::future::pending())
        .await
        .expect("worker");
    assert_eq!((stats.claimed, stats.done), (4, 4), "{stats:?}");
    let counts = rig.inner.counts(&q("a")).await.expect("counts");
    assert_eq!(counts.pending, 6);
    let stats = rig
        .worker(config(&["a"]))
        .run(std::future::pending())
        .await
        .expect("worker");
    assert_eq!((stats.claimed, stats.done), (6, 6), "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn caps_hold_and_weights_share() {
    let mut fake = Fake::default();
    let policy = |weight, cap| QueuePolicy {
        weight,
        cap,
        backoff: Backoff::default(),
    };
    fake.policies.insert(q("heavy"), policy(3, None));
    fake.policies.insert(q("light"), policy(1, None));
    fake.policies.insert(q("capped"), policy(1, Some(1)));
    let rig = Rig::new(fake);
    for name in ["heavy", "light", "capped"] {
        rig.dispatch(name, r#"{"ms":10}"#, 8).await;
    }
    let stats = rig
        .worker(WorkerConfig {
            concurrency: 5,
            batch: 5,
            ..config(&["heavy", "light", "capped"])
        })
        .run(std::future::pending())
        .await
        .expect("worker");
    assert_eq!(stats.done, 24, "{stats:?}");
    let most = rig.runner.most.lock().expect("lock").clone();
    assert_eq!(most[&q("capped")], 1, "{most:?}");
    // The first round: of five slots, heavy gets three for light's one
    // and capped's one.
    let order = rig.runner.order.lock().expect("lock").clone();
    let first: Vec<&str> = order[..5].iter().map(QueueName::as_str).collect();
    let count = |n: &str| first.iter().filter(|q| **q == n).count();
    assert_eq!(
        (count("heavy"), count("light"), count("capped")),
        (3, 1, 1),
        "{first:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn serving_every_queue_holds_each_tenants_ceiling_and_minimum() {
    let tenant = |name: &str| TenantName::new(name).expect("tenant name");
    let mut fake = Fake::default();
    // Acme may hold a quarter of the worker; beta is owed half of it.
    let settings = |min_share, max_share| TenantSettings {
        weight: 1,
        min_share,
        max_share,
        ..TenantSettings::default()
    };
    fake.tenants.insert(tenant("acme"), settings(0.0, 0.25));
    fake.tenants.insert(tenant("beta"), settings(0.5, 1.0));
    let rig = Rig::new(fake);
    rig.dispatch("acme/flood", r#"{"ms":10}"#, 24).await;
    rig.dispatch("beta/q", r#"{"ms":10}"#, 8).await;
    rig.dispatch("plain", r#"{"ms":10}"#, 8).await;
    let stats = rig
        .worker(WorkerConfig {
            concurrency: 8,
            batch: 8,
            ..config(&[])
        })
        .run(std::future::pending())
        .await
        .expect("worker");
    assert_eq!(stats.done, 40, "{stats:?}");
    let most = rig.runner.most.lock().expect("lock").clone();
    assert_eq!(most[&q("acme/flood")], 2, "a quarter of 8 slots: {most:?}");
    let order = rig.runner.order.lock().expect("lock").clone();
    let beta = order[..8]
        .iter()
        .filter(|n| n.is_in(&tenant("beta")))
        .count();
    assert!(beta >= 4, "beta is owed half of the first 8: {order:?}");
}

/// Tenant `acme`, which may have one job in flight over the fleet, and a
/// runner that says so.
fn acme_capped_at_one() -> (TenantName, Fake) {
    let acme = TenantName::new("acme").expect("tenant name");
    let mut fake = Fake::default();
    fake.tenants.insert(
        acme.clone(),
        TenantSettings {
            max_in_flight: Some(1),
            ..TenantSettings::default()
        },
    );
    (acme, fake)
}

impl Rig {
    /// Another worker takes `tenant`'s one slot, for an hour.
    async fn hold_elsewhere(&self, tenant: &TenantName) {
        let far = self.clock.now() + 3_600_000;
        let took = self.inner.take_flight(tenant, "elsewhere", 1, 1, far).await;
        assert_eq!(took.expect("take"), 1);
    }

    /// The other worker gives the slot back.
    async fn give_elsewhere(&self, tenant: &TenantName) {
        let given = self.inner.give_flight(tenant, "elsewhere", 1).await;
        given.expect("give");
    }

    /// A worker over the rig whose tenants' ledgers and budgets are the
    /// memory backend's.
    fn tenant_worker(&self, config: WorkerConfig) -> Worker {
        let mut worker = self.worker(config);
        worker.tenants = Some(self.inner.clone());
        worker
    }
}

/// Jobs of `tenant` that started, in the order they did.
fn started_of(rig: &Rig, tenant: &str) -> usize {
    let tenant = TenantName::new(tenant).expect("tenant name");
    let order = rig.runner.order.lock().expect("lock");
    order.iter().filter(|q| q.is_in(&tenant)).count()
}

#[tokio::test(start_paused = true)]
async fn a_tenant_held_at_its_cap_across_the_fleet_is_waited_for_not_polled() {
    let (acme, fake) = acme_capped_at_one();
    let rig = Rig::new(fake);
    rig.dispatch("acme/q", r#"{"ms":10}"#, 5).await;
    rig.hold_elsewhere(&acme).await;
    let worker = rig.tenant_worker(WorkerConfig {
        concurrency: 4,
        ..config(&[])
    });
    let run = tokio::spawn(worker.run(std::future::pending()));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let waits = rig.jobs.waits.load(Ordering::SeqCst);
    assert!(
        waits <= 20,
        "{waits} waits in 10 s: a held tenant's due queue must not end each wait at once"
    );
    assert_eq!(started_of(&rig, "acme"), 0, "the slot is another worker's");
    rig.give_elsewhere(&acme).await;
    let stats = run.await.expect("the loop").expect("worker");
    assert_eq!(stats.done, 5, "{stats:?}");
    let most = rig.runner.most.lock().expect("lock").clone();
    assert_eq!(most[&q("acme/q")], 1, "a cap of one across the fleet");
}

#[tokio::test(start_paused = true)]
async fn a_tenant_past_its_run_time_budget_waits_for_the_next_period_while_others_run() {
    let acme = TenantName::new("acme").expect("tenant name");
    let mut fake = Fake::default();
    fake.tenants.insert(
        acme.clone(),
        TenantSettings {
            cpu_budget_ms: Some(50),
            cpu_period_ms: 1_000,
            ..TenantSettings::default()
        },
    );
    let rig = Rig::new(fake);
    rig.dispatch("acme/q", r#"{"ms":30}"#, 6).await;
    let worker = rig.tenant_worker(WorkerConfig {
        concurrency: 1,
        ..config(&[])
    });
    let run = tokio::spawn(worker.run(std::future::pending()));
    // The backend's clock stands still: one period until it is moved.
    tokio::time::sleep(Duration::from_secs(10)).await;
    // 30 ms each against 50: the second passes the budget; a third may
    // have started while the second's run time was being added.
    let first = started_of(&rig, "acme");
    assert!((2..=3).contains(&first), "{first} of acme's jobs started");
    rig.dispatch("beta/q", r#"{"ms":30}"#, 4).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(started_of(&rig, "beta"), 4, "beta has no budget to spend");
    assert_eq!(
        started_of(&rig, "acme"),
        first,
        "acme waits for its next period"
    );
    let waits = rig.jobs.waits.load(Ordering::SeqCst);
    assert!(waits <= 40, "{waits} waits in 20 s");
    let used = rig
        .inner
        .charge_run_time(&acme, rig.clock.now() - rig.clock.now() % 1_000, 1_000, 0)
        .await
        .expect("run time");
    assert_eq!(used, 30 * first as u64, "each attempt's run time counted");
    for _ in 0..3 {
        rig.clock.advance(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let stats = run.await.expect("the loop").expect("worker");
    assert_eq!(stats.done, 10, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn a_held_tenant_beside_a_queue_full_here_is_waited_for_not_polled() {
    let (acme, mut fake) = acme_capped_at_one();
    // Beta's queue runs one job at a time here, and has more waiting.
    fake.policies.insert(
        q("beta/q"),
        QueuePolicy {
            weight: 1,
            cap: Some(1),
            backoff: Backoff::default(),
        },
    );
    let rig = Rig::new(fake);
    rig.dispatch("acme/q", r#"{"ms":10}"#, 3).await;
    rig.dispatch("beta/q", r#"{"ms":4000}"#, 3).await;
    rig.hold_elsewhere(&acme).await;
    let worker = rig.tenant_worker(WorkerConfig {
        concurrency: 4,
        ..config(&[])
    });
    let run = tokio::spawn(worker.run(std::future::pending()));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let waits = rig.jobs.waits.load(Ordering::SeqCst);
    assert!(waits <= 30, "{waits} waits in 10 s");
    assert_eq!(started_of(&rig, "acme"), 0, "the slot is another worker's");
    rig.give_elsewhere(&acme).await;
    let stats = run.await.expect("the loop").expect("worker");
    assert_eq!(stats.done, 6, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn a_drain_of_named_queues_waits_for_a_held_tenant_rather_than_ending() {
    let (acme, fake) = acme_capped_at_one();
    let rig = Rig::new(fake);
    rig.dispatch("acme/q", r#"{"ms":10}"#, 3).await;
    rig.hold_elsewhere(&acme).await;
    let worker = rig.tenant_worker(config(&["acme/q"]));
    let run = tokio::spawn(worker.run(std::future::pending()));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        !run.is_finished(),
        "the drain ended with acme's jobs waiting"
    );
    rig.give_elsewhere(&acme).await;
    let stats = run.await.expect("the loop").expect("worker");
    assert_eq!(stats.done, 3, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn a_running_worker_adds_its_throughput_within_a_second() {
    let rig = Rig::new(Fake::default());
    rig.dispatch("acme/q", r#"{"ms":10}"#, 3).await;
    rig.dispatch("q", r#"{"ms":10}"#, 2).await;
    let worker = rig.tenant_worker(WorkerConfig {
        drain: false,
        ..config(&[])
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let minute = minute_of(rig.clock.now());
    let acme = TenantName::new("acme").expect("tenant name");
    let done = |processed| {
        vec![Throughput {
            processed,
            failed: 0,
        }]
    };
    let fleet = rig.inner.throughput(None, minute, 1).await;
    assert_eq!(fleet.expect("the fleet's"), done(5));
    let acme = rig.inner.throughput(Some(&acme), minute, 1).await;
    assert_eq!(acme.expect("acme's"), done(3));
    let _ = stop.send(());
    let stats = run.await.expect("the loop").expect("worker");
    assert_eq!(stats.done, 5, "{stats:?}");
}
