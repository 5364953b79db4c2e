//! Per-queue policy, resolved once per queue: what the loop needs to know
//! of a queue (its weight, its cap, its backoff), kept beside the queue's
//! count of jobs in flight and its metrics, so that neither a claim round
//! nor an attempt looks anything up by name.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::{QueueSettings, TenantSettings};
use crate::job::{QueueName, TenantName};
use crate::metrics::{Metrics, QueueMeter};
use crate::retry::Backoff;

use super::Runner;

/// How a worker treats one queue's jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePolicy {
    /// Its share of the worker's free room when several queues have work
    /// (at least 1).
    pub weight: u32,
    /// Most of its jobs in flight at once; `None`: only the worker's
    /// concurrency.
    pub cap: Option<usize>,
    /// Delays between attempts a handler did not time itself.
    pub backoff: Backoff,
}

impl From<&QueueSettings> for QueuePolicy {
    fn from(settings: &QueueSettings) -> Self {
        QueuePolicy {
            weight: settings.weight,
            cap: settings.concurrency,
            backoff: settings.backoff,
        }
    }
}

/// A tenant the worker has served: its settings and how many of its jobs
/// are running here.
#[derive(Debug)]
pub(super) struct TenantServed {
    pub name: TenantName,
    pub policy: TenantSettings,
    running: AtomicUsize,
}

impl TenantServed {
    /// Its jobs running.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Slots of a worker of `concurrency` it gets first when it has work
    /// (its `min_share`, rounded up) and is not yet using.
    pub fn owed(&self, concurrency: usize) -> usize {
        slots(self.policy.min_share, concurrency, 0).saturating_sub(self.running())
    }

    /// How many more of its jobs may start in a worker of `concurrency`
    /// (its `max_share`, rounded down, at least one).
    pub fn free(&self, concurrency: usize) -> usize {
        slots(self.policy.max_share, concurrency, 1).saturating_sub(self.running())
    }
}

/// `share` of `concurrency` slots: rounded up for a minimum (`least` 0),
/// down for a ceiling (`least` 1, so a tenant is never shut out).
fn slots(share: f64, concurrency: usize, least: usize) -> usize {
    let exact = share.clamp(0.0, 1.0) * concurrency as f64;
    // Within 0..=concurrency after the clamp, so the casts are exact.
    let rounded = if least == 0 {
        exact.ceil()
    } else {
        exact.floor()
    };
    (rounded as usize).clamp(least, concurrency.max(least))
}

/// A queue the worker has served: its policy, its tenant, its meter and
/// how many of its jobs are running (claimed, their attempts not ended).
#[derive(Debug)]
pub(super) struct Served {
    pub name: QueueName,
    pub policy: QueuePolicy,
    pub tenant: Arc<TenantServed>,
    pub meter: Arc<QueueMeter>,
    running: AtomicUsize,
}

impl Served {
    /// Its jobs running.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// How many more of its jobs may start now.
    pub fn free(&self) -> usize {
        self.policy
            .cap
            .map_or(usize::MAX, |cap| cap.saturating_sub(self.running()))
    }

    pub(super) fn took(&self, n: usize) {
        self.running.fetch_add(n, Ordering::AcqRel);
        self.tenant.running.fetch_add(n, Ordering::AcqRel);
    }

    pub(super) fn ended(&self) {
        self.running.fetch_sub(1, Ordering::AcqRel);
        self.tenant.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every queue served so far, by name, and their tenants. Grows only with
/// the queues the worker is given or the backend lists (with no queues
/// given), so it is as bounded as they are.
#[derive(Debug, Default)]
pub(super) struct Policies {
    by_name: HashMap<QueueName, Arc<Served>>,
    tenants: HashMap<TenantName, Arc<TenantServed>>,
}

impl Policies {
    /// Whether `name` was served before.
    pub fn has(&self, name: &QueueName) -> bool {
        self.by_name.contains_key(name)
    }

    /// The served queue `name`, resolving its policy the first time.
    pub fn get(&mut self, name: &QueueName, runner: &dyn Runner, metrics: &Metrics) -> Arc<Served> {
        if let Some(served) = self.by_name.get(name) {
            return served.clone();
        }
        let tenant = name.tenant();
        let tenant = self
            .tenants
            .entry(tenant.clone())
            .or_insert_with(|| {
                Arc::new(TenantServed {
                    policy: runner.tenant_policy(&tenant),
                    name: tenant,
                    running: AtomicUsize::new(0),
                })
            })
            .clone();
        let served = Arc::new(Served {
            name: name.clone(),
            policy: runner.policy(name),
            tenant,
            meter: metrics.queue(name),
            running: AtomicUsize::new(0),
        });
        self.by_name.insert(name.clone(), served.clone());
        served
    }
}
