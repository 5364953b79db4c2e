//! Tenants' dispatch quotas: a job queue in front of another that admits
//! each dispatch (the CLI's, the library's and a handler's follow-ups
//! alike) only within its tenant's quotas, and refuses it whole otherwise,
//! with an error saying which quota and what to do.
//!
//! - **Dispatch rate**: a token bucket per tenant, kept by the backend
//!   ([`TenantStore::take_dispatch`]; on Redis in the tenant's slot,
//!   `<prefix>{@t/<tenant>}:bucket`), so every process dispatching for a
//!   tenant draws on one bucket. A refused dispatch keeps no tokens: those
//!   taken for it (a batch's earlier tenants, or a dispatch the queue then
//!   failed) are given back.
//! - **Backlog**: the jobs waiting in a tenant's queues (pending and
//!   scheduled). Counted from the queues' own counts at most once a
//!   [`BACKLOG_FRESH`] per tenant per process (one count at a time), plus
//!   what this process dispatched since and has admitted but not yet
//!   dispatched, all under one lock: one process never overshoots, and a
//!   fleet overshoots by at most what the other processes dispatched since
//!   their last count (which the dispatch rate bounds, when set).
//!
//! Everything else passes straight through.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Ack, Claim, Completion, DueQueue, JobQueue, Lease, Page, StateCounts, TenantStore};
use crate::error::QueueError;
use crate::job::{JobId, JobRecord, JobState, Lineage, NewJob, QueueName, TenantName, TreeBudget};

/// How long a tenant's counted backlog is trusted.
pub const BACKLOG_FRESH: Duration = Duration::from_secs(1);

/// A dispatch rate: `per_second` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Jobs per second, on average.
    pub per_second: f64,
    /// Jobs at once (the bucket's size).
    pub burst: u32,
}

/// A tenant's budget of run time: the run time of its attempts (wall
/// clock, from the instance's start to the attempt's end), summed over
/// every worker, may reach `budget_ms` in each period of `period_ms`
/// (periods start at multiples of it since the Unix epoch); past it, the
/// tenant's jobs wait for the next period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunTimeBudget {
    /// Run time per period, ms.
    pub budget_ms: u64,
    /// The period, ms (at least 1).
    pub period_ms: u64,
}

impl RunTimeBudget {
    /// When the period holding `now` began.
    pub fn period_at(&self, now: u64) -> u64 {
        now - now % self.period_ms.max(1)
    }
}

/// One tenant's dispatch quotas; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DispatchQuota {
    /// Its dispatch rate.
    pub rate: Option<Rate>,
    /// Most jobs waiting (pending and scheduled) in its queues.
    pub max_backlog: Option<u64>,
}

impl DispatchQuota {
    fn is_unlimited(&self) -> bool {
        self.rate.is_none() && self.max_backlog.is_none()
    }
}

/// Every tenant's dispatch quotas: its own, else the defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quotas {
    /// Every tenant's without its own.
    pub defaults: DispatchQuota,
    /// By tenant.
    pub tenants: BTreeMap<TenantName, DispatchQuota>,
}

impl Quotas {
    /// `tenant`'s quotas.
    pub fn of(&self, tenant: &TenantName) -> DispatchQuota {
        self.tenants.get(tenant).copied().unwrap_or(self.defaults)
    }

    /// Whether no tenant has any quota.
    pub fn is_unlimited(&self) -> bool {
        self.defaults.is_unlimited() && self.tenants.values().all(DispatchQuota::is_unlimited)
    }
}

/// What the bucket said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The tokens were taken.
    Yes,
    /// Not enough tokens: this many would be there after `wait`.
    No {
        /// How long until there would be.
        wait: Duration,
    },
}

/// The token bucket's rule, for a bucket holding `tokens` when last
/// filled at `at` (ms), asked for `jobs` at `now`: what it answers, and
/// the tokens it holds after. Time running backwards (clocks of two
/// processes) fills nothing.
pub(crate) fn take(tokens: f64, at: u64, now: u64, jobs: u64, rate: Rate) -> (Taken, f64) {
    let elapsed = now.saturating_sub(at) as f64 / 1000.0;
    let held = (tokens + elapsed * rate.per_second).min(f64::from(rate.burst));
    let want = jobs as f64;
    if held >= want {
        return (Taken::Yes, held - want);
    }
    let wait = Duration::from_secs_f64(((want - held) / rate.per_second).min(MAX_WAIT_S));
    (Taken::No { wait }, held)
}

/// The longest wait a refusal names: a year.
const MAX_WAIT_S: f64 = 365.0 * 24.0 * 3600.0;

/// What one process knows of a tenant's backlog.
#[derive(Debug, Clone, Copy)]
struct Backlog {
    /// When it was last counted.
    at: Instant,
    /// The jobs waiting then.
    counted: u64,
    /// `done` when that count began: what was dispatched after is not in it.
    done_at_count: u64,
    /// Jobs this process has dispatched, ever.
    done: u64,
    /// Jobs admitted and not yet dispatched (or refused).
    reserved: u64,
}

impl Backlog {
    /// The most jobs that can be waiting, as far as this process knows.
    fn waiting(&self) -> u64 {
        self.counted
            .saturating_add(self.done - self.done_at_count)
            .saturating_add(self.reserved)
    }
}

/// What [`Admitting::admit`] took for a dispatch: given back if it fails.
#[derive(Debug, Default)]
struct Admitted {
    /// Backlog reserved, by tenant.
    reserved: Vec<(TenantName, u64)>,
    /// Tokens taken, by tenant.
    tokens: Vec<(TenantName, u64, Rate)>,
}

/// A job queue that admits dispatches within their tenants' quotas.
#[derive(Debug)]
pub struct Admitting {
    inner: Arc<dyn JobQueue>,
    store: Arc<dyn TenantStore>,
    quotas: Quotas,
    backlog: Mutex<HashMap<TenantName, Backlog>>,
    /// Held while counting a backlog, so one count serves every dispatch
    /// waiting for it.
    counting: tokio::sync::Mutex<()>,
}

impl Admitting {
    /// `inner`, admitting by `quotas`, with buckets kept by `store`.
    pub fn new(inner: Arc<dyn JobQueue>, store: Arc<dyn TenantStore>, quotas: Quotas) -> Self {
        Admitting {
            inner,
            store,
            quotas,
            backlog: Mutex::new(HashMap::new()),
            counting: tokio::sync::Mutex::new(()),
        }
    }

    /// Admits the jobs of `batch`, taking their tenants' tokens and
    /// reserving their backlog, or refuses them all, taking nothing.
    async fn admit(&self, batch: &[&NewJob]) -> Result<Admitted, QueueError> {
        let mut per_tenant: BTreeMap<TenantName, u64> = BTreeMap::new();
        for job in batch {
            *per_tenant.entry(job.queue.tenant()).or_default() += 1;
        }
        for (tenant, &jobs) in &per_tenant {
            if let Some(rate) = self.quotas.of(tenant).rate
                && jobs > u64::from(rate.burst)
            {
                return Err(QueueError::OverBurst {
                    tenant: tenant.clone(),
                    jobs,
                    burst: rate.burst,
                });
            }
        }
        let mut admitted = Admitted::default();
        let refused = match self.take(&per_tenant, &mut admitted).await {
            Ok(()) => return Ok(admitted),
            Err(e) => e,
        };
        self.give_back(admitted).await;
        Err(refused)
    }

    /// Reserves each tenant's backlog, then takes its tokens, noting what
    /// it took in `admitted`; stops at the first refusal.
    async fn take(
        &self,
        per_tenant: &BTreeMap<TenantName, u64>,
        admitted: &mut Admitted,
    ) -> Result<(), QueueError> {
        for (tenant, &jobs) in per_tenant {
            if let Some(max) = self.quotas.of(tenant).max_backlog {
                self.reserve(tenant, jobs, max).await?;
                admitted.reserved.push((tenant.clone(), jobs));
            }
        }
        for (tenant, &jobs) in per_tenant {
            if let Some(rate) = self.quotas.of(tenant).rate {
                if let Taken::No { wait } = self.store.take_dispatch(tenant, jobs, rate).await? {
                    return Err(QueueError::RateLimited {
                        tenant: tenant.clone(),
                        per_second: rate.per_second,
                        burst: rate.burst,
                        retry_after: wait,
                    });
                }
                admitted.tokens.push((tenant.clone(), jobs, rate));
            }
        }
        Ok(())
    }

    /// Gives back what `admitted` took, for a dispatch that did not happen.
    /// Tokens that cannot be given back (the server unreachable) stay
    /// taken: the bucket refills at its rate anyway.
    async fn give_back(&self, admitted: Admitted) {
        self.settle_reserved(&admitted, false);
        for (tenant, jobs, rate) in &admitted.tokens {
            let _ = self.store.refund_dispatch(tenant, *jobs, *rate).await;
        }
    }

    /// Ends `admitted`'s reservations: the jobs are waiting now if
    /// `dispatched`, else they never were.
    fn settle_reserved(&self, admitted: &Admitted, dispatched: bool) {
        let mut known = crate::sync::lock(&self.backlog);
        for (tenant, jobs) in &admitted.reserved {
            if let Some(b) = known.get_mut(tenant) {
                b.reserved = b.reserved.saturating_sub(*jobs);
                if dispatched {
                    b.done += jobs;
                }
            }
        }
    }

    /// Reserves room for `jobs` more in `tenant`'s backlog of at most
    /// `max`, counting it first if not counted in the last
    /// [`BACKLOG_FRESH`].
    async fn reserve(&self, tenant: &TenantName, jobs: u64, max: u64) -> Result<(), QueueError> {
        if let Some(reserved) = self.reserve_counted(tenant, jobs, max) {
            return reserved;
        }
        let _counting = self.counting.lock().await;
        let done_at_count = {
            if let Some(reserved) = self.reserve_counted(tenant, jobs, max) {
                return reserved;
            }
            crate::sync::lock(&self.backlog)
                .get(tenant)
                .map_or(0, |b| b.done)
        };
        let at = Instant::now();
        let counted = super::counts_of(&*self.inner, |q| q.is_in(tenant))
            .await?
            .iter()
            .map(|(_, c)| c.pending + c.scheduled)
            .sum();
        let mut known = crate::sync::lock(&self.backlog);
        let b = known.entry(tenant.clone()).or_insert(Backlog {
            at,
            counted,
            done_at_count,
            done: done_at_count,
            reserved: 0,
        });
        b.at = at;
        b.counted = counted;
        b.done_at_count = done_at_count;
        Self::reserve_in(b, tenant, jobs, max)
    }

    /// [`Self::reserve_in`] on `tenant`'s backlog if counted recently
    /// enough; `None` if not.
    fn reserve_counted(
        &self,
        tenant: &TenantName,
        jobs: u64,
        max: u64,
    ) -> Option<Result<(), QueueError>> {
        let mut known = crate::sync::lock(&self.backlog);
        let b = known
            .get_mut(tenant)
            .filter(|b| b.at.elapsed() < BACKLOG_FRESH)?;
        Some(Self::reserve_in(b, tenant, jobs, max))
    }

    /// Reserves room for `jobs` more in `b`, `tenant`'s backlog, if that
    /// stays within `max`.
    fn reserve_in(
        b: &mut Backlog,
        tenant: &TenantName,
        jobs: u64,
        max: u64,
    ) -> Result<(), QueueError> {
        let waiting = b.waiting();
        if waiting.saturating_add(jobs) > max {
            return Err(QueueError::BacklogFull {
                tenant: tenant.clone(),
                waiting,
                max,
            });
        }
        b.reserved += jobs;
        Ok(())
    }

    /// Runs `dispatch` for jobs `admitted`, giving back what they took if
    /// it fails.
    async fn dispatched<T>(
        &self,
        admitted: Admitted,
        dispatch: impl std::future::Future<Output = Result<T, QueueError>>,
    ) -> Result<T, QueueError> {
        match dispatch.await {
            Ok(ids) => {
                self.settle_reserved(&admitted, true);
                Ok(ids)
            }
            Err(e) => {
                self.give_back(admitted).await;
                Err(e)
            }
        }
    }
}

#[async_trait]
impl JobQueue for Admitting {
    async fn settings_warnings(&self) -> Vec<String> {
        self.inner.settings_warnings().await
    }
    async fn dispatch(&self, job: NewJob) -> Result<JobId, QueueError> {
        let admitted = self.admit(&[&job]).await?;
        self.dispatched(admitted, self.inner.dispatch(job)).await
    }
    async fn dispatch_many(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>, QueueError> {
        let admitted = self.admit(&jobs.iter().collect::<Vec<_>>()).await?;
        self.dispatched(admitted, self.inner.dispatch_many(jobs))
            .await
    }
    async fn dispatch_follow_up(
        &self,
        job: NewJob,
        lineage: Lineage,
        budget: TreeBudget,
    ) -> Result<JobId, QueueError> {
        let admitted = self.admit(&[&job]).await?;
        let dispatch = self.inner.dispatch_follow_up(job, lineage, budget);
        self.dispatched(admitted, dispatch).await
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
        self.inner.claim(queues, max, lease).await
    }
    async fn wait_for_work(
        &self,
        queues: &[QueueName],
        timeout: Duration,
    ) -> Result<(), QueueError> {
        self.inner.wait_for_work(queues, timeout).await
    }
    async fn due(&self) -> Result<Vec<DueQueue>, QueueError> {
        self.inner.due().await
    }
    async fn settle(&self, due: &DueQueue) -> Result<(), QueueError> {
        self.inner.settle(due).await
    }
    async fn wait_for_due(
        &self,
        passing: &[QueueName],
        tenant: Option<&TenantName>,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        self.inner.wait_for_due(passing, tenant, timeout).await
    }
    async fn renew(&self, lease: &Lease, extend: Duration) -> Result<Option<Lease>, QueueError> {
        self.inner.renew(lease, extend).await
    }
    async fn complete(&self, lease: &Lease, c: Completion, log: String) -> Result<Ack, QueueError> {
        self.inner.complete(lease, c, log).await
    }
    async fn complete_many(
        &self,
        items: &[(Lease, Completion, String)],
    ) -> Result<Vec<Ack>, QueueError> {
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
        self.inner.counts(queue).await
    }
    async fn queues(&self) -> Result<Vec<QueueName>, QueueError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        per_second: 2.0,
        burst: 3,
    };

    #[tokio::test]
    async fn quotas_applied_twice_take_each_dispatch_once() {
        let quotas = Quotas {
            defaults: DispatchQuota {
                rate: Some(Rate {
                    per_second: 0.001,
                    burst: 2,
                }),
                max_backlog: None,
            },
            tenants: BTreeMap::new(),
        };
        let backend = crate::Backend::memory()
            .with_quotas(quotas.clone())
            .with_quotas(quotas);
        let job = || {
            let queue = QueueName::new("q").expect("queue name");
            NewJob::new(queue, crate::job::Payload::new("1").expect("payload"))
        };
        backend.jobs.dispatch(job()).await.expect("the first token");
        backend
            .jobs
            .dispatch(job())
            .await
            .expect("the second token");
        let refused = backend.jobs.dispatch(job()).await;
        assert!(
            matches!(refused, Err(QueueError::RateLimited { .. })),
            "{refused:?}"
        );
    }

    #[test]
    fn the_bucket_takes_what_it_holds_and_names_the_wait_for_the_rest() {
        // Full: three at once, then none.
        assert_eq!(take(3.0, 0, 0, 3, RATE), (Taken::Yes, 0.0));
        let (refused, held) = take(0.0, 0, 0, 1, RATE);
        assert_eq!(
            refused,
            Taken::No {
                wait: Duration::from_millis(500)
            }
        );
        assert_eq!(held, 0.0);
        // Half a second later, one token; a second later, two, never more
        // than the burst.
        assert_eq!(take(0.0, 0, 500, 1, RATE), (Taken::Yes, 0.0));
        assert_eq!(take(0.0, 0, 60_000, 3, RATE), (Taken::Yes, 0.0));
        assert_eq!(
            take(0.0, 0, 60_000, 4, RATE).0,
            Taken::No {
                wait: Duration::from_millis(500)
            }
        );
        // Time that runs backwards fills nothing.
        assert_eq!(take(1.0, 1_000, 0, 1, RATE), (Taken::Yes, 0.0));
        // A wait is bounded whatever the rate.
        let slow = Rate {
            per_second: 1e-12,
            burst: 1,
        };
        let Taken::No { wait } = take(0.0, 0, 0, 1, slow).0 else {
            panic!("an empty bucket gave a token");
        };
        assert_eq!(wait, Duration::from_secs_f64(MAX_WAIT_S));
    }
}
