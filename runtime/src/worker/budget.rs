//! Tenants' run-time budgets (`cpu_budget_s` per `cpu_period_s`): each
//! attempt's run time is added to its tenant's count in the backend once
//! the attempt is recorded ([`TenantStore::charge_run_time`]), and a claim
//! round asks for no job of a tenant whose count over every worker has
//! reached its budget this period: its jobs wait, pending, for the next.
//! What the worker last learnt of a count is trusted for a second, so a
//! round costs no call to the backend. A tenant can so pass its budget by
//! what its attempts take that are running when it runs out, or that
//! start on workers that have not learnt so yet (up to a second's worth,
//! or for a worker whose own attempts do not add to the count, until it
//! next reads it): each bounded by its timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::job::TenantName;
use crate::queue::{Clock, RunTimeBudget, TenantStore};

/// How long a count learnt from the backend is trusted.
const FRESH: Duration = Duration::from_secs(1);

/// One worker's view of its tenants' run time.
#[derive(Debug)]
pub(super) struct Budgets {
    store: Arc<dyn TenantStore>,
    clock: Arc<dyn Clock>,
    /// What it last learnt, by tenant.
    seen: Mutex<HashMap<TenantName, Seen>>,
    /// Run time not yet added in the backend (it was unreachable), by
    /// tenant and period: added with the tenant's next charge if that is
    /// in the same period, else dropped (a past period's count no longer
    /// holds anything back).
    untold: Mutex<HashMap<TenantName, (u64, u64)>>,
}

/// A tenant's run time as last learnt.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// The period it is counted in (its start).
    period: u64,
    /// Run time in it, ms.
    used_ms: u64,
    /// When it was learnt.
    at: Instant,
}

impl Budgets {
    /// Budgets kept in `store`, their periods by `clock`.
    pub fn new(store: Arc<dyn TenantStore>, clock: Arc<dyn Clock>) -> Self {
        Budgets {
            store,
            clock,
            seen: Mutex::new(HashMap::new()),
            untold: Mutex::new(HashMap::new()),
        }
    }

    fn learnt(&self, tenant: &TenantName, period: u64, used_ms: u64) {
        crate::sync::lock(&self.seen).insert(
            tenant.clone(),
            Seen {
                period,
                used_ms,
                at: Instant::now(),
            },
        );
    }

    /// Whether `tenant` has used all of `budget` this period. Asks the
    /// backend if the last count is over a second old or of another
    /// period; an unreachable backend leaves the tenant running (its
    /// claims meet the same outage).
    pub async fn spent(&self, tenant: &TenantName, budget: RunTimeBudget) -> bool {
        let period = budget.period_at(self.clock.now());
        let seen = crate::sync::lock(&self.seen).get(tenant).copied();
        if let Some(seen) = seen.filter(|s| s.period == period && s.at.elapsed() < FRESH) {
            return seen.used_ms >= budget.budget_ms;
        }
        match self
            .store
            .charge_run_time(tenant, period, budget.period_ms, 0)
            .await
        {
            Ok(used) => {
                self.learnt(tenant, period, used);
                used >= budget.budget_ms
            }
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "could not read the tenant's run time against its cpu_budget_s");
                false
            }
        }
    }

    /// Adds `ms` of run time to `tenant`'s count in the backend (with
    /// whatever could not be added before), and learns the total.
    pub async fn charge(&self, tenant: &TenantName, budget: RunTimeBudget, ms: u64) {
        let period = budget.period_at(self.clock.now());
        let owed = match crate::sync::lock(&self.untold).remove(tenant) {
            // Run time of an earlier period counts in that period only.
            Some((p, owed)) if p == period => owed,
            _ => 0,
        };
        let ms = ms.saturating_add(owed);
        if ms == 0 {
            return;
        }
        match self
            .store
            .charge_run_time(tenant, period, budget.period_ms, ms)
            .await
        {
            Ok(used) => self.learnt(tenant, period, used),
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "could not add run time to the tenant's count for its cpu_budget_s; will add it with the next");
                crate::sync::lock(&self.untold).insert(tenant.clone(), (period, ms));
            }
        }
    }
}
