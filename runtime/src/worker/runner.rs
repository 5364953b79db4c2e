//! The seam between the worker loop and what runs a job: a [`Runner`]
//! runs one attempt of a claimed job and says how each queue is to be
//! treated. [`HandlerRunner`] is the real one: the handler registry finds
//! the queue's handler and the sandbox runs it in a fresh instance.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::TenantSettings;
use crate::handlers::HandlerRegistry;
use crate::job::{JobRecord, QueueName, TenantName};
use crate::sandbox::{Capabilities, Crash, RunReport};

use super::QueuePolicy;

/// Runs attempts of claimed jobs for a worker.
#[async_trait]
pub trait Runner: Send + Sync + Debug + 'static {
    /// How the worker treats `queue`; asked once per queue.
    fn policy(&self, queue: &QueueName) -> QueuePolicy;

    /// How the worker shares itself with `tenant`; asked once per tenant.
    /// By default, the built-in tenant settings.
    fn tenant_policy(&self, tenant: &TenantName) -> TenantSettings {
        let _ = tenant;
        TenantSettings::default()
    }

    /// Runs one attempt of `job` (state `running`, `attempts` counting
    /// this one). `None` hands the job back uncounted: it could not start
    /// within `wait` (the worker's lease) through no fault of its own.
    async fn run(&self, job: &JobRecord, wait: Duration) -> Option<RunReport>;
}

/// The real runner: the queue's handler from the registry, run in the
/// registry's sandbox with what `caps` grants.
#[derive(Debug, Clone)]
pub struct HandlerRunner {
    registry: Arc<HandlerRegistry>,
    caps: Capabilities,
}

impl HandlerRunner {
    /// Runs handlers of `registry`, each attempt reaching only `caps`.
    pub fn new(registry: Arc<HandlerRegistry>, caps: Capabilities) -> Self {
        HandlerRunner { registry, caps }
    }
}

#[async_trait]
impl Runner for HandlerRunner {
    fn policy(&self, queue: &QueueName) -> QueuePolicy {
        QueuePolicy::from(&*self.registry.settings(queue))
    }

    fn tenant_policy(&self, tenant: &TenantName) -> TenantSettings {
        self.registry.tenant_settings(tenant)
    }

    async fn run(&self, job: &JobRecord, wait: Duration) -> Option<RunReport> {
        match self.registry.handler_async(job.id.queue()).await {
            Ok(handler) => {
                // Waiting for a place in the pool is not the job's fault:
                // if none frees up within a lease, the job goes back
                // uncounted, like at shutdown.
                let sandbox = self.registry.sandbox();
                let room = first_poll_or(sandbox.room(), wait).await?;
                let grants = self.registry.settings(job.id.queue()).grants.clone();
                let caps = self.caps.granting(grants);
                Some(sandbox.run_in(room, &handler, job, caps).await)
            }
            // Retried like a crash: the module may be deployed later.
            Err(e) => Some(RunReport {
                outcome: Crash::Load(e.to_string()).into(),
                log: String::new(),
                elapsed: Duration::ZERO,
            }),
        }
    }
}

/// `future`'s output, or `None` if it has not come within `wait`. Polled
/// once first ([`crate::sync::poll_once`]): a place that is free at once
/// costs no timer.
async fn first_poll_or<F: Future>(future: F, wait: Duration) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    match crate::sync::poll_once(future.as_mut()).await {
        Poll::Ready(output) => Some(output),
        Poll::Pending => tokio::time::timeout(wait, future).await.ok(),
    }
}
