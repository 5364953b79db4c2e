//! Tenants' caps on jobs in flight across the whole fleet
//! (`max_in_flight`): before a claim round asks for a capped tenant's
//! jobs, the worker takes that many slots from the tenant's ledger in the
//! backend ([`TenantStore::take_flight`]), and claims no more than it got;
//! what it did not claim goes back at once, and each job's slot goes back
//! once its attempt is recorded. The worker holds its slots for as long as
//! its leases, renewing them beside the loop: a worker that dies holds
//! nothing once its leases would have expired, when its jobs run again
//! elsewhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::job::TenantName;
use crate::queue::{Clock, TenantStore};

/// One worker's slots in its tenants' ledgers.
#[derive(Debug)]
pub(super) struct Flight {
    store: Arc<dyn TenantStore>,
    clock: Arc<dyn Clock>,
    /// This worker in the ledgers.
    holder: String,
    /// How long a slot is held without renewal: the worker's lease.
    lease: Duration,
    /// Slots held, by tenant.
    held: Mutex<HashMap<TenantName, u64>>,
    /// Slots given back here that the backend was not told of yet (it was
    /// unreachable): told at the next renewal.
    untold: Mutex<HashMap<TenantName, u64>>,
}

impl Flight {
    /// Slots for the worker `holder` in `store`'s ledgers, held for
    /// `lease` at a time by `clock`.
    pub fn new(
        store: Arc<dyn TenantStore>,
        clock: Arc<dyn Clock>,
        holder: String,
        lease: Duration,
    ) -> Self {
        Flight {
            store,
            clock,
            holder,
            lease,
            held: Mutex::new(HashMap::new()),
            untold: Mutex::new(HashMap::new()),
        }
    }

    fn until(&self) -> crate::job::UnixMillis {
        let lease = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX);
        self.clock.now().saturating_add(lease)
    }

    /// Takes up to `want` of `tenant`'s slots within its cap `max`; how
    /// many it got. An unreachable backend gives none (the round claims
    /// nothing for the tenant, and the loop tries again).
    pub async fn take(&self, tenant: &TenantName, want: usize, max: u64) -> usize {
        if want == 0 {
            return 0;
        }
        let want = u64::try_from(want).unwrap_or(u64::MAX);
        match self
            .store
            .take_flight(tenant, &self.holder, want, max, self.until())
            .await
        {
            Ok(got) => {
                if got > 0 {
                    *crate::sync::lock(&self.held)
                        .entry(tenant.clone())
                        .or_default() += got;
                }
                usize::try_from(got).unwrap_or(usize::MAX)
            }
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "could not take slots under the tenant's max_in_flight; will try again");
                0
            }
        }
    }

    /// Gives back `n` of `tenant`'s slots (unclaimed, or their jobs'
    /// attempts recorded). If the backend cannot be told now, it is told
    /// at the next renewal.
    pub async fn give(&self, tenant: &TenantName, n: usize) {
        let n = {
            let mut held = crate::sync::lock(&self.held);
            let Some(h) = held.get_mut(tenant) else {
                return;
            };
            let n = u64::try_from(n).unwrap_or(u64::MAX).min(*h);
            *h -= n;
            if *h == 0 {
                held.remove(tenant);
            }
            n
        };
        self.tell(tenant, n).await;
    }

    /// Tells the backend `n` of `tenant`'s slots are given back, or keeps
    /// them to tell later.
    async fn tell(&self, tenant: &TenantName, n: u64) {
        if n == 0 {
            return;
        }
        if let Err(e) = self.store.give_flight(tenant, &self.holder, n).await {
            tracing::warn!(tenant = %tenant, error = %e, "could not give back slots under the tenant's max_in_flight; will try again");
            *crate::sync::lock(&self.untold)
                .entry(tenant.clone())
                .or_default() += n;
        }
    }

    /// Tells what could not be told before, then holds every slot held
    /// for another lease.
    pub async fn renew(&self) {
        let untold: Vec<(TenantName, u64)> = crate::sync::lock(&self.untold).drain().collect();
        for (tenant, n) in untold {
            self.tell(&tenant, n).await;
        }
        let tenants: Vec<TenantName> = crate::sync::lock(&self.held).keys().cloned().collect();
        let until = self.until();
        for tenant in tenants {
            if let Err(e) = self.store.hold_flight(&tenant, &self.holder, until).await {
                tracing::warn!(tenant = %tenant, error = %e, "could not renew slots under the tenant's max_in_flight");
            }
        }
    }

    /// Gives back every slot still held (the worker is stopping).
    pub async fn release_all(&self) {
        let mut all: HashMap<TenantName, u64> = crate::sync::lock(&self.held).drain().collect();
        for (tenant, n) in crate::sync::lock(&self.untold).drain() {
            *all.entry(tenant).or_default() += n;
        }
        for (tenant, n) in all {
            let _ = self.store.give_flight(&tenant, &self.holder, n).await;
        }
    }
}

/// Renews `flight`'s slots every third of its lease, until aborted.
pub(super) async fn run(flight: Arc<Flight>) {
    let every = (flight.lease / 3).max(Duration::from_millis(50));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        flight.renew().await;
    }
}
