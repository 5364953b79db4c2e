//! Tenants' caps on jobs in flight across the whole fleet
//! (`max_in_flight`): before a claim round asks for a capped tenant's
//! jobs, the worker takes that many slots from the tenant's ledger in the
//! backend ([`TenantStore::take_flight`]), and claims no more than it got.
//! A slot the round did not use, or whose job's attempt has ended, is kept
//! idle for [`IDLE_HOLD`]: the next round uses it without asking the
//! backend (in a steady stream of work, rounds take no slots from the
//! ledger at all); one unused that long goes back. The worker holds its
//! slots for as long as its leases, renewing them beside the loop: a
//! worker that dies holds nothing once its leases would have expired, when
//! its jobs run again elsewhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::job::TenantName;
use crate::queue::{Clock, TenantStore};

/// How long a slot with no job is kept for the next claim round before
/// it goes back to its tenant's ledger: a few of the loop's lingers, so
/// rounds in a stream of work reuse slots. A worker that keeps using its
/// slots keeps them; one that stops using them gives them back within
/// about this (slots freed at different times go back together, with the
/// oldest).
pub(super) const IDLE_HOLD: Duration = Duration::from_millis(20);

/// One worker's slots in its tenants' ledgers.
#[derive(Debug)]
pub(super) struct Flight {
    store: Arc<dyn TenantStore>,
    clock: Arc<dyn Clock>,
    /// This worker in the ledgers.
    holder: String,
    /// How long a slot is held without renewal: the worker's lease.
    lease: Duration,
    /// Slots held, by tenant (idle ones included).
    held: Mutex<HashMap<TenantName, u64>>,
    /// Slots held with no job, by tenant, and since when the oldest of
    /// them has been.
    idle: Mutex<HashMap<TenantName, (u64, Instant)>>,
    /// Woken when slots go idle.
    idled: Notify,
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
            idle: Mutex::new(HashMap::new()),
            idled: Notify::new(),
            untold: Mutex::new(HashMap::new()),
        }
    }

    fn until(&self) -> crate::job::UnixMillis {
        let lease = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX);
        self.clock.now().saturating_add(lease)
    }

    /// Takes up to `want` of `tenant`'s slots within its cap `max`, idle
    /// ones first; how many it got. An unreachable backend gives none
    /// beyond the idle ones (the round claims no more for the tenant, and
    /// the loop tries again).
    pub async fn take(&self, tenant: &TenantName, want: usize, max: u64) -> usize {
        let want = u64::try_from(want).unwrap_or(u64::MAX);
        let reused = {
            let mut idle = crate::sync::lock(&self.idle);
            match idle.get_mut(tenant) {
                Some((n, _)) => {
                    let reused = (*n).min(want);
                    *n -= reused;
                    if *n == 0 {
                        idle.remove(tenant);
                    }
                    reused
                }
                None => 0,
            }
        };
        let want = want - reused;
        let reused = usize::try_from(reused).unwrap_or(usize::MAX);
        if want == 0 {
            return reused;
        }
        let got = match self
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
        };
        reused.saturating_add(got)
    }

    /// `n` of `tenant`'s slots have no job now (unclaimed, or their jobs'
    /// attempts ended): kept idle for the next round, for [`IDLE_HOLD`].
    pub fn idle(&self, tenant: &TenantName, n: usize) {
        if n == 0 {
            return;
        }
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        let mut idle = crate::sync::lock(&self.idle);
        let entry = idle.entry(tenant.clone()).or_insert((0, Instant::now()));
        entry.0 = entry.0.saturating_add(n);
        drop(idle);
        self.idled.notify_one();
    }

    /// Gives back the slots idle for [`IDLE_HOLD`] or more; how long until
    /// the oldest of the rest will have been, if any are left.
    async fn give_idle(&self) -> Option<Duration> {
        let (due, next) = {
            let mut idle = crate::sync::lock(&self.idle);
            let due: Vec<(TenantName, u64)> = idle
                .iter()
                .filter(|(_, (_, since))| since.elapsed() >= IDLE_HOLD)
                .map(|(t, (n, _))| (t.clone(), *n))
                .collect();
            for (t, _) in &due {
                idle.remove(t);
            }
            let next = idle
                .values()
                .map(|(_, since)| IDLE_HOLD.saturating_sub(since.elapsed()))
                .min();
            (due, next)
        };
        for (tenant, n) in due {
            self.give(&tenant, n).await;
        }
        next
    }

    /// Gives back `n` of `tenant`'s slots to its ledger. If the backend
    /// cannot be told now, it is told at the next renewal.
    /// They count as held until the backend has been told (or the telling
    /// kept for later), so a worker stopped in between still gives them
    /// back ([`Flight::release_all`]; the ledger gives a holder back no
    /// more than it holds).
    async fn give(&self, tenant: &TenantName, n: u64) {
        let n = crate::sync::lock(&self.held)
            .get(tenant)
            .map_or(0, |h| n.min(*h));
        self.tell(tenant, n).await;
        let mut held = crate::sync::lock(&self.held);
        if let Some(h) = held.get_mut(tenant) {
            *h = h.saturating_sub(n);
            if *h == 0 {
                held.remove(tenant);
            }
        }
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
        crate::sync::lock(&self.idle).clear();
        let mut all: HashMap<TenantName, u64> = crate::sync::lock(&self.held).drain().collect();
        for (tenant, n) in crate::sync::lock(&self.untold).drain() {
            *all.entry(tenant).or_default() += n;
        }
        for (tenant, n) in all {
            let _ = self.store.give_flight(&tenant, &self.holder, n).await;
        }
    }
}

/// Renews `flight`'s slots every third of its lease, and gives back the
/// slots idle for [`IDLE_HOLD`], until aborted.
pub(super) async fn run(flight: Arc<Flight>) {
    let every = (flight.lease / 3).max(Duration::from_millis(50));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep: Option<Duration> = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => flight.renew().await,
            () = flight.idled.notified(), if sweep.is_none() => sweep = Some(IDLE_HOLD),
            () = tokio::time::sleep(sweep.unwrap_or_default()), if sweep.is_some() => {
                sweep = flight.give_idle().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{ManualClock, MemoryBackend};

    #[tokio::test(start_paused = true)]
    async fn idle_slots_serve_the_next_round_and_go_back_once_held_long_enough() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let store = Arc::new(MemoryBackend::new(clock.clone()));
        let acme = TenantName::new("acme").expect("tenant name");
        let flight = Arc::new(Flight::new(
            store.clone(),
            clock,
            "w1".into(),
            Duration::from_secs(30),
        ));
        let sweeping = tokio::spawn(run(flight.clone()));
        assert_eq!(flight.take(&acme, 3, 4).await, 3);
        // Two jobs end: their slots stay the worker's, for the next round.
        flight.idle(&acme, 2);
        assert_eq!(store.in_flight(&acme).await.expect("count"), 3);
        // Another holder finds the cap as full as before.
        let far = 9_999_999;
        assert_eq!(
            store
                .take_flight(&acme, "w2", 4, 4, far)
                .await
                .expect("take"),
            1
        );
        // The next round takes the two idle slots and asks for one more.
        assert_eq!(
            flight.take(&acme, 3, 4).await,
            2,
            "two idle, none left in the ledger"
        );
        flight.idle(&acme, 3);
        tokio::time::sleep(IDLE_HOLD * 2).await;
        assert_eq!(
            store.in_flight(&acme).await.expect("count"),
            1,
            "w1's idle slots went back; w2's one stays"
        );
        sweeping.abort();
    }
}
