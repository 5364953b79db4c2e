//! Tenants' dispatch quotas: a job queue in front of another that admits
//! each dispatch (the CLI's, the library's and a handler's follow-ups
//! alike) only within its tenant's quotas, and refuses it whole otherwise,
//! with an error saying which quota and what to do.
//!
//! - **Dispatch rate**: a token bucket per tenant, kept by the backend
//!   ([`TenantStore::take_dispatch`]; on Redis in the tenant's slot,
//!   `<prefix>{@t/<tenant>}:bucket`), so every process dispatching for a
//!   tenant draws on one bucket. A refused dispatch takes no tokens.
//! - **Backlog**: the jobs waiting in a tenant's queues (pending and
//!   scheduled). Counted from the queues' own counts at most once a
//!   [`BACKLOG_FRESH`] per tenant per process, plus what this process
//!   dispatched since, so one process never overshoots and a fleet
//!   overshoots by at most what the others dispatched in that time (which
//!   the dispatch rate bounds, when set).
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

/// A tenant's backlog as last counted.
#[derive(Debug, Clone, Copy)]
struct Counted {
    at: Instant,
    jobs: u64,
}

/// A job queue that admits dispatches within their tenants' quotas.
#[derive(Debug)]
pub struct Admitting {
    inner: Arc<dyn JobQueue>,
    store: Arc<dyn TenantStore>,
    quotas: Quotas,
    backlog: Mutex<HashMap<TenantName, Counted>>,
}

impl Admitting {
    /// `inner`, admitting by `quotas`, with buckets kept by `store`.
    pub fn new(inner: Arc<dyn JobQueue>, store: Arc<dyn TenantStore>, quotas: Quotas) -> Self {
        Admitting {
            inner,
            store,
            quotas,
            backlog: Mutex::new(HashMap::new()),
        }
    }

    /// Admits `jobs` new jobs of each tenant of `batch`, or refuses them
    /// all (before any tokens are taken when a backlog is full).
    async fn admit(&self, batch: &[&NewJob]) -> Result<(), QueueError> {
        let mut per_tenant: BTreeMap<TenantName, u64> = BTreeMap::new();
        for job in batch {
            *per_tenant.entry(job.queue.tenant()).or_default() += 1;
        }
        for (tenant, &jobs) in &per_tenant {
            let quota = self.quotas.of(tenant);
            if let Some(max) = quota.max_backlog {
                let waiting = self.backlog_of(tenant).await?;
                if waiting.saturating_add(jobs) > max {
                    return Err(QueueError::BacklogFull {
                        tenant: tenant.clone(),
                        waiting,
                        max,
                    });
                }
            }
        }
        for (tenant, &jobs) in &per_tenant {
            if let Some(rate) = self.quotas.of(tenant).rate {
                if jobs > u64::from(rate.burst) {
                    return Err(QueueError::OverBurst {
                        tenant: tenant.clone(),
                        jobs,
                        burst: rate.burst,
                    });
                }
                if let Taken::No { wait } = self.store.take_dispatch(tenant, jobs, rate).await? {
                    return Err(QueueError::RateLimited {
                        tenant: tenant.clone(),
                        per_second: rate.per_second,
                        burst: rate.burst,
                        retry_after: wait,
                    });
                }
            }
        }
        Ok(())
    }

    /// The jobs waiting in `tenant`'s queues: counted again once
    /// [`BACKLOG_FRESH`] old.
    async fn backlog_of(&self, tenant: &TenantName) -> Result<u64, QueueError> {
        let known = crate::sync::lock(&self.backlog).get(tenant).copied();
        if let Some(c) = known.filter(|c| c.at.elapsed() < BACKLOG_FRESH) {
            return Ok(c.jobs);
        }
        let at = Instant::now();
        let queues: Vec<QueueName> = self
            .inner
            .queues()
            .await?
            .into_iter()
            .filter(|q| q.is_in(tenant))
            .collect();
        let counts =
            futures_util::future::try_join_all(queues.iter().map(|q| self.inner.counts(q))).await?;
        let jobs = counts.iter().map(|c| c.pending + c.scheduled).sum();
        crate::sync::lock(&self.backlog).insert(tenant.clone(), Counted { at, jobs });
        Ok(jobs)
    }

    /// Counts `jobs` more jobs of `tenant` waiting, until the next count.
    fn added(&self, tenant: &TenantName, jobs: usize) {
        if let Some(c) = crate::sync::lock(&self.backlog).get_mut(tenant) {
            c.jobs = c.jobs.saturating_add(jobs as u64);
        }
    }
}

#[async_trait]
impl JobQueue for Admitting {
    async fn settings_warnings(&self) -> Vec<String> {
        self.inner.settings_warnings().await
    }
    async fn dispatch(&self, job: NewJob) -> Result<JobId, QueueError> {
        self.admit(&[&job]).await?;
        let tenant = job.queue.tenant();
        let id = self.inner.dispatch(job).await?;
        self.added(&tenant, 1);
        Ok(id)
    }
    async fn dispatch_many(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>, QueueError> {
        self.admit(&jobs.iter().collect::<Vec<_>>()).await?;
        let mut per_tenant: BTreeMap<TenantName, usize> = BTreeMap::new();
        for job in &jobs {
            *per_tenant.entry(job.queue.tenant()).or_default() += 1;
        }
        let ids = self.inner.dispatch_many(jobs).await?;
        for (tenant, n) in &per_tenant {
            self.added(tenant, *n);
        }
        Ok(ids)
    }
    async fn dispatch_follow_up(
        &self,
        job: NewJob,
        lineage: Lineage,
        budget: TreeBudget,
    ) -> Result<JobId, QueueError> {
        self.admit(&[&job]).await?;
        let tenant = job.queue.tenant();
        let id = self.inner.dispatch_follow_up(job, lineage, budget).await?;
        self.added(&tenant, 1);
        Ok(id)
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
    async fn wait_for_due(&self, timeout: Duration) -> Result<(), QueueError> {
        self.inner.wait_for_due(timeout).await
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
