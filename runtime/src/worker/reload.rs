//! Hot swap, beside the claim loop: every [`RELOAD_EVERY`], install modules
//! published through the backend (`runtime deploy`) for the served queues,
//! and load changed module files again. Loading runs on a blocking thread
//! and compiles in one of the sandbox's compile slots, under the same
//! limits as every load (see [`crate::sandbox::compile`]), never on the
//! async threads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::handlers::HandlerRegistry;
use crate::job::{QueueName, TenantName};
use crate::queue::{JobQueue, ModuleStore};

/// How often a worker looks for published modules and changed files.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// The queues whose modules a worker follows.
#[derive(Debug, Clone)]
pub(super) enum Watched {
    /// The queues it was given.
    Named(Vec<QueueName>),
    /// Every queue the backend knows (of one tenant, if given): a worker
    /// serving every queue. Its claim loop syncs a queue it has not served
    /// before its first claim there, too.
    Every(Arc<dyn JobQueue>, Option<TenantName>),
}

impl Watched {
    async fn list(&self) -> Vec<QueueName> {
        match self {
            Watched::Named(queues) => queues.clone(),
            Watched::Every(jobs, tenant) => jobs
                .queues()
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|q| tenant.as_ref().is_none_or(|t| q.is_in(t)))
                .collect(),
        }
    }
}

/// The reloader's parts, shared with the claim loop.
#[derive(Debug, Clone)]
pub(super) struct Reload {
    pub registry: Arc<HandlerRegistry>,
    pub backend: Arc<dyn ModuleStore>,
    pub deployments: Arc<tokio::sync::Mutex<Deployments>>,
}

impl Reload {
    /// Syncs the published modules of `queues` now.
    pub async fn sync(&self, queues: &[QueueName]) {
        let mut deployments = self.deployments.lock().await;
        deployments
            .sync(&self.registry, &*self.backend, queues)
            .await;
    }
}

/// Runs until aborted.
pub(super) async fn run(reload: Reload, watched: Watched) {
    let mut tick = tokio::time::interval(RELOAD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        reload.sync(&watched.list().await).await;
        let registry = reload.registry.clone();
        let _ = tokio::task::spawn_blocking(move || registry.refresh()).await;
    }
}

/// Follows the published modules of the served queues.
#[derive(Debug, Default)]
pub(super) struct Deployments {
    /// The version last tried per queue, installed or not, so a module that
    /// does not load is reported once, not every second.
    tried: HashMap<QueueName, String>,
}

impl Deployments {
    /// Installs newly published versions and drops withdrawn ones. A
    /// backend that does not answer is skipped until the next tick (the
    /// claim loop reports outages).
    pub(super) async fn sync(
        &mut self,
        registry: &Arc<HandlerRegistry>,
        backend: &dyn ModuleStore,
        queues: &[QueueName],
    ) {
        let Ok(versions) = backend.module_versions(queues).await else {
            return;
        };
        for (queue, version) in queues.iter().zip(versions) {
            let Some(version) = version else {
                if self.tried.remove(queue).is_some() {
                    registry.withdraw(queue);
                    tracing::info!(queue = %queue, "published module withdrawn; back to the module file");
                }
                continue;
            };
            if self.tried.get(queue) == Some(&version) {
                continue;
            }
            let Ok(Some((got, bytes))) = backend.module(queue).await else {
                continue;
            };
            self.tried.insert(queue.clone(), got.clone());
            let installed = {
                let (registry, queue, got) = (registry.clone(), queue.clone(), got.clone());
                tokio::task::spawn_blocking(move || registry.install(&queue, &got, &bytes)).await
            };
            match installed {
                Ok(Ok(())) => {
                    tracing::info!(queue = %queue, version = %got, "published module installed");
                }
                Ok(Err(e)) => {
                    tracing::error!(
                        queue = %queue,
                        version = %got,
                        error = %e,
                        "published module cannot be loaded; still serving the version loaded before"
                    );
                    // Tried again next round if it may pass then.
                    if e.may_pass_later() {
                        self.tried.remove(queue);
                    }
                }
                Err(e) => {
                    tracing::error!(queue = %queue, error = %e, "installing a published module failed")
                }
            }
        }
    }
}
