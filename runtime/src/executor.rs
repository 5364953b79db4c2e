//! [`Runtime`]: the pieces put together for an application that embeds the
//! executor: a backend, the handler registry, and workers over them.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use runtime::{Runtime, NewJob, Payload, QueueName, WorkerConfig};
//!
//! let rt = Runtime::in_memory("handlers".into(), Default::default())?;
//! let queue = QueueName::new("hello")?;
//! rt.dispatch(NewJob::new(queue.clone(), Payload::new(r#"{"name":"Ada"}"#)?)).await?;
//! let worker = rt.worker(WorkerConfig { queues: vec![queue], drain: true, ..Default::default() });
//! let stats = worker.run(std::future::pending()).await?;
//! assert_eq!(stats.done, 1);
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::error::{LoadError, QueueError};
use crate::handlers::HandlerRegistry;
use crate::job::{JobId, NewJob};
use crate::queue::Backend;
use crate::sandbox::Sandbox;
use crate::worker::{Worker, WorkerConfig};

/// A backend and a handler registry, shared by any number of workers.
#[derive(Debug, Clone)]
pub struct Runtime {
    backend: Backend,
    registry: Arc<HandlerRegistry>,
}

impl Runtime {
    /// A runtime over `backend`, with handlers from `handlers_dir`,
    /// per-queue settings from `config`, and every dispatch through it
    /// (handlers' follow-ups included) held to the tenants' dispatch
    /// quotas of `config` ([`Backend::with_quotas`]).
    pub fn new(backend: Backend, handlers_dir: PathBuf, config: Config) -> Result<Self, LoadError> {
        let backend = backend.with_quotas(config.quotas());
        let sandbox = Arc::new(Sandbox::new(&config.sandbox())?);
        let registry = Arc::new(HandlerRegistry::new(sandbox, handlers_dir, config));
        Ok(Runtime { backend, registry })
    }

    /// A runtime on the embedded in-memory backend.
    pub fn in_memory(handlers_dir: PathBuf, config: Config) -> Result<Self, LoadError> {
        Self::new(Backend::memory(), handlers_dir, config)
    }

    /// The queue backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The handler registry.
    pub fn registry(&self) -> &Arc<HandlerRegistry> {
        &self.registry
    }

    /// Enqueues a job.
    pub async fn dispatch(&self, job: NewJob) -> Result<JobId, QueueError> {
        self.backend.jobs.dispatch(job).await
    }

    /// A worker over this runtime's backend and handlers.
    pub fn worker(&self, config: WorkerConfig) -> Worker {
        Worker::new(self.backend.clone(), self.registry.clone(), config)
    }
}
